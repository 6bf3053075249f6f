// Row gathers between global memory and shared-memory tiles, shared by the fused kernels.
//
// The rows of a Q or KV box are tokens of a multi-dimensional grid, not contiguous in memory, so
// tiles are gathered row by row: the caller gives each row's element offset (or -1 for a row that
// must be zero-filled). Each thread moves 16-byte chunks; consecutive threads take consecutive
// chunks of one row, so a warp reads whole rows (coalesced) even though rows are scattered.
#pragma once

#include <cutlass/numeric_types.h>

#include <cstdint>
#include <cute/tensor.hpp>
#include <type_traits>

namespace fna::cuda::fused {

// Converts one storage value to the shared-memory value type. fp32 goes into TF32 operands with
// all 32 bits kept: the MMA splits them into hi + lo TF32 parts (cute_utils.cuh, mma_slice).
template <class SmemT, class GmemT>
__device__ __forceinline__ SmemT to_smem(GmemT x) {
  if constexpr (std::is_same_v<SmemT, GmemT>) {
    return x;
  } else {
    static_assert(std::is_same_v<SmemT, cutlass::tfloat32_t> && std::is_same_v<GmemT, float>);
    return cutlass::tfloat32_t::bitcast(__float_as_uint(x));
  }
}

// Gathers kRows rows of kCols elements into the (kRows, kCols) shared tensor `s`.
// `row_offset(row)` returns the row's element offset from `base`, or -1 to zero-fill the row.
// When `aligned` (every row start 16-byte aligned) and the types match, rows move with
// cp.async (the caller commits and waits); otherwise with plain loads and stores.
// 16-byte cp.async from global to shared memory, bypassing L1; `valid` false zero-fills the
// destination without reading global memory.
// (The ignore-src predicate form maps to one predicated LDGSTS.ZFILL; the src-size form costs
// a few integer instructions per row to build the size.)
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile(
      "{\n .reg .pred ignore;\n setp.eq.u32 ignore, %2, 0;\n"
      " cp.async.cg.shared.global [%0], [%1], 16, ignore;\n}\n" ::"r"(dst),
      "l"(gmem_src), "r"(static_cast<uint32_t>(valid)));
}

// The element distance between rows r and r + kRowStep of the static shared layout L when it is
// the same for every row and 16-byte chunk, else 0. Uniform for the kernels' swizzled layouts
// (their swizzles permute chunks inside groups of at most kRowStep rows): then a thread's rows
// r0 + it * kRowStep are one address plus compile-time offsets, which cp.async takes as
// immediates instead of a swizzle computation per row.
template <class Layout, int kRows, int kCols, int kRowStep, int kChunk>
constexpr int uniform_row_stride() {
  if constexpr (!cute::is_static<Layout>::value) {
    return 0;
  } else {
    const Layout l{};
    const int step = int(l(kRowStep, 0)) - int(l(0, 0));
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; c += kChunk)
        if (int(l(r, c)) != int(l(r % kRowStep, c)) + (r / kRowStep) * step) return 0;
    return step;
  }
}

// kZeroFill = false: the caller guarantees every offset is valid (no -1), which saves the
// per-row test. kByteOffsets: `row_offset` returns byte offsets (tables kept in bytes save the
// per-row scaling: one 64-bit add per chunk).
template <int kRows, int kCols, int kNThreads, bool kZeroFill = true, bool kByteOffsets = false,
          class GmemT, class SmemTensor, class RowOffset>
__device__ __forceinline__ void gather_rows(const GmemT* base, SmemTensor&& s, bool aligned,
                                            RowOffset&& row_offset) {
  using SmemT = typename std::remove_cv_t<std::remove_reference_t<SmemTensor>>::value_type;
  constexpr int kChunk = 16 / sizeof(SmemT);  // elements per 16-byte chunk
  constexpr int kChunksPerRow = kCols / kChunk;
  static_assert(kNThreads % kChunksPerRow == 0, "a thread keeps one column chunk");
  constexpr int kRowStep = kNThreads / kChunksPerRow;
  static_assert(kRows % kRowStep == 0, "rows must split evenly over the threads");
  // A compile-time trip count: the rows of a thread are r0 + it * kRowStep, no bounds tests.
  constexpr int kIters = kRows / kRowStep;
  const unsigned tid = threadIdx.x;  // unsigned: shifts and masks, no signed-division fixups
  const int c = int(tid % kChunksPerRow) * kChunk;
  const int r0 = int(tid / kChunksPerRow);
  constexpr bool kSameType = std::is_same_v<SmemT, GmemT>;
  if (kSameType && aligned) {
    using Layout = typename std::remove_cv_t<std::remove_reference_t<SmemTensor>>::layout_type;
    constexpr int kRowStride = uniform_row_stride<Layout, kRows, kCols, kRowStep, kChunk>();
    const char* const base_c = reinterpret_cast<const char*>(base + c);
    SmemT* const dst0 = &s(r0, c);
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int row = r0 + it * kRowStep;
      const int64_t off = row_offset(row);
      const bool valid = !kZeroFill || off >= 0;
      SmemT* dst;
      if constexpr (kRowStride != 0)
        dst = dst0 + it * kRowStride;
      else
        dst = &s(row, c);
      const int64_t bytes = kByteOffsets ? off : off * int64_t(sizeof(GmemT));
      cp_async_16(dst, base_c + (valid ? bytes : 0), valid);
    }
  } else {
    // Unaligned views (rare): kept rolled, so the kernels' hot loops stay small in the
    // instruction cache.
#pragma unroll 1
    for (int it = 0; it < kIters; ++it) {
      const int row = r0 + it * kRowStep;
      const int64_t off = row_offset(row);
      const int64_t elems = kByteOffsets ? off / int64_t(sizeof(GmemT)) : off;
      alignas(16) SmemT vals[kChunk];
#pragma unroll
      for (int e = 0; e < kChunk; ++e)
        vals[e] = off >= 0 ? to_smem<SmemT>(base[elems + c + e]) : to_smem<SmemT>(GmemT(0));
      // The chunk is contiguous in shared memory: swizzles permute whole 16-byte chunks.
      *reinterpret_cast<cute::uint128_t*>(&s(row, c)) = *reinterpret_cast<cute::uint128_t*>(vals);
    }
  }
}

__device__ __forceinline__ void cp_async_commit() { cute::cp_async_fence(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  cute::cp_async_wait<N>();
}

}  // namespace fna::cuda::fused
