// Backward of backend `cuda-fused` against `reference`, independent of the fused forward: out and
// lse come from the reference forward on the host, are uploaded byte for byte (same strides), and
// the fused backward's dq, dk, dv (+ additional-KV gradients) are compared with the reference
// backward's. Gradient storages are poisoned (NaN) before every run, so an unwritten element fails.
// FNA_TEST_SEED sets the sweep's base seed; FNA_TEST_LONG=1 runs a longer sweep.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fna/fna.h"

namespace {

using fna::DType;

enum class Layout { kContiguous, kPadded, kUnaligned };

const char* layout_name(Layout l) {
  return l == Layout::kContiguous ? "contiguous" : l == Layout::kPadded ? "padded" : "unaligned";
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A tensor stored on the host and mirrored on the device with identical strides.
struct Tensor {
  std::vector<int64_t> shape, strides;
  DType dtype = DType::kFloat32;
  int64_t offset = 0;  // elements from the storage start to element 0
  std::vector<unsigned char> host;
  void* dev = nullptr;

  Tensor() = default;
  Tensor(const Tensor&) = delete;
  ~Tensor() {
    if (dev) cudaFree(dev);
  }
  // `pad` extra elements after every dimension (16-byte multiples keep rows aligned), and
  // `offset` elements before element 0; `extra_batch_stride` stretches the batch stride.
  void init(std::vector<int64_t> s, DType dt, int64_t pad, int64_t off,
            int64_t extra_batch_stride = 0) {
    shape = std::move(s);
    dtype = dt;
    offset = off;
    strides.assign(shape.size(), 1);
    int64_t st = 1;
    for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
      strides[i] = st;
      st = st * shape[i] + (i > 0 ? pad : 0);
      if (i == 1) st += extra_batch_stride;
    }
    int64_t span = 1;
    for (size_t i = 0; i < shape.size(); ++i) span += (shape[i] - 1) * strides[i];
    host.assign(static_cast<size_t>((offset + span) * fna::dtype_size(dtype)) + 16, 0xFF);
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t x : shape) n *= x;
    return n;
  }
  // Storage offset (elements) of the logical element with row-major index i.
  int64_t element_offset(int64_t i) const {
    int64_t off = offset;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      off += (i % shape[d]) * strides[d];
      i /= shape[d];
    }
    return off;
  }
  double get(int64_t i) const {
    const unsigned char* p = host.data() + element_offset(i) * fna::dtype_size(dtype);
    switch (dtype) {
      case DType::kFloat32: {
        float f;
        std::memcpy(&f, p, 4);
        return f;
      }
      case DType::kFloat16: {
        __half h;
        std::memcpy(&h, p, 2);
        return __half2float(h);
      }
      default: {
        __nv_bfloat16 h;
        std::memcpy(&h, p, 2);
        return __bfloat162float(h);
      }
    }
  }
  void set(int64_t i, float x) {
    unsigned char* p = host.data() + element_offset(i) * fna::dtype_size(dtype);
    switch (dtype) {
      case DType::kFloat32:
        std::memcpy(p, &x, 4);
        break;
      case DType::kFloat16: {
        const __half h = __float2half_rn(x);
        std::memcpy(p, &h, 2);
        break;
      }
      default: {
        const __nv_bfloat16 h = __float2bfloat16_rn(x);
        std::memcpy(p, &h, 2);
        break;
      }
    }
  }
  void fill(std::mt19937_64& rng, double amplitude) {
    std::uniform_real_distribution<double> u(-amplitude, amplitude);
    for (int64_t i = 0; i < numel(); ++i) set(i, static_cast<float>(u(rng)));
  }
  fna::TensorView host_view() {
    return fna::TensorView{
        host.data() + offset * fna::dtype_size(dtype), dtype, {}, shape, strides};
  }
  void upload() {
    if (!dev) check(cudaMalloc(&dev, host.size()), "cudaMalloc");
    check(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice), "upload");
  }
  void poison_device() {
    if (!dev) check(cudaMalloc(&dev, host.size()), "cudaMalloc");
    check(cudaMemset(dev, 0xFF, host.size()), "poison");
  }
  void download() {
    check(cudaMemcpy(host.data(), dev, host.size(), cudaMemcpyDeviceToHost), "download");
  }
  fna::TensorView device_view() {
    return fna::TensorView{static_cast<unsigned char*>(dev) + offset * fna::dtype_size(dtype),
                           dtype, fna::Device{fna::DeviceType::kCUDA, 0}, shape, strides};
  }
};

// max|x - ref| / max(1, max|ref|); non-finite values give +inf.
double relative_error(const Tensor& x, const Tensor& ref) {
  double diff = 0, mag = 1;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double a = x.get(i), b = ref.get(i);
    if (!std::isfinite(a)) return INFINITY;
    diff = std::max(diff, std::fabs(a - b));
    mag = std::max(mag, std::fabs(b));
  }
  return diff / mag;
}

// The gradient tolerances: fp16 1.5e-2, bf16 9e-2, fp32 through TF32 6e-3.
double tolerance(DType dt) {
  return dt == DType::kFloat16 ? 1.5e-2 : dt == DType::kBFloat16 ? 9e-2 : 6e-3;
}

std::vector<int64_t> token_shape(const fna::Problem& p, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{p.batch};
  for (int r = 0; r < p.rank; ++r) s.push_back(p.extent[r]);
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}

struct Case {
  fna::Problem p;
  DType dtype = DType::kBFloat16;
  Layout layout = Layout::kContiguous;
  uint64_t seed = 1;
  int64_t huge_batch_stride = 0;  // stretches q / dq so offsets pass 2^31 elements
  bool check_deterministic = false;
};

std::string describe(const Case& c) {
  return c.p.to_string() + " " + fna::dtype_name(c.dtype) + " " + layout_name(c.layout) +
         " seed=" + std::to_string(c.seed);
}

// Runs one case; returns an empty string on success, else what failed.
std::string run_case(const Case& c) {
  const fna::Problem& p = c.p;
  std::mt19937_64 rng(c.seed);
  const int64_t pad = c.layout == Layout::kContiguous ? 0 : c.layout == Layout::kPadded ? 8 : 3;
  const int64_t off = c.layout == Layout::kUnaligned ? 1 : 0;
  const DType dt = c.dtype;
  Tensor q, k, v, out, lse, dout, ak, av;
  q.init(token_shape(p, p.heads_q, p.head_dim), dt, pad, off, c.huge_batch_stride);
  k.init(token_shape(p, p.heads_kv, p.head_dim), dt, pad, off);
  v.init(token_shape(p, p.heads_kv, p.head_dim_v), dt, pad, off);
  out.init(token_shape(p, p.heads_q, p.head_dim_v), dt, pad, off);
  dout.init(token_shape(p, p.heads_q, p.head_dim_v), dt, pad, off);
  lse.init(token_shape(p, p.heads_q, 0), DType::kFloat32, pad, off);
  q.fill(rng, 1.0);
  k.fill(rng, 1.0);
  v.fill(rng, 1.0);
  dout.fill(rng, 1.0);
  const bool has_add = p.additional_kv > 0;
  if (has_add) {
    ak.init({p.batch, p.additional_kv, p.heads_kv, p.head_dim}, dt, pad, off);
    av.init({p.batch, p.additional_kv, p.heads_kv, p.head_dim_v}, dt, pad, off);
    ak.fill(rng, 1.0);
    av.fill(rng, 1.0);
  }
  fna::Options ref_options;
  ref_options.backend = fna::Backend::kReference;
  fna::ForwardArgs fa;
  fa.q = q.host_view();
  fa.k = k.host_view();
  fa.v = v.host_view();
  fa.out = out.host_view();
  fa.lse = lse.host_view();
  if (has_add) {
    fa.additional_k = ak.host_view();
    fa.additional_v = av.host_view();
  }
  fna::forward(p, fa, ref_options);

  // Reference gradients (contiguous) and fused gradients (same layout as the inputs).
  Tensor rdq, rdk, rdv, rdak, rdav, dq, dk, dv, dak, dav;
  rdq.init(q.shape, dt, 0, 0);
  rdk.init(k.shape, dt, 0, 0);
  rdv.init(v.shape, dt, 0, 0);
  dq.init(q.shape, dt, pad, off, c.huge_batch_stride);
  dk.init(k.shape, dt, pad, off);
  dv.init(v.shape, dt, pad, off);
  if (has_add) {
    rdak.init(ak.shape, dt, 0, 0);
    rdav.init(av.shape, dt, 0, 0);
    dak.init(ak.shape, dt, pad, off);
    dav.init(av.shape, dt, pad, off);
  }
  auto backward_args = [&](bool device, Tensor& gq, Tensor& gk, Tensor& gv) {
    auto view = [&](Tensor& t) { return device ? t.device_view() : t.host_view(); };
    fna::BackwardArgs a;
    a.q = view(q);
    a.k = view(k);
    a.v = view(v);
    a.out = view(out);
    a.lse = view(lse);
    a.dout = view(dout);
    a.dq = view(gq);
    a.dk = view(gk);
    a.dv = view(gv);
    return a;
  };
  fna::BackwardArgs rb = backward_args(false, rdq, rdk, rdv);
  if (has_add) {
    rb.additional_k = ak.host_view();
    rb.additional_v = av.host_view();
    rb.d_additional_k = rdak.host_view();
    rb.d_additional_v = rdav.host_view();
  }
  fna::backward(p, rb, ref_options);

  std::vector<Tensor*> inputs{&q, &k, &v, &out, &lse, &dout};
  if (has_add) inputs.insert(inputs.end(), {&ak, &av});
  for (Tensor* t : inputs) t->upload();
  std::vector<Tensor*> grads{&dq, &dk, &dv};
  if (has_add) grads.insert(grads.end(), {&dak, &dav});
  std::string failure;
  std::vector<std::vector<unsigned char>> first;
  const int runs = c.check_deterministic ? 2 : 1;
  for (int run = 0; run < runs; ++run) {
    for (Tensor* t : grads) t->poison_device();
    fna::BackwardArgs gb = backward_args(true, dq, dk, dv);
    if (has_add) {
      gb.additional_k = ak.device_view();
      gb.additional_v = av.device_view();
      gb.d_additional_k = dak.device_view();
      gb.d_additional_v = dav.device_view();
    }
    fna::Options options;
    options.backend = fna::Backend::kCudaFused;
    options.deterministic = c.check_deterministic;
    fna::backward(p, gb, options);
    check(cudaDeviceSynchronize(), "backward");
    for (Tensor* t : grads) t->download();
    if (run == 0) {
      for (Tensor* t : grads) first.push_back(t->host);
    } else {
      for (size_t i = 0; i < grads.size(); ++i)
        if (grads[i]->host != first[i])
          failure += "gradient " + std::to_string(i) + " differs between runs; ";
    }
  }
  const double tol = tolerance(dt);
  const char* names[] = {"dq", "dk", "dv", "d_additional_k", "d_additional_v"};
  Tensor* refs[] = {&rdq, &rdk, &rdv, &rdak, &rdav};
  for (size_t i = 0; i < grads.size(); ++i) {
    const double err = relative_error(*grads[i], *refs[i]);
    if (!(err <= tol))
      failure += std::string(names[i]) + " error " + std::to_string(err) + " > " +
                 std::to_string(tol) + "; ";
  }
  return failure;
}

fna::Problem problem(std::vector<int64_t> extent, std::vector<int64_t> window, int64_t d,
                     int64_t heads_q = 2, int64_t heads_kv = 2, int64_t batch = 1) {
  fna::Problem p;
  p.rank = static_cast<int>(extent.size());
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.head_dim = p.head_dim_v = d;
  for (int r = 0; r < p.rank; ++r) {
    p.extent[r] = extent[r];
    p.window[r] = window[r];
  }
  return p;
}

void expect_pass(const Case& c) {
  // A reduced build (FNA_HEAD_DIMS / FNA_DTYPES) lacks some instances: say so, don't fail.
  const std::string why = fna::backend_unavailable_reason(fna::Backend::kCudaFused, c.p, c.dtype,
                                                          fna::Device{fna::DeviceType::kCUDA, 0});
  if (why.find("not compiled") != std::string::npos) {
    std::printf("skipped (%s): %s\n", why.c_str(), describe(c).c_str());
    return;
  }
  std::string failure;
  try {
    failure = run_case(c);
  } catch (const std::exception& e) {
    failure = std::string("threw: ") + e.what();
  }
  EXPECT_TRUE(failure.empty()) << describe(c) << ": " << failure;
}

const DType kDTypes[] = {DType::kFloat16, DType::kBFloat16, DType::kFloat32};

TEST(FusedBackward, Rank1EveryHeadDimAndDtype) {
  for (int64_t d : {32, 64, 128})
    for (DType dt : kDTypes) {
      Case c;
      c.p = problem({150}, {33}, d);
      c.dtype = dt;
      expect_pass(c);
    }
}

TEST(FusedBackward, Rank1Parameters) {
  struct P {
    int64_t L, K, s, dil;
    bool causal;
  };
  for (P x : {P{37, 7, 1, 1, false}, P{37, 8, 1, 1, false}, P{100, 9, 3, 1, false},
              P{100, 8, 4, 2, false}, P{77, 7, 1, 1, true}, P{130, 10, 5, 3, true},
              P{64, 64, 1, 1, false}, P{13, 1, 1, 1, false}, P{200, 16, 16, 1, false}}) {
    Case c;
    c.p = problem({x.L}, {x.K}, 64);
    c.p.stride[0] = x.s;
    c.p.dilation[0] = x.dil;
    c.p.causal[0] = x.causal;
    c.seed = static_cast<uint64_t>(x.L * 31 + x.K);
    expect_pass(c);
  }
}

TEST(FusedBackward, Rank2And3) {
  Case c;
  c.p = problem({13, 17}, {5, 6}, 64);
  c.p.stride = {2, 3, 1};
  c.p.dilation = {2, 1, 1};
  c.p.causal = {true, false, false};
  expect_pass(c);
  c.p = problem({20, 24}, {7, 8}, 32, 2, 2, 2);
  c.dtype = DType::kFloat16;
  expect_pass(c);
  c.p = problem({6, 7, 9}, {3, 4, 5}, 64);
  c.p.stride = {1, 2, 3};
  c.p.dilation = {1, 1, 1};
  c.p.causal = {false, true, false};
  c.dtype = DType::kBFloat16;
  expect_pass(c);
  c.p = problem({8, 10, 12}, {3, 3, 5}, 128);
  c.p.dilation = {2, 3, 2};
  c.p.causal = {true, true, true};
  expect_pass(c);
  c.p = problem({5, 9, 11}, {5, 9, 11}, 32);  // window = extent: self attention
  c.dtype = DType::kFloat32;
  expect_pass(c);
}

TEST(FusedBackward, GqaMqaAdditionalKv) {
  Case c;
  c.p = problem({9, 11}, {3, 5}, 64, 4, 2);
  expect_pass(c);
  c.p = problem({40}, {9}, 64, 3, 1);  // MQA
  c.p.additional_kv = 5;
  expect_pass(c);
  c.p = problem({6, 6, 7}, {3, 3, 3}, 128, 6, 2);
  c.p.additional_kv = 70;  // more than one additional tile
  c.p.dilation = {1, 2, 1};
  c.dtype = DType::kFloat16;
  expect_pass(c);
  c.p = problem({33}, {7}, 32, 2, 1, 2);
  c.p.additional_kv = 3;
  c.dtype = DType::kFloat32;
  expect_pass(c);
}

// Head dim 128 too: 16-bit D = 128 runs the sm_90a dK/dV kernel on an H100 build.
TEST(FusedBackward, StridedLayouts) {
  for (int64_t d : {64, 128})
    for (Layout l : {Layout::kPadded, Layout::kUnaligned})
      for (DType dt : kDTypes) {
        Case c;
        c.p = problem({7, 9}, {3, 4}, d, 4, 2);
        c.p.additional_kv = 4;
        c.dtype = dt;
        c.layout = l;
        expect_pass(c);
      }
}

TEST(FusedBackward, DeterministicRunToRun) {
  Case c;
  c.p = problem({12, 12}, {5, 5}, 64, 4, 1);
  c.p.additional_kv = 9;
  c.check_deterministic = true;
  expect_pass(c);
}

// The default path (dQ summed with atomics in the dK/dV kernel) and the deterministic path (dQ
// kernel, no atomics) on the same inputs, both against the oracle; the deterministic runs are also
// compared bitwise run to run. Masked and unmasked tiles, GQA, additional KV, every head dim.
TEST(FusedBackward, AtomicAndDeterministicPaths) {
  std::vector<Case> cases;
  Case c;
  c.p = problem({12, 16, 16}, {5, 8, 8}, 128, 4, 2);
  c.p.stride = {4, 8, 8};  // perfectly block-sparse tiles next to masked ones
  cases.push_back(c);
  c.p = problem({9, 11}, {3, 5}, 64, 3, 1);
  c.p.additional_kv = 70;
  c.p.dilation = {2, 1, 1};
  c.dtype = DType::kFloat16;
  cases.push_back(c);
  c.p = problem({150}, {33}, 32, 2, 2, 2);
  c.p.causal[0] = true;
  c.dtype = DType::kFloat32;
  c.layout = Layout::kPadded;
  cases.push_back(c);
  for (Case x : cases)
    for (bool deterministic : {false, true}) {
      x.check_deterministic = deterministic;
      expect_pass(x);
    }
}

TEST(FusedBackward, SixtyFourBitOffsets) {
  // q and dq span more than 2^31 elements: batch 1 starts past element 2^31.
  Case c;
  c.p = problem({16}, {5}, 32, 1, 1, 2);
  c.dtype = DType::kFloat16;
  c.huge_batch_stride = (int64_t{1} << 31) + 64;
  expect_pass(c);
}

// Seeded random sweep over every parameter.
TEST(FusedBackward, RandomSweep) {
  const char* seed_env = std::getenv("FNA_TEST_SEED");
  const uint64_t base = seed_env ? std::strtoull(seed_env, nullptr, 10) : 20261125;
  const int count = std::getenv("FNA_TEST_LONG") ? 200 : 24;
  std::mt19937_64 rng(base);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int i = 0; i < count; ++i) {
    Case c;
    c.seed = base + i;
    fna::Problem& p = c.p;
    p.rank = static_cast<int>(pick(1, 3));
    const int64_t max_extent = p.rank == 1 ? 90 : p.rank == 2 ? 20 : 9;
    for (int r = 0; r < p.rank; ++r) {
      p.extent[r] = pick(1, max_extent);
      p.dilation[r] = pick(1, std::max<int64_t>(1, std::min<int64_t>(3, p.extent[r])));
      p.window[r] = pick(1, p.extent[r] / p.dilation[r]);
      p.stride[r] = pick(1, p.window[r]);
      p.causal[r] = pick(0, 3) == 0;
    }
    const int64_t dims[] = {32, 64, 128};
    p.head_dim = p.head_dim_v = dims[pick(0, 2)];
    p.heads_kv = pick(1, 2);
    p.heads_q = p.heads_kv * pick(1, 3);
    p.batch = pick(1, 2);
    p.additional_kv = pick(0, 2) == 0 ? pick(1, 80) : 0;
    c.dtype = kDTypes[pick(0, 2)];
    c.layout = static_cast<Layout>(pick(0, 2));
    expect_pass(c);
  }
}

// Small cases for compute-sanitizer (memcheck, racecheck): --gtest_filter=FusedBackward.Small*
TEST(FusedBackward, SmallSanitizerCase) {
  Case c;
  c.p = problem({5, 9, 7}, {3, 4, 3}, 64, 2, 1);
  c.p.additional_kv = 3;
  c.p.dilation = {1, 2, 1};
  c.p.causal = {false, false, true};
  expect_pass(c);
  c.dtype = DType::kFloat32;
  c.layout = Layout::kUnaligned;
  c.p.head_dim = c.p.head_dim_v = 32;
  expect_pass(c);
}

}  // namespace
