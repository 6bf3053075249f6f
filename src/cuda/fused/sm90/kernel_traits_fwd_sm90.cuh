// Compile-time shapes of the Hopper forward kernel: warp roles, tiles, shared-memory layouts and
// the wgmma tiled MMAs, per (storage type, head dim).
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_types.h>

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/launch_fwd_sm90.h"

namespace fna::cuda::fused {

template <class Element_, int kHeadDim_>
struct FwdTraitsSm90 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = FwdBlockShapeSm90::kBlockM;
  static constexpr int kBlockN = FwdBlockShapeSm90::kBlockN;
  static constexpr int kConsumerWarpgroups = kBlockM / 64;  // wgmma M = 64 rows per warpgroup
  // Warpgroup 0 produces (one warp issues the TMA loads), warpgroups 1.. consume.
  static constexpr int kNThreads = 128 * (kConsumerWarpgroups + 1);
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  // A 128-byte swizzle row holds 64 16-bit elements; that is also the largest inner extent of a
  // TMA box with 128-byte swizzle, so D = 128 loads as two boxes along D.
  static constexpr int kChunk = 64;
  static constexpr int kChunks = kHeadDim / kChunk;
  static_assert(kHeadDim % kChunk == 0, "head dim must be a multiple of 64");
  // Ring depths. K: 3, so the loads of a tile start two tiles ahead and gathered KV boxes (short
  // contiguous runs, often L2 misses) stay off the critical path (run H2: 3 K/V stages were +6%
  // over 2 on seq-32k-blocked). V: 2, since V(t) is first read by P V(t), one tile after K(t) is
  // read by S(t), so 2 stages give V the same lead. Q: 2, so the next item's Q loads while the
  // current item runs instead of after its last S = Q K^T (~2.7 us per item waiting for Q on
  // seq-32k-blocked, run A3). At D = 128: Q 2 x 32 + K 3 x 32 + V 2 x 32 = 224 KiB, just under
  // the 227 KiB an H100 block may use.
  static constexpr int kStagesQ = 2;
  static constexpr int kStagesK = 3;
  static constexpr int kStagesV = 2;
  // setmaxnreg budgets, 40 * 128 + 232 * 256 = 64512 <= 64 K registers. The producer computes
  // each item's box geometry (64-bit window arithmetic) itself: at FlashAttention-3's 24 it
  // spilled 44 bytes; the consumers (S, P, O and two row windows) fit 232 without spills.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;

  using TileShapeS = cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>;  // per WG
  using TileShapeO = cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>;  // per WG
  using WarpgroupLayout =
      cute::Layout<cute::Shape<cute::Int<kConsumerWarpgroups>, cute::_1, cute::_1>>;
  // S = Q K^T: both operands from shared memory, K-major.
  using TiledMmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, TileShapeS>(), WarpgroupLayout{}));
  // O += P V: P from registers (the S accumulator converted in place), V from shared memory,
  // MN-major (V's rows are keys, its contiguous dim is D = the N of this GEMM).
  using TiledMmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, TileShapeO, cute::GMMA::Major::K,
                                 cute::GMMA::Major::MN>(),
      WarpgroupLayout{}));

  // Shared-memory tiles are exactly what TMA writes with 128-byte swizzle: per 64-element D
  // chunk a dense (rows, 64) block, rows in box order (last grid axis fastest).
  using SmemAtom = decltype(cute::GMMA::Layout_K_SW128_Atom<Element>{});  // (8, 64)
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      SmemAtom{},
      cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>, cute::Int<kStagesQ>>{}));  // (M, D, S)
  using SmemLayoutK = decltype(cute::tile_to_shape(
      SmemAtom{},
      cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStagesK>>{}));  // (N, D, S)
  using SmemLayoutV = decltype(cute::tile_to_shape(
      SmemAtom{},
      cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStagesV>>{}));  // (N, D, S)
  // V seen as the B operand of P V: (D, N, stages), the same bytes.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutV{},
      cute::make_ordered_layout(
          cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kStagesV>>{},
          cute::Step<cute::_2, cute::_1, cute::_3>{})));  // (D, N, S)

  static constexpr int kTileBytesQ = kBlockM * kHeadDim * int(sizeof(Element));
  static constexpr int kTileBytesKV = kBlockN * kHeadDim * int(sizeof(Element));

  struct SharedStorage {
    // 1024-byte alignment: the 128-byte swizzle pattern repeats every 8 rows (1 KiB), and the
    // wgmma descriptors assume tiles that start on that period.
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutK>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutV>> v;
    // q_full[s]: Q (and box[] of that item) arrived in Q stage s; q_empty[s]: the consumers'
    // last S = Q K^T of that item is done; box_empty[j]: the consumers finished the item whose
    // geometry is box[j].
    alignas(16) uint64_t q_full[kStagesQ], q_empty[kStagesQ], box_empty[2];
    uint64_t k_full[kStagesK], k_empty[kStagesK], v_full[kStagesV], v_empty[kStagesV];
    // Geometry of the producer's current and previous item: the producer runs one item ahead
    // while the consumers finish (epilogue) the previous one.
    QBox box[2];
  };
  // +1 KiB: the dynamic shared-memory base is rounded up to 1024 bytes inside the kernel.
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory of one sm_90 block");
};

}  // namespace fna::cuda::fused
