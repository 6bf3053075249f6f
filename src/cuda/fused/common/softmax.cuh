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

// 2^x on the FMA pipe (no MUFU), for softmax exponents x <= 0: x = j + f with j the nearest
// integer and f in [-0.5, 0.5], 2^f by a degree-3 polynomial (minimax in relative error,
// 7.5e-5: far below the 2^-9 of the bf16 / 2^-12 of the fp16 P it feeds), and 2^j added to the
// float's exponent bits. Inputs below -125 (masked scores: -inf) give 2^-125, which vanishes next
// to the row's max term (1) like MUFU's flushed denormals. Sharing the exponentials of a tile
// between this and MUFU.EX2 shortens the softmax: MUFU issues one warp instruction per 8 cycles
// per SM sub-partition and is the softmax's throughput limit (ncu, run S8-1).
__device__ __forceinline__ float exp2_fma(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: x + kRound keeps round(x) in its low bits
  x = fmaxf(x, -125.f);  // keeps p * 2^j a normal float (p >= 0.7)
  const float t = __fadd_rn(x, kRound);
  const float f = __fsub_rn(x, __fsub_rn(t, kRound));
  float p = fmaf(0.0551716685295105f, f, 0.2426111251115799f);
  p = fmaf(p, f, 0.6932609677314758f);
  p = fmaf(p, f, 0.9999280571937561f);
  // t's bits are 0x4B400000 + j: shifted by 23 the constant leaves, j * 2^23 stays (mod 2^32).
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
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
};

}  // namespace fna::cuda::fused
