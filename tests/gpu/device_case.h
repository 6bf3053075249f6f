// GPU side of the test harness: tests/cpp's case runner (run_case: forward and backward against
// the float64 oracle, DESIGN.md section 7 tolerances, inputs left untouched) on CUDA copies of the
// host Buffers (any layout: contiguous, padded/permuted/offset, interleaved qkv). Every output
// storage starts fully poisoned (NaN payload), so an unwritten element or a stray write fails.
#pragma once

#include "harness.h"

namespace fna_gpu_test {

// DESIGN.md section 7, fp32 through TF32 tensor cores where the backend does that.
double forward_tolerance(fna::DType dtype, fna::Backend backend);

using DeviceCaseResult = fna_test::CaseResult;

// Runs `spec` on CUDA device 0 with `backend` (forward, and backward when spec.backward).
DeviceCaseResult run_device_case(const fna_test::CaseSpec& spec, fna::Backend backend);

}  // namespace fna_gpu_test
