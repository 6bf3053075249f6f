// The two case generators every GPU backend suite runs against the float64 oracle: DESIGN.md
// section 7's shape grid and a seeded random sweep, each over the backend's head dims and dtypes
// and every layout (contiguous, padded/permuted/offset, interleaved qkv). A suite describes its
// backend with a SweepSuite; the generators return one line per failing case (empty: all pass).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "device_case.h"
#include "harness.h"

namespace fna_gpu_test {

struct SweepSuite {
  fna::Backend backend;
  // Head dims drawn for every case; empty: keep the problem's own (the random problem's draw).
  std::vector<int> head_dims;
  std::vector<fna::DType> dtypes;
  uint64_t seed_offset = 0;  // added to the base seed: suites of one binary draw distinct cases
  // Whether a problem the oracle must check is small enough at this (head dim, dtype); the
  // grid's large problems are kept for the cheap instances only.
  std::function<bool(const fna::Problem&, fna::DType)> affordable;
  // Whether the backend can run the case here (compiled, supported, device).
  std::function<bool(const fna::Problem&, fna::DType, bool backward)> runnable;
  // Runs one case; default: run_device_case(spec, backend).
  std::function<DeviceCaseResult(const fna_test::CaseSpec&)> run;
};

// The shape grid x head dims x dtypes, layouts in rotation.
std::string run_shape_grid(const SweepSuite& suite, bool backward);

// `default_count` random problems (FNA_TEST_COUNT / FNA_LONG_TESTS override it). backward(i)
// says whether case i also checks the backward.
std::string run_random_sweep(const SweepSuite& suite, int default_count, uint64_t seed_offset,
                             const std::function<bool(int)>& backward);

}  // namespace fna_gpu_test
