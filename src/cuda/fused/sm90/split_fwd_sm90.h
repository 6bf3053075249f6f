// The tail split rule of the Hopper forward (fna issue 6). Host-only plain arithmetic, tested by
// tests/gpu/hopper_geometry_test.cpp (TailSplitRule).
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
#pragma once

#include <algorithm>
#include <cstdint>

namespace fna::cuda::fused {

// Chunks per item of the last wave (1: no split) for `nonempty_items` items on `grid` blocks,
// items of `tiles` KV tiles (additional-KV tiles included).
inline constexpr int64_t kMinSavedTiles = 2;

inline int tail_chunks(int64_t nonempty_items, int64_t grid, int64_t tiles) {
  if (grid <= 1 || nonempty_items <= 0) return 1;
  const int64_t r = nonempty_items % grid;
  if (r == 0) return 1;
  const int64_t s = std::min(grid / r, tiles);
  if (s < 2 || tiles - (tiles + s - 1) / s < kMinSavedTiles) return 1;
  return static_cast<int>(s);
}

// Workspace layout (split_fwd_sm90.cuh; the kernel checks these against its register layout):
// per split unit kBlockM x D fp32 of O and an lse per consumer thread and accumulator row (2 rows
// x 256 threads), per split item a counter per consumer warp.
inline constexpr int kSplitLsePerUnit = 2 * 256;
inline constexpr int kSplitWarps = 8;

}  // namespace fna::cuda::fused
