// (Spatial KV tile, consumer warpgroup) pairs the Hopper forward visits when each warpgroup skips
// the tiles none of its 64 rows attends (wg_tiles_sm90.h), for the planner's cost model. Host
// only, no CUDA includes (fna::plan works in CPU-only builds).
//
// Like tile_plan.h's counts this is a product over axes: the Q boxes are a Cartesian product of
// per-axis (group, box) choices and a box's tiles a product of per-axis tile counts. A warpgroup
// visits every tile of the box on the axes it shares with the other one and [lo, hi) on the
// split axis, so per (batch, head)
//   visited = prod_{r != split} T_r * sum over split-axis boxes of (hi_0 - lo_0) + (hi_1 - lo_1)
// with T_r = sum over axis r's boxes of its KV tiles; without skipping both warpgroups visit all
// of them: total = 2 * prod_r T_r. Additional-KV tiles (never skipped) are not counted.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/sm90/wg_tiles_sm90.h"

namespace fna::cuda::fused {

struct WgTilePairs {
  double visited = 0;  // (tile, warpgroup) pairs run with skipping
  double total = 0;    // without: 2 x the spatial tiles of every Q box
};

// Per (batch, head) of a problem with neighborhood nb run with tile shape t (Q boxes of
// 2^(sum q_shift) >= 2 rows, split between two warpgroups).
inline WgTilePairs wg_tile_pairs(const Neighborhood& nb, const TileShape& t) {
  const int split = wg_split_bit(t);
  double shared = 1, split_total = 0, split_visited = 0;
  for (int r = 0; r < 3; ++r) {
    const Axis& a = nb.axis[r];
    const int qt = 1 << t.q_shift[r], kv_shift = t.kv_shift[r];
    const bool is_split = (split >> r) & 1;
    double tiles = 0;
    for (int64_t g = 0; g < a.dilation; ++g) {
      const int64_t lg = group_length(a, g);
      for (int64_t i0 = 0; i0 < lg; i0 += qt) {
        const int count = static_cast<int>(min64(qt, lg - i0));
        int64_t s0, e0, s1, e1;
        window_in_group(a, lg, i0, &s0, &e0);
        window_in_group(a, lg, i0 + count - 1, &s1, &e1);
        const int64_t n = (e1 - s0 + (int64_t{1} << kv_shift) - 1) >> kv_shift;
        tiles += static_cast<double>(n);
        if (!is_split) continue;
        for (int wg = 0; wg < 2; ++wg) {
          int lo, hi;
          wg_axis_tiles(a, lg, static_cast<int>(i0), count, static_cast<int>(s0), kv_shift,
                        wg * qt / 2, (wg + 1) * qt / 2, &lo, &hi);
          split_visited += hi - lo;
        }
      }
    }
    if (is_split)
      split_total = tiles;
    else
      shared *= tiles;
  }
  return WgTilePairs{shared * split_visited, 2 * shared * split_total};
}

}  // namespace fna::cuda::fused
