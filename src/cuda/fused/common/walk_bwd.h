// Tile walks of the fused backward (host and device): tiles as boxes of one dilation group, the
// grid decode of both gradient kernels, the Q tiles a KV tile meets (inverse neighborhood) and the
// KV tiles a Q tile meets, and the no-mask test. The kernels call these; tests replay them on the
// host (tests/gpu/fused_bwd_geometry_test.cpp). Per-iteration math is 32-bit: the backend refuses
// extents past 2^30, and 64-bit division inside the kernels' loops costs hundreds of cycles.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/geometry_bwd.h"
#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused {

FNA_HD int min32(int a, int b) { return a < b ? a : b; }
FNA_HD int max32(int a, int b) { return a > b ? a : b; }

// A tile's tokens: a box of one dilation group (spatial) or a run of additional tokens. Rows are
// numbered row-major over the box. Rows outside the grid (or past nadd) are invalid.
struct TileRows {
  bool additional = false;
  int64_t start[3] = {0, 0, 0};  // group coordinates (spatial) / first token in start[0]
  int64_t glen[3] = {1, 1, 1};   // group lengths (spatial) / nadd in glen[0]
  int group[3] = {0, 0, 0};
  int shape[3] = {1, 1, 1};

  // Group coordinates of a row (spatial) or the token in i[0] (additional); false if invalid.
  FNA_HD bool coords(int row, int64_t* i) const {
    if (additional) {
      i[0] = start[0] + row;
      i[1] = i[2] = 0;
      return i[0] < glen[0];
    }
    const int c2 = row % shape[2];
    const int rest = row / shape[2];
    i[2] = start[2] + c2;
    i[1] = start[1] + rest % shape[1];
    i[0] = start[0] + rest / shape[1];
    return i[0] < glen[0] && i[1] < glen[1] && i[2] < glen[2];
  }
  // Grid coordinates of a valid spatial row's token: x = i * dilation + group per axis.
  FNA_HD void grid_coords(const Neighborhood& nb, const int64_t* i, int64_t* x) const {
    for (int r = 0; r < 3; ++r) x[r] = i[r] * nb.axis[r].dilation + group[r];
  }
};

FNA_HD TileRows spatial_tile(const Neighborhood& nb, const int* group, const int64_t* start,
                             const int* shape) {
  TileRows t;
  for (int r = 0; r < 3; ++r) {
    t.group[r] = group[r];
    t.start[r] = start[r];
    t.shape[r] = shape[r];
    t.glen[r] = group_length(nb.axis[r], group[r]);
  }
  return t;
}

FNA_HD TileRows additional_tile(int64_t first, int64_t nadd, int rows) {
  TileRows t;
  t.additional = true;
  t.start[0] = first;
  t.glen[0] = nadd;
  t.shape[0] = rows;
  return t;
}

// window_in_group in 32-bit arithmetic.
FNA_HD void window32(const Axis& a, int lg, int i, int* start, int* end) {
  const int k = static_cast<int>(a.window), s = static_cast<int>(a.stride);
  if (a.causal) {
    const int lead = min32((i / s) * s + s - 1, lg - 1);
    *start = max32(lead - k + 1, 0);
    *end = min32(i + 1, lg);
  } else {
    const int left = k / 2, right = k - 1 - left;
    const int lead = min32((i / s) * s + s / 2, lg - 1);
    int st = max32(lead - left, 0);
    if (lead + right >= lg) st = lg - k;
    *start = st;
    *end = st + k;
  }
}

// A walk over tiles: per axis, `groups` dilation groups from `group0`, `tiles` boxes per group
// from group coordinate `start`; `count` tiles in total.
struct TileWalk {
  int group0[3], groups[3], start[3], tiles[3];
  int count;
};

FNA_HD TileRows walk_tile(const Neighborhood& nb, const TileWalk& w, const int* box, int idx) {
  int group[3];
  int64_t start[3];
  for (int r = 2; r >= 0; --r) {
    const int c = w.groups[r] * w.tiles[r];
    const int ir = idx % c;
    idx /= c;
    group[r] = w.group0[r] + ir / w.tiles[r];
    start[r] = w.start[r] + (ir % w.tiles[r]) * box[r];
  }
  return spatial_tile(nb, group, start, box);
}

// Axis part of tile_inside_windows: whether every query of [qa, qa + qshape) attends every key
// of [ka, ka + kshape) on this axis (both clipped to the group's length lg).
FNA_HD bool axis_inside_windows(const Axis& a, int lg, int qa, int qshape, int ka, int kshape) {
  const int qb = min32(qa + qshape - 1, lg - 1), kb = min32(ka + kshape - 1, lg - 1);
  if (qa > qb || ka > kb) return false;
  int sa, ea, sb, eb;
  window32(a, lg, qa, &sa, &ea);
  window32(a, lg, qb, &sb, &eb);
  return sb <= ka && kb < ea;
}

// Whether every valid query of `qt` attends every valid key of `kt` (same group): no mask needed.
// Invalid queries have lse = +inf (P = 0) and invalid keys zero rows, so they need none.
FNA_HD bool tile_inside_windows(const Neighborhood& nb, const TileRows& qt, const TileRows& kt) {
  for (int r = 0; r < 3; ++r)
    if (!axis_inside_windows(nb.axis[r], static_cast<int>(qt.glen[r]),
                             static_cast<int>(qt.start[r]), qt.shape[r],
                             static_cast<int>(kt.start[r]), kt.shape[r]))
      return false;
  return true;
}

// walk_tile(nb, w, box, idx) for idx = 0, 1, 2, ... with no division per step (the dK/dV
// kernel's loop advances it once per Q tile; walk_tile's decode costs ~9 integer divisions per
// iteration and thread): per axis a tile digit (fastest) and a group digit, axis 2 fastest.
struct WalkCursor {
  int tile[3] = {0, 0, 0}, group_digit[3] = {0, 0, 0};
  int start[3], group[3], glen[3];  // the current tile (group coordinates, group, group length)

  FNA_HD WalkCursor(const Neighborhood& nb, const TileWalk& w) {
    for (int r = 0; r < 3; ++r) {
      start[r] = w.start[r];
      set_group(nb, w, r);
    }
  }
  // Moves to the next tile; true when the walk wrapped around to its first tile. A carry instead
  // of an early return keeps every array index a constant (registers, not a local-memory array).
  FNA_HD bool next(const Neighborhood& nb, const TileWalk& w, const int* box) {
    bool carry = true;
    for (int r = 2; r >= 0; --r) {
      if (!carry) continue;
      if (++tile[r] < w.tiles[r]) {
        start[r] += box[r];
        carry = false;
        continue;
      }
      tile[r] = 0;
      start[r] = w.start[r];
      if (w.groups[r] > 1) {  // walks over every group (additional-token KV tiles) only
        group_digit[r] = group_digit[r] + 1 < w.groups[r] ? group_digit[r] + 1 : 0;
        set_group(nb, w, r);
        carry = group_digit[r] == 0;
      }
    }
    return carry;
  }
  FNA_HD TileRows rows(const int* box) const {
    TileRows t;
    for (int r = 0; r < 3; ++r) {
      t.start[r] = start[r];
      t.glen[r] = glen[r];
      t.group[r] = group[r];
      t.shape[r] = box[r];
    }
    return t;
  }

 private:
  FNA_HD void set_group(const Neighborhood& nb, const TileWalk& w, int r) {
    const int d = static_cast<int>(nb.axis[r].dilation);
    group[r] = w.group0[r] + group_digit[r];
    glen[r] = (static_cast<int>(nb.axis[r].extent) - group[r] + d - 1) / d;
  }
};

// The Q tiles of walk `w` (boxes `box`) that need no mask against KV tile `kt`: per axis the tile
// digits in [lo[r], hi[r]] (empty when lo > hi). Window start and end are non-decreasing in the
// query, so on each axis the tiles inside every key's window form an interval, and
// tile_inside_windows(walk tile, kt) holds iff every axis' digit lies in its interval. Additional
// tokens are attended by every query: the whole walk is unmasked.
FNA_HD void unmasked_tiles(const Neighborhood& nb, const TileWalk& w, const int* box,
                           const TileRows& kt, int* lo, int* hi) {
  for (int r = 0; r < 3; ++r) {
    lo[r] = 0;
    hi[r] = kt.additional ? w.tiles[r] : -1;
    if (kt.additional) continue;
    const int lg = static_cast<int>(kt.glen[r]);
    bool found = false;
    for (int t = 0; t < w.tiles[r]; ++t) {
      if (!axis_inside_windows(nb.axis[r], lg, w.start[r] + t * box[r], box[r],
                               static_cast<int>(kt.start[r]), kt.shape[r]))
        continue;
      if (!found) lo[r] = t;
      found = true;
      hi[r] = t;
    }
  }
}

// Box `x` of a grid of boxes of extent `box` over every dilation group (`tiles` boxes per group
// per axis); false when it lies past a shorter group (no tokens).
FNA_HD bool grid_tile(const Neighborhood& nb, const int64_t* tiles, const int* box, int64_t x,
                      TileRows* t) {
  int group[3];
  int64_t start[3];
  for (int r = 2; r >= 0; --r) {
    const int64_t c = nb.axis[r].dilation * tiles[r];
    const int64_t ir = x % c;
    x /= c;
    group[r] = static_cast<int>(ir / tiles[r]);
    start[r] = (ir % tiles[r]) * box[r];
  }
  *t = spatial_tile(nb, group, start, box);
  for (int r = 0; r < 3; ++r)
    if (t->start[r] >= t->glen[r]) return false;
  return true;
}

// The dK/dV kernel's KV tile for grid index x: additional tokens first (their CTAs walk every
// query, so they start early), then spatial boxes. False when the box holds no keys.
FNA_HD bool kv_tile_of_block(const BwdParams& p, int64_t x, TileRows* kt) {
  if (x < p.add_tiles) {
    *kt = additional_tile(x * kBwdTileRows, p.nadd, kBwdTileRows);
    return true;
  }
  return grid_tile(p.nb, p.kv_tiles, p.kv_kbox, x - p.add_tiles, kt);
}

// The dQ kernel's Q tile for grid index x. False when the box holds no queries.
FNA_HD bool q_tile_of_block(const BwdParams& p, int64_t x, TileRows* qt) {
  return grid_tile(p.nb, p.dq_tiles, p.dq_qbox, x, qt);
}

// The Q tiles (boxes of p.kv_qbox) whose queries' windows meet KV tile `kt`: per axis the inverse
// neighborhood of its keys (every query of every group for additional tokens).
FNA_HD TileWalk query_walk(const BwdParams& p, const TileRows& kt) {
  TileWalk w;
  w.count = 1;
  for (int r = 0; r < 3; ++r) {
    const Axis& a = p.nb.axis[r];
    if (kt.additional) {
      w.group0[r] = 0;
      w.groups[r] = static_cast<int>(a.dilation);
      w.start[r] = 0;
      w.tiles[r] = static_cast<int>(ceil_div(ceil_div(a.extent, a.dilation), p.kv_qbox[r]));
    } else {
      int64_t qlo, qhi;
      inverse_window(a, kt.glen[r], kt.start[r],
                     min64(kt.start[r] + kt.shape[r] - 1, kt.glen[r] - 1), &qlo, &qhi);
      w.group0[r] = kt.group[r];
      w.groups[r] = 1;
      w.start[r] = static_cast<int>(qlo);
      w.tiles[r] = qlo <= qhi ? static_cast<int>(ceil_div(qhi - qlo + 1, p.kv_qbox[r])) : 0;
    }
    w.count *= w.groups[r] * w.tiles[r];
  }
  return w;
}

// The spatial KV tiles (boxes of p.dq_kbox) covering Q tile `qt`'s KV range, per axis
// [start(first query), end(last valid query)).
FNA_HD TileWalk key_walk(const BwdParams& p, const TileRows& qt) {
  TileWalk w;
  w.count = 1;
  for (int r = 0; r < 3; ++r) {
    const int64_t lg = qt.glen[r];
    int64_t s0, e0, s1, e1;
    window_in_group(p.nb.axis[r], lg, qt.start[r], &s0, &e0);
    window_in_group(p.nb.axis[r], lg, min64(qt.start[r] + qt.shape[r] - 1, lg - 1), &s1, &e1);
    w.group0[r] = qt.group[r];
    w.groups[r] = 1;
    w.start[r] = static_cast<int>(s0);
    w.tiles[r] = static_cast<int>(ceil_div(e1 - s0, p.dq_kbox[r]));
    w.count *= w.tiles[r];
  }
  return w;
}

}  // namespace fna::cuda::fused
