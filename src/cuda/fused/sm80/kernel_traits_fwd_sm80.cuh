// Compile-time configuration of the fused sm_80+ forward kernel: tile sizes, MMA atoms, shared
// memory layouts and copy atoms for one (storage type, head dim).
#pragma once

#include <cutlass/numeric_types.h>

#include <cute/tensor.hpp>
#include <type_traits>

#include "cuda/fused/sm80/launch_fwd.h"

namespace fna::cuda::fused {

template <class Element_, int kHeadDim_>
struct FwdTraitsSm80 {
  using Element = Element_;  // storage type in global memory: half_t, bfloat16_t or float
  static constexpr bool kTf32 = std::is_same_v<Element, float>;
  // Shared-memory / MMA operand type. fp32 inputs keep all 32 bits in TF32 operands and are
  // multiplied as hi + lo TF32 parts (3xTF32, cute_utils.cuh mma_slice).
  using SmemT = std::conditional_t<kTf32, cutlass::tfloat32_t, Element>;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = FwdBlockShape<Element, kHeadDim>::kBlockM;
  static constexpr int kBlockN = FwdBlockShape<Element, kHeadDim>::kBlockN;
  static constexpr int kNWarps = FwdBlockShape<Element, kHeadDim>::kNWarps;
  static constexpr int kStages = FwdBlockShape<Element, kHeadDim>::kStages;
  static constexpr int kMinBlocks = FwdBlockShape<Element, kHeadDim>::kMinBlocks;
  static constexpr int kNThreads = kNWarps * 32;

  using MmaOp = std::conditional_t<
      kTf32, cute::SM80_16x8x8_F32TF32TF32F32_TN,
      std::conditional_t<std::is_same_v<Element, cutlass::half_t>,
                         cute::SM80_16x8x16_F32F16F16F32_TN, cute::SM80_16x8x16_F32BF16BF16F32_TN>>;
  static constexpr int kMmaK = kTf32 ? 8 : 16;
  // Warps split the Q rows (16 per warp per MMA row-step); each warp owns whole rows, so
  // softmax reductions stay inside a quad of threads.
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<MmaOp>,
                                  cute::Layout<cute::Shape<cute::Int<kNWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kNWarps>, cute::_16, cute::Int<kMmaK>>>;

  // Swizzled shared-memory rows: 16-byte chunks of a row are XOR-permuted by the row index so
  // ldmatrix (and the transposed reads of V) hit distinct banks. The atom is 8 rows of 64 (or
  // 32) 16-bit elements, or 8 rows of 32 fp32 elements: one 128-byte line per row where possible.
  static constexpr int kAtomCols = kTf32 ? 32 : (kHeadDim % 64 == 0 ? 64 : 32);
  static constexpr int kSwizzleBits = kTf32 ? 3 : (kAtomCols == 64 ? 3 : 2);
  static constexpr int kChunkBits = kTf32 ? 2 : 3;  // log2(elements per 16-byte chunk)
  using SmemLayoutAtom =
      decltype(cute::composition(cute::Swizzle<kSwizzleBits, kChunkBits, 3>{},
                                 cute::Layout<cute::Shape<cute::_8, cute::Int<kAtomCols>>,
                                              cute::Stride<cute::Int<kAtomCols>, cute::_1>>{}));
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      SmemLayoutAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));  // (M, D)
  // One stage of K or V; stage s starts s * kBlockN * kHeadDim elements after stage 0 (a
  // multiple of the swizzle atom, so every stage has the same bank pattern).
  using SmemLayoutKV = decltype(cute::tile_to_shape(
      SmemLayoutAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));  // (N, D)
  // V seen as (D, N) for the P * V GEMM (B operand, k = key).
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{},
                                        cute::GenRowMajor{})));
  using SmemLayoutVtNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutVt{}));
  // fp32 only: P staged through shared memory as the A operand of the TF32 P * V GEMM (the
  // accumulator's column order differs from the m16n8k8 TF32 A-operand order). (M, N)
  using SmemLayoutP = cute::Layout<cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>>,
                                   cute::Stride<cute::Int<kBlockN + 4>, cute::_1>>;

  using SmemCopyAtom = std::conditional_t<kTf32, cute::Copy_Atom<cute::UniversalCopy<SmemT>, SmemT>,
                                          cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, SmemT>>;
  using SmemCopyAtomTransposed =
      std::conditional_t<kTf32, cute::Copy_Atom<cute::UniversalCopy<SmemT>, SmemT>,
                         cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, SmemT>>;

  static constexpr int kSmemQ = kBlockM * kHeadDim * sizeof(SmemT);
  static constexpr int kKVElems = kBlockN * kHeadDim;  // one stage of K or V
  static constexpr int kSmemKV = kKVElems * sizeof(SmemT);
  static constexpr int kSmemP = kTf32 ? kBlockM * (kBlockN + 4) * sizeof(float) : 0;
  static constexpr int kSmemBytes = kSmemQ + 2 * kStages * kSmemKV + kSmemP;
};

}  // namespace fna::cuda::fused
