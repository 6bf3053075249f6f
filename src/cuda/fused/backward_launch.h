// Declarations of the fused sm_80+ backward launchers, one explicit instantiation per generated
// translation unit (src/cuda/instances/fused_bwd_hdim<D>_<dtype>_sm80.cu). Host-only.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused {

// Runs delta, dK/dV and dQ for one problem on `stream`. Element: cutlass::half_t,
// cutlass::bfloat16_t or float (TF32 tensor cores); head dims 32, 64, 128.
template <class Element, int kHeadDim>
void launch_bwd_sm80(const BwdParams& p, cudaStream_t stream);

}  // namespace fna::cuda::fused
