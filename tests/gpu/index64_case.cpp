#include "index64_case.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "harness.h"
#include "pattern_fill.h"

namespace fna_gpu_test {

Index64Result run_index64_forward(fna::Backend backend, const fna::Problem& p) {
  Index64Result res;
  const fna::DType dt = fna::DType::kBFloat16;
  const fna::Device cuda0{fna::DeviceType::kCUDA, 0};
  const int64_t L = p.extent[0], H = p.heads_q, D = p.head_dim;
  const int64_t n = L * H * D;
  if (n <= (int64_t{1} << 31)) {
    res.failure = "the problem has no more than 2^31 elements per tensor";
    return res;
  }
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    res.failure = "cudaMemGetInfo failed";
    return res;
  }
  if (free_bytes < size_t(4 * n * 2) + (size_t{1} << 30)) {
    res.skip = "needs ~" + std::to_string(4 * n * 2 / 1000000000 + 1) + " GB of device memory";
    return res;
  }
  void* q = nullptr;
  void *k = nullptr, *v = nullptr, *out = nullptr, *lse = nullptr;
  auto fail = [&](const char* what) {
    res.failure = what;
    for (void* ptr : {q, k, v, out, lse}) cudaFree(ptr);
    return res;
  };
  if (cudaMalloc(&q, n * 2) != cudaSuccess || cudaMalloc(&k, n * 2) != cudaSuccess ||
      cudaMalloc(&v, n * 2) != cudaSuccess || cudaMalloc(&out, n * 2) != cudaSuccess ||
      cudaMalloc(&lse, L * H * 4) != cudaSuccess)
    return fail("cudaMalloc failed");
  fill_pattern(q, dt, n, 1);
  fill_pattern(k, dt, n, 2);
  fill_pattern(v, dt, n, 3);
  if (cudaMemset(out, 0xff, n * 2) != cudaSuccess ||  // NaN in bf16
      cudaMemset(lse, 0xff, L * H * 4) != cudaSuccess)
    return fail("cudaMemset failed");
  const std::vector<int64_t> shape{1, L, H, D};
  fna::ForwardArgs a{fna::TensorView::contiguous(q, dt, shape, cuda0),
                     fna::TensorView::contiguous(k, dt, shape, cuda0),
                     fna::TensorView::contiguous(v, dt, shape, cuda0),
                     fna::TensorView::contiguous(out, dt, shape, cuda0),
                     fna::TensorView::contiguous(lse, fna::DType::kFloat32, {1, L, H}, cuda0),
                     std::nullopt,
                     std::nullopt};
  fna::Options options;
  options.backend = backend;
  fna::forward(p, a, options);
  if (cudaDeviceSynchronize() != cudaSuccess) return fail("the forward failed on the device");
  auto value = [&](uint64_t seed, int64_t i) {
    return fna_test::round_to(dt, pattern_value(seed, static_cast<uint64_t>(i)));
  };
  const double scale = p.effective_scale();
  // Queries whose rows straddle 2^31 elements, and the last ones.
  const int64_t boundary = (int64_t{1} << 31) / (H * D);
  for (int64_t x : {boundary - 1, boundary, boundary + 1, L - 3, L - 2, L - 1}) {
    for (int64_t h : {int64_t{0}, H / 2, H - 1}) {
      // Window of x (K = 5, stride 1, non-causal): [clamp(x - 2), +5).
      const int64_t start = std::min(std::max<int64_t>(x - 2, 0), L - 5);
      double logits[5], mx = -INFINITY, sum = 0;
      for (int j = 0; j < 5; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += value(1, (x * H + h) * D + d) * value(2, ((start + j) * H + h) * D + d);
        logits[j] = dot * scale;
        mx = std::max(mx, logits[j]);
      }
      for (double l : logits) sum += std::exp(l - mx);
      std::vector<uint16_t> row(D);
      float l = 0;
      if (cudaMemcpy(row.data(), static_cast<uint16_t*>(out) + (x * H + h) * D, D * 2,
                     cudaMemcpyDeviceToHost) != cudaSuccess ||
          cudaMemcpy(&l, static_cast<float*>(lse) + x * H + h, 4, cudaMemcpyDeviceToHost) !=
              cudaSuccess)
        return fail("cudaMemcpy failed");
      for (int64_t d = 0; d < D; ++d) {
        double ref = 0;
        for (int j = 0; j < 5; ++j)
          ref += std::exp(logits[j] - mx) / sum * value(3, ((start + j) * H + h) * D + d);
        const double got = fna_test::load_element(reinterpret_cast<const std::byte*>(&row[d]), dt);
        res.worst = std::max(res.worst, std::isfinite(got) ? std::fabs(got - ref) : INFINITY);
      }
      const double ref_lse = mx + std::log(sum);
      res.worst = std::max(
          res.worst,
          std::isfinite(l) ? std::fabs(l - ref_lse) / std::max(1.0, std::fabs(ref_lse)) : INFINITY);
    }
  }
  for (void* ptr : {q, k, v, out, lse}) cudaFree(ptr);
  return res;
}

}  // namespace fna_gpu_test
