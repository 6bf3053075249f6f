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
  // w / (boxes * heads_q)); block x takes item x first, then the next ones (next_unit below).
  // Consecutive items are neighbouring boxes of one head, so the blocks running at once share KV
  // rows in L2 (both schedules hand the units out in this order).
  int boxes = 1;      // Q boxes per (batch, head), over all dilation groups
  int64_t items = 1;  // boxes * heads_q * batch
  // Tail split (split_fwd_sm90.h): blocks take work units, not items. Units below
  // main_items are whole items (u = w); each item w >= main_items runs as `chunks` units, one
  // per KV chunk, u = main_items + (w - main_items) * chunks + chunk. No split: chunks = 1,
  // main_items = units = items.
  int64_t main_items = 1;
  int chunks = 1;
  int64_t units = 1;
  // Chunk partials of the split items, per unit q = (w - main_items) * chunks + chunk: O
  // normalized by the chunk's row sum and the chunk's lse, in the consumer threads' register
  // order (split_fwd_sm90.cuh); and per (split item, consumer warp) a count of finished chunks,
  // zero at launch. Null without a split.
  float* split_o = nullptr;
  float* split_lse = nullptr;
  int* split_done = nullptr;
  // Dynamic schedule (scheduler_fwd_sm90.cuh): units taken after the first wave, counted from
  // zero at launch; null: the static round-robin (block x takes x, x + gridDim.x, ...).
  unsigned long long* next_unit = nullptr;
};

}  // namespace fna::cuda::fused
