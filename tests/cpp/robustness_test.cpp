// How the backends behave around the math: any OpenMP thread count, concurrent calls from several
// user threads, Options::deterministic (bitwise-reproducible results), and the `auto` backend.
#include <gtest/gtest.h>
#include <omp.h>

#include <thread>

#include "harness.h"

namespace fna_test {
namespace {

class Robustness : public ::testing::TestWithParam<std::string> {
 protected:
  fna::Backend backend() const { return fna::parse_backend(GetParam()); }
};

// Runs `count` sweep problems (seeds from `salt`) and returns the failures, described.
std::vector<std::string> run_problems(fna::Backend backend, uint64_t salt, int count) {
  std::vector<std::string> failures;
  for (int i = 0; i < count; ++i) {
    CaseSpec c;
    c.seed = base_seed() + salt + i;
    std::mt19937_64 rng(c.seed);
    c.problem = random_problem(rng);
    c.layout = random_layout(rng, c.problem);
    const CaseResult r = run_case(c, backend);
    if (!r.failure.empty())
      failures.push_back("seed " + std::to_string(c.seed) + ": " + c.describe() + "\n  " +
                         r.failure);
  }
  return failures;
}

// Work partitioning must not depend on the thread count: fewer threads than cores, more than
// cores, and a prime count that divides nothing evenly.
TEST_P(Robustness, AnyOpenMpThreadCount) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3, 7}) {
    omp_set_num_threads(threads);
    for (const std::string& f : run_problems(backend(), 9000011 + 1000 * threads, sweep_count(30)))
      ADD_FAILURE() << "with " << threads << " OpenMP threads, " << f;
  }
  omp_set_num_threads(saved);
}

// Several user threads calling fna at once (an inference server): no shared mutable state.
TEST_P(Robustness, ConcurrentCallsFromUserThreads) {
  constexpr int kUserThreads = 4;
  std::vector<std::vector<std::string>> failures(kUserThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kUserThreads; ++t)
    pool.emplace_back(
        [&, t] { failures[t] = run_problems(backend(), 9100019 + 1000 * t, sweep_count(12)); });
  for (std::thread& th : pool) th.join();
  for (int t = 0; t < kUserThreads; ++t)
    for (const std::string& f : failures[t]) ADD_FAILURE() << "user thread " << t << ": " << f;
}

// Options::deterministic: the same call twice gives the same bytes (forward always does).
TEST_P(Robustness, DeterministicIsBitwiseReproducible) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(4);  // more threads than cores: scheduling order varies run to run
  for (int i = 0; i < sweep_count(12); ++i) {
    const uint64_t seed = base_seed() + 9200023 + i;
    std::mt19937_64 rng(seed);
    const fna::Problem p = random_problem(rng);
    const DenseInputs in = random_inputs(p, rng);
    const std::vector<double> dout =
        random_values(p.batch * p.tokens() * p.heads_q * p.head_dim_v, 1.0, rng);
    BackendRun a, b;
    try {
      a = run_backend(p, in, dout, backend(), fna::DType::kFloat32, /*deterministic=*/true);
      b = run_backend(p, in, dout, backend(), fna::DType::kFloat32, /*deterministic=*/true);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << " {" << p.to_string() << "}: " << e.what();
      continue;
    }
    const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() + "}";
    EXPECT_EQ(a.out, b.out) << where;
    EXPECT_EQ(a.lse, b.lse) << where;
    EXPECT_EQ(a.grads.dq, b.grads.dq) << where;
    EXPECT_EQ(a.grads.dk, b.grads.dk) << where;
    EXPECT_EQ(a.grads.dv, b.grads.dv) << where;
    EXPECT_EQ(a.grads.dak, b.grads.dak) << where;
    EXPECT_EQ(a.grads.dav, b.grads.dav) << where;
  }
  omp_set_num_threads(saved);
}

INSTANTIATE_TEST_SUITE_P(Backends, Robustness, ::testing::Values("reference", "cpu"),
                         [](const auto& info) { return info.param; });

// `auto` picks a CPU backend for CPU tensors, and its results are right.
TEST(AutoBackend, PicksACpuBackendAndIsCorrect) {
  fna::Problem p = fna::Problem::make({9, 11}, {3, 5}, 1, 2, 8);
  for (fna::DType dt : {fna::DType::kFloat32, fna::DType::kFloat16, fna::DType::kBFloat16}) {
    const fna::Backend b = fna::resolve_backend(p, dt, fna::Device{});
    EXPECT_TRUE(b == fna::Backend::kCpu || b == fna::Backend::kReference)
        << fna::dtype_name(dt) << " resolved to " << fna::backend_name(b);
  }
  for (const std::string& f : run_problems(fna::Backend::kAuto, 9300029, sweep_count(30)))
    ADD_FAILURE() << "auto: " << f;
}

}  // namespace
}  // namespace fna_test
