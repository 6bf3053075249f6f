// Persistent schedule of the Hopper forward: which work units a block takes, in which order
// (params_fwd_sm90.h); host-callable for tests/gpu/hopper_geometry_test.cpp. Only the producer
// walks it (units u = blockIdx.x, + gridDim.x, ..., skipping empty ones): it hands each unit to
// the consumers through a slot in shared memory (ItemSlot, kernel_traits_fwd_sm90.cuh), so the
// consumers spend no per-item arithmetic on the schedule.
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

// The first unit of this block at or after u (u steps by the grid size) whose item is non-empty,
// or a value >= p.units when none is left.
FNA_DEVICE int64_t next_nonempty_unit(const FwdParamsSm90& p, int64_t u, int64_t step) {
  while (u < p.units && !item_nonempty(p, int(work_unit(p, u).item % p.boxes))) u += step;
  return u;
}

// First KV tile of chunk `chunk` of an item of `tiles` tiles run as `chunks` chunks: chunk c
// takes tiles [first(c), first(c + 1)), floor or ceil(tiles / chunks) of them, at least one
// (plan_tail_split, split_fwd_sm90.h, keeps chunks <= tiles for every split item).
FNA_DEVICE int chunk_first_tile(int tiles, int chunks, int chunk) { return chunk * tiles / chunks; }

}  // namespace fna::cuda::fused
