// Kernel parameters of the Hopper forward (backend `cuda-hopper`). Host-safe: plain data only.
//
// The sm_80 parameters (FwdParams: pointers, strides, the neighborhood, the planned tile shapes)
// plus the TMA tensor maps (tma_maps_sm90.h): a CUtensorMap has at most 5 dims, and
// [D, Z, Y, X, H] of one batch and one dilation group already take them all, so each (batch,
// dilation group) gets its own maps.
#pragma once

#include <cuda.h>

#include "cuda/fused/common/fused_params.h"

namespace fna::cuda::fused {

// Index of a map in the device array: per (batch, group) kMapsPerGroup maps, then per batch
// kMapsPerBatchExtra maps of the additional KV tokens.
enum TmaMapSlot : int { kMapQ = 0, kMapK = 1, kMapV = 2, kMapsPerGroup = 3 };
enum TmaExtraSlot : int { kMapAddK = 0, kMapAddV = 1, kMapsPerBatchExtra = 2 };

// Maps of most calls travel in the kernel parameters (__grid_constant__, no copy and no stream
// synchronization of a pageable upload): 32 maps = 4 KiB of parameters cover e.g. 10 batches
// without dilation. Larger sets go through a device array.
inline constexpr int kInlineMaps = 32;

struct FwdParamsSm90 {
  FwdParams base;
  const void* maps = nullptr;  // CUtensorMap[] in device memory, or null: inline_maps
  int map_count = 0;           // entries of `maps` (0 with inline_maps)
  CUtensorMap inline_maps[kInlineMaps];
  int groups = 1;  // dilation groups per batch: d0 * d1 * d2
  // Persistent schedule: work item w = (Q box w % boxes, head (w / boxes) % heads_q, batch
  // w / (boxes * heads_q)); block x takes items x, x + gridDim.x, ... Consecutive items are
  // neighbouring boxes of one head, so the blocks running at once share KV rows in L2.
  int boxes = 1;      // Q boxes per (batch, head), over all dilation groups
  int64_t items = 1;  // boxes * heads_q * batch
};

}  // namespace fna::cuda::fused
