// Declarations of the sm_80+ forward launchers and their block shapes. Light: no CuTe kernel
// code, so the dispatcher (forward.cu) compiles fast; the definitions are instantiated by the
// generated files src/cuda/instances/fused_fwd_hdim<D>_<dtype>_sm80.cu.
#pragma once

#include <cuda_runtime_api.h>
#include <cutlass/numeric_types.h>

#include <type_traits>

#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/common/fwd_block.h"

namespace fna::cuda::fused {

// Rows of a Q tile / KV tile and warps per block, per (storage type, head dim): fwd_block.h.
template <class Element, int kHeadDim>
struct FwdBlockShape {
  static constexpr FwdBlock kBlock = fwd_block(std::is_same_v<Element, float>, kHeadDim);
  static constexpr int kBlockM = kBlock.m;
  static constexpr int kBlockN = kBlock.n;
  static constexpr int kNWarps = kBlock.warps;
  static constexpr int kStages = kBlock.stages;
  static constexpr int kMinBlocks = kBlock.min_blocks;
};

// Launches the forward kernel on `grid` = (Q boxes, heads_q, batch). p.tile must be planned for
// FwdBlockShape<Element, kHeadDim>, or p.small_window set (small_window.h: 8 x 8 Q boxes).
template <class Element, int kHeadDim>
void launch_fwd_sm80(const FwdParams& p, dim3 grid, cudaStream_t stream);

}  // namespace fna::cuda::fused
