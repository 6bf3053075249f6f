// Declarations of the sm_80+ launchers of backend `cuda-gemm` and its block shape. Light: no CuTe
// kernel code, so the host side (gemm_backend.cu) compiles fast; the definitions are instantiated
// by the generated files src/cuda/instances/gemm_<fwd|bwd>_hdim<D>_<dtype>_sm80.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/gemm/gemm_params.h"

namespace fna::cuda::gemm {

// Rows of a box tile x columns of a gathered tile, for every (dtype, head dim). 64 columns is the
// most a 64-bit column mask covers (tile_geometry.cuh); 64 rows keep the scores accumulator at
// 32 registers per thread with 4 warps, and small boxes follow small windows (NAT 7x7: an 8x8
// query box visits 16x16 keys) where the unfused family is used most.
inline constexpr int kBlockM = 64;
inline constexpr int kBlockN = 64;
inline constexpr int kNThreads = 128;

// grid = (boxes, units * group): ws rows of one box and one q head <- scale * rows . cols.
template <class Element, int kHeadDim>
void launch_window_scores_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream);
// grid = (boxes, units * group): out rows of one query box <- ws rows times the gathered cols.
template <class Element, int kHeadDim>
void launch_window_sum_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream);
// grid = (key boxes, units): out keys of one key box <- the attending queries' ws slots (every
// q head of the group) times their gathered rows.
template <class Element, int kHeadDim>
void launch_window_sum_inverse_sm80(const GemmParams& p, dim3 grid, cudaStream_t stream);

}  // namespace fna::cuda::gemm
