// Score masks of the Hopper forward. KV tiles have up to 128 rows, twice what one 64-bit column
// mask (tile_geometry.cuh, window_column_mask) covers, so a 128-row tile is seen as two 64-row
// halves: the top bit of a box row index belongs to the outermost axis whose KV box extent is
// above 1, so each half is a box with that extent halved and its first key moved by the half.
#pragma once

#include <cstdint>

#include "cuda/fused/common/tile_geometry.cuh"

namespace fna::cuda::fused {

// Column masks of a KV tile of 1 << (sum of kv_shift) <= 128 rows for a row with window `w`:
// bit n of words[n / 64] is set when the row attends box row n.
FNA_DEVICE void window_column_mask_2x64(const TileShape& t, const KvTile& kv, const RowWindow& w,
                                        uint64_t* words) {
  const int total = t.kv_shift[0] + t.kv_shift[1] + t.kv_shift[2];
  if (total <= 6) {
    words[0] = window_column_mask(t, kv, w);
    words[1] = 0;
    return;
  }
  const int top = t.kv_shift[0] > 0 ? 0 : t.kv_shift[1] > 0 ? 1 : 2;
  // Compile-time indices only (a run-time index would put the structs in local memory).
  TileShape half = t;
  KvTile sub = kv;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r)
    if (r == top) half.kv_shift[r] -= 1;
  words[0] = window_column_mask(half, sub, w);
  FNA_UNROLL
  for (int r = 0; r < 3; ++r)
    if (r == top) sub.base[r] += 1 << half.kv_shift[r];
  words[1] = window_column_mask(half, sub, w);
}

}  // namespace fna::cuda::fused
