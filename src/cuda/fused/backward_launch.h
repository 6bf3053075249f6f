// Declarations of the fused backward launchers, one explicit instantiation per generated
// translation unit (src/cuda/instances/fused_bwd_hdim<D>_<dtype>_sm80.cu, and _sm90a.cu for the
// wgmma dK/dV kernel). Host-only.
#pragma once

#include <cuda_runtime_api.h>

#include <type_traits>

#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused {

// Runs delta, dK/dV and dQ for one problem on `stream`. Element: cutlass::half_t,
// cutlass::bfloat16_t or float (TF32 tensor cores); head dims 32, 64, 128.
template <class Element, int kHeadDim>
void launch_bwd_sm80(const BwdParams& p, cudaStream_t stream);

// The atomic-dQ path's dK/dV kernel on wgmma (sm_90a; 16-bit, head dim 128): replaces
// dkdv_kernel_sm80<Traits, true> inside launch_bwd_sm80 when dkdv_sm90_built says so.
template <class Element, int kHeadDim>
void launch_dkdv_sm90(const BwdParams& p, cudaStream_t stream);

// The one switch between the dK/dV kernels: whether (Element, kHeadDim) has an sm_90a instance in
// this build. launch_bwd_sm80 also requires the atomic-dQ path (the deterministic path keeps the
// mma.sync kernels) and a device of compute capability 9.0 (sm_90a code runs nowhere else).
template <class Element, int kHeadDim>
constexpr bool dkdv_sm90_built() {
#if defined(FNA_BUILT_SM90A)
  return kHeadDim == 128 && sizeof(Element) == 2;
#else
  return false;
#endif
}

}  // namespace fna::cuda::fused
