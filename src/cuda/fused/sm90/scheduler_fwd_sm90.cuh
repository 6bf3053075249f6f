// Persistent schedule of the Hopper forward: which work units a block takes, in which order
// (params_fwd_sm90.h); host-callable for tests/gpu/hopper_geometry_test.cpp. Only the producer
// walks it: it hands each unit to the consumers through a slot in shared memory (ItemSlot,
// kernel_traits_fwd_sm90.cuh), so the consumers spend no per-item arithmetic on the schedule.
//
// Block x takes unit x first. Then, dynamic (p.next_unit set, the default: fna issue 6), the next
// unit nobody has taken: gridDim.x + an atomicAdd on a counter zeroed at launch, so the units go
// out in order to whichever block frees first (FlashAttention-3's scheduler). Units have unequal
// costs (edge boxes have fewer KV tiles) and the static round-robin (x + gridDim.x, ...) gave
// the busiest SM 1.03-1.24x the mean load where its stride lined up with the box grid's period;
// the dynamic one ends within about one unit of the mean (plan_sm90.h models it). Either way
// empty units (boxes past a dilation group's end) are skipped: the block takes the next.
#pragma once

#include <cstdint>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"

namespace fna::cuda::fused {

struct WorkItem {
  int box_index;  // Q box over all dilation groups (tile_geometry.cuh's `index`)
  int h;
  int64_t b;
};

FNA_DEVICE WorkItem work_item(const FwdParamsSm90& p, int64_t w) {
  const int64_t per_batch = int64_t(p.boxes) * p.base.heads_q;
  return WorkItem{int(w % p.boxes), int((w % per_batch) / p.boxes), w / per_batch};
}

// Whether item w's box (box_index = w % boxes) has queries (tile_geometry.cuh).
FNA_DEVICE bool item_nonempty(const FwdParamsSm90& p, int box_index) {
  return q_box_nonempty(p.base.nb, p.base.tile, box_index);
}

// Work unit u of the schedule (FwdParamsSm90): an item, and for a split item (w >= main_items)
// which of its KV chunks.
struct WorkUnit {
  int64_t item;
  int chunk;
};

// The split units are fewer than 2^31 (about one wave: split_fwd_sm90.h), so 32-bit division
// (a 64-bit one is a call whose registers made the 40-register producer spill).
FNA_DEVICE WorkUnit work_unit(const FwdParamsSm90& p, int64_t u) {
  if (u < p.main_items) return WorkUnit{u, 0};
  const int t = int(u - p.main_items);
  return WorkUnit{p.main_items + t / p.chunks, t % p.chunks};
}

// Whether unit u's item has queries.
FNA_DEVICE bool unit_nonempty(const FwdParamsSm90& p, int64_t u) {
  return item_nonempty(p, int(work_unit(p, u).item % p.boxes));
}

// Unit u if it is non-empty, else the first non-empty one of the units next(u), next(next(u)),
// ... (next: the block's next unit in either schedule), or a value >= p.units when none is left.
template <class Next>
FNA_DEVICE int64_t first_nonempty_unit(const FwdParamsSm90& p, int64_t u, Next&& next) {
  while (u < p.units && !unit_nonempty(p, u)) u = next(u);
  return u;
}

// First KV tile of chunk `chunk` of an item of `tiles` tiles run as `chunks` chunks: chunk c
// takes tiles [first(c), first(c + 1)), floor or ceil(tiles / chunks) of them, at least one
// (plan_tail_split, split_fwd_sm90.h, keeps chunks <= tiles for every split item).
FNA_DEVICE int chunk_first_tile(int tiles, int chunks, int chunk) { return chunk * tiles / chunks; }

}  // namespace fna::cuda::fused
