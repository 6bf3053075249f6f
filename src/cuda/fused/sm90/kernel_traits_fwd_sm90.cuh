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
#include "cuda/fused/sm90/mask_sm90.cuh"

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
  // K/V ring depth 3: the loads of a tile start two tiles ahead, so gathered KV boxes (short
  // contiguous runs, often L2 misses) stay off the critical path. At D = 128 that is Q 32 KiB +
  // 3 x (K 32 + V 32) = 224 KiB, just under the 227 KiB an H100 block may use.
  static constexpr int kStages = 3;
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
      SmemAtom{}, cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}));  // (M, D)
  using SmemLayoutKV = decltype(cute::tile_to_shape(
      SmemAtom{},
      cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kStages>>{}));  // (N, D, S)
  // V seen as the B operand of P V: (D, N, stages), the same bytes.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{},
      cute::make_ordered_layout(
          cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kStages>>{},
          cute::Step<cute::_2, cute::_1, cute::_3>{})));  // (D, N, S)

  static constexpr int kTileBytesQ = kBlockM * kHeadDim * int(sizeof(Element));
  static constexpr int kTileBytesKV = kBlockN * kHeadDim * int(sizeof(Element));

  // Work items travel from the producer to the consumers through a ring of slots: the producer
  // plans an item (its box geometry, thousands of cycles in one thread) while the consumers still
  // work on the item before it, so 3 slots: the consumers' current item, the one whose Q is
  // loading, and the one being planned.
  static constexpr int kItemSlots = 3;
  struct ItemSlot {
    QBox box;
    int64_t b;
    int h;
    bool valid;  // false: the block has no items left (the consumers stop)
  };

  struct SharedStorage {
    // 1024-byte alignment: the 128-byte swizzle pattern repeats every 8 rows (1 KiB), and the
    // wgmma descriptors assume tiles that start on that period.
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> v;
    // q_full: Q (and the item's slot) arrived; q_empty: the consumers' last S = Q K^T of an item
    // is done; item_empty[s]: the consumers finished the item in slot s (epilogue included).
    alignas(16) uint64_t q_full, q_empty, item_empty[kItemSlots];
    uint64_t k_full[kStages], k_empty[kStages], v_full[kStages], v_empty[kStages];
    ItemSlot item[kItemSlots];
  };
  // +1 KiB: the dynamic shared-memory base is rounded up to 1024 bytes inside the kernel. The
  // consumers' mask table (mask_sm90.cuh) lies right after the storage.
  static constexpr int kSmemBytes =
      int(sizeof(SharedStorage)) + 1024 + kMaskTableWords * int(sizeof(uint64_t));
  static_assert(kSmemBytes <= 227 * 1024, "shared memory of one sm_90 block");
};

}  // namespace fna::cuda::fused
