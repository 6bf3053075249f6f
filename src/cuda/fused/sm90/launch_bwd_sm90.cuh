// Launcher of the sm_90a dK/dV kernel (dkdv_bwd_sm90.cuh): the atomic-dQ path's dK/dV step only;
// launch_bwd_sm80 runs the delta and dq-convert kernels around it. Included only by the generated
// instances src/cuda/instances/fused_bwd_hdim128_<fp16|bf16>_sm90a.cu.
#pragma once

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/fused/backward_launch.h"
#include "cuda/fused/common/plan_bwd.h"
#include "cuda/fused/sm90/dkdv_bwd_sm90.cuh"

namespace fna::cuda::fused {

template <class Element, int kHeadDim>
void launch_dkdv_sm90(const BwdParams& p, cudaStream_t stream) {
  using Traits = sm90::BwdTraitsSm90<Element, kHeadDim>;
  constexpr int kSmem = sm90::kBwdSmemBytesSm90<Traits>;
  // Two CTAs per SM (8 warps, as the mma.sync kernel): 2 x (smem + 1 KiB reserved) <= 228 KiB.
  static_assert(2 * (kSmem + 1024) <= 228 * 1024, "two CTAs per H100 SM");
  auto* kernel = sm90::dkdv_kernel_sm90<Traits>;
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  // Two CTAs need the whole 228 KiB carveout; the default (no preference) leaves the split to the
  // driver, so ask for it rather than rely on the driver choosing it.
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                      cudaSharedmemCarveoutMaxShared));
  const dim3 grid(static_cast<unsigned>(kv_grid_tiles(p)), static_cast<unsigned>(p.heads_kv),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Traits::kThreads, kSmem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fna::cuda::fused
