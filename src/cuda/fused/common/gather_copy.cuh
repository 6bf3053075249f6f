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
template <int kRows, int kCols, int kNThreads, class GmemT, class SmemTensor, class RowOffset>
__device__ __forceinline__ void gather_rows(const GmemT* base, SmemTensor&& s, bool aligned,
                                            RowOffset&& row_offset) {
  using SmemT = typename std::remove_cv_t<std::remove_reference_t<SmemTensor>>::value_type;
  constexpr int kChunk = 16 / sizeof(SmemT);  // elements per 16-byte chunk
  constexpr int kChunksPerRow = kCols / kChunk;
  static_assert(kNThreads % kChunksPerRow == 0, "a thread keeps one column chunk");
  constexpr int kRowStep = kNThreads / kChunksPerRow;
  static_assert(kRows % kRowStep == 0, "rows must split evenly over the threads");
  const int c = (threadIdx.x % kChunksPerRow) * kChunk;
  const int r0 = threadIdx.x / kChunksPerRow;
  constexpr bool kSameType = std::is_same_v<SmemT, GmemT>;
  if (kSameType && aligned) {
#pragma unroll
    for (int row = r0; row < kRows; row += kRowStep) {
      const int64_t off = row_offset(row);
      const GmemT* src = off >= 0 ? base + off + c : base;
      using Chunk = cute::uint128_t;
      cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<Chunk>::copy(
          *reinterpret_cast<const Chunk*>(src), *reinterpret_cast<Chunk*>(&s(row, c)), off >= 0);
    }
  } else {
#pragma unroll
    for (int row = r0; row < kRows; row += kRowStep) {
      const int64_t off = row_offset(row);
      alignas(16) SmemT vals[kChunk];
#pragma unroll
      for (int e = 0; e < kChunk; ++e)
        vals[e] = off >= 0 ? to_smem<SmemT>(base[off + c + e]) : to_smem<SmemT>(GmemT(0));
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
