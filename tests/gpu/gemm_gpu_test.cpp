// GPU tests of the unfused backends: `cuda-gemm` (tensor-core window products) and, through the
// same cases, `cuda-naive` (whose softmax kernels cuda-gemm shares). Forward and backward against
// the float64 oracle on DESIGN.md section 7's shapes (stride, dilation, every causal combination,
// even windows, window = extent, GQA/MQA, additional KV), NAT-sized problems with many boxes and
// KV tiles, and a seeded random sweep; every layout; outputs start poisoned (device_case.cpp).
// FNA_TEST_SEED / FNA_TEST_COUNT / FNA_LONG_TESTS=1 as in tests/cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "device_case.h"
#include "device_sweeps.h"
#include "harness.h"
#include "shape_grid.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

const std::vector<int> kGemmHeadDims = {32, 64, 128};

fna_gpu_test::SweepSuite suite(Backend backend) {
  return fna_gpu_test::SweepSuite{
      backend,
      // the naive kernels take any head dim: the sweep keeps the random problem's own
      backend == Backend::kCudaGemm ? kGemmHeadDims : std::vector<int>{},
      {DType::kBFloat16, DType::kFloat16, DType::kFloat32},
      backend == Backend::kCudaNaive ? 7u : 0u,
      // oracle time: large grid problems at the cheap instances only
      [](const Problem& p, DType dt) {
        return p.tokens() <= 400 || (p.head_dim <= 32 && dt != DType::kFloat16);
      },
      [backend](const Problem& p, DType dt, bool) {
        return fna_test::runnable_on_gpu(backend, p, dt);
      },
      nullptr};
}

std::string run_grid(Backend backend, bool backward) {
  fna_gpu_test::SweepSuite s = suite(backend);
  s.head_dims = kGemmHeadDims;  // the grid runs both backends at the gemm head dims
  return fna_gpu_test::run_shape_grid(s, backward);
}
std::string run_sweep(Backend backend, bool backward) {
  return fna_gpu_test::run_random_sweep(suite(backend), backward ? 120 : 200,
                                        backward ? 1000003 : 0, [&](int) { return backward; });
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
