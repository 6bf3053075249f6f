// Score masks of the Hopper forward. KV tiles have up to 128 rows, twice what one 64-bit column
// mask (tile_geometry.cuh, window_column_mask) covers, so a 128-row tile is seen as two 64-row
// halves: the top bit of a box row index belongs to the outermost axis whose KV box extent is
// above 1, so each half is a box with that extent halved and its first key moved by the half.
//
// Everything that depends only on the tile shape (each axis' bit field and the multiplier that
// replicates a pattern over a word) is computed once per launch (ColumnMaskShape); per tile and
// row only the window bounds relative to the tile change. The two halves share every axis but
// the split one, so those patterns are built once for both words.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/fused/common/tile_geometry.cuh"

namespace fna::cuda::fused {

// The launch-constant part of the masks of KV tiles of 1 << (sum of kv_shift) <= 128 rows.
struct ColumnMaskShape {
  int split;           // bit r: axis r is split into the two 64-row halves (0: <= 64 rows)
  int extent[3];       // KV box extent per axis within one word (the split axis halved)
  int inner_shift[3];  // axis r's field starts at bit inner_shift[r] of a word's row index
  uint64_t repeat[3];  // sum_k 2^(k * period_r): replicates an axis pattern over the word
};

FNA_DEVICE ColumnMaskShape column_mask_shape(const TileShape& t) {
  ColumnMaskShape m;
  const int total = t.kv_shift[0] + t.kv_shift[1] + t.kv_shift[2];
  const int top = total <= 6 ? -1 : t.kv_shift[0] > 0 ? 0 : t.kv_shift[1] > 0 ? 1 : 2;
  // A bit mask, not the axis index: a run-time `r == top` lets the compiler index the per-axis
  // arrays with `top`, which puts them in local memory.
  m.split = top < 0 ? 0 : 1 << top;
  int inner_shift = 0;
  FNA_UNROLL
  for (int r = 2; r >= 0; --r) {
    const int shift = t.kv_shift[r] - (r == top ? 1 : 0);
    m.extent[r] = 1 << shift;
    m.inner_shift[r] = inner_shift;
    inner_shift += shift;
    uint64_t repeat = 1;
    for (int sh = 1 << inner_shift; sh < 64; sh *= 2) repeat |= repeat << sh;
    m.repeat[r] = repeat;
  }
  return m;
}

// Bits [lo << inner_shift, hi << inner_shift) of a word (0 <= lo; hi <= extent, possibly < lo:
// no bits), replicated over the word.
FNA_DEVICE uint64_t axis_column_pattern(const ColumnMaskShape& m, int r, int lo, int hi) {
  const uint64_t pattern = low_bits(std::max(hi, 0) << m.inner_shift[r]) &
                           ~low_bits(std::min(lo, 64) << m.inner_shift[r]);
  return pattern * m.repeat[r];
}

// Column masks of a KV tile for a row with window `w`: bit n of words[n / 64] is set when the
// row attends box row n (words[1] = 0 for tiles of <= 64 rows). Axes on which the tile lies
// inside every query's window (kv.straddle bit clear) contribute all ones and are skipped.
FNA_DEVICE void window_column_mask_2x64(const ColumnMaskShape& m, const KvTile& kv,
                                        const RowWindow& w, uint64_t* words) {
  uint64_t shared = ~uint64_t{0}, half0 = ~uint64_t{0}, half1 = ~uint64_t{0};
  FNA_UNROLL
  for (int r = 2; r >= 0; --r) {
    if ((kv.straddle >> r) & 1) {
      const int lo = w.lo[r] - kv.base[r], hi = w.hi[r] - kv.base[r];
      const int e = m.extent[r];
      const uint64_t first = axis_column_pattern(m, r, std::max(lo, 0), std::min(hi, e));
      if ((m.split >> r) & 1) {
        // The second half starts `e` keys further on the split axis.
        half0 = first;
        half1 = axis_column_pattern(m, r, std::max(lo - e, 0), std::min(hi - e, e));
      } else {
        shared &= first;
      }
    }
  }
  words[0] = shared & half0;
  words[1] = m.split == 0 ? 0 : shared & half1;
}

}  // namespace fna::cuda::fused
