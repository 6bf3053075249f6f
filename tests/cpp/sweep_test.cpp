// The seeded random sweep: every backend under test against the float64 oracle, forward and
// backward, fp32 / fp16 / bf16 storage, contiguous / strided / interleaved views, over problems
// that cover every parameter and combination (SweepCoverage checks that they do).
//
// Reproduce one failure with the printed FNA_TEST_SEED=<seed> FNA_TEST_COUNT=1 and a
// --gtest_filter for its test; FNA_TEST_VERBOSE=1 prints each problem before it runs (for
// crashes); the long sweep (10x) runs under FNA_LONG_TESTS=1.
#include <gtest/gtest.h>

#include <iostream>
#include <map>

#include "harness.h"

namespace fna_test {
namespace {

// Quick sweep size: >= 300 problems (issue 2), each small enough for the dense oracle.
constexpr int kQuickProblems = 320;
// Failures printed in full; the rest are only counted, so a broken backend stays readable.
constexpr int kPrintedFailures = 12;

std::vector<CaseSpec> sweep_cases(fna::DType dtype, int count, uint64_t salt) {
  std::vector<CaseSpec> cases;
  const uint64_t base = base_seed();
  for (int i = 0; i < count; ++i) {
    CaseSpec c;
    c.seed = base + salt + static_cast<uint64_t>(i);
    std::mt19937_64 rng(c.seed);
    c.problem = random_problem(rng);
    c.layout = random_layout(rng, c.problem);
    c.with_lse = std::uniform_int_distribution<int>(0, 4)(rng) != 0;
    c.dtype = dtype;
    cases.push_back(c);
  }
  return cases;
}

void run_sweep(fna::Backend backend, fna::DType dtype, int count, uint64_t salt) {
  const std::vector<CaseSpec> cases = sweep_cases(dtype, count, salt);
  std::cout << "[ sweep    ] backend=" << fna::backend_name(backend)
            << " dtype=" << fna::dtype_name(dtype) << " problems=" << count
            << " seeds=" << base_seed() + salt << ".." << base_seed() + salt + count - 1
            << " (FNA_TEST_SEED=" << base_seed() << ")" << std::endl;
  int failures = 0;
  double worst_fwd = 0, worst_grad = 0;
  for (const CaseSpec& c : cases) {
    if (verbose_tests())
      std::cout << "[ problem  ] seed " << c.seed << ": " << c.describe() << std::endl;
    const CaseResult r = run_case(c, backend);
    worst_fwd = std::max(worst_fwd, r.forward_error);
    worst_grad = std::max(worst_grad, r.grad_error);
    if (!r.failure.empty() && ++failures <= kPrintedFailures)
      ADD_FAILURE() << "seed " << c.seed << " (rerun: FNA_TEST_SEED=" << c.seed - salt
                    << " FNA_TEST_COUNT=1): " << c.describe() << "\n  " << r.failure;
  }
  std::cout << "[ sweep    ] worst forward error " << worst_fwd << ", worst gradient error "
            << worst_grad << std::endl;
  EXPECT_EQ(failures, 0) << failures << " of " << count << " problems failed on backend "
                         << fna::backend_name(backend) << " (first " << kPrintedFailures
                         << " shown above)";
}

class Sweep : public ::testing::TestWithParam<std::string> {
 protected:
  fna::Backend backend() const { return fna::parse_backend(GetParam()); }
};

TEST_P(Sweep, RandomProblemsFp32ForwardBackward) {
  run_sweep(backend(), fna::DType::kFloat32, sweep_count(kQuickProblems), 0);
}

// Reduced-precision storage: inputs are rounded to the dtype, the oracle runs on the rounded
// values, and the DESIGN.md tolerances apply (gradients 3x).
TEST_P(Sweep, RandomProblemsFp16ForwardBackward) {
  run_sweep(backend(), fna::DType::kFloat16, sweep_count(100), 1000003);
}

TEST_P(Sweep, RandomProblemsBf16ForwardBackward) {
  run_sweep(backend(), fna::DType::kBFloat16, sweep_count(100), 2000003);
}

INSTANTIATE_TEST_SUITE_P(Backends, Sweep, ::testing::Values("reference", "cpu"),
                         [](const auto& info) { return info.param; });

// The quick sweep really covers every parameter and every pairwise combination (the problems
// depend on the seed only, so this holds for every backend's sweep).
TEST(SweepCoverage, EveryParameterAndCombination) {
  std::map<std::string, int> seen;
  for (const CaseSpec& c : sweep_cases(fna::DType::kFloat32, sweep_count(kQuickProblems), 0))
    for (const std::string& f : problem_features(c.problem, c.layout)) ++seen[f];
  const char* required[] = {"rank1",
                            "rank2",
                            "rank3",
                            "extent=1",
                            "odd_extent",
                            "even_window",
                            "odd_window>1",
                            "window=extent",
                            "window*dilation=extent",
                            "stride=window",
                            "axis:stride+causal",
                            "axis:stride+noncausal",
                            "axis:dilation+causal",
                            "axis:dilation+noncausal",
                            "axis:stride+dilation",
                            "axis:even_window+causal",
                            "mixed_causal",
                            "all_causal",
                            "batch>1",
                            "mqa",
                            "gqa",
                            "custom_scale",
                            "layout:contiguous",
                            "layout:strided",
                            "layout:interleaved",
                            "interleaved_gqa",
                            "stride",
                            "dilation",
                            "causal",
                            "add_kv",
                            "gqa_or_mqa",
                            "dv!=d",
                            "noncontiguous"};
  for (const char* f : required) EXPECT_GE(seen[f], 3) << "feature '" << f << "' is under-covered";
  // Every per-axis causal combination of every rank.
  for (int rank = 1; rank <= 3; ++rank)
    for (int bits = 0; bits < (1 << rank); ++bits) {
      std::string pattern = "causal_pattern:";
      for (int r = 0; r < rank; ++r) pattern += (bits >> r) & 1 ? "1" : "0";
      EXPECT_GE(seen[pattern], 2) << "causal combination " << pattern << " is under-covered";
    }
  const char* flags[] = {"stride",     "dilation", "causal",       "add_kv",
                         "gqa_or_mqa", "dv!=d",    "noncontiguous"};
  for (const char* a : flags)
    for (const char* b : flags)
      if (std::string(a) < std::string(b)) {
        const int n = seen[std::string(a) + "+" + b] + seen[std::string(b) + "+" + a];
        EXPECT_GE(n, 3) << "combination " << a << " + " << b << " is under-covered";
      }
}

}  // namespace
}  // namespace fna_test
