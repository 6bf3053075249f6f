// The tail split of the Hopper forward (fna issue 6): the rule and a launch's split. Host-only,
// no CUDA includes (fna::plan reports it in CPU-only builds); tested by
// tests/gpu/hopper_geometry_test.cpp (TailSplit*).
//
// The forward is persistent: `grid` blocks (one per SM) take the work items in waves. With E
// non-empty items, the last wave holds R = E mod grid items and grid - R SMs idle for one item
// time (seq-32k-blocked: 4096 items on 132 SMs = 31 waves + 4 items, ~3% of the time). Split
// instead each of those R items along its KV tiles into S chunks, run as extra work units of the
// same kernel, and merge the partial results (split_fwd_sm90.cuh).
//
// Model (kHopperCostModel, plan_sm90.h): an item costs a fixed o (planning, Q load, epilogue:
// t_item x 132 SMs = 5.4 us on the H100) plus its n tiles; seq-32k-blocked's 16-tile items take
// ~32 us, so o is ~17% of an item. A chunk of n / S tiles costs o + (1 - o) / S, plus the merge
// for the last chunk (S partials of 128 x D fp32 read from L2, less than a tile at S <= 16).
// The R x S units run in one wave while R x S <= grid, so the tail shrinks from 1 to
// o + (1 - o) / S + merge item times, which falls with every S that fits: S = min(grid / R, n),
// the most chunks that fit one wave, at least one tile each (n: the fewest tiles among the R
// items, so no chunk is empty). S < 2 (R > grid / 2): no split, the last wave is at least half
// full and a 2-way split would not fit in it. And no split unless the longest chunk is at least
// kMinSavedTiles tiles shorter than the item: a split launch also zeroes its counters (a memset
// on the stream, ~2 us) and merges, which a one-tile saving (~1.8 us at D = 128 on the H100:
// 4 x 128 x 128 x 128 FLOP at 603 / 132 TFLOP/s per SM) would not repay.
//
// The rule counts waves of the static round-robin. The kernel's default schedule is dynamic
// (scheduler_fwd_sm90.cuh: the next unit goes to the block that frees first): with equal items
// (the block-sparse cases this rule is for) both hand out the same units at the same times; with
// unequal ones the last wave is ragged rather than short, and the split units, last in the order,
// go to the blocks that free first, so the split still shortens the tail, by less than modelled.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_geometry.cuh"

namespace fna::cuda::fused {

inline constexpr int64_t kMinSavedTiles = 2;

// Chunks per item of the last wave (1: no split) for `nonempty_items` items on `grid` blocks,
// items of `tiles` KV tiles (additional-KV tiles included).
inline int tail_chunks(int64_t nonempty_items, int64_t grid, int64_t tiles) {
  if (grid <= 1 || nonempty_items <= 0) return 1;
  const int64_t r = nonempty_items % grid;
  if (r == 0) return 1;
  const int64_t s = std::min(grid / r, tiles);
  if (s < 2 || tiles - (tiles + s - 1) / s < kMinSavedTiles) return 1;
  return static_cast<int>(s);
}

// A launch's split (FwdParamsSm90's schedule fields): items [0, main_items) run whole, each item
// from main_items on as `chunks` units, one per KV chunk.
struct TailSplit {
  int64_t main_items = 0;
  int chunks = 1;
  int64_t units = 0;  // main_items + (items - main_items) * chunks
};

// Non-empty Q boxes per (batch, head): a box is non-empty iff it is on every axis, and axis r has
// sum over groups g of ceil(Lg / qt) non-empty box indices.
inline int64_t nonempty_boxes(const Neighborhood& nb, const TileShape& t) {
  int64_t boxes = 1;
  for (int r = 0; r < 3; ++r) {
    const Axis& a = nb.axis[r];
    const int64_t qt = int64_t{1} << t.q_shift[r];
    int64_t n = 0;
    for (int64_t g = 0; g < a.dilation; ++g) n += (group_length(a, g) + qt - 1) / qt;
    boxes *= n;
  }
  return boxes;
}

// The split of a launch of `grid` blocks over `boxes` Q boxes (all dilation groups) x
// `heads_batch` (item w = box w % boxes, params_fwd_sm90.h): the last nonempty % grid non-empty
// items are split when tail_chunks says so, into at most as many chunks as the fewest KV tiles
// among them (`kv_block` rows per KV tile: the additional-KV tiles count).
inline TailSplit plan_tail_split(const Neighborhood& nb, const TileShape& t, int64_t boxes,
                                 int64_t heads_batch, int additional_kv, int64_t grid,
                                 int kv_block) {
  const int64_t items = boxes * heads_batch;
  const TailSplit none{items, 1, items};
  const int64_t nonempty = nonempty_boxes(nb, t) * heads_batch;
  const int64_t tail = grid > 0 ? nonempty % grid : 0;
  if (tail == 0 || grid / tail < 2) return none;  // tail_chunks says 1 whatever the tiles
  // Walk back over the last `tail` non-empty items: the first of them and their fewest tiles
  // (consecutive items cycle through the boxes, so at most `boxes` distinct ones).
  const int add_tiles = (additional_kv + kv_block - 1) / kv_block;
  int64_t first = items;
  int64_t seen = 0;
  int64_t tiles = std::numeric_limits<int>::max();
  for (int64_t left = tail; left > 0;) {
    const int box_index = static_cast<int>(--first % boxes);
    if (!q_box_nonempty(nb, t, box_index)) continue;
    --left;
    if (seen++ < boxes) {
      QBox box;
      make_q_box(nb, t, box_index, &box);
      tiles = std::min<int64_t>(tiles, box.num_kv_tiles + add_tiles);
    }
  }
  const int chunks = tail_chunks(nonempty, grid, tiles);
  if (chunks == 1) return none;
  return TailSplit{first, chunks, first + (items - first) * chunks};
}

// Workspace layout (split_fwd_sm90.cuh; the kernel checks these against its register layout):
// per split unit kBlockM x D fp32 of O and an lse per consumer thread and accumulator row (2 rows
// x 256 threads), per split item a counter per consumer warp.
inline constexpr int kSplitLsePerUnit = 2 * 256;
inline constexpr int kSplitWarps = 8;

}  // namespace fna::cuda::fused
