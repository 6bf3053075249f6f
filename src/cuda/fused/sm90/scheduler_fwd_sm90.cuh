// Persistent schedule of the Hopper forward: which work units a block takes, in which order
// (params_fwd_sm90.h); host-callable for tests/gpu/hopper_geometry_test.cpp. Only the producer
// walks it (units u = blockIdx.x, + gridDim.x, ..., skipping empty ones): it hands each unit to
// the consumers through a slot in shared memory (ItemSlot, kernel_traits_fwd_sm90.cuh), so the
// consumers spend no per-item arithmetic on the schedule.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/split_fwd_sm90.h"

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

// False for a Q box entirely past its group's end on some axis (groups differ in length by one,
// so the box grid of the longest group leaves such boxes in the shorter ones).
FNA_DEVICE bool item_nonempty(const FwdParamsSm90& p, int box_index) {
  const Neighborhood& nb = p.base.nb;
  const TileShape& ts = p.base.tile;
  bool nonempty = true;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    const int ai = q_box_axis_index(nb, ts, box_index, r);
    const int g = ai / ts.q_tiles[r];
    const int i0 = (ai % ts.q_tiles[r]) << ts.q_shift[r];
    nonempty = nonempty && i0 < group_length(nb.axis[r], g);
  }
  return nonempty;
}

// Work unit u of the schedule (FwdParamsSm90): an item, and for a split item (w >= main_items)
// which of its KV chunks.
struct WorkUnit {
  int64_t item;
  int chunk;
};

// The split units are fewer than 2^31 (about one wave: plan_tail_split), so 32-bit division
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
// (plan_tail_split keeps chunks <= tiles for every split item).
FNA_DEVICE int chunk_first_tile(int tiles, int chunks, int chunk) { return chunk * tiles / chunks; }

// ---- host: the tail split of a launch (the rule: split_fwd_sm90.h) ----------------------------

// Non-empty items of the launch: a box is non-empty iff it is on every axis, and axis r has
// sum over groups g of ceil(Lg / qt) non-empty box indices.
inline int64_t nonempty_items(const FwdParamsSm90& p) {
  int64_t boxes = 1;
  for (int r = 0; r < 3; ++r) {
    const Axis& a = p.base.nb.axis[r];
    const int64_t qt = int64_t{1} << p.base.tile.q_shift[r];
    int64_t n = 0;
    for (int64_t g = 0; g < a.dilation; ++g) n += (group_length(a, g) + qt - 1) / qt;
    boxes *= n;
  }
  return boxes * p.base.heads_q * p.base.batch;
}

// Sets p.main_items, p.chunks and p.units for a launch of `grid` blocks (p.items, p.boxes and
// p.base filled): the last nonempty_items % grid non-empty items are split when the rule says
// so, into at most as many chunks as the fewest KV tiles among them. `kv_block` = rows of a KV
// tile (the additional-KV tiles count).
inline void plan_tail_split(FwdParamsSm90& p, int64_t grid, int kv_block) {
  p.main_items = p.units = p.items;
  p.chunks = 1;
  const int64_t items = nonempty_items(p);
  const int64_t tail = grid > 0 ? items % grid : 0;
  if (tail == 0 || grid / tail < 2) return;  // tail_chunks would say 1 whatever the tiles
  // Walk back over the last `tail` non-empty items: the first of them and their fewest tiles
  // (consecutive items cycle through the boxes, so at most `boxes` distinct ones).
  const int add_tiles = (p.base.additional_kv + kv_block - 1) / kv_block;
  int64_t first = p.items;
  int64_t seen = 0;
  int64_t tiles = std::numeric_limits<int>::max();
  for (int64_t left = tail; left > 0;) {
    --first;
    const int box_index = int(first % p.boxes);
    if (!item_nonempty(p, box_index)) continue;
    --left;
    if (seen++ < p.boxes) {
      QBox box;
      make_q_box(p.base.nb, p.base.tile, box_index, &box);
      tiles = std::min<int64_t>(tiles, box.num_kv_tiles + add_tiles);
    }
  }
  const int chunks = tail_chunks(items, grid, tiles);
  if (chunks == 1) return;
  p.main_items = first;
  p.chunks = chunks;
  p.units = first + (p.items - first) * chunks;
}

}  // namespace fna::cuda::fused
