// Online softmax (flash-attention 2 style) over score tiles in the (rows, cols) accumulator view.
//
// Scores arrive unscaled; with c = scale * log2(e) > 0 the probabilities are
// exp2(c * s - c * max), one FFMA and one MUFU.EX2 per score, and the log-sum-exp in natural log
// is (c * max + log2(sum)) * ln(2). Masked scores are -inf; a row whose scores are all -inf so
// far keeps max = -inf and contributes nothing (no inf - inf = NaN).
// Row sums stay per-thread partial sums until `finalize`, which reduces them over the quad.
#pragma once

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/common/cute_utils.cuh"

namespace fna::cuda::fused {

// 2^x with the hardware approximation (MUFU.EX2, ~2 ulp, denormal results flushed to zero:
// probabilities below 2^-126 of the row max do not matter next to the fp32 row sum).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The end of an online softmax (both kernel families): divides the rows of `o` (rows, dims) by
// their sums (this thread's partial sums, reduced over the quad here) and returns each row's
// natural-log lse; a row that attended nothing gets 0 and -inf.
template <int kRows, class O>
__device__ __forceinline__ void finalize_softmax_rows(O& o, const float (&row_max)[kRows],
                                                      const float (&row_sum)[kRows], float* lse) {
  using namespace cute;
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) {
    const float sum = quad_sum(row_sum[i]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    lse[i] = sum > 0.f ? (row_max[i] + log2f(sum)) * 0.6931471805599453f : -INFINITY;
    CUTE_UNROLL
    for (int d = 0; d < size<1>(o); ++d) o(i, d) *= inv;
  }
}

template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows];  // running max of the scaled (log2-domain) scores, quad-reduced
  float row_sum[kRows];  // running sum of exp2(s - row_max), this thread's columns only

  __device__ __forceinline__ void init() {
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      row_max[i] = -INFINITY;
      row_sum[i] = 0.f;
    }
  }

  // Folds one score tile `s` (rows, cols) of unscaled scores into the running state with scale
  // c > 0 (log2 domain): replaces s by the probabilities exp2(c * s - new_max) and rescales the
  // output accumulator `o` (rows, dims).
  template <class S, class O>
  __device__ __forceinline__ void update(S& s, O& o, float c) {
    using namespace cute;
    static_assert(decltype(size<0>(s))::value == kRows);
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      float m = s(i, 0);
      CUTE_UNROLL
      for (int j = 1; j < size<1>(s); ++j) m = fmaxf(m, s(i, j));
      m = fmaxf(quad_max(m) * c, row_max[i]);
      // A fully masked row so far: subtract 0 instead of -inf (every p is exp2(-inf) = 0).
      const float m_ref = m == -INFINITY ? 0.f : m;
      const float correction = fast_exp2(row_max[i] - m_ref);
      row_max[i] = m;
      row_sum[i] *= correction;
      // Once the row maxima settle, most tiles change none: ex2(0) is exactly 1, so skipping the
      // rescale when no row i of the warp changed leaves the result bitwise the same.
      if (__any_sync(0xffffffffu, correction != 1.f)) {
        CUTE_UNROLL
        for (int d = 0; d < size<1>(o); ++d) o(i, d) *= correction;
      }
      float sum = 0.f;
      CUTE_UNROLL
      for (int j = 0; j < size<1>(s); ++j) {
        const float p = fast_exp2(fmaf(s(i, j), c, -m_ref));
        s(i, j) = p;
        sum += p;
      }
      row_sum[i] += sum;
    }
  }

  // Divides `o` by the row sums and returns the natural-log lse of each row in `lse`.
  template <class O>
  __device__ __forceinline__ void finalize(O& o, float* lse) {
    finalize_softmax_rows(o, row_max, row_sum, lse);
  }
};

}  // namespace fna::cuda::fused
