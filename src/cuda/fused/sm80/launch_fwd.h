// Declarations of the sm_80+ forward launchers and their block shapes. Light: no CuTe kernel
// code, so the dispatcher (forward.cu) compiles fast; the definitions are instantiated by the
// generated files src/cuda/instances/fused_fwd_hdim<D>_<dtype>_sm80.cu.
#pragma once

#include <cuda_runtime_api.h>
#include <cutlass/numeric_types.h>

#include <type_traits>

#include "cuda/fused/common/fused_params.h"

namespace fna::cuda::fused {

// Rows of a Q tile / KV tile and warps per block, per (storage type, head dim).
//  - 16-bit, D = 128: 128 x 64 x 4 warps. 128 queries keep a Q box large enough that its KV range
//    is mostly useful keys for the large windows D = 128 models use (video-hunyuan: 65% useful);
//    64-key KV boxes follow the range closely and keep S at 32 registers per thread next to a
//    64-register O accumulator.
//  - 16-bit, D <= 64: 64 x 64. Models with small heads tend to use small windows (NAT: 7x7),
//    where a Q box's KV range is dominated by the window's halo: an 8x8 box visits 16x16 keys
//    (23% useful) where a 8x16 box visits 16x24 (13%).
//  - 16-bit, D = 256: 64 x 64 (the O accumulator is 128 registers per thread).
//  - fp32 (3xTF32 MMA): 64 x 32, so the Q, K, V tiles and the P staging tile fit in shared memory
//    at D = 256 (64*256*4 + 2*32*256*4 + 64*36*4 bytes = 137 KiB).
template <class Element, int kHeadDim>
struct FwdBlockShape {
  static constexpr bool kTf32 = std::is_same_v<Element, float>;
  static constexpr int kBlockM = kHeadDim == 128 && !kTf32 ? 128 : 64;
  static constexpr int kBlockN = kTf32 ? 32 : 64;
  static constexpr int kNWarps = 4;
};

// Launches the forward kernel on `grid` = (Q boxes, heads_q, batch). p.tile must be planned for
// FwdBlockShape<Element, kHeadDim>.
template <class Element, int kHeadDim>
void launch_fwd_sm80(const FwdParams& p, dim3 grid, cudaStream_t stream);

}  // namespace fna::cuda::fused
