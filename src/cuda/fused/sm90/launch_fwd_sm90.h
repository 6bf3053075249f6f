// Declarations of the Hopper forward launchers and their block shape. Light: no CuTe kernel code,
// so the host side (hopper_backend.cpp) includes it; the definitions are instantiated by the
// generated files src/cuda/instances/hopper_fwd_hdim<D>_<dtype>_sm90a.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/plan_sm90.h"

namespace fna::cuda::fused {

// Launches the persistent forward kernel on `grid` blocks (at most p.items). p.base.tile must be
// planned for FwdBlockShapeSm90 and p.maps must hold the tensor maps (tma_maps_sm90.h).
template <class Element, int kHeadDim>
void launch_fwd_sm90(const FwdParamsSm90& p, dim3 grid, cudaStream_t stream);

}  // namespace fna::cuda::fused
