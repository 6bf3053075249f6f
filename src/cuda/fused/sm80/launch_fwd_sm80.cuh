// Launcher of the sm_80+ forward kernel for one (storage type, head dim). Included only by the
// generated instance files (src/cuda/instances/fused_fwd_hdim<D>_<dtype>_sm80.cu), one explicit
// instantiation per translation unit.
#pragma once

#include <cuda_runtime_api.h>

#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/sm80/kernel_fwd_sm80.cuh"
#include "cuda/fused/sm80/kernel_fwd_small_sm80.cuh"
#include "cuda/fused/sm80/launch_fwd.h"

namespace fna::cuda::fused {

template <class Element, int kHeadDim>
void launch_fwd_sm80(const FwdParams& p, dim3 grid, cudaStream_t stream) {
  if constexpr (kHeadDim == SmallWindow::kHeadDim && !std::is_same_v<Element, float>) {
    if (p.small_window) {  // grid = (8 x 8 Q boxes, heads_q, batch); static shared memory
      fwd_small_kernel_sm80<Element><<<grid, SmallWindow::kWarps * 32, 0, stream>>>(p);
      FNA_CUDA_CHECK(cudaGetLastError());
      return;
    }
  }
  using Traits = FwdTraitsSm80<Element, kHeadDim>;
  auto kernel = fwd_kernel_sm80<Traits>;
  // Above 48 KiB of dynamic shared memory a kernel must opt in (once per process and device is
  // enough, but the call is cheap next to a launch and keeps multi-device use correct).
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Traits::kSmemBytes));
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fna::cuda::fused
