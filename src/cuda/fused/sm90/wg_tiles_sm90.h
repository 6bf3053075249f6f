// The spatial KV tiles each consumer warpgroup of the Hopper forward visits (fna issue 6). Host
// and device: the kernel (mainloop_fwd_sm90.cuh), the planner's count (wg_skip_count.h) and the
// host replay (tests/gpu/hopper_geometry_test.cpp) call the same functions.
//
// Warpgroup w holds rows [64 w, 64 w + 64) of the 128-row Q box. Rows are box-linear (last axis
// fastest), so the row index's top bit is the top bit of the outermost axis whose Q box extent is
// above 1: the two warpgroups hold the two halves of the box along that axis (the split axis) and
// the whole box on the others. A row's window is a product of per-axis windows and a
// warpgroup's rows are a product of per-axis coordinate ranges, so the keys its rows attend are
// the product of per-axis unions: a KV tile holds no (row, key) pair the warpgroup attends iff on
// some axis its keys miss that axis' union. On the shared axes that union is the box's whole KV
// range, which every tile meets, so only the split axis decides: the warpgroup visits the tiles
// whose coordinate on it lies in [lo, hi).
//
// The union on the split axis is [start(first row), end(last row)) exactly: window starts and
// ends never decrease with the query index (neighborhood.h) and consecutive windows overlap or
// touch (start(i + 1) <= end(i) since stride <= window), so the union of a run of queries has no
// gap. Padding rows (past the group end) are no queries: a half that holds only padding visits no
// spatial tile. The padding rows of a half with real ones compute the last real query's window
// (axis_window clamps), which lies inside the half's union, so they never need a skipped tile.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_geometry.cuh"

namespace fna::cuda::fused {

struct WgTiles {
  int split;  // bit r: the warpgroups split axis r (a bit, not an index: see column_mask_shape)
  int lo;     // spatial KV tiles with lo <= br[split axis] < hi are visited
  int hi;
};

// The split axis of a box of 2^(sum of q_shift) >= 2 rows, as a bit.
FNA_DEVICE int wg_split_bit(const TileShape& t) {
  return t.q_shift[0] > 0 ? 1 : t.q_shift[1] > 0 ? 2 : 4;
}

// Tiles [*lo, *hi) of one axis, in units of 2^kv_shift keys from kv_lo, that queries i0 + l for
// l in [l0, min(l1, count)) attend (an empty range when those are all padding).
FNA_DEVICE void wg_axis_tiles(const Axis& a, int64_t lg, int i0, int count, int kv_lo, int kv_shift,
                              int l0, int l1, int* lo, int* hi) {
  l1 = l1 < count ? l1 : count;
  if (l1 <= l0) {
    *lo = *hi = 0;
    return;
  }
  int64_t s0, e0, s1, e1;
  window_in_group(a, lg, i0 + l0, &s0, &e0);
  window_in_group(a, lg, i0 + l1 - 1, &s1, &e1);
  // s0 >= kv_lo: kv_lo is the start of the box's first query, and starts never decrease.
  *lo = int(s0 - kv_lo) >> kv_shift;
  *hi = (int(e1 - kv_lo) + (1 << kv_shift) - 1) >> kv_shift;
}

// Warpgroup `wg`'s (0 or 1) tiles of Q box `box`.
FNA_DEVICE WgTiles wg_tiles(const Neighborhood& nb, const TileShape& t, const QBox& box, int wg) {
  WgTiles w;
  w.split = wg_split_bit(t);
  // The split axis' inputs picked with compile-time indices (a run-time axis index would put the
  // per-axis arrays in local memory), then the two windows computed once.
  Axis a{};
  int64_t lg = 0;
  int i0 = 0, count = 0, kv_lo = 0, kv_shift = 0, half = 0;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    if ((w.split >> r) & 1) {
      a = nb.axis[r];
      lg = box.lg[r];
      i0 = box.i0[r];
      count = box.count[r];
      kv_lo = box.kv_lo[r];
      kv_shift = t.kv_shift[r];
      half = 1 << (t.q_shift[r] - 1);
    }
  }
  wg_axis_tiles(a, lg, i0, count, kv_lo, kv_shift, wg * half, (wg + 1) * half, &w.lo, &w.hi);
  return w;
}

// Whether the warpgroup visits spatial tile br (walk coordinates).
FNA_DEVICE bool wg_visits(const WgTiles& w, const int* br) {
  int b = 0;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r)
    if ((w.split >> r) & 1) b = br[r];
  return w.lo <= b && b < w.hi;
}

// Whether the warpgroup skips some spatial tile of the box.
FNA_DEVICE bool wg_skips_some(const WgTiles& w, const QBox& box) {
  int n = 0;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r)
    if ((w.split >> r) & 1) n = box.kv_tiles[r];
  return w.lo > 0 || w.hi < n;
}

}  // namespace fna::cuda::fused
