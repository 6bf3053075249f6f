// Device-side tile geometry of the fused family, shared by the forward and backward kernels.
//
// Coordinates are per axis, in dilation-group coordinates: a token at coordinate x of an axis with
// dilation d lies in group g = x mod d at index i = x div d (DESIGN.md section 10). A Q box never
// mixes groups, so every key it visits is in the same group on every axis. Unused axes (r >= rank)
// have extent 1, window 1 and box extent 1, so loops over all 3 axes need no rank checks.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/fused_params.h"

namespace fna::cuda::fused {

// Host and device: the kernels call these, and tests/gpu/fused_geometry_test.cpp replays the
// kernels' tile walk with them on the CPU.
#if defined(__CUDACC__)
#define FNA_DEVICE __host__ __device__ __forceinline__
#define FNA_UNROLL _Pragma("unroll")
#else
#define FNA_DEVICE inline
#define FNA_UNROLL
#endif

// Box-local coordinates of row `row` of a box with extents 1 << shift[r] (row-major, last axis
// fastest).
FNA_DEVICE void box_coords(int row, const int* shift, int* l) {
  l[2] = row & ((1 << shift[2]) - 1);
  row >>= shift[2];
  l[1] = row & ((1 << shift[1]) - 1);
  row >>= shift[1];
  l[0] = row;
}

// Element offset of token (b, x[], h) in a token-major view. 64-bit throughout.
FNA_DEVICE int64_t token_offset(const TokenStrides& s, int64_t b, const int* x, int64_t h) {
  return b * s.b + h * s.h + int64_t(x[0]) * s.x[0] + int64_t(x[1]) * s.x[1] +
         int64_t(x[2]) * s.x[2];
}

// One Q box: its group, first index and valid extent per axis, and the KV ranges it needs.
struct QBox {
  int group[3];  // dilation group g per axis
  int lg[3];     // group length
  int i0[3];     // first query index (group coordinates)
  int count[3];  // valid queries per axis (the box may hang over the group end)
  int kv_lo[3];  // KV range [kv_lo, kv_hi): union of the windows of the box's queries
  int kv_hi[3];
  int full_lo[3];  // [full_lo, full_hi): keys every query of the box attends (may be empty)
  int full_hi[3];
  int kv_tiles[3];   // KV boxes per axis: ceil((kv_hi - kv_lo) / kt)
  int num_kv_tiles;  // product of kv_tiles (spatial KV tiles of this Q box)

  // Spatial coordinate of group index i on axis r.
  FNA_DEVICE int coord(const Neighborhood& nb, int r, int i) const {
    return i * int(nb.axis[r].dilation) + group[r];
  }
};

// Index of Q box `index` along axis r (0 .. d_r * q_tiles_r). Boxes of one group are adjacent
// in the index, so neighbouring blocks share KV rows in L2.
FNA_DEVICE int q_box_axis_index(const Neighborhood& nb, const TileShape& t, int index, int r) {
  for (int a = 2; a > r; --a) index /= int(nb.axis[a].dilation) * t.q_tiles[a];
  return index % (int(nb.axis[r].dilation) * t.q_tiles[r]);
}

// Fills axis r of Q box `index` (everything but num_kv_tiles). Returns false when the box lies
// entirely beyond its group's end on this axis (groups differ in length by at most one).
FNA_DEVICE bool make_q_box_axis(const Neighborhood& nb, const TileShape& t, int index, int r,
                                QBox* box) {
  const Axis& a = nb.axis[r];
  const int ai = q_box_axis_index(nb, t, index, r);
  const int g = ai / t.q_tiles[r];
  const int qt = 1 << t.q_shift[r];
  const int lg = int(group_length(a, g));
  const int i0 = (ai % t.q_tiles[r]) * qt;
  box->group[r] = g;
  box->lg[r] = lg;
  box->i0[r] = i0;
  if (i0 >= lg) {
    box->count[r] = 0;
    box->kv_lo[r] = box->kv_hi[r] = box->full_lo[r] = box->full_hi[r] = 0;
    box->kv_tiles[r] = 0;
    return false;
  }
  const int i1 = std::min(i0 + qt, lg) - 1;
  box->count[r] = i1 - i0 + 1;
  int64_t s0, e0, s1, e1;
  window_in_group(a, lg, i0, &s0, &e0);
  window_in_group(a, lg, i1, &s1, &e1);
  box->kv_lo[r] = int(s0);
  box->kv_hi[r] = int(e1);
  box->full_lo[r] = int(s1);
  box->full_hi[r] = int(e0);
  const int kt = 1 << t.kv_shift[r];
  box->kv_tiles[r] = (box->kv_hi[r] - box->kv_lo[r] + kt - 1) / kt;
  return true;
}

// All axes of Q box `index` in one thread.
FNA_DEVICE bool make_q_box(const Neighborhood& nb, const TileShape& t, int index, QBox* box) {
  bool nonempty = true;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) nonempty = make_q_box_axis(nb, t, index, r, box) && nonempty;
  box->num_kv_tiles = box->kv_tiles[0] * box->kv_tiles[1] * box->kv_tiles[2];
  return nonempty;
}

// The window of one query row, per axis, in group coordinates: keys j with lo[r] <= j < hi[r].
struct RowWindow {
  int lo[3];
  int hi[3];
};

// Window [lo, hi) on axis r of the queries at box-local coordinate l of that axis. Coordinates
// hanging over the group end are clamped to the last valid query, so their (discarded) scores
// stay finite. A row's window is the product of its coordinates' axis windows.
FNA_DEVICE void axis_window(const Neighborhood& nb, const QBox& box, int r, int l, int* lo,
                            int* hi) {
  const int i = box.i0[r] + std::min(l, box.count[r] - 1);
  int64_t s, e;
  window_in_group(nb.axis[r], box.lg[r], i, &s, &e);
  *lo = int(s);
  *hi = int(e);
}

// Window of Q-box row `row`.
FNA_DEVICE RowWindow row_window(const Neighborhood& nb, const TileShape& t, const QBox& box,
                                int row) {
  int l[3];
  box_coords(row, t.q_shift, l);
  RowWindow w;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) axis_window(nb, box, r, l[r], &w.lo[r], &w.hi[r]);
  return w;
}

// Whether Q-box row `row` is a real query (not padding past a group end).
FNA_DEVICE bool row_valid(const TileShape& t, const QBox& box, int row, int* i) {
  int l[3];
  box_coords(row, t.q_shift, l);
  bool ok = true;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    ok = ok && l[r] < box.count[r];
    i[r] = box.i0[r] + l[r];
  }
  return ok;
}

// Spatial KV tile `tile` (0 .. num_kv_tiles) of a Q box: the box's first key per axis. KV boxes
// start at the KV range's first key and step by the KV box extent.
struct KvTile {
  int base[3];   // first key index per axis (group coordinates)
  bool masked;   // false when every query of the Q box attends every key of this tile
  int straddle;  // bit r: on axis r the tile is not inside every query's window
};

// The KV tile at per-axis tile coordinates br[r] (0 .. box.kv_tiles[r]).
FNA_DEVICE KvTile kv_tile_at(const TileShape& t, const QBox& box, const int* br) {
  KvTile kv;
  kv.straddle = 0;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    const int kt = 1 << t.kv_shift[r];
    kv.base[r] = box.kv_lo[r] + br[r] * kt;
    if (kv.base[r] < box.full_lo[r] || kv.base[r] + kt > box.full_hi[r]) kv.straddle |= 1 << r;
  }
  kv.masked = kv.straddle != 0;
  return kv;
}

// Tile `tile` in walk order (last axis fastest).
FNA_DEVICE KvTile make_kv_tile(const TileShape& t, const QBox& box, int tile) {
  int br[3];
  FNA_UNROLL
  for (int r = 2; r >= 0; --r) {
    br[r] = tile % box.kv_tiles[r];
    tile /= box.kv_tiles[r];
  }
  return kv_tile_at(t, box, br);
}

// Advances tile coordinates br to the next tile in walk order (no divisions: a kernel walking
// the tiles in order keeps br instead of decoding each tile index).
FNA_DEVICE void next_kv_tile(const QBox& box, int* br) {
  if (++br[2] < box.kv_tiles[2]) return;
  br[2] = 0;
  if (++br[1] < box.kv_tiles[1]) return;
  br[1] = 0;
  ++br[0];
}

// Gathering a spatial KV tile. A box-local row's offset from the box's first key depends only on
// the box shape, dilations and strides (the same for every tile and block), so kernels keep it
// in shared memory; per tile only `first` (the first key's offset) and the range limits change.
FNA_DEVICE int64_t kv_row_local_offset(const Neighborhood& nb, const TileShape& t,
                                       const TokenStrides& s, int row) {
  int l[3];
  box_coords(row, t.kv_shift, l);
  int64_t o = 0;
  for (int r = 0; r < 3; ++r) o += int64_t(l[r]) * nb.axis[r].dilation * s.x[r];
  return o;
}

// Box-local coordinates of a KV row packed 10 bits per axis (KV boxes have at most 64 rows).
FNA_DEVICE int kv_row_packed_coords(const TileShape& t, int row) {
  int l[3];
  box_coords(row, t.kv_shift, l);
  return l[0] | (l[1] << 10) | (l[2] << 20);
}

struct KvTileRows {
  int64_t first;  // element offset of the tile's first key (batch and head included)
  int limit[3];   // rows whose local coordinate reaches limit[r] lie past the KV range
  bool inside;    // every row of the tile lies inside the KV range
};

FNA_DEVICE KvTileRows kv_tile_rows(const Neighborhood& nb, const TileShape& t, const QBox& box,
                                   const KvTile& kv, const TokenStrides& s, int64_t b, int64_t h) {
  KvTileRows rows;
  rows.first = b * s.b + h * s.h;
  rows.inside = true;
  for (int r = 0; r < 3; ++r) {
    rows.first += int64_t(box.coord(nb, r, kv.base[r])) * s.x[r];
    rows.limit[r] = box.kv_hi[r] - kv.base[r];
    rows.inside = rows.inside && rows.limit[r] >= (1 << t.kv_shift[r]);
  }
  return rows;
}

// The tile walk's offsets in one token-major view: KV box br of a Q box starts at
// origin + sum_r br[r] * step[r] (origin: the first key of the box's KV range). Computed once per
// Q box, they turn kv_tile_rows's per-tile 64-bit coordinate arithmetic into three multiply-adds.
struct KvWalkOffsets {
  int64_t origin;
  int64_t step[3];
};

FNA_DEVICE KvWalkOffsets kv_walk_offsets(const Neighborhood& nb, const TileShape& t,
                                         const QBox& box, const TokenStrides& s, int64_t b,
                                         int64_t h) {
  KvWalkOffsets w;
  w.origin = b * s.b + h * s.h;
  for (int r = 0; r < 3; ++r) {
    w.origin += int64_t(box.coord(nb, r, box.kv_lo[r])) * s.x[r];
    w.step[r] = (int64_t(nb.axis[r].dilation) << t.kv_shift[r]) * s.x[r];
  }
  return w;
}

// kv_tile_rows of the KV tile kv at walk coordinates br (kv == kv_tile_at(t, box, br)).
FNA_DEVICE KvTileRows kv_tile_rows_at(const TileShape& t, const QBox& box, const KvTile& kv,
                                      const KvWalkOffsets& w, const int* br) {
  KvTileRows rows;
  rows.first = w.origin;
  rows.inside = true;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    rows.first += br[r] * w.step[r];
    rows.limit[r] = box.kv_hi[r] - kv.base[r];
    rows.inside = rows.inside && rows.limit[r] >= (1 << t.kv_shift[r]);
  }
  return rows;
}

// Whether a tile row (packed coordinates) lies inside the KV range.
FNA_DEVICE bool kv_row_in_range(const KvTileRows& rows, int packed) {
  // Non-short-circuit & and |: selects instead of branches in the kernels' unrolled gathers.
  return rows.inside |
         (((packed & 1023) < rows.limit[0]) & (((packed >> 10) & 1023) < rows.limit[1]) &
          ((packed >> 20) < rows.limit[2]));
}

// Offset of a tile row from its packed coordinates and local offset, or -1 (zero-fill) when the
// row lies past the KV range.
FNA_DEVICE int64_t kv_row_offset(const KvTileRows& rows, int packed, int64_t local) {
  return kv_row_in_range(rows, packed) ? rows.first + local : -1;
}

// All-ones in the low k bits (k in 0..64).
FNA_DEVICE uint64_t low_bits(int k) { return k >= 64 ? ~uint64_t{0} : (uint64_t{1} << k) - 1; }

// Axis r's factor of a KV tile's column mask (bit n = box-local row n): the columns whose
// coordinate on axis r lies in the window [lo, hi), for a tile whose first key on that axis is
// `base`. In the row-major box, axis r's local coordinate occupies a bit field of the row index,
// so these columns form the pattern "bits [lo * inner, hi * inner) of every period" with
// inner = 2^(fields right of r) and period = inner * kt_r; the pattern is replicated over the
// tile with one multiplication. Needs a KV tile of at most 64 rows.
FNA_DEVICE uint64_t axis_column_mask(const TileShape& t, int r, int base, int lo, int hi) {
  int inner_shift = 0;
  FNA_UNROLL
  for (int a = 2; a > r; --a) inner_shift += t.kv_shift[a];
  const int kt_shift = t.kv_shift[r];
  lo = std::max(lo - base, 0);
  hi = std::min(hi - base, 1 << kt_shift);
  if (hi <= lo) return 0;
  const int period_shift = inner_shift + kt_shift;
  const uint64_t pattern = low_bits(hi << inner_shift) & ~low_bits(lo << inner_shift);
  // repeat = sum_k 2^(k * period) over the periods of a 64-bit word, by doubling
  uint64_t repeat = 1;
  for (int sh = 1 << period_shift; sh < 64; sh *= 2) repeat |= repeat << sh;
  return pattern * repeat;
}

// The mask of a KV tile's columns that a query with window `w` attends: the product of the
// per-axis masks. Axes on which the tile lies inside every query's window (kv.straddle bit clear)
// contribute all ones and are skipped.
FNA_DEVICE uint64_t window_column_mask(const TileShape& t, const KvTile& kv, const RowWindow& w) {
  uint64_t mask = ~uint64_t{0};
  FNA_UNROLL
  for (int r = 2; r >= 0; --r)
    if ((kv.straddle >> r) & 1) mask &= axis_column_mask(t, r, kv.base[r], w.lo[r], w.hi[r]);
  return mask;
}

}  // namespace fna::cuda::fused
