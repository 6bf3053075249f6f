// Host-side entry points of the fused sm_80+ family (backend `cuda-fused`). Host-only: no CUDA or
// CuTe includes, so the backend table can include it.
#pragma once

#include <string>

#include "fna/fna.h"

namespace fna::cuda::fused {

// Empty when the fused kernels can run this problem / dtype / device, else the reason.
std::string unavailable(const Problem& p, DType dtype, const Device& device);
// Forward: out and (optional) lse. Defined in the forward kernel files.
void run_forward(const Problem& p, const ForwardArgs& args, const Options& options);
// Backward: dq, dk, dv (+ additional KV gradients). Defined in the backward kernel files.
void run_backward(const Problem& p, const BackwardArgs& args, const Options& options);

}  // namespace fna::cuda::fused
