// Chunk partials of the Hopper forward's split items and their merge (the split rule:
// split_fwd_sm90.h; the schedule: scheduler_fwd_sm90.cuh).
//
// Every chunk of a split item ends like a whole item up to the softmax's finalize (O divided by
// the chunk's row sums, natural-log lse, -inf for a row that saw no key), then writes that O and
// lse to its workspace slot instead of `out`. Each consumer warp (16 rows) then counts its chunk
// done on the item's counter for that warp (FwdParamsSm90::split_done); the warp that brings the
// count to the chunk count merges the item's chunks and stores the rows as the unsplit epilogue
// does. The merge sums the chunks in chunk order whichever warp runs it, so the result does not
// depend on timing (Options::deterministic holds).
#pragma once

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/split_fwd_sm90.h"

namespace fna::cuda::fused {

// Writes this thread's chunk partial (o: (rows, dims) of the O accumulator, lse per row), counts
// the warp's chunk done, and in the warp that finishes the item last returns true with the merged
// rows in o and lse; false otherwise (the warp stores nothing). `unit` = split_item * chunks +
// chunk (FwdParamsSm90::split_o), `counter` = split_item * warps + warp. All 32 lanes call it.
//
// Partials are stored in the threads' register order, element e of thread t at [e][t] (float4
// per 4 dims: a warp writes 512 contiguous bytes per vector), and read back only by the same
// thread index of a block running the same kernel, so no layout is involved.
template <int kThreads, int kRows, class ORc>
__device__ __forceinline__ bool finish_chunk(const FwdParamsSm90& p, int64_t split_item, int chunk,
                                             int chunks, int tidx, ORc& o, float (&lse)[kRows]) {
  using namespace cute;
  constexpr int kDims = decltype(size<1>(o))::value;
  static_assert(decltype(size<0>(o))::value == kRows && kDims % 4 == 0);
  constexpr int kVecs = kRows * kDims / 4;  // float4 per thread
  const int64_t unit_vecs = int64_t(kVecs) * kThreads;
  const int64_t unit_lse = int64_t(kRows) * kThreads;
  auto o_at = [&](int c) {  // chunk c's partial O, this thread's first vector
    return reinterpret_cast<float4*>(p.split_o) + (split_item * p.chunks + c) * unit_vecs + tidx;
  };
  auto lse_at = [&](int c) { return p.split_lse + (split_item * p.chunks + c) * unit_lse + tidx; };

  float4* mine = o_at(chunk);
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) {
    CUTE_UNROLL
    for (int d = 0; d < kDims; d += 4)
      mine[((i * kDims + d) / 4) * kThreads] =
          make_float4(o(i, d), o(i, d + 1), o(i, d + 2), o(i, d + 3));
    lse_at(chunk)[i * kThreads] = lse[i];
  }
  // The "last block" pattern, per warp, with cutlass/barrier.h's release (GenericBarrier::
  // arrive_inc): after the warp barrier, lane 0's fence releases every lane's stores above before
  // its relaxed increment; the merging warp fences before it reads the other chunks' partials
  // (through L2: __ldcg, this SM's L1 never held them).
  __syncwarp();
  int done = 0;
  if (tidx % 32 == 0) {
    __threadfence();
    done = atomicAdd(p.split_done + split_item * (kThreads / 32) + tidx / 32, 1);
  }
  done = __shfl_sync(0xffffffffu, done, 0);
  if (done != chunks - 1) return false;
  __threadfence();

  // out = sum_c w_c O_c / sum_c w_c, w_c = exp(lse_c - max_c lse_c); lse = max + log(sum w_c).
  // A chunk whose row saw no key has lse -inf: weight 0. Every chunk -inf (a row past the
  // group's end, never stored): O = 0 and lse = -inf, as the unsplit finalize gives.
  float top[kRows];
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) top[i] = -INFINITY;
  for (int c = 0; c < chunks; ++c) {
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) top[i] = fmaxf(top[i], __ldcg(lse_at(c) + i * kThreads));
  }
  float sum[kRows];
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) {
    sum[i] = 0.f;
    CUTE_UNROLL
    for (int d = 0; d < kDims; ++d) o(i, d) = 0.f;
  }
  for (int c = 0; c < chunks; ++c) {
    const float4* part = o_at(c);
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      const float l = __ldcg(lse_at(c) + i * kThreads);
      const float w = top[i] == -INFINITY ? 0.f : expf(l - top[i]);
      sum[i] += w;
      CUTE_UNROLL
      for (int d = 0; d < kDims; d += 4) {
        const float4 v = __ldcg(part + ((i * kDims + d) / 4) * kThreads);
        o(i, d) += w * v.x;
        o(i, d + 1) += w * v.y;
        o(i, d + 2) += w * v.z;
        o(i, d + 3) += w * v.w;
      }
    }
  }
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) {
    const float inv = sum[i] > 0.f ? 1.f / sum[i] : 0.f;
    CUTE_UNROLL
    for (int d = 0; d < kDims; ++d) o(i, d) *= inv;
    lse[i] = sum[i] > 0.f ? top[i] + logf(sum[i]) : -INFINITY;
  }
  return true;
}

}  // namespace fna::cuda::fused
