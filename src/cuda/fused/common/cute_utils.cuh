// Small CuTe helpers of the fused kernels: accumulator layout views and the two warp-level GEMM
// loops (operands from shared memory, or A from registers).
#pragma once

#include <cutlass/numeric_types.h>

#include <cute/tensor.hpp>
#include <type_traits>

namespace fna::cuda::fused {

// View an mma.sync accumulator ((2, 2), MMA_M, MMA_N) as (rows, cols) = ((2, MMA_M), (2, MMA_N)):
// row i of the view is one query row of this thread, so softmax loops run over rows and columns.
template <class Layout>
__device__ __forceinline__ auto acc_rowcol(Layout acc) {
  using namespace cute;
  static_assert(decltype(size<0>(acc))::value == 4);
  static_assert(decltype(rank(acc))::value == 3);
  auto l = logical_divide(acc, Shape<_2>{});  // ((2, 2), MMA_M, MMA_N)
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
}

// View an m16n8k16 accumulator ((2, 2), MMA_M, MMA_N) as the A operand of the next m16n8k16 GEMM:
// ((2, 2, 2), MMA_M, MMA_N / 2). Two n8 accumulator tiles hold one k16 slice of the A operand.
template <class Layout>
__device__ __forceinline__ auto acc_as_a_operand(Layout acc) {
  using namespace cute;
  static_assert(decltype(size<0>(acc))::value == 4);
  auto l = logical_divide(acc, Shape<Underscore, Underscore, _2>{});  // (4, MMA_M, (2, MMA_N/2))
  return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
}

// Splits TF32 operands that hold full fp32 bits into hi + lo TF32 parts (x ~= hi + lo to ~2^-22).
template <class X, class Y>
__device__ __forceinline__ void split_tf32(const X& x, Y& hi, Y& lo) {
  using namespace cute;
  CUTE_UNROLL
  for (int i = 0; i < size(x); ++i) {
    const uint32_t bits = x(i).raw();
    const uint32_t h = (bits + 0x1000u) & 0xffffe000u;  // round to nearest TF32
    const float rest = __uint_as_float(bits) - __uint_as_float(h);
    hi(i) = cutlass::tfloat32_t::bitcast(h);
    lo(i) = cutlass::tfloat32_t::bitcast((__float_as_uint(rest) + 0x1000u) & 0xffffe000u);
  }
}

// acc += A(k) * B(k) for one k-slice. fp32 inputs (TF32 operands carrying full fp32 bits) use
// three TF32 MMAs, hi*hi + hi*lo + lo*hi, which keeps fp32-level accuracy: plain TF32 rounds
// every input to 10 mantissa bits, which with large logits exceeds the fp32 tolerance.
template <class Acc, class A, class B, class Mma>
__device__ __forceinline__ void mma_slice(Acc& acc, const A& a, const B& b, const Mma& mma) {
  using namespace cute;
  if constexpr (std::is_same_v<typename A::value_type, cutlass::tfloat32_t>) {
    auto a_hi = make_fragment_like(a), a_lo = make_fragment_like(a);
    auto b_hi = make_fragment_like(b), b_lo = make_fragment_like(b);
    split_tf32(a, a_hi, a_lo);
    split_tf32(b, b_hi, b_lo);
    cute::gemm(mma, a_lo, b_hi, acc);
    cute::gemm(mma, a_hi, b_lo, acc);
    cute::gemm(mma, a_hi, b_hi, acc);
  } else {
    cute::gemm(mma, a, b, acc);
  }
}

// acc += A * B with both operands read from shared memory, one k-slice ahead of the MMAs.
template <class Acc, class RA, class RB, class SA, class SB, class Mma, class CopyA, class CopyB>
__device__ __forceinline__ void gemm_ss(Acc& acc, RA& ra, RB& rb, const SA& sa, const SB& sb,
                                        const Mma& mma, const CopyA& copy_a, const CopyB& copy_b) {
  using namespace cute;
  auto thr_a = copy_a.get_thread_slice(threadIdx.x);
  auto thr_b = copy_b.get_thread_slice(threadIdx.x);
  Tensor ra_view = thr_a.retile_D(ra);
  Tensor rb_view = thr_b.retile_D(rb);
  copy(copy_a, sa(_, _, 0), ra_view(_, _, 0));
  copy(copy_b, sb(_, _, 0), rb_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(ra); ++k) {
    if (k + 1 < size<2>(ra)) {
      copy(copy_a, sa(_, _, k + 1), ra_view(_, _, k + 1));
      copy(copy_b, sb(_, _, k + 1), rb_view(_, _, k + 1));
    }
    mma_slice(acc, ra(_, _, k), rb(_, _, k), mma);
  }
}

// acc += A * B with A already in registers and B read from shared memory.
template <class Acc, class RA, class RB, class SB, class Mma, class CopyB>
__device__ __forceinline__ void gemm_rs(Acc& acc, const RA& ra, RB& rb, const SB& sb,
                                        const Mma& mma, const CopyB& copy_b) {
  using namespace cute;
  auto thr_b = copy_b.get_thread_slice(threadIdx.x);
  Tensor rb_view = thr_b.retile_D(rb);
  copy(copy_b, sb(_, _, 0), rb_view(_, _, 0));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(ra); ++k) {
    if (k + 1 < size<2>(ra)) copy(copy_b, sb(_, _, k + 1), rb_view(_, _, k + 1));
    mma_slice(acc, ra(_, _, k), rb(_, _, k), mma);
  }
}

// Elementwise type conversion of a register tensor (same layout).
template <class To, class Tensor>
__device__ __forceinline__ auto convert_fragment(const Tensor& t) {
  using namespace cute;
  auto out = make_tensor<To>(t.layout());
  CUTE_UNROLL
  for (int i = 0; i < size(t); ++i) out(i) = static_cast<To>(t(i));
  return out;
}

// Sum / max of x over the 4 threads of an mma.sync quad (the threads that share a row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffff, x, 1);
  return x + __shfl_xor_sync(0xffffffff, x, 2);
}

}  // namespace fna::cuda::fused
