// Device helpers of the fused backward: tiles as boxes of one dilation group, their rows' global
// offsets, and row copies between strided global memory and (swizzled) shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused {

// A tile's tokens: a box of one dilation group (spatial) or a run of additional tokens. Rows are
// numbered row-major over the box. Rows outside the grid (or past nadd) are invalid.
struct TileRows {
  bool additional = false;
  int64_t start[3] = {0, 0, 0};  // group coordinates (spatial) / first token in start[0]
  int64_t glen[3] = {1, 1, 1};   // group lengths (spatial) / nadd in glen[0]
  int group[3] = {0, 0, 0};
  int shape[3] = {1, 1, 1};

  // Group coordinates of a row (spatial) or the token in i[0] (additional); false if invalid.
  __device__ __forceinline__ bool coords(int row, int64_t* i) const {
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
};

__device__ __forceinline__ TileRows spatial_tile(const Neighborhood& nb, const int* group,
                                                 const int64_t* start, const int* shape) {
  TileRows t;
  for (int r = 0; r < 3; ++r) {
    t.group[r] = group[r];
    t.start[r] = start[r];
    t.shape[r] = shape[r];
    t.glen[r] = group_length(nb.axis[r], group[r]);
  }
  return t;
}

__device__ __forceinline__ TileRows additional_tile(int64_t first, int64_t nadd, int rows) {
  TileRows t;
  t.additional = true;
  t.start[0] = first;
  t.glen[0] = nadd;
  t.shape[0] = rows;
  return t;
}

// Element offset of a row of `view` (batch b, head h) and its token index; false if invalid.
__device__ __forceinline__ bool row_offset(const Neighborhood& nb, const TileRows& t,
                                           const RowView& view, int64_t b, int64_t h, int row,
                                           int64_t* offset, int64_t* token) {
  int64_t i[3];
  if (!t.coords(row, i)) return false;
  int64_t off = b * view.sb + h * view.sh;
  if (t.additional) {
    off += i[0] * view.sx[0];
    *token = i[0];
  } else {
    int64_t x[3];
    for (int r = 0; r < 3; ++r) {
      x[r] = i[r] * nb.axis[r].dilation + t.group[r];
      off += x[r] * view.sx[r];
    }
    *token = nb.token(x);
  }
  *offset = off;
  return true;
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0 source bytes: the 16 destination bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}

// Copies the tile's rows of `view` (head h of batch b) into the (kRows, kHeadDim) shared tensor
// `s`; invalid rows are zero-filled, so masked products never meet NaN. 16-byte cp.async when
// every row is aligned (the caller fences and waits), else element copies.
template <int kRows, int kHeadDim, int kThreads, class Element, class SmemTensor>
__device__ __forceinline__ void load_rows(SmemTensor s, const Neighborhood& nb, const TileRows& t,
                                          const RowView& view, int64_t b, int64_t h, bool vec) {
  constexpr int kChunk = 16 / sizeof(Element);
  constexpr int kChunksPerRow = kHeadDim / kChunk;
  static_assert(kThreads % kChunksPerRow == 0, "a pass covers whole rows");
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  const Element* base = static_cast<const Element*>(view.ptr);
  const int col = (threadIdx.x % kChunksPerRow) * kChunk;
#pragma unroll 1
  for (int row = threadIdx.x / kChunksPerRow; row < kRows; row += kRowsPerPass) {
    int64_t off = 0, token;
    const bool valid = row_offset(nb, t, view, b, h, row, &off, &token);
    Element* dst = &s(row, col);
    if (vec) {
      cp_async_16(dst, valid ? base + off + col : base, valid);
    } else {
#pragma unroll
      for (int e = 0; e < kChunk; ++e) dst[e] = valid ? base[off + col + e] : Element(0.f);
    }
  }
}

// Writes the valid rows of the (kRows, kHeadDim) shared tensor `s` to `view`.
template <int kRows, int kHeadDim, int kThreads, class Element, class SmemTensor>
__device__ __forceinline__ void store_rows(SmemTensor s, const Neighborhood& nb, const TileRows& t,
                                           const RowView& view, int64_t b, int64_t h, bool vec) {
  constexpr int kChunk = 16 / sizeof(Element);
  constexpr int kChunksPerRow = kHeadDim / kChunk;
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  Element* base = static_cast<Element*>(view.ptr);
  const int col = (threadIdx.x % kChunksPerRow) * kChunk;
#pragma unroll 1
  for (int row = threadIdx.x / kChunksPerRow; row < kRows; row += kRowsPerPass) {
    int64_t off = 0, token;
    if (!row_offset(nb, t, view, b, h, row, &off, &token)) continue;
    const Element* src = &s(row, col);
    if (vec) {
      *reinterpret_cast<uint4*>(base + off + col) = *reinterpret_cast<const uint4*>(src);
    } else {
#pragma unroll
      for (int e = 0; e < kChunk; ++e) base[off + col + e] = src[e];
    }
  }
}

// window_in_group in 32-bit arithmetic (the backend refuses extents past 2^30), for per-row and
// per-tile use inside the kernels' loops, where 64-bit division would cost hundreds of cycles.
__device__ __forceinline__ void window32(const Axis& a, int lg, int i, int* start, int* end) {
  const int k = static_cast<int>(a.window), s = static_cast<int>(a.stride);
  if (a.causal) {
    const int lead = min((i / s) * s + s - 1, lg - 1);
    *start = max(lead - k + 1, 0);
    *end = min(i + 1, lg);
  } else {
    const int left = k / 2, right = k - 1 - left;
    const int lead = min((i / s) * s + s / 2, lg - 1);
    int st = max(lead - left, 0);
    if (lead + right >= lg) st = lg - k;
    *start = st;
    *end = st + k;
  }
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace fna::cuda::fused
