// GPU tests of backend `cuda-fused`: forward and backward against the float64 oracle on
// DESIGN.md section 7's shape grid and on a seeded random sweep, with every layout (contiguous,
// padded/permuted/offset, interleaved qkv) and every compiled head dim and dtype. Outputs start
// poisoned. FNA_TEST_SEED / FNA_TEST_COUNT / FNA_LONG_TESTS=1 as in tests/cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "device_case.h"
#include "device_sweeps.h"
#include "harness.h"
#include "index64_case.h"
#include "shape_grid.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

constexpr Backend kBackend = Backend::kCudaFused;

// Valid for the library, compiled in, and (backward) within the backward's head dims.
bool runnable(const Problem& p, DType dt, bool backward = false) {
  if (backward && p.head_dim > 128) return false;  // issue 4: head dim 256 is forward-only
  return fna_test::runnable_on_gpu(kBackend, p, dt);
}

const fna_gpu_test::SweepSuite kSuite{
    kBackend,
    {32, 64, 128, 256},
    {DType::kBFloat16, DType::kFloat16, DType::kFloat32},
    0,
    // oracle time: large grid problems at the cheap instances only
    [](const Problem& p, DType dt) {
      return p.tokens() <= 800 || (p.head_dim <= 64 && dt == DType::kBFloat16);
    },
    [](const Problem& p, DType dt, bool backward) { return runnable(p, dt, backward); },
    nullptr};

std::string run_grid(bool backward) { return fna_gpu_test::run_shape_grid(kSuite, backward); }
std::string run_sweep(bool backward) {
  return fna_gpu_test::run_random_sweep(kSuite, backward ? 120 : 200, backward ? 1000003 : 0,
                                        [&](int) { return backward; });
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
  if (!runnable(p, DType::kBFloat16)) GTEST_SKIP() << "bf16 / head dim 128 not compiled";
  const auto r = fna_gpu_test::run_index64_forward(kBackend, p);
  if (!r.skip.empty()) GTEST_SKIP() << r.skip;
  ASSERT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_LE(r.worst, fna_gpu_test::forward_tolerance(DType::kBFloat16, kBackend));
}

// `auto` resolves to cuda-fused for CUDA tensors on sm_80+ (or to cuda-hopper, preferred where it
// can run).
TEST(CudaFused, AutoPicksFused) {
  Problem p = fna_test::grid_problem(2, {16, 16}, {5, 5});
  const fna::Device cuda0{fna::DeviceType::kCUDA, 0};
  for (int d : kSuite.head_dims) {  // a head dim this build compiled
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
