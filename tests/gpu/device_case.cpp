// GPU runs of tests/cpp's CaseSpec: host Buffers mirrored into device memory byte for byte, so a
// view's strides and offsets (and the poison around it) are exactly those of the host storage.
#include "device_case.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <vector>

#include "oracle.h"

namespace fna_gpu_test {
namespace {

using fna_test::Buffer;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Device copies of the storages of some Buffers; views translate host pointers to device ones.
class Mirror {
 public:
  ~Mirror() {
    for (auto& [host, dev] : storages_) cudaFree(dev.ptr);
  }
  fna::TensorView view(const Buffer& b) {
    const auto& bytes = b.storage_bytes();
    auto it = storages_.find(bytes.data());
    if (it == storages_.end()) {
      Storage s{nullptr, bytes.size()};
      check_cuda(cudaMalloc(&s.ptr, bytes.size() + 16), "cudaMalloc");
      check_cuda(cudaMemcpy(s.ptr, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "upload");
      it = storages_.emplace(bytes.data(), s).first;
    }
    fna::TensorView v = b.view();
    v.data = static_cast<std::byte*>(it->second.ptr) +
             (static_cast<const std::byte*>(v.data) - bytes.data());
    v.device = fna::Device{fna::DeviceType::kCUDA, 0};
    return v;
  }
  // Copies a buffer's device storage back over its host storage (the Buffer owns mutable bytes;
  // storage_bytes() only exposes them as const).
  void download(const Buffer& b) {
    const auto& bytes = b.storage_bytes();
    const Storage& s = storages_.at(bytes.data());
    check_cuda(cudaMemcpy(const_cast<std::byte*>(bytes.data()), s.ptr, bytes.size(),
                          cudaMemcpyDeviceToHost),
               "download");
  }

 private:
  struct Storage {
    void* ptr;
    size_t size;
  };
  std::map<const std::byte*, Storage> storages_;
};

std::vector<int64_t> token_shape(const fna::Problem& p, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{p.batch};
  for (int r = 0; r < p.rank; ++r) s.push_back(p.extent[r]);
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}

// max|x - ref| / max(1, max|ref|); NaN/Inf (poison included) give +inf.
double relative_error(const std::vector<double>& x, const std::vector<double>& ref) {
  double diff = 0, mag = 1;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    diff = std::max(diff, std::fabs(x[i] - ref[i]));
    mag = std::max(mag, std::fabs(ref[i]));
  }
  return diff / mag;
}

std::string fmt(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", x);
  return b;
}

}  // namespace

double forward_tolerance(fna::DType dtype, fna::Backend backend) {
  const bool tensor_cores = backend == fna::Backend::kCudaFused ||
                            backend == fna::Backend::kCudaHopper ||
                            backend == fna::Backend::kCudaGemm;
  if (dtype == fna::DType::kFloat32 && tensor_cores) return 2e-3;
  return fna_test::forward_tolerance(dtype);
}

DeviceCaseResult run_device_case(const fna_test::CaseSpec& spec, fna::Backend backend) {
  using fna_test::Layout;
  const fna::Problem& p = spec.problem;
  const fna::DType dt = spec.dtype;
  const bool strided = spec.layout == Layout::kStrided;
  const bool interleaved = spec.layout == Layout::kInterleaved;
  std::mt19937_64 rng(spec.seed * 0x9e3779b97f4a7c15ull + 0x6a09);
  fna::Options options;
  options.backend = backend;
  DeviceCaseResult result;
  const double ftol = forward_tolerance(dt, backend), gtol = 3 * ftol;
  auto check = [&](const std::string& what, double err, double tol) {
    if (!(err <= tol)) result.failure += what + " error " + fmt(err) + " > " + fmt(tol) + "; ";
  };
  auto untouched = [&](const char* what, std::vector<const Buffer*> views) {
    const std::string s = Buffer::check_outside_untouched(views);
    if (!s.empty()) result.failure += std::string(what) + ": " + s + "; ";
  };
  auto make = [&](const std::vector<int64_t>& s, fna::DType d) {
    return Buffer::make(s, d, strided, rng);
  };
  const auto qs = token_shape(p, p.heads_q, p.head_dim),
             ks = token_shape(p, p.heads_kv, p.head_dim);
  const auto vs = token_shape(p, p.heads_kv, p.head_dim_v);
  const auto os = token_shape(p, p.heads_q, p.head_dim_v), ls = token_shape(p, p.heads_q, 0);
  const std::vector<int64_t> aks{p.batch, p.additional_kv, p.heads_kv, p.head_dim};
  const std::vector<int64_t> avs{p.batch, p.additional_kv, p.heads_kv, p.head_dim_v};

  Buffer q, k, v, ak, av;
  if (interleaved) {
    std::vector<Buffer> qkv = Buffer::make_interleaved(qs, {p.heads_q, p.heads_kv, p.heads_kv}, dt);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = make(qs, dt), k = make(ks, dt), v = make(vs, dt);
  }
  fna_test::DenseInputs in;
  in.q = q.fill_random(rng, 2.0);
  in.k = k.fill_random(rng, 2.0);
  in.v = v.fill_random(rng, 1.0);
  const bool has_add = p.additional_kv > 0;
  if (has_add) {
    ak = make(aks, dt), av = make(avs, dt);
    in.ak = ak.fill_random(rng, 2.0);
    in.av = av.fill_random(rng, 1.0);
  }
  const fna_test::DenseForward ref = fna_test::oracle_forward(p, in);

  try {
    Mirror dev;
    // ---- forward
    Buffer out = make(os, dt), lse = make(ls, fna::DType::kFloat32);
    fna::ForwardArgs fa{dev.view(q),  dev.view(k),  dev.view(v), dev.view(out),
                        std::nullopt, std::nullopt, std::nullopt};
    if (spec.with_lse) fa.lse = dev.view(lse);
    if (has_add) fa.additional_k = dev.view(ak), fa.additional_v = dev.view(av);
    try {
      fna::forward(p, fa, options);
      check_cuda(cudaDeviceSynchronize(), "forward");
    } catch (const std::exception& e) {
      result.failure += std::string("forward threw: ") + e.what();
      return result;
    }
    dev.download(out);
    result.out_error = relative_error(out.to_dense(), ref.out);
    check("out", result.out_error, ftol);
    untouched("out", {&out});
    if (spec.with_lse) {
      dev.download(lse);
      result.lse_error = relative_error(lse.to_dense(), ref.lse);
      check("lse", result.lse_error, ftol);
      untouched("lse", {&lse});
    }
    if (!spec.backward) return result;

    // ---- backward, from the oracle's (rounded) out and lse
    Buffer dout = make(os, dt), out_in = make(os, dt), lse_in = make(ls, fna::DType::kFloat32);
    const std::vector<double> dout_values = dout.fill_random(rng, 1.0);
    out_in.from_dense(ref.out);
    lse_in.from_dense(ref.lse);
    Buffer dq, dk, dv, dak, dav;
    if (interleaved) {
      std::vector<Buffer> d = Buffer::make_interleaved(qs, {p.heads_q, p.heads_kv, p.heads_kv}, dt);
      dq = d[0], dk = d[1], dv = d[2];
    } else {
      dq = make(qs, dt), dk = make(ks, dt), dv = make(vs, dt);
    }
    fna::BackwardArgs ba{dev.view(q),      dev.view(k),    dev.view(v),  dev.view(out_in),
                         dev.view(lse_in), dev.view(dout), dev.view(dq), dev.view(dk),
                         dev.view(dv),     std::nullopt,   std::nullopt, std::nullopt,
                         std::nullopt};
    if (has_add) {
      dak = make(aks, dt), dav = make(avs, dt);
      ba.additional_k = dev.view(ak), ba.additional_v = dev.view(av);
      ba.d_additional_k = dev.view(dak), ba.d_additional_v = dev.view(dav);
    }
    const fna_test::DenseGrads g = fna_test::oracle_backward(p, in, dout_values);
    try {
      fna::backward(p, ba, options);
      check_cuda(cudaDeviceSynchronize(), "backward");
    } catch (const std::exception& e) {
      result.failure += std::string("backward threw: ") + e.what();
      return result;
    }
    auto grad = [&](const char* what, const Buffer& b, const std::vector<double>& r) {
      dev.download(b);
      const double e = relative_error(b.to_dense(), r);
      result.grad_error = std::max(result.grad_error, e);
      check(what, e, gtol);
    };
    grad("dq", dq, g.dq);
    grad("dk", dk, g.dk);
    grad("dv", dv, g.dv);
    if (interleaved) {
      untouched("dqkv", {&dq, &dk, &dv});
    } else {
      untouched("dq", {&dq});
      untouched("dk", {&dk});
      untouched("dv", {&dv});
    }
    if (has_add) {
      grad("d_additional_k", dak, g.dak);
      grad("d_additional_v", dav, g.dav);
      untouched("d_additional_k", {&dak});
      untouched("d_additional_v", {&dav});
    }
  } catch (const std::exception& e) {
    result.failure += std::string("CUDA: ") + e.what();
  }
  return result;
}

}  // namespace fna_gpu_test
