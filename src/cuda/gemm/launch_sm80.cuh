// Launchers of the cuda-gemm kernels for one (storage type, head dim). Included only by the
// generated instance files (src/cuda/instances/gemm_<fwd|bwd>_hdim<D>_<dtype>_sm80.cu), one
// explicit instantiation per translation unit.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "cuda/gemm/launch_gemm.h"
#include "cuda/gemm/traits_sm80.cuh"
#include "cuda/gemm/window_scores_sm80.cuh"
#include "cuda/gemm/window_sum_sm80.cuh"

namespace fna::cuda::gemm {

template <class Kernel>
void launch_with_smem(Kernel kernel, int smem, const GemmParams& p, dim3 grid,
                      cudaStream_t stream) {
  // Above 48 KiB of dynamic shared memory (fp32, D = 128) a kernel must opt in.
  FNA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, kNThreads, smem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

template <class Element, int kHeadDim>
void launch_window_scores_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream) {
  using Traits = GemmTraitsSm80<Element, kHeadDim>;
  launch_with_smem(window_scores_kernel_sm80<Traits>, Traits::kSmemScores, p, grid, stream);
}

template <class Element, int kHeadDim>
void launch_window_sum_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream) {
  using Traits = GemmTraitsSm80<Element, kHeadDim>;
  launch_with_smem(window_sum_kernel_sm80<Traits, false>, Traits::kSmemSum, p, grid, stream);
}

template <class Element, int kHeadDim>
void launch_window_sum_inverse_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream) {
  using Traits = GemmTraitsSm80<Element, kHeadDim>;
  launch_with_smem(window_sum_kernel_sm80<Traits, true>, Traits::kSmemSum, p, grid, stream);
}

}  // namespace fna::cuda::gemm
