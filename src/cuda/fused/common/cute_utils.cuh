// Small CuTe helpers of the fused kernels: accumulator layout views and the two warp-level GEMM
// loops (operands from shared memory, or A from registers).
#pragma once

#include <cute/tensor.hpp>

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
    cute::gemm(mma, ra(_, _, k), rb(_, _, k), acc);
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
    cute::gemm(mma, ra(_, _, k), rb(_, _, k), acc);
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
