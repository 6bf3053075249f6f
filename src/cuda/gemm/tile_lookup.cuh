// Device-side geometry of the cuda-gemm kernels: which workspace slot each element of a
// (box rows x gathered columns) tile reads or writes.
//
// Both directions use the fused family's tile geometry (fused/common/tile_geometry.cuh) with one
// TileShape: boxes of q_shift rows and gathered tiles of kv_shift columns.
//  - Forward direction (scores, P V, dS K): rows are queries of a Q box, columns keys of a KV box
//    over the box's KV range. Row `row` attends column `col` iff the key lies in the query's
//    window; its slot is sum_r (key_r - window_start_r(row)) * slot_stride[r].
//  - Inverse direction (dS^T Q, P^T dO): rows are keys of a key box (the same boxes over the key
//    grid), columns queries of a query box over the range of queries attending the box. A key's
//    attending queries form an interval per axis (window starts and ends are non-decreasing), so
//    the same column masks apply with that interval in place of the window.
// Either way the slot of (row, col) in the fp32 workspace is row_base[row] + col_off[col], filled
// per tile into shared memory, with a 64-bit column mask per row.
#pragma once

#include <cstdint>

#include "cuda/fused/common/gather_copy.cuh"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/gemm/gemm_params.h"
#include "cuda/naive/naive_kernels.cuh"

namespace fna::cuda::gemm {

using fused::KvTile;
using fused::QBox;
using fused::RowWindow;

template <int kM, int kN>
struct TileLookup {
  int64_t row_base[kM];   // workspace offset of the row's part of a slot index
  uint64_t row_mask[kM];  // bit n: the row's element in column n is a real slot
  int64_t col_off[kN];    // the column's part
};

// Batch, heads and the workspace row block of a block's grid y index.
struct Heads {
  int64_t b;
  int hk;     // kv head
  int h;      // q head (forward direction)
  int64_t y;  // (unit - unit0) * group + gh: workspace rows y * tokens ...
};

__device__ __forceinline__ Heads forward_heads(const GemmParams& p, int64_t y) {
  const int64_t unit = p.unit0 + y / p.group;
  Heads hd;
  hd.b = unit / p.heads_kv;
  hd.hk = int(unit % p.heads_kv);
  hd.h = hd.hk * p.group + int(y % p.group);
  hd.y = y;
  return hd;
}

// Token index of group coordinates i[] in a box.
__device__ __forceinline__ int64_t box_token(const Neighborhood& nb, const QBox& box, const int* i,
                                             int* x) {
  int64_t t = 0;
  for (int r = 0; r < 3; ++r) {
    x[r] = box.coord(nb, r, i[r]);
    t = t * nb.axis[r].extent + x[r];
  }
  return t;
}

// A key box: rows as a Q box, the column range (kv_lo, kv_hi) the queries attending its keys.
__device__ __forceinline__ void make_key_box_axis(const Neighborhood& nb, const TileShape& t,
                                                  int index, int r, QBox* box) {
  if (!fused::make_q_box_axis(nb, t, index, r, box)) return;
  int64_t lo0, hi0, lo1, hi1;
  naive::attending_queries(nb.axis[r], box->coord(nb, r, box->i0[r]), &lo0, &hi0);
  naive::attending_queries(nb.axis[r], box->coord(nb, r, box->i0[r] + box->count[r] - 1), &lo1,
                           &hi1);
  box->kv_lo[r] = int(lo0);
  box->kv_hi[r] = int(hi1 > lo0 ? hi1 : lo0);
  box->full_lo[r] = int(lo1);
  box->full_hi[r] = int(hi0);
  const int kt = 1 << t.kv_shift[r];
  box->kv_tiles[r] = (box->kv_hi[r] - box->kv_lo[r] + kt - 1) / kt;
}

// Per-row setup of a forward-direction box: each row's window and workspace offset (-1: padding).
template <int kM, int kThreads>
__device__ __forceinline__ void setup_query_rows(const GemmParams& p, const QBox& box,
                                                 const Heads& hd, RowWindow* windows,
                                                 int64_t* row_ws) {
  for (int row = threadIdx.x; row < kM; row += kThreads) {
    windows[row] = fused::row_window(p.nb, p.tile, box, row);
    int i[3], x[3];
    const bool valid = fused::row_valid(p.tile, box, row, i);
    row_ws[row] = valid ? (hd.y * p.tokens + box_token(p.nb, box, i, x)) * p.slots : -1;
  }
}

// Per-row setup of a key box: the interval of attending queries per axis and the key's part of
// the slot index, sum_r key_r * slot_stride[r] (-1: padding).
template <int kM, int kThreads>
__device__ __forceinline__ void setup_key_rows(const GemmParams& p, const QBox& box,
                                               RowWindow* attending, int64_t* key_part) {
  for (int row = threadIdx.x; row < kM; row += kThreads) {
    int i[3];
    const bool valid = fused::row_valid(p.tile, box, row, i);
    int64_t part = 0;
    for (int r = 0; r < 3; ++r) {
      int64_t lo = 0, hi = 0;
      if (valid) naive::attending_queries(p.nb.axis[r], box.coord(p.nb, r, i[r]), &lo, &hi);
      attending[row].lo[r] = int(lo);
      attending[row].hi[r] = int(hi);
      part += int64_t(i[r]) * p.slot_stride[r];
    }
    key_part[row] = valid ? part : -1;
  }
}

// Box-local offsets (for `s`) and packed coordinates of the gathered tile's rows.
template <int kN, int kThreads>
__device__ __forceinline__ void setup_cols(const GemmParams& p, const TokenStrides& s,
                                           int64_t* local, int* coords) {
  for (int c = threadIdx.x; c < kN; c += kThreads) {
    local[c] = fused::kv_row_local_offset(p.nb, p.tile, s, c);
    coords[c] = fused::kv_row_packed_coords(p.tile, c);
  }
}

// Gathers gathered-side tile `tile` (spatial box `tile` < num_spatial over box's column range, or
// a slice of the additional KV tokens) into `dst`; rows past the range are zero-filled.
template <int kN, int kD, int kThreads, class Element, class Smem>
__device__ __forceinline__ void gather_tile(const GemmParams& p, const QBox& box, int tile,
                                            int num_spatial, const Element* spatial,
                                            const TokenStrides& ss, const Element* extra,
                                            const TokenStrides& es, const int64_t* local,
                                            const int* coords, int64_t b, int64_t h, Smem&& dst) {
  if (tile < num_spatial) {
    const fused::KvTileRows rows =
        fused::kv_tile_rows(p.nb, p.tile, box, fused::make_kv_tile(p.tile, box, tile), ss, b, h);
    fused::gather_rows<kN, kD, kThreads>(spatial, dst, p.aligned, [&](int row) {
      return fused::kv_row_offset(rows, coords[row], local[row]);
    });
  } else {
    const int first = (tile - num_spatial) * kN;
    fused::gather_rows<kN, kD, kThreads>(extra, dst, p.aligned, [&](int row) -> int64_t {
      const int a = first + row;
      if (a >= p.additional_kv) return -1;
      return b * es.b + int64_t(a) * es.x[0] + h * es.h;
    });
  }
}

// Forward direction: the lookup of tile `tile` for query rows (windows, row_ws from
// setup_query_rows).
template <int kM, int kN, int kThreads>
__device__ __forceinline__ void lookup_forward(const GemmParams& p, const QBox& box, int tile,
                                               int num_spatial, const RowWindow* windows,
                                               const int64_t* row_ws, const int* coords,
                                               TileLookup<kM, kN>* lut) {
  if (tile < num_spatial) {
    const KvTile kv = fused::make_kv_tile(p.tile, box, tile);
    for (int row = threadIdx.x; row < kM; row += kThreads) {
      const RowWindow& w = windows[row];
      int64_t base = row_ws[row];
      for (int r = 0; r < 3; ++r) base += int64_t(kv.base[r] - w.lo[r]) * p.slot_stride[r];
      lut->row_base[row] = base;
      lut->row_mask[row] = row_ws[row] < 0 ? 0 : fused::window_column_mask(p.tile, kv, w);
    }
    for (int c = threadIdx.x; c < kN; c += kThreads) {
      const int packed = coords[c];
      lut->col_off[c] = (packed & 1023) * p.slot_stride[0] +
                        ((packed >> 10) & 1023) * p.slot_stride[1] +
                        (packed >> 20) * p.slot_stride[2];
    }
  } else {
    const int first = (tile - num_spatial) * kN;
    const uint64_t mask =
        fused::low_bits(p.additional_kv - first < kN ? p.additional_kv - first : kN);
    for (int row = threadIdx.x; row < kM; row += kThreads) {
      lut->row_base[row] = row_ws[row] + p.spatial_slots + first;
      lut->row_mask[row] = row_ws[row] < 0 ? 0 : mask;
    }
    for (int c = threadIdx.x; c < kN; c += kThreads) lut->col_off[c] = c;
  }
}

// Inverse direction: the lookup of query tile `tile` of q head `gh` for key rows (attending,
// key_part from setup_key_rows).
template <int kM, int kN, int kThreads>
__device__ __forceinline__ void lookup_inverse(const GemmParams& p, const QBox& box, int tile,
                                               int gh, int64_t unit_local,
                                               const RowWindow* attending, const int64_t* key_part,
                                               const int* coords, TileLookup<kM, kN>* lut) {
  const KvTile kv = fused::make_kv_tile(p.tile, box, tile);
  for (int row = threadIdx.x; row < kM; row += kThreads) {
    lut->row_base[row] = key_part[row];
    lut->row_mask[row] =
        key_part[row] < 0 ? 0 : fused::window_column_mask(p.tile, kv, attending[row]);
  }
  for (int c = threadIdx.x; c < kN; c += kThreads) {
    const int packed = coords[c];
    const int l[3] = {packed & 1023, (packed >> 10) & 1023, packed >> 20};
    int64_t token = 0, start_part = 0;
    bool inside = true;
    for (int r = 0; r < 3; ++r) {
      const int i = kv.base[r] + l[r];
      inside = inside && i < box.kv_hi[r];
      int64_t s = 0, e = 0;
      if (inside) fna::window_in_group(p.nb.axis[r], box.lg[r], i, &s, &e);
      start_part += s * p.slot_stride[r];
      token = token * p.nb.axis[r].extent + box.coord(p.nb, r, i);
    }
    lut->col_off[c] =
        inside ? ((unit_local * p.group + gh) * p.tokens + token) * p.slots - start_part : 0;
  }
}

// Converts an fp32 weight to the shared-memory operand type (TF32 keeps all 32 bits: 3xTF32).
template <class SmemT>
__device__ __forceinline__ SmemT weight_to_smem(float w) {
  if constexpr (std::is_same_v<SmemT, cutlass::tfloat32_t>)
    return fused::to_smem<SmemT>(w);
  else
    return SmemT(w);
}

}  // namespace fna::cuda::gemm
