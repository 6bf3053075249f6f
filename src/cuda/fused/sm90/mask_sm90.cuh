// Score masks of the Hopper forward. KV tiles have up to 128 rows, twice what one 64-bit column
// mask (tile_geometry.cuh, window_column_mask) covers, so a 128-row tile is seen as two 64-row
// halves: the top bit of a box row index belongs to the outermost axis whose KV box extent is
// above 1, so each half is a box with that extent halved and its first key moved by the half.
//
// Everything that depends only on the tile shape (each axis' bit field and the multiplier that
// replicates a pattern over a word) is computed once per launch (ColumnMaskShape), and so is a
// table of every axis pattern a word can need; per item each lane computes one row's window
// relative to the KV range, per tile only the tile's offset in the range changes.
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

// Whether some spatial KV tile of the item is not attended entirely by every query of its box:
// a tile is masked iff it leaves [full_lo, full_hi) on some axis, so the item has one iff its KV
// range does. Items without one skip every mask (block-sparse cases: all of them).
FNA_DEVICE bool item_has_masked_tile(const TileShape& t, const QBox& box) {
  bool masked = false;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r)
    masked = masked || box.kv_lo[r] < box.full_lo[r] ||
             box.kv_lo[r] + (box.kv_tiles[r] << t.kv_shift[r]) > box.full_hi[r];
  return masked;
}

// x << s for s in [0, 64], 0 for s = 64 (C++ leaves that shift undefined; PTX shl clamps).
FNA_DEVICE uint64_t shl64_clamped(uint64_t x, int s) {
#if defined(__CUDA_ARCH__)
  uint64_t y;
  asm("shl.b64 %0, %1, %2;" : "=l"(y) : "l"(x), "r"(s));
  return y;
#else
  return s >= 64 ? 0 : x << s;
#endif
}

// ---- Quad-split words: the 4 lanes of a quad hold the same 2 rows, so each lane builds one of
// the quad's 2 rows x 2 words, from a per-item window, with no per-tile straddle test, and the
// quad swaps them.

// One row's window as one 64-bit mask word needs it: per axis, relative to the item's KV range
// start (QBox::kv_lo) and, on the split axis, to the first key of the word's half. Per item; per
// tile only the tile's offset in the KV range changes.
struct RowMaskWindow {
  int lo[3];
  int hi[3];
  bool empty;  // the second word of a tile of <= 64 rows: no columns
};

FNA_DEVICE RowMaskWindow row_mask_window(const ColumnMaskShape& m, const QBox& box,
                                         const RowWindow& w, int half) {
  RowMaskWindow rw;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    const int shift = box.kv_lo[r] + (((m.split >> r) & 1) ? half * m.extent[r] : 0);
    rw.lo[r] = w.lo[r] - shift;
    rw.hi[r] = w.hi[r] - shift;
  }
  rw.empty = half == 1 && m.split == 0;
  return rw;
}

// The first x << inner_shift[r] bits of every period of axis r (x in 0..extent[r]): with
// repeat = sum_k 2^(k * period), repeat * (2^(x << inner_shift) - 1) =
// (repeat << (x << inner_shift)) - repeat (mod 2^64; x = extent fills the word: the top copy
// shifts out and all ones remain).
FNA_DEVICE uint64_t axis_prefix(const ColumnMaskShape& m, int r, int x) {
  return shl64_clamped(m.repeat[r], x << m.inner_shift[r]) - m.repeat[r];
}

// Word `half` of the column mask of spatial KV tile br (walk coordinates) for a row: bit n is set
// when the row attends box row 64 * half + n. The product of one pattern per axis, "bits
// [a << inner_shift, b << inner_shift) of every period" = prefix(r, b) & ~prefix(r, a) with
// [a, b) the window clamped to the tile; prefix(r, x) = axis_prefix(m, r, x), read from the
// launch's table by the kernel (computing it costs ~15 instructions per axis; the host replay
// checks both). Every axis is evaluated, straddling or not (a tile inside the window on an axis
// gives all ones there): no per-tile straddle test, no branches.
template <class Prefix>
FNA_DEVICE uint64_t column_mask_word(const ColumnMaskShape& m, const TileShape& t,
                                     const RowMaskWindow& rw, const int* br, Prefix&& prefix) {
  uint64_t word = rw.empty ? 0 : ~uint64_t{0};
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    const int off = br[r] << t.kv_shift[r];
    const int a = std::min(std::max(rw.lo[r] - off, 0), m.extent[r]);
    const int b = std::max(std::min(rw.hi[r] - off, m.extent[r]), 0);
    word &= prefix(r, b) & ~prefix(r, a);
  }
  return word;
}

// The table: every axis_prefix of the launch in shared memory, axis r's at offset[r] + x.
// The extents of one word multiply to <= 64, so there are at most 64 + 1 + 1 + 3 = 69 entries
// (72: a whole number of 64-byte lines; 576 bytes of the 1 KiB the 3-stage D = 128 storage
// leaves free).
inline constexpr int kMaskTableWords = 72;

FNA_DEVICE void mask_table_offsets(const ColumnMaskShape& m, int* offset) {
  offset[0] = 0;
  offset[1] = m.extent[0] + 1;
  offset[2] = offset[1] + m.extent[1] + 1;
}

FNA_DEVICE int mask_table_entries(const ColumnMaskShape& m) {
  return m.extent[0] + m.extent[1] + m.extent[2] + 3;
}

// Entry k of the table (0 <= k < mask_table_entries). Axis by axis with a compile-time r: a
// run-time axis index would put ColumnMaskShape in local memory.
FNA_DEVICE uint64_t mask_table_entry(const ColumnMaskShape& m, int k) {
  uint64_t entry = 0;
  FNA_UNROLL
  for (int r = 0; r < 3; ++r) {
    if (k >= 0 && k <= m.extent[r]) entry = axis_prefix(m, r, k);
    k -= m.extent[r] + 1;
  }
  return entry;
}

}  // namespace fna::cuda::fused
