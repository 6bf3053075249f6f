#include "device_sweeps.h"

#include <cstdio>
#include <random>

#include "shape_grid.h"

namespace fna_gpu_test {
namespace {

DeviceCaseResult run_case(const SweepSuite& suite, const fna_test::CaseSpec& spec) {
  return suite.run ? suite.run(spec) : run_device_case(spec, suite.backend);
}

}  // namespace

std::string run_shape_grid(const SweepSuite& suite, bool backward) {
  std::string failures;
  int ran = 0;
  uint64_t seed = fna_test::base_seed() + suite.seed_offset;
  for (const fna::Problem& base : fna_test::shape_grid()) {
    for (int d : suite.head_dims) {
      for (fna::DType dt : suite.dtypes) {
        fna::Problem p = base;
        p.head_dim = p.head_dim_v = d;
        if (!suite.affordable(p, dt) || !suite.runnable(p, dt, backward)) continue;
        fna_test::CaseSpec spec;
        spec.problem = p;
        spec.dtype = dt;
        spec.seed = ++seed;
        spec.layout = seed % 3 == 0   ? fna_test::Layout::kStrided
                      : seed % 3 == 1 ? fna_test::Layout::kContiguous
                                      : fna_test::Layout::kInterleaved;
        spec.with_lse = seed % 5 != 0;
        spec.backward = backward;
        const auto r = run_case(suite, spec);
        ++ran;
        if (!r.failure.empty()) failures += spec.describe() + ": " + r.failure + "\n";
      }
    }
  }
  std::printf("%s shape grid (%s): %d cases\n", fna::backend_name(suite.backend),
              backward ? "fwd+bwd" : "fwd", ran);
  if (ran == 0) failures += "no case ran: nothing compiled for this backend?\n";
  return failures;
}

std::string run_random_sweep(const SweepSuite& suite, int default_count, uint64_t seed_offset,
                             const std::function<bool(int)>& backward) {
  std::string failures;
  const int count = fna_test::sweep_count(default_count);
  const uint64_t base = fna_test::base_seed() + seed_offset;
  int ran = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base + i;
    std::mt19937_64 rng(seed);
    fna::Problem p = fna_test::random_problem(rng);
    if (!suite.head_dims.empty())
      p.head_dim = p.head_dim_v = suite.head_dims[rng() % suite.head_dims.size()];
    const fna::DType dt = suite.dtypes[rng() % suite.dtypes.size()];
    const bool bwd = backward(i);
    if (!suite.runnable(p, dt, bwd)) continue;
    fna_test::CaseSpec spec;
    spec.problem = p;
    spec.dtype = dt;
    spec.seed = seed;
    spec.layout = fna_test::random_layout(rng, p);
    spec.with_lse = rng() % 4 != 0;
    spec.backward = bwd;
    const auto r = run_case(suite, spec);
    ++ran;
    if (!r.failure.empty())
      failures += "seed " + std::to_string(seed) + " " + spec.describe() + ": " + r.failure + "\n";
  }
  std::printf("%s random sweep: %d cases from seed %llu\n", fna::backend_name(suite.backend), ran,
              static_cast<unsigned long long>(base));
  if (ran == 0) failures += "no case ran: nothing compiled for this backend?\n";
  return failures;
}

}  // namespace fna_gpu_test
