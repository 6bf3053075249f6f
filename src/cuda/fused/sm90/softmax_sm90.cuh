// Online softmax of the Hopper forward, split in two so it can overlap a GEMM: `scores` turns a
// score tile into probabilities while the previous tile's P V is still running on the tensor
// cores (it must not touch O, which that wgmma is writing), and `rescale` applies the returned
// corrections to O once the wgmma has completed.
//
// Scores arrive unscaled and are scaled by c = scale * log2(e) inside the exponent (one FFMA per
// score, as sm_80's OnlineSoftmax): p = exp2(c * s - max) with max in the log2 domain, and the
// natural-log lse is (max + log2(sum)) * ln 2. c must be positive (callers pre-scale and pass
// c = 1 otherwise). A row whose scores are all -inf so far keeps max = -inf and
// contributes nothing (no inf - inf = NaN). Rows are spread over the 4 threads of a quad, as in
// the mma.sync accumulator: the wgmma accumulator has the same row/column ownership.
#pragma once

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/fused/common/softmax.cuh"
#include "cuda/fused/sm90/gmma_sm90.cuh"

namespace fna::cuda::fused {

template <int kRows>
struct SplitOnlineSoftmax {
  float row_max[kRows];  // running max of the scaled (log2-domain) scores, quad-reduced
  float row_sum[kRows];  // running sum of exp2(s - row_max), this thread's columns only

  __device__ __forceinline__ void init() {
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      row_max[i] = -INFINITY;
      row_sum[i] = 0.f;
    }
  }

  // Replaces the unscaled score tile `s` (rows, cols) by exp2(c * s - new_max) and returns per
  // row the factor by which O (accumulated under the old max) must be multiplied.
  template <class S>
  __device__ __forceinline__ void scores(S& s, float c, float (&correction)[kRows]) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kRows);
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      // 8 partial maxima: one chain of 31 dependent FMNMX per row sat on the softmax's critical
      // path before the first exponent (ncu run S5-P1: stall_wait; 4 chains until run S8-4). The
      // max is exact in any order.
      constexpr int kChains = 8;
      static_assert(decltype(size<1>(s))::value % kChains == 0);
      float part[kChains];
      CUTE_UNROLL
      for (int k = 0; k < kChains; ++k) part[k] = s(i, k);
      CUTE_UNROLL
      for (int j = kChains; j < size<1>(s); ++j)
        part[j % kChains] = fmaxf(part[j % kChains], s(i, j));
      float m = fmaxf(fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3])),
                      fmaxf(fmaxf(part[4], part[5]), fmaxf(part[6], part[7])));
      // c > 0, so the max commutes with the scaling (rounding included).
      m = fmaxf(quad_max(m) * c, row_max[i]);
      const float m_ref = m == -INFINITY ? 0.f : m;  // all masked so far: every p is 0
      correction[i] = fast_exp2(row_max[i] - m_ref);
      row_max[i] = m;
      // 4 partial sums: one chain of 32 dependent FADDs per row ended the softmax (run S8-5).
      constexpr int kSums = 4;
      float sum[kSums] = {};
      CUTE_UNROLL
      for (int j = 0; j < size<1>(s); ++j) {
        const float p = fast_exp2(fmaf(s(i, j), c, -m_ref));
        s(i, j) = p;
        sum[j % kSums] += p;
      }
      row_sum[i] = row_sum[i] * correction[i] + ((sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  }

  // Whether O needs `rescale`: not when no row of the warp changed its max (every correction is
  // exactly 1). After the first tiles of a row most tiles leave the max alone, and the
  // warp-uniform test is cheaper than 64 multiplications by 1 per thread.
  __device__ __forceinline__ bool needs_rescale(const float (&correction)[kRows]) const {
    bool changed = false;
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) changed = changed || correction[i] != 1.f;
    return __any_sync(0xffffffffu, changed);
  }

  template <class O>
  __device__ __forceinline__ void rescale(O& o, const float (&correction)[kRows]) {
    using namespace cute;
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      CUTE_UNROLL
      for (int d = 0; d < size<1>(o); ++d) o(i, d) *= correction[i];
    }
  }

  // Divides `o` by the row sums and returns the natural-log lse of each row in `lse`.
  template <class O>
  __device__ __forceinline__ void finalize(O& o, float (&lse)[kRows]) {
    finalize_softmax_rows(o, row_max, row_sum, lse);
  }
};

}  // namespace fna::cuda::fused
