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

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

const int kGemmHeadDims[] = {32, 64, 128};
const DType kDTypes[] = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};

bool runnable(Backend b, const Problem& p, DType dt) {
  try {
    fna::validate_problem(p);
  } catch (const fna::Error&) {
    return false;
  }
  return fna::backend_unavailable_reason(b, p, dt, fna::Device{fna::DeviceType::kCUDA, 0}).empty();
}

Problem make(int rank, std::vector<int64_t> extent, std::vector<int64_t> window,
             std::vector<int64_t> stride = {}, std::vector<int64_t> dilation = {},
             std::vector<int> causal = {}) {
  Problem p;
  p.rank = rank;
  for (int r = 0; r < rank; ++r) {
    p.extent[r] = extent[r];
    p.window[r] = window[r];
    p.stride[r] = stride.empty() ? 1 : stride[r];
    p.dilation[r] = dilation.empty() ? 1 : dilation[r];
    p.causal[r] = causal.empty() ? false : causal[r] != 0;
  }
  p.batch = 1;
  p.heads_q = p.heads_kv = 1;
  p.head_dim = p.head_dim_v = 32;
  return p;
}

std::vector<Problem> shape_grid() {
  std::vector<Problem> g;
  for (int64_t L : {1, 3, 13, 37, 113}) {
    for (int64_t K : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{8}, L}) {
      if (K > L) continue;
      g.push_back(make(1, {L}, {K}));
      if (K > 1) g.push_back(make(1, {L}, {K}, {K}));            // blocked
      if (2 * K <= L) g.push_back(make(1, {L}, {K}, {1}, {2}));  // dilation
      g.push_back(make(1, {L}, {K}, {1}, {1}, {1}));             // causal
    }
  }
  g.push_back(make(1, {300}, {37}, {5}, {3}, {0}));
  g.push_back(make(1, {700}, {127}, {1}, {2}, {1}));  // several KV tiles per box, causal
  for (int c0 : {0, 1})
    for (int c1 : {0, 1}) g.push_back(make(2, {13, 37}, {5, 8}, {1, 3}, {2, 1}, {c0, c1}));
  for (int c = 0; c < 8; ++c)
    g.push_back(make(3, {5, 7, 9}, {3, 4, 5}, {1, 2, 1}, {1, 1, 2}, {c & 1, (c >> 1) & 1, c >> 2}));
  g.push_back(make(2, {37, 13}, {37, 13}));                // window = extent: self attention
  g.push_back(make(2, {28, 28}, {7, 7}));                  // NAT
  g.push_back(make(2, {28, 21}, {7, 5}, {1, 1}, {4, 3}));  // DiNAT
  g.push_back(make(2, {33, 47}, {8, 12}, {4, 4}));
  g.push_back(make(3, {8, 16, 16}, {8, 8, 8}, {8, 8, 8}));  // perfectly block-sparse
  Problem gqa = make(2, {13, 37}, {7, 9});
  gqa.heads_q = 6;
  gqa.heads_kv = 2;
  gqa.batch = 2;
  g.push_back(gqa);
  Problem mqa = make(1, {113}, {17}, {1}, {2}, {1});
  mqa.heads_q = 4;
  mqa.heads_kv = 1;
  mqa.additional_kv = 3;
  g.push_back(mqa);
  Problem add = make(3, {5, 8, 9}, {3, 5, 5});
  add.additional_kv = 77;  // two additional tiles, the last partial
  add.heads_q = 4;
  add.heads_kv = 2;
  g.push_back(add);
  return g;
}

std::string run_grid(Backend backend, bool backward) {
  std::string failures;
  int ran = 0;
  uint64_t seed = fna_test::base_seed() + (backend == Backend::kCudaNaive ? 7 : 0);
  for (const Problem& base : shape_grid()) {
    for (int d : kGemmHeadDims) {
      for (DType dt : kDTypes) {
        Problem p = base;
        p.head_dim = p.head_dim_v = d;
        if (p.tokens() > 400 && (d > 32 || dt == DType::kFloat16)) continue;  // oracle time
        if (!runnable(backend, p, dt)) continue;
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
    if (!runnable(backend, p, dt)) continue;
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
  Problem p = make(2, {16, 16}, {5, 5});
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
    if (!runnable(Backend::kCudaGemm, p, DType::kBFloat16)) continue;
    const Backend picked = fna::resolve_backend(p, DType::kBFloat16, cuda0);
    EXPECT_NE(picked, Backend::kCudaGemm) << "auto picked cuda-gemm over cuda-fused";
  }
}

}  // namespace
