// Shared test harness: seeds and sweep sizes from the environment, DESIGN.md tolerances, random
// problems, and one "case" runner that checks a backend's forward and backward against the
// float64 oracle on a given storage dtype and memory layout.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "fna/fna.h"
#include "mirror.h"
#include "oracle.h"

namespace fna_test {

// FNA_LONG_TESTS=1 runs the long sweeps (10x the problems).
bool long_tests();
// FNA_TEST_VERBOSE=1 prints every problem before it runs (to find the one that crashes).
bool verbose_tests();
// Base seed of the random sweeps: FNA_TEST_SEED if set, else a fixed default (reproducible runs).
uint64_t base_seed();
// Number of sweep problems: FNA_TEST_COUNT if set, else `quick` (x10 under FNA_LONG_TESTS).
int sweep_count(int quick);

// DESIGN.md section 7: error = max|out - ref| / max(1, max|ref|).
double forward_tolerance(fna::DType dtype);
inline double gradient_tolerance(fna::DType dtype) { return 3.0 * forward_tolerance(dtype); }

// A random problem (every parameter, small enough for the dense oracle: at most ~256 tokens).
fna::Problem random_problem(std::mt19937_64& rng);
// A layout usable for `p` (interleaved needs D == Dv).
Layout random_layout(std::mt19937_64& rng, const fna::Problem& p);

struct CaseSpec {
  fna::Problem problem;
  fna::DType dtype = fna::DType::kFloat32;
  Layout layout = Layout::kContiguous;
  bool with_lse = true;  // pass the optional lse output to forward
  bool backward = true;  // also check backward
  uint64_t seed = 0;     // inputs and strided layouts are drawn from this
  std::string describe() const;
};

struct CaseResult {
  std::string failure;  // empty on success: else every check that failed, with its error
  double forward_error = 0, lse_error = 0, grad_error = 0;
};

// Runs forward (and backward) of `backend` on random inputs and checks every output against the
// oracle: relative error within `forward_tol` (gradients within 3x), no NaN/Inf, no element
// outside the views written, inputs (padding included) left byte-identical. Backward gets the
// oracle's out and lse (rounded to their storage types) as its inputs.
CaseResult run_case(const CaseSpec& spec, fna::Backend backend, Mirror& mirror, double forward_tol);
// The same in host memory with DESIGN.md's tolerance for the storage dtype.
CaseResult run_case(const CaseSpec& spec, fna::Backend backend);

// Random inputs for `p` (canonical layout), already rounded to `dtype`: q, k in [-2, 2],
// v in [-1, 1]. `random_values` gives n values in [-amplitude, amplitude] rounded to `dtype`.
DenseInputs random_inputs(const fna::Problem& p, std::mt19937_64& rng,
                          fna::DType dtype = fna::DType::kFloat32);
std::vector<double> random_values(int64_t n, double amplitude, std::mt19937_64& rng,
                                  fna::DType dtype = fna::DType::kFloat32);

// A backend's forward (out, lse) and backward (gradients from its own out and lse) on contiguous
// buffers of `dtype` holding `in` (rounded) and `dout`, returned in canonical float64 layout.
// Throws whatever fna throws.
struct BackendRun {
  std::vector<double> out, lse;
  DenseGrads grads;
};
BackendRun run_backend(const fna::Problem& p, const DenseInputs& in,
                       const std::vector<double>& dout, fna::Backend backend,
                       fna::DType dtype = fna::DType::kFloat32, bool deterministic = false);

// Feature flags of a problem, for asserting that a sweep covered every parameter combination.
std::vector<std::string> problem_features(const fna::Problem& p, Layout layout);

}  // namespace fna_test
