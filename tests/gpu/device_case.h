// GPU side of the test harness: runs a backend on CUDA copies of tests/cpp's host Buffers (any
// layout: contiguous, padded/permuted/offset, interleaved qkv) and checks forward and backward
// against the float64 oracle with DESIGN.md section 7 tolerances. Every output storage starts
// fully poisoned (NaN payload), so an unwritten element or a stray write fails.
#pragma once

#include <cstdint>
#include <string>

#include "harness.h"

namespace fna_gpu_test {

// DESIGN.md section 7, fp32 through TF32 tensor cores where the backend does that.
double forward_tolerance(fna::DType dtype, fna::Backend backend);

struct DeviceCaseResult {
  std::string failure;  // empty on success
  double out_error = 0, lse_error = 0, grad_error = 0;
};

// Runs `spec` on CUDA device 0 with `backend` (forward, and backward when spec.backward).
DeviceCaseResult run_device_case(const fna_test::CaseSpec& spec, fna::Backend backend);

}  // namespace fna_gpu_test
