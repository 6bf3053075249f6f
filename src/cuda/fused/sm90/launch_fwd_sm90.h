// Declarations of the Hopper forward launchers and their block shape. Light: no CuTe kernel code,
// so the host side (hopper_backend.cpp) includes it; the definitions are instantiated by the
// generated files src/cuda/instances/hopper_fwd_hdim<D>_<dtype>_sm90a.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/fused/sm90/params_fwd_sm90.h"

namespace fna::cuda::fused {

// Rows of a Q tile / KV tile. 128 x 128 for D = 64 and 128:
//  - 128 queries = two consumer warpgroups of 64 rows each (the wgmma M extent), the
//    FlashAttention-3 split: one warpgroup's softmax runs while the other's GEMMs use the
//    tensor cores.
//  - 128 keys: S is 64 fp32 registers per thread next to a 64-register O (D = 128); a 176-key
//    tile (FA3's dense choice) is not a power of two, which the box planner and the
//    bit-field column masks need.
struct FwdBlockShapeSm90 {
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 128;
};

// Launches the persistent forward kernel on `grid` blocks (at most p.items). p.base.tile must be
// planned for FwdBlockShapeSm90 and p.maps must hold the tensor maps (tma_maps_sm90.h).
template <class Element, int kHeadDim>
void launch_fwd_sm90(const FwdParamsSm90& p, dim3 grid, cudaStream_t stream);

}  // namespace fna::cuda::fused
