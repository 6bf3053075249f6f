// wgmma helpers shared by the Hopper kernels (forward and backward): the warpgroup GEMM issue
// and views of a wgmma accumulator as (rows, cols) and as the register A operand of the next GEMM
// (host callable too: tests/gpu/fused_bwd_sm90_layout_test.cu replays them).
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

namespace fna::cuda::fused {

// acc (+)= A * B over every k block on one warpgroup; waits for the wgmma group to drain to at
// most kWait groups in flight (kWait < 0: returns right after the commit). A is either shared
// memory descriptors or, for P V, registers (kARegisters), which must stay untouched until the
// wgmma completes.
template <bool kZeroInit, int kWait, bool kARegisters, class Mma, class A, class B, class C>
__device__ __forceinline__ void warpgroup_gemm(Mma& mma, const A& a, const B& b, C& acc) {
  using namespace cute;
  if constexpr (kARegisters) warpgroup_fence_operand(const_cast<A&>(a));
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  if constexpr (kWait >= 0) warpgroup_wait<kWait>();
  warpgroup_fence_operand(acc);
  if constexpr (kARegisters) warpgroup_fence_operand(const_cast<A&>(a));
}

// The same shared-memory descriptor tensor with its base descriptor broadcast from lane 0 (as
// CUTLASS's canonical_warp_group_idx): ptxas then treats the descriptors derived from it as
// warp-uniform and computes them in uniform registers instead of moving each one there (R2UR)
// before its wgmma.
template <class T>
__device__ __forceinline__ auto warp_uniform_descriptors(const T& t) {
  cute::GMMA::DescriptorIterator it = t.data();
  it.desc_.reg32_[0] = __shfl_sync(0xffffffffu, it.desc_.reg32_[0], 0);
  it.desc_.reg32_[1] = __shfl_sync(0xffffffffu, it.desc_.reg32_[1], 0);
  return cute::make_tensor(it, t.layout());
}

// View a wgmma accumulator ((2, 2, N / 8), MMA_M, MMA_N) as (rows, cols) =
// ((2, MMA_M), (2, N / 8, MMA_N)): row i of the view is one query row of this thread.
template <class Layout>
CUTE_HOST_DEVICE auto gmma_acc_rowcol(Layout acc) {
  using namespace cute;
  static_assert(decltype(rank<0>(acc))::value == 3);
  static_assert(decltype(rank(acc))::value == 3);
  return make_layout(make_layout(get<0, 1>(acc), get<1>(acc)),
                     make_layout(get<0, 0>(acc), get<0, 2>(acc), get<2>(acc)));
}

// View a 16-bit copy of a wgmma accumulator ((2, 2, N / 8), MMA_M, MMA_N) as the register A
// operand of the next wgmma (k = the accumulator's columns): ((2, 2, 2), MMA_M, N / 16). Two
// 8-column groups of the accumulator form one k16 slice.
template <class Layout>
CUTE_HOST_DEVICE auto gmma_acc_as_a_operand(Layout acc) {
  using namespace cute;
  auto l = logical_divide(get<0, 2>(acc), Tile<_2>{});  // ((2, N / 16))
  return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0, 0>(l)), get<1>(acc),
                     coalesce(make_layout(get<2>(acc), get<0, 1>(l))));
}

}  // namespace fna::cuda::fused
