// Kernel traits and warp-level building blocks of the fused sm_80+ backward: one CTA of four warps,
// each warp owns 16 rows of every product (mma.sync m16n8k16, fp32 accumulators), tiles of
// kBwdTileRows tokens, operands staged in swizzled shared memory and read with ldmatrix.
#pragma once

#include <cutlass/numeric_types.h>

#include <cute/tensor.hpp>
#include <type_traits>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused::sm80 {

using namespace cute;

template <class Element_, int kHeadDim_>
struct BwdTraits {
  using Element = Element_;  // storage type in global memory
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kTile = kBwdTileRows;  // rows of every Q and KV tile
  static constexpr int kWarps = kTile / 16;   // each warp owns 16 rows of the products
  static constexpr int kThreads = kWarps * 32;
  static_assert(kHeadDim % 32 == 0, "head dims are multiples of 32");

  // fp32 inputs run on TF32 tensor cores (m16n8k8); fp16 / bf16 on m16n8k16. fp32 accumulators.
  static constexpr bool kTf32 = std::is_same_v<Element, float>;
  using MmaElement = std::conditional_t<kTf32, cutlass::tfloat32_t, Element>;  // smem, registers
  using MmaAtom = std::conditional_t<kTf32, MMA_Atom<SM80_16x8x8_F32TF32TF32F32_TN>,
                                     std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                                                        MMA_Atom<SM80_16x8x16_F32F16F16F32_TN>,
                                                        MMA_Atom<SM80_16x8x16_F32BF16BF16F32_TN>>>;
  static constexpr int kMmaK = kTf32 ? 8 : 16;
  // Products with both operands in shared memory (S, dP).
  using TiledMma = TiledMMA<MmaAtom, Layout<Shape<Int<kWarps>, _1, _1>>,
                            Tile<Int<16 * kWarps>, _16, Int<kMmaK>>>;
  // Products whose A operand is a previous accumulator (P, dS) held in registers. For TF32 the
  // accumulator holds columns (2t, 2t+1) where the A operand wants (t, t+4): permuting K by
  // t + 4j -> 2t + j makes them line up (B is read element-wise with the same permutation).
  using TiledMmaRs = std::conditional_t<
      kTf32,
      TiledMMA<MmaAtom, Layout<Shape<Int<kWarps>, _1, _1>>,
               Tile<Int<16 * kWarps>, _16, Layout<Shape<_4, _2>, Stride<_2, _1>>>>,
      TiledMma>;

  // 128-byte rows swizzled in 16-byte chunks (64 x 16-bit, 32 x 32-bit; 32 x 16-bit with a 2-bit
  // swizzle for head dim 32), so ldmatrix of either orientation is free of bank conflicts.
  static constexpr int kChunkElems = 16 / sizeof(Element);
  static constexpr int kSmemCols = kTf32 ? 32 : (kHeadDim % 64 == 0 ? 64 : 32);
  static constexpr int kSwizzle = kSmemCols * sizeof(Element) == 64 ? 2 : 3;
  static constexpr int kSwizzleBase = kTf32 ? 2 : 3;
  using SmemLayoutAtom =
      decltype(composition(Swizzle<kSwizzle, kSwizzleBase, 3>{},
                           Layout<Shape<_8, Int<kSmemCols>>, Stride<Int<kSmemCols>, _1>>{}));
  // (kTile, kHeadDim)
  using SmemLayoutRows =
      decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kTile>, Int<kHeadDim>>{}));
  // (kHeadDim, kTile): the same memory transposed, for B operands read with ldmatrix.trans
  using SmemLayoutRowsT = decltype(composition(
      SmemLayoutRows{}, make_layout(Shape<Int<kHeadDim>, Int<kTile>>{}, GenRowMajor{})));
  using SmemLayoutRowsTNoSwizzle = decltype(get_nonswizzle_portion(SmemLayoutRowsT{}));
  // (kTile, kTile): dS^T of one pair of tiles, keys x queries, for dQ's share (atomic-dQ path);
  // SmemLayoutPairT views it as dS, queries x keys.
  using SmemLayoutPair = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kTile>, Int<kTile>>{}));
  using SmemLayoutPairT = decltype(composition(
      SmemLayoutPair{}, make_layout(Shape<Int<kTile>, Int<kTile>>{}, GenRowMajor{})));
  // dQ's share of a pair of tiles is formed in column blocks of at most 64 head dims: a whole
  // 16 x 128 fp32 block per warp next to the dK and dV accumulators spills at head dim 128.
  static constexpr int kDqCols = kHeadDim < 64 ? kHeadDim : 64;

  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, MmaElement>;
  using SmemCopyAtomT = std::conditional_t<kTf32, Copy_Atom<UniversalCopy<MmaElement>, MmaElement>,
                                           Copy_Atom<SM75_U16x8_LDSM_T, MmaElement>>;

  static constexpr int kTileElems = kTile * kHeadDim;

  // The accumulator ((2,2), MMA_M, MMA_N) of one product read as the A operand of the next.
  template <class AccLayout>
  __device__ static constexpr auto acc_as_a_operand(const AccLayout& acc) {
    if constexpr (kTf32) {
      // m16n8k8: value (row bit i, column bit j) sits at accumulator index j + 2i, A index i + 2j.
      return make_layout(composition(get<0>(acc), Layout<Shape<_2, _2>, Stride<_2, _1>>{}),
                         get<1>(acc), get<2>(acc));
    } else {
      // m16n8k16: two adjacent n8 blocks form one k16 block, ((2,2), M, (2, N/2)).
      auto l = logical_divide(acc, Shape<Underscore, Underscore, _2>{});
      return make_layout(make_layout(get<0>(l), get<2, 0>(l)), get<1>(l), get<2, 1>(l));
    }
  }
};

// Shared memory of both gradient kernels. `own` rows stay for the CTA's life (dK/dV: K, V;
// dQ: Q, dO); `stream` rows change per iteration and are double buffered (dK/dV: Q, dO; dQ: K, V).
template <class Traits>
struct BwdSmem {
  using Element = typename Traits::MmaElement;
  static constexpr int kTile = Traits::kTile;
  alignas(128) Element own_a[Traits::kTileElems];
  alignas(128) Element own_b[Traits::kTileElems];
  alignas(128) Element stream_a[2][Traits::kTileElems];
  alignas(128) Element stream_b[2][Traits::kTileElems];
  float lse[2][kTile];    // lse * log2(e) per query (+inf: no query)
  float delta[2][kTile];  // rowsum(dO * O) per query
  int win[2][kTile][6];   // per query and axis: window [start, end) in group coordinates
  int key[2][kTile][3];   // per key and axis: group coordinate (-1: no key)
  alignas(128) Element ds[kTile * kTile];  // dS^T, keys x queries (atomic-dQ path)
  int64_t qrow[2][kTile];  // per query: (b * Hq + h) * tokens + token, its ws_* row (-1: none)
  // The dK/dV kernel's Q boxes (shape kv_qbox), per row: box coordinates (8 bits per axis) and
  // offsets from the box's first row in q, dout and the token index.
  int qbox_coords[kTile];
  int64_t qbox_q[kTile], qbox_dout[kTile], qbox_token[kTile];
};

// Whether a query with window `w` attends a key with group coordinates `k` (same group); no
// short-circuit, so no branches.
__device__ __forceinline__ bool in_window(const int* w, const int* k) {
  return (k[0] >= w[0]) & (k[0] < w[1]) & (k[1] >= w[2]) & (k[1] < w[3]) & (k[2] >= w[4]) &
         (k[2] < w[5]);
}

// Zeroes P and dS of the pairs outside the window (dS = P (dP - delta) with P = 0); P computed
// there may be inf, so both are overwritten. coord(i) is (query, key) when kQueryRows, else
// (key, query); win: per query row its window, key: per key row its group coordinates.
template <bool kQueryRows, class AccS, class AccDp, class Coord>
__device__ __forceinline__ void apply_window_mask(AccS& acc_s, AccDp& acc_dp, const Coord& coord,
                                                  const int (*win)[6], const int (*key)[3]) {
  CUTE_UNROLL
  for (int i = 0; i < size(acc_s); ++i) {
    const int m = get<kQueryRows ? 0 : 1>(coord(i)), n = get<kQueryRows ? 1 : 0>(coord(i));
    if (!in_window(win[m], key[n])) {
      acc_s(i) = 0.f;
      acc_dp(i) = 0.f;
    }
  }
}

// x, as a value the compiler cannot see through: what is computed from it inside a loop stays in
// the loop (no hoisting of loop-invariant addresses that would then be spilled).
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// dst[0] = a, dst[1] = b in one shared-memory store (dst aligned to two elements).
template <class Element>
__device__ __forceinline__ void store_pair(Element* dst, Element a, Element b) {
  struct alignas(2 * sizeof(Element)) Pair {
    Element v[2];
  };
  *reinterpret_cast<Pair*>(dst) = Pair{{a, b}};
}

// acc += A * B with both operands read from shared memory, one k-block ahead. fp32 inputs run as
// 3xTF32 (mma_slice): plain TF32, even rounded to nearest, missed the 6e-3 gradient tolerance
// (errors up to 7.3e-3 on D = 128 problems with scale 1.3 on the H100).
template <class Acc, class RA, class RB, class SA, class SB, class Mma, class CA, class TCA,
          class CB, class TCB>
__device__ __forceinline__ void gemm_ss(Acc& acc, RA& ra, RB& rb, const SA& sa, const SB& sb,
                                        const Mma& mma, const CA& copy_a, const TCA& thr_copy_a,
                                        const CB& copy_b, const TCB& thr_copy_b) {
  Tensor ra_view = thr_copy_a.retile_D(ra);
  Tensor rb_view = thr_copy_b.retile_D(rb);
  cute::copy(copy_a, sa(_, _, _0{}), ra_view(_, _, _0{}));
  cute::copy(copy_b, sb(_, _, _0{}), rb_view(_, _, _0{}));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(ra); ++k) {
    if (k < size<2>(ra) - 1) {
      cute::copy(copy_a, sa(_, _, k + 1), ra_view(_, _, k + 1));
      cute::copy(copy_b, sb(_, _, k + 1), rb_view(_, _, k + 1));
    }
    mma_slice(acc, ra(_, _, k), rb(_, _, k), mma);
  }
}

// acc += A * B with A already in registers and B read from shared memory.
template <class Acc, class RA, class RB, class SB, class Mma, class CB, class TCB>
__device__ __forceinline__ void gemm_rs(Acc& acc, const RA& ra, RB& rb, const SB& sb,
                                        const Mma& mma, const CB& copy_b, const TCB& thr_copy_b) {
  Tensor rb_view = thr_copy_b.retile_D(rb);
  cute::copy(copy_b, sb(_, _, _0{}), rb_view(_, _, _0{}));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(ra); ++k) {
    if (k < size<2>(ra) - 1) cute::copy(copy_b, sb(_, _, k + 1), rb_view(_, _, k + 1));
    mma_slice(acc, ra(_, _, k), rb(_, _, k), mma);
  }
}

// Converts a fp32 accumulator to Element in the same register layout.
template <class Element, class Acc>
__device__ __forceinline__ auto to_element(const Acc& acc) {
  Tensor out = make_tensor<Element>(acc.layout());
  CUTE_UNROLL
  for (int i = 0; i < size(acc); ++i) {
    // TF32 operands keep all fp32 bits: mma_slice splits them into hi + lo parts.
    if constexpr (std::is_same_v<Element, cutlass::tfloat32_t>)
      out(i) = cutlass::tfloat32_t::bitcast(__float_as_uint(acc(i)));
    else
      out(i) = static_cast<Element>(acc(i));
  }
  return out;
}

}  // namespace fna::cuda::fused::sm80
