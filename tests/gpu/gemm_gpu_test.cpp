// GPU tests of the unfused backends: `cuda-gemm` (tensor-core window products) and, through the
// same cases, `cuda-naive` (whose softmax kernels cuda-gemm shares). Forward and backward against
// the float64 oracle on DESIGN.md section 7's shapes (stride, dilation, every causal combination,
// even windows, window = extent, GQA/MQA, additional KV), NAT-sized problems with many boxes and
// KV tiles, and a seeded random sweep; every layout; outputs start poisoned (device_case.cpp).
// FNA_TEST_SEED / FNA_TEST_COUNT / FNA_LONG_TESTS=1 as in tests/cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "device_case.h"
#include "harness.h"
#include "shape_grid.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

const int kGemmHeadDims[] = {32, 64, 128};
const DType kDTypes[] = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};

std::string run_grid(Backend backend, bool backward) {
  std::string failures;
  int ran = 0;
  uint64_t seed = fna_test::base_seed() + (backend == Backend::kCudaNaive ? 7 : 0);
  for (const Problem& base : fna_test::shape_grid()) {
    for (int d : kGemmHeadDims) {
      for (DType dt : kDTypes) {
        Problem p = base;
        p.head_dim = p.head_dim_v = d;
        if (p.tokens() > 400 && (d > 32 || dt == DType::kFloat16)) continue;  // oracle time
        if (!fna_test::runnable_on_gpu(backend, p, dt)) continue;
        CaseSpec spec;
        spec.problem = p;
        spec.dtype = dt;
        spec.seed = ++seed;
        spec.layout = seed % 3 == 0   ? Layout::kStrided
                      : seed % 3 == 1 ? Layout::kContiguous
                                      : Layout::kInterleaved;
        spec.with_lse = seed % 5 != 0;
        spec.backward = backward;
        const auto r = fna_gpu_test::run_device_case(spec, backend);
        ++ran;
        if (!r.failure.empty()) failures += spec.describe() + ": " + r.failure + "\n";
      }
    }
  }
  std::printf("%s shape grid (%s): %d cases\n", fna::backend_name(backend),
              backward ? "fwd+bwd" : "fwd", ran);
  if (ran == 0) failures += "no case ran: nothing compiled for this backend?\n";
  return failures;
}

std::string run_sweep(Backend backend, bool backward) {
  std::string failures;
  const int count = fna_test::sweep_count(backward ? 120 : 200);
  const uint64_t base = fna_test::base_seed() + (backward ? 1000003 : 0);
  int ran = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base + i;
    std::mt19937_64 rng(seed);
    Problem p = fna_test::random_problem(rng);
    if (backend == Backend::kCudaGemm) p.head_dim = p.head_dim_v = kGemmHeadDims[rng() % 3];
    const DType dt = kDTypes[rng() % 3];
    if (!fna_test::runnable_on_gpu(backend, p, dt)) continue;
    CaseSpec spec;
    spec.problem = p;
    spec.dtype = dt;
    spec.seed = seed;
    spec.layout = fna_test::random_layout(rng, p);
    spec.with_lse = rng() % 4 != 0;
    spec.backward = backward;
    const auto r = fna_gpu_test::run_device_case(spec, backend);
    ++ran;
    if (!r.failure.empty())
      failures += "seed " + std::to_string(seed) + " " + spec.describe() + ": " + r.failure + "\n";
  }
  std::printf("%s random sweep (%s): %d cases from seed %llu\n", fna::backend_name(backend),
              backward ? "fwd+bwd" : "fwd", ran, static_cast<unsigned long long>(base));
  if (ran == 0) failures += "no case ran: nothing compiled for this backend?\n";
  return failures;
}

TEST(CudaGemm, ShapeGridForwardBackward) {
  const std::string f = run_grid(Backend::kCudaGemm, true);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaGemm, RandomSweepForward) {
  const std::string f = run_sweep(Backend::kCudaGemm, false);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaGemm, RandomSweepForwardBackward) {
  const std::string f = run_sweep(Backend::kCudaGemm, true);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaNaive, ShapeGridForwardBackward) {
  const std::string f = run_grid(Backend::kCudaNaive, true);
  EXPECT_TRUE(f.empty()) << f;
}
TEST(CudaNaive, RandomSweepForwardBackward) {
  const std::string f = run_sweep(Backend::kCudaNaive, true);
  EXPECT_TRUE(f.empty()) << f;
}

// cuda-gemm refuses what it does not run, with the reason; `auto` prefers cuda-fused over it.
TEST(CudaGemm, Availability) {
  const fna::Device cuda0{fna::DeviceType::kCUDA, 0};
  Problem p = fna_test::grid_problem(2, {16, 16}, {5, 5});
  p.head_dim = 32;
  p.head_dim_v = 64;
  EXPECT_NE(fna::backend_unavailable_reason(Backend::kCudaGemm, p, DType::kBFloat16, cuda0)
                .find("Dv == D"),
            std::string::npos);
  p.head_dim = p.head_dim_v = 48;
  EXPECT_NE(fna::backend_unavailable_reason(Backend::kCudaGemm, p, DType::kBFloat16, cuda0)
                .find("not supported"),
            std::string::npos);
  for (int d : kGemmHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (!fna_test::runnable_on_gpu(Backend::kCudaGemm, p, DType::kBFloat16)) continue;
    const Backend picked = fna::resolve_backend(p, DType::kBFloat16, cuda0);
    EXPECT_NE(picked, Backend::kCudaGemm) << "auto picked cuda-gemm over cuda-fused";
  }
}

}  // namespace
