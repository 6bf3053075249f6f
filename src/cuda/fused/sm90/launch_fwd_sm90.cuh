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
  // Every mask variant is compiled; p.mask_variant (FNA_HOPPER_MASKS) picks one. The table
  // variant's table lies past the shared storage, so only that kernel asks for its bytes.
  constexpr int kTableBytes = kMaskTableWords * int(sizeof(uint64_t));
  static_assert(Traits::kSmemBytes + kTableBytes <= 227 * 1024, "shared memory of one block");
  auto kernel = p.mask_variant == kMasksQuadTable ? fwd_kernel_sm90<Traits, kMasksQuadTable>
                : p.mask_variant == kMasksQuad    ? fwd_kernel_sm90<Traits, kMasksQuad>
                                                  : fwd_kernel_sm90<Traits, kMasksDefault>;
  const int smem = Traits::kSmemBytes + (p.mask_variant == kMasksQuadTable ? kTableBytes : 0);
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, Traits::kNThreads, smem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fna::cuda::fused
