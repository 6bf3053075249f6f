// 64-bit indexing check shared by the GPU backend suites: a rank-1 bf16 problem whose q, k, v and
// out hold more than 2^31 elements each, filled on the device from a hash of the element index
// (pattern_fill.h); outputs around element 2^31 and at the end are compared with float64 from the
// same hash. The problem must be non-causal, window 5, stride 1, dilation 1, one batch.
#pragma once

#include <string>

#include "fna/fna.h"

namespace fna_gpu_test {

struct Index64Result {
  std::string skip;     // non-empty: not run (why)
  std::string failure;  // non-empty: a CUDA call failed
  double worst = 0;     // max error over the checked outputs and lse
};

Index64Result run_index64_forward(fna::Backend backend, const fna::Problem& p);

}  // namespace fna_gpu_test
