// Kernel parameters of the Hopper forward (backend `cuda-hopper`). Host-safe: plain data only.
//
// The sm_80 parameters (FwdParams: pointers, strides, the neighborhood, the planned tile shapes)
// plus the TMA tensor maps, which live in a small device array written by the host before the
// launch (tma_maps_sm90.h): a CUtensorMap has at most 5 dims, and [D, Z, Y, X, H] of one batch
// and one dilation group already take them all, so each (batch, dilation group) gets its own maps.
#pragma once

#include "cuda/fused/common/fused_params.h"

namespace fna::cuda::fused {

// Index of a map in the device array: per (batch, group) kMapsPerGroup maps, then per batch
// kMapsPerBatchExtra maps of the additional KV tokens.
enum TmaMapSlot : int { kMapQ = 0, kMapK = 1, kMapV = 2, kMapsPerGroup = 3 };
enum TmaExtraSlot : int { kMapAddK = 0, kMapAddV = 1, kMapsPerBatchExtra = 2 };

struct FwdParamsSm90 {
  FwdParams base;
  const void* maps = nullptr;  // CUtensorMap[], 64-byte aligned, in device memory
  int groups = 1;              // dilation groups per batch: d0 * d1 * d2
};

}  // namespace fna::cuda::fused
