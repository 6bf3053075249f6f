// Device helpers of the fused backward: the global offsets of a tile's rows (tiles and walks are in
// walk_bwd.h) and row copies between strided global memory and (swizzled) shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/params_bwd.h"
#include "cuda/fused/common/walk_bwd.h"

namespace fna::cuda::fused {

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
    t.grid_coords(nb, i, x);
    for (int r = 0; r < 3; ++r) off += x[r] * view.sx[r];
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

// 4-byte cp.async; 0 source bytes zero-fill the destination.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}

// dst[0] += a, dst[1] += b in global memory (8-byte aligned). sm_90 adds both in one vector
// atomic, which halves the atomic instructions of the dQ accumulation.
__device__ __forceinline__ void atomic_add2(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(a, b));
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
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

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace fna::cuda::fused
