// fna-bench's inputs, device buffers, timing and error measurement.
#pragma once

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "common/half.h"
#include "common/problem_util.h"
#include "fna/fna.h"

#if defined(FNA_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#endif

namespace fna::bench {

// Host copies of a tensor: typed storage bytes and the same values as fp32.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

inline uint16_t to_bits(float x, DType d) {
  return d == DType::kFloat16 ? float_to_half(x) : float_to_bf16(x);
}
inline float from_bits(uint16_t b, DType d) {
  return d == DType::kFloat16 ? half_to_float(b) : bf16_to_float(b);
}

// splitmix64's finalizer: a well-mixed 64-bit hash of a counter.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Values of mean 0 and variance 1 (never zero) stored as `dtype`: element i is the sum of the four
// 16-bit uniforms in a hash of (stream, i), centred and scaled (an Irwin-Hall bell on
// [-3.46, 3.46], close to a standard normal). Per-element hashes make the values independent of
// the thread count and let the loop run on every core: the video cases draw ~140 M values, which a
// sequential std::normal_distribution took ~25-50 s per fna-bench process to produce.
inline HostTensor random_tensor(std::vector<int64_t> shape, DType dtype, uint64_t stream) {
  HostTensor t;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t s : t.shape) n *= s;
  t.values.resize(n);
  t.bytes.resize(n * dtype_size(dtype));
  const uint64_t key = mix64(stream);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h = mix64(key ^ static_cast<uint64_t>(i));
    const uint32_t sum = static_cast<uint32_t>((h & 0xffff) + ((h >> 16) & 0xffff) +
                                               ((h >> 32) & 0xffff) + (h >> 48));
    // Each uniform (u + 0.5) / 2^16 has mean 1/2 and variance 1/12: the sum, mean 2, variance 1/3.
    float x = static_cast<float>((sum + 2.0) * 0x1p-16 - 2.0) * 1.7320508f;
    if (x == 0.0f) x = 0.5f;  // never zeros
    if (dtype == DType::kFloat32) {
      std::memcpy(&t.bytes[i * 4], &x, 4);
    } else {
      const uint16_t b = to_bits(x, dtype);
      std::memcpy(&t.bytes[i * 2], &b, 2);
      x = from_bits(b, dtype);
    }
    t.values[i] = x;
  }
  return t;
}

inline std::vector<float> to_floats(const std::vector<uint8_t>& bytes, DType dtype) {
  const size_t n = bytes.size() / dtype_size(dtype);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[i * 2], 2);
      out[i] = from_bits(b, dtype);
    }
  }
  return out;
}

// max|x - ref| / max(1, max|ref|); NaN/Inf give +inf.
inline double rel_error(const std::vector<float>& x, const std::vector<float>& ref) {
  double diff = 0, mag = 1;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(x[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(x[i]) - double(ref[i])));
    mag = std::max(mag, std::fabs(double(ref[i])));
  }
  return diff / mag;
}

// The problem's random inputs and (on request) the reference results on them, in fp32.
struct Problem {
  fna::Problem p;
  DType dtype;
  HostTensor q, k, v, ak, av, dout;
  // Reference results (fp32): out, lse, dq, dk, dv, d_additional_k, d_additional_v.
  std::vector<float> out, lse, dq, dk, dv, dak, dav;

  // dout only for a backward (video cases: 0.7 GB that a forward-only sweep need not draw).
  Problem(const fna::Problem& prob, DType dt, uint64_t seed, bool backward) : p(prob), dtype(dt) {
    // One stream per tensor (and seed).
    q = random_tensor(q_shape(p), dtype, 8 * seed + 0);
    k = random_tensor(k_shape(p), dtype, 8 * seed + 1);
    v = random_tensor(v_shape(p), dtype, 8 * seed + 2);
    if (backward) dout = random_tensor(out_shape(p), dtype, 8 * seed + 3);
    if (p.additional_kv) {
      ak = random_tensor(additional_shape(p, p.head_dim), dtype, 8 * seed + 4);
      av = random_tensor(additional_shape(p, p.head_dim_v), dtype, 8 * seed + 5);
    }
  }

  static TensorView view(std::vector<float>& data, const std::vector<int64_t>& shape) {
    return TensorView::contiguous(data.data(), DType::kFloat32, shape);
  }

  void run_reference(bool backward) {
    auto vals = [](HostTensor& t) {
      return TensorView::contiguous(t.values.data(), DType::kFloat32, t.shape);
    };
    out.assign(TensorView::contiguous(nullptr, DType::kFloat32, out_shape(p)).numel(), 0.f);
    lse.assign(TensorView::contiguous(nullptr, DType::kFloat32, lse_shape(p)).numel(), 0.f);
    Options ref;
    ref.backend = Backend::kReference;
    ForwardArgs f{vals(q), vals(k), vals(v), view(out, out_shape(p)), view(lse, lse_shape(p)),
                  {},      {}};
    if (p.additional_kv) {
      f.additional_k = vals(ak);
      f.additional_v = vals(av);
    }
    forward(p, f, ref);
    if (!backward) return;
    dq.assign(q.values.size(), 0.f);
    dk.assign(k.values.size(), 0.f);
    dv.assign(v.values.size(), 0.f);
    BackwardArgs b{
        vals(q),           vals(k),           vals(v), f.out, *f.lse, vals(dout), view(dq, q.shape),
        view(dk, k.shape), view(dv, v.shape), {},      {},    {},     {}};
    if (p.additional_kv) {
      dak.assign(ak.values.size(), 0.f);
      dav.assign(av.values.size(), 0.f);
      b.additional_k = f.additional_k;
      b.additional_v = f.additional_v;
      b.d_additional_k = view(dak, ak.shape);
      b.d_additional_v = view(dav, av.shape);
    }
    fna::backward(p, b, ref);
  }
};

struct Errors {
  double forward = 0, gradient = 0;
};

// Buffers of one backend on a device (CPU or CUDA), timing and comparison. fna-bench makes one
// per backend and runs every tile shape of a --tile-list on it: the inputs are uploaded once.
class Run {
 public:
  Run(Problem& io, Device dev) : io_(io), dev_(dev) {
    const fna::Problem& p = io.p;
    q_ = upload(io.q);
    k_ = upload(io.k);
    v_ = upload(io.v);
    if (!io.dout.bytes.empty()) dout_ = upload(io.dout);
    out_ = alloc(out_shape(p), io.dtype);
    lse_ = alloc(lse_shape(p), DType::kFloat32);
    dq_ = alloc(q_shape(p), io.dtype);
    dk_ = alloc(k_shape(p), io.dtype);
    dv_ = alloc(v_shape(p), io.dtype);
    if (p.additional_kv) {
      ak_ = upload(io.ak);
      av_ = upload(io.av);
      dak_ = alloc(io.ak.shape, io.dtype);
      dav_ = alloc(io.av.shape, io.dtype);
    }
    poison_outputs();
  }
  ~Run() {
    for (void* ptr : owned_) release(ptr);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  ForwardArgs forward_args() const {
    ForwardArgs a{q_, k_, v_, out_, lse_, {}, {}};
    if (io_.p.additional_kv) {
      a.additional_k = ak_;
      a.additional_v = av_;
    }
    return a;
  }
  BackwardArgs backward_args() const {
    BackwardArgs a{q_, k_, v_, out_, lse_, dout_, dq_, dk_, dv_, {}, {}, {}, {}};
    if (io_.p.additional_kv) {
      a.additional_k = ak_;
      a.additional_v = av_;
      a.d_additional_k = dak_;
      a.d_additional_v = dav_;
    }
    return a;
  }

  // Milliseconds of one call of f (CUDA events on the device, steady clock on the CPU).
  double time(const std::function<void()>& f) {
#if defined(FNA_WITH_CUDA)
    if (dev_.type == DeviceType::kCUDA) {
      cudaEvent_t a, b;
      FNA_CUDA_CHECK(cudaEventCreate(&a));
      FNA_CUDA_CHECK(cudaEventCreate(&b));
      FNA_CUDA_CHECK(cudaEventRecord(a));
      f();
      FNA_CUDA_CHECK(cudaEventRecord(b));
      FNA_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      FNA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      FNA_CUDA_CHECK(cudaEventDestroy(a));
      FNA_CUDA_CHECK(cudaEventDestroy(b));
      return ms;
    }
#endif
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }

  // Fill every output with NaN so an element a backend forgets to write fails verification: all
  // bits set is a NaN in fp32, fp16 and bf16 (exponent all ones, mantissa not zero), so a byte
  // fill does it (it used to copy a host vector: seconds per call on the video cases).
  void poison_outputs() {
    for (const TensorView* t : {&out_, &lse_, &dq_, &dk_, &dv_, &dak_, &dav_}) {
      if (!t->data) continue;
      const size_t bytes = t->numel() * dtype_size(t->dtype);
#if defined(FNA_WITH_CUDA)
      if (dev_.type == DeviceType::kCUDA) {
        FNA_CUDA_CHECK(cudaMemset(t->data, 0xff, bytes));
        continue;
      }
#endif
      std::memset(t->data, 0xff, bytes);
    }
  }

  Errors errors_vs_reference(bool backward) const {
    Errors e;
    e.forward = std::max(rel_error(download(out_), io_.out), rel_error(download(lse_), io_.lse));
    if (backward) {
      e.gradient = std::max({rel_error(download(dq_), io_.dq), rel_error(download(dk_), io_.dk),
                             rel_error(download(dv_), io_.dv)});
      if (io_.p.additional_kv)
        e.gradient = std::max(
            {e.gradient, rel_error(download(dak_), io_.dak), rel_error(download(dav_), io_.dav)});
    }
    return e;
  }

 private:
  TensorView alloc(std::vector<int64_t> shape, DType dtype) {
    TensorView t = TensorView::contiguous(nullptr, dtype, std::move(shape), dev_);
    const size_t bytes = t.numel() * dtype_size(dtype);
#if defined(FNA_WITH_CUDA)
    if (dev_.type == DeviceType::kCUDA) {
      FNA_CUDA_CHECK(cudaMalloc(&t.data, bytes));
      owned_.push_back(t.data);
      return t;
    }
#endif
    t.data = ::operator new(bytes);
    owned_.push_back(t.data);
    return t;
  }
  TensorView upload(const HostTensor& h) {
    TensorView t = alloc(h.shape, io_.dtype);
    copy_to(t.data, h.bytes);
    return t;
  }
  void copy_to(void* dst, const std::vector<uint8_t>& src) const {
#if defined(FNA_WITH_CUDA)
    if (dev_.type == DeviceType::kCUDA) {
      FNA_CUDA_CHECK(cudaMemcpy(dst, src.data(), src.size(), cudaMemcpyHostToDevice));
      return;
    }
#endif
    std::memcpy(dst, src.data(), src.size());
  }
  std::vector<float> download(const TensorView& t) const {
    std::vector<uint8_t> bytes(t.numel() * dtype_size(t.dtype));
#if defined(FNA_WITH_CUDA)
    if (dev_.type == DeviceType::kCUDA) {
      FNA_CUDA_CHECK(cudaMemcpy(bytes.data(), t.data, bytes.size(), cudaMemcpyDeviceToHost));
      return to_floats(bytes, t.dtype);
    }
#endif
    std::memcpy(bytes.data(), t.data, bytes.size());
    return to_floats(bytes, t.dtype);
  }
  void release(void* ptr) {
#if defined(FNA_WITH_CUDA)
    if (dev_.type == DeviceType::kCUDA) {
      cudaFree(ptr);
      return;
    }
#endif
    ::operator delete(ptr);
  }

  Problem& io_;
  Device dev_;
  std::vector<void*> owned_;
  TensorView q_, k_, v_, dout_, out_, lse_, dq_, dk_, dv_, ak_, av_, dak_, dav_;
};

}  // namespace fna::bench
