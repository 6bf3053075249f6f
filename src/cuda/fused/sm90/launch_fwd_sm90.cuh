// Launcher of the Hopper forward kernel for one (storage type, head dim). Included only by the
// generated instance files (src/cuda/instances/hopper_fwd_hdim<D>_<dtype>_sm90a.cu).
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "cuda/fused/sm90/kernel_fwd_sm90.cuh"
#include "cuda/fused/sm90/launch_fwd_sm90.h"

namespace fna::cuda::fused {

template <class Element, int kHeadDim>
void launch_fwd_sm90(const FwdParamsSm90& p, dim3 grid, cudaStream_t stream) {
  using Traits = FwdTraitsSm90<Element, kHeadDim>;
  auto kernel = fwd_kernel_sm90<Traits>;
  constexpr int smem = Traits::kSmemBytes;  // storage, alignment slack and mask table
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, Traits::kNThreads, smem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fna::cuda::fused
