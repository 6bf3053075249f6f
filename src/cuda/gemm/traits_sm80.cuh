// Compile-time configuration of the cuda-gemm kernels for one (storage type, head dim): the MMA
// atom, shared-memory atom and copy atoms are the fused forward's (FwdTraitsSm80), with this
// family's own 64 x 64 tiles.
#pragma once

#include <cute/tensor.hpp>

#include "cuda/fused/sm80/kernel_traits_fwd_sm80.cuh"
#include "cuda/gemm/launch_gemm.h"

namespace fna::cuda::gemm {

template <class Element_, int kHeadDim_>
struct GemmTraitsSm80 {
  using Fused = fused::FwdTraitsSm80<Element_, kHeadDim_>;
  using Element = Element_;
  using SmemT = typename Fused::SmemT;  // fp32 -> TF32 operands holding all 32 bits (3xTF32)
  static constexpr bool kTf32 = Fused::kTf32;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = gemm::kBlockM;
  static constexpr int kBlockN = gemm::kBlockN;
  static constexpr int kNThreads = gemm::kNThreads;
  static_assert(Fused::kNThreads == kNThreads, "the fused TiledMma spans 4 warps x 16 rows");
  using TiledMma = typename Fused::TiledMma;
  using SmemCopyAtom = typename Fused::SmemCopyAtom;
  using SmemCopyAtomTransposed = typename Fused::SmemCopyAtomTransposed;

  using SmemLayoutRows = decltype(cute::tile_to_shape(
      typename Fused::SmemLayoutAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));
  using SmemLayoutCols = decltype(cute::tile_to_shape(
      typename Fused::SmemLayoutAtom{}, cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}));
  // The gathered tile seen as (D, N): the B operand of W * X (k = column).
  using SmemLayoutColsT = decltype(cute::composition(
      SmemLayoutCols{}, cute::make_layout(cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>{},
                                          cute::GenRowMajor{})));
  using SmemLayoutColsTNoSwizzle = decltype(cute::get_nonswizzle_portion(SmemLayoutColsT{}));
  // The weights tile W (rows, columns), the A operand of W * X.
  using SmemLayoutW = decltype(cute::tile_to_shape(
      typename Fused::SmemLayoutAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>>{}));

  static constexpr int kSmemRows = kBlockM * kHeadDim * sizeof(SmemT);
  static constexpr int kSmemCols = kBlockN * kHeadDim * sizeof(SmemT);
  static constexpr int kSmemW = kBlockM * kBlockN * sizeof(SmemT);
  static constexpr int kSmemScores = kSmemRows + kSmemCols;
  static constexpr int kSmemSum = kSmemW + kSmemCols;
};

}  // namespace fna::cuda::gemm
