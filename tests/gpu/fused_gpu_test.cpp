// GPU tests of backend `cuda-fused`: forward and backward against the float64 oracle on
// DESIGN.md section 7's shape grid and on a seeded random sweep, with every layout (contiguous,
// padded/permuted/offset, interleaved qkv) and every compiled head dim and dtype. Outputs start
// poisoned. FNA_TEST_SEED / FNA_TEST_COUNT / FNA_LONG_TESTS=1 as in tests/cpp.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "device_case.h"
#include "harness.h"
#include "pattern_fill.h"
#include "shape_grid.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

constexpr Backend kBackend = Backend::kCudaFused;
const int kHeadDims[] = {32, 64, 128, 256};
const DType kDTypes[] = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};

// Valid for the library, compiled in, and (backward) within the backward's head dims.
bool runnable(const Problem& p, DType dt, bool backward = false) {
  if (backward && p.head_dim > 128) return false;  // issue 4: head dim 256 is forward-only
  return fna_test::runnable_on_gpu(kBackend, p, dt);
}

std::string run_grid(bool backward) {
  std::string failures;
  int ran = 0;
  uint64_t seed = fna_test::base_seed();
  for (const Problem& base : fna_test::shape_grid()) {
    for (int d : kHeadDims) {
      for (DType dt : kDTypes) {
        Problem p = base;
        p.head_dim = p.head_dim_v = d;
        if (p.tokens() > 800 && (d > 64 || dt != DType::kBFloat16)) continue;  // oracle time
        if (!runnable(p, dt, backward)) continue;
        CaseSpec spec;
        spec.problem = p;
        spec.dtype = dt;
        spec.seed = ++seed;
        spec.layout = seed % 3 == 0   ? Layout::kStrided
                      : seed % 3 == 1 ? Layout::kContiguous
                                      : Layout::kInterleaved;
        spec.with_lse = seed % 5 != 0;
        spec.backward = backward;
        const auto r = fna_gpu_test::run_device_case(spec, kBackend);
        ++ran;
        if (!r.failure.empty()) failures += spec.describe() + ": " + r.failure + "\n";
      }
    }
  }
  std::printf("shape grid (%s): %d cases\n", backward ? "fwd+bwd" : "fwd", ran);
  return failures;
}

std::string run_sweep(bool backward) {
  std::string failures;
  const int count = fna_test::sweep_count(backward ? 120 : 200);
  const uint64_t base = fna_test::base_seed() + (backward ? 1000003 : 0);
  int ran = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base + i;
    std::mt19937_64 rng(seed);
    Problem p = fna_test::random_problem(rng);
    p.head_dim = p.head_dim_v = kHeadDims[rng() % 4];
    const DType dt = kDTypes[rng() % 3];
    if (!runnable(p, dt, backward)) continue;
    CaseSpec spec;
    spec.problem = p;
    spec.dtype = dt;
    spec.seed = seed;
    spec.layout = fna_test::random_layout(rng, p);
    spec.with_lse = rng() % 4 != 0;
    spec.backward = backward;
    const auto r = fna_gpu_test::run_device_case(spec, kBackend);
    ++ran;
    if (!r.failure.empty())
      failures += "seed " + std::to_string(seed) + " " + spec.describe() + ": " + r.failure + "\n";
  }
  std::printf("random sweep (%s): %d cases from seed %llu\n", backward ? "fwd+bwd" : "fwd", ran,
              static_cast<unsigned long long>(base));
  return failures;
}

TEST(CudaFusedForward, ShapeGrid) {
  const std::string f = run_grid(false);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaFusedForward, RandomSweep) {
  const std::string f = run_sweep(false);
  EXPECT_TRUE(f.empty()) << f;
}
// The small-window forward kernel (src/cuda/fused/common/small_window.h: rank 2, 16-bit, D = 32,
// windows up to 7 x 7, stride 1, no dilation): Q boxes hanging over both grid ends, grids smaller
// than its 14 x 14 KV region, even windows, per-axis causal, GQA and several batches and heads.
// Aligned layouts take it; the strided layout (padded rows) may take the general kernel.
TEST(CudaFusedForward, SmallWindow2D) {
  struct Shape {
    int64_t e0, e1, w0, w1;
    int c0, c1;
  };
  const Shape shapes[] = {{1, 1, 1, 1, 0, 0},   {3, 5, 3, 3, 0, 0},   {7, 7, 7, 7, 0, 0},
                          {9, 13, 5, 7, 0, 0},  {13, 8, 7, 2, 0, 0},  {16, 16, 7, 7, 0, 0},
                          {17, 23, 6, 4, 0, 0}, {56, 56, 7, 7, 0, 0}, {20, 30, 7, 7, 1, 1},
                          {30, 20, 7, 5, 1, 0}, {11, 19, 4, 7, 0, 1}, {15, 15, 7, 7, 0, 0},
                          {10, 10, 3, 3, 0, 0}, {25, 9, 1, 6, 1, 0}};
  std::string failures;
  int ran = 0;
  uint64_t seed = fna_test::base_seed() + 77;
  for (const Shape& s : shapes) {
    for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
      Problem p = fna_test::grid_problem(2, {s.e0, s.e1}, {s.w0, s.w1}, {}, {}, {s.c0, s.c1}, 32);
      if (s.e0 == 15) {  // GQA
        p.heads_q = 4;
        p.heads_kv = 2;
      }
      if (s.e0 == 10) {
        p.batch = 3;
        p.heads_q = p.heads_kv = 2;
      }
      if (!runnable(p, dt)) continue;
      CaseSpec spec;
      spec.problem = p;
      spec.dtype = dt;
      spec.seed = ++seed;
      spec.layout = seed % 3 == 0   ? Layout::kStrided
                    : seed % 3 == 1 ? Layout::kContiguous
                                    : Layout::kInterleaved;
      spec.with_lse = seed % 4 != 0;
      const auto r = fna_gpu_test::run_device_case(spec, kBackend);
      ++ran;
      if (!r.failure.empty()) failures += spec.describe() + ": " + r.failure + "\n";
    }
  }
  std::printf("small-window shapes: %d cases\n", ran);
  EXPECT_TRUE(failures.empty()) << failures;
}
TEST(CudaFusedBackward, ShapeGrid) {
  const std::string f = run_grid(true);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaFusedBackward, RandomSweep) {
  const std::string f = run_sweep(true);
  EXPECT_TRUE(f.empty()) << f;
}

// 64-bit indexing: q, k, v and out of more than 2^31 elements each (4.9 GB apiece in bf16). Inputs
// are filled on the device from a hash of the element index; a few outputs with element offsets
// past 2^31 (and around it) are checked against a float64 computation from the same hash.
TEST(CudaFusedForward, Index64) {
  Problem p = fna_test::grid_problem(1, {300007}, {5});
  p.heads_q = p.heads_kv = 64;
  p.head_dim = p.head_dim_v = 128;
  const DType dt = DType::kBFloat16;
  if (!runnable(p, dt)) GTEST_SKIP() << "bf16 / head dim 128 not compiled";
  const int64_t L = p.extent[0], H = p.heads_q, D = p.head_dim;
  const int64_t n = L * H * D;
  ASSERT_GT(n, int64_t{1} << 31);
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  if (free_bytes < 4 * n * 2 + (size_t{1} << 30)) GTEST_SKIP() << "needs ~20 GB of device memory";
  void *q, *k, *v, *out, *lse;
  ASSERT_EQ(cudaMalloc(&q, n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&k, n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&v, n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&lse, L * H * 4), cudaSuccess);
  fna_gpu_test::fill_pattern(q, dt, n, 1);
  fna_gpu_test::fill_pattern(k, dt, n, 2);
  fna_gpu_test::fill_pattern(v, dt, n, 3);
  ASSERT_EQ(cudaMemset(out, 0xff, n * 2), cudaSuccess);  // NaN in bf16
  ASSERT_EQ(cudaMemset(lse, 0xff, L * H * 4), cudaSuccess);
  const fna::Device dev{fna::DeviceType::kCUDA, 0};
  const std::vector<int64_t> shape{1, L, H, D};
  fna::ForwardArgs a{fna::TensorView::contiguous(q, dt, shape, dev),
                     fna::TensorView::contiguous(k, dt, shape, dev),
                     fna::TensorView::contiguous(v, dt, shape, dev),
                     fna::TensorView::contiguous(out, dt, shape, dev),
                     fna::TensorView::contiguous(lse, DType::kFloat32, {1, L, H}, dev),
                     std::nullopt,
                     std::nullopt};
  fna::Options options;
  options.backend = kBackend;
  fna::forward(p, a, options);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto value = [&](uint64_t seed, int64_t i) {
    return fna_test::round_to(dt, fna_gpu_test::pattern_value(seed, static_cast<uint64_t>(i)));
  };
  const double scale = p.effective_scale();
  double worst = 0;
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
      ASSERT_EQ(cudaMemcpy(row.data(), static_cast<uint16_t*>(out) + (x * H + h) * D, D * 2,
                           cudaMemcpyDeviceToHost),
                cudaSuccess);
      for (int64_t d = 0; d < D; ++d) {
        double ref = 0;
        for (int j = 0; j < 5; ++j)
          ref += std::exp(logits[j] - mx) / sum * value(3, ((start + j) * H + h) * D + d);
        const double got = fna_test::load_element(reinterpret_cast<const std::byte*>(&row[d]), dt);
        worst = std::max(worst, std::isfinite(got) ? std::fabs(got - ref) : INFINITY);
      }
      float l = 0;
      ASSERT_EQ(cudaMemcpy(&l, static_cast<float*>(lse) + x * H + h, 4, cudaMemcpyDeviceToHost),
                cudaSuccess);
      worst = std::max(worst, std::isfinite(l) ? std::fabs(l - (mx + std::log(sum))) /
                                                     std::max(1.0, std::fabs(mx + std::log(sum)))
                                               : INFINITY);
    }
  }
  for (void* ptr : {q, k, v, out, lse}) cudaFree(ptr);
  EXPECT_LE(worst, fna_gpu_test::forward_tolerance(dt, kBackend));
}

// `auto` resolves to cuda-fused for CUDA tensors on sm_80+ (or to cuda-hopper, preferred where it
// can run).
TEST(CudaFused, AutoPicksFused) {
  Problem p = fna_test::grid_problem(2, {16, 16}, {5, 5});
  const fna::Device cuda0{fna::DeviceType::kCUDA, 0};
  for (int d : kHeadDims) {  // a head dim this build compiled
    p.head_dim = p.head_dim_v = d;
    if (fna::backend_unavailable_reason(kBackend, p, DType::kBFloat16, cuda0).empty()) break;
  }
  const Backend picked =
      fna::resolve_backend(p, DType::kBFloat16, fna::Device{fna::DeviceType::kCUDA, 0});
  EXPECT_TRUE(picked == kBackend || picked == Backend::kCudaHopper) << fna::backend_name(picked);
  p.head_dim_v = p.head_dim == 32 ? 64 : 32;  // Dv != D is refused
  EXPECT_NE(fna::backend_unavailable_reason(kBackend, p, DType::kBFloat16,
                                            fna::Device{fna::DeviceType::kCUDA, 0}),
            "");
}

}  // namespace
