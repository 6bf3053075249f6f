// Producer of the Hopper forward: one thread plans the block's work items and issues every TMA
// load. Per work item: its Q box (two boxes along D at D = 128), then per KV tile a K box into
// the ring's next stage and a V box; the item's geometry was planned into an item slot during
// the previous item. Spatial KV boxes start at the Q box's KV range (QBox::kv_lo) and step by the
// KV box extent; TMA zero-fills rows past the dilation group's end, so no load is masked. The K/V
// ring runs on across items, so the next item's first tiles load while the consumers finish the
// previous one.
#pragma once

#include <cuda.h>
#include <cutlass/arch/barrier.h>

#include <cute/arch/copy_sm90_tma.hpp>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/scheduler_fwd_sm90.cuh"

namespace fna::cuda::fused {

// Coordinates of a box in a 5-dim map (D, axis 2, axis 1, axis 0, head): innermost first.
struct TmaBox {
  const void* map;
  int c[4];  // axis 2, axis 1, axis 0, head
};

// Loads one box of `kChunks` 64-element D chunks into `dst`, completing on `bar`.
template <class Traits>
__device__ __forceinline__ void tma_load_box(const TmaBox& box, uint64_t* bar,
                                             typename Traits::Element* dst, int rows) {
  CUTE_UNROLL
  for (int c = 0; c < Traits::kChunks; ++c)
    cute::SM90_TMA_LOAD_5D::copy(box.map, bar, uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL),
                                 dst + c * rows * Traits::kChunk, c * Traits::kChunk, box.c[0],
                                 box.c[1], box.c[2], box.c[3]);
}

template <class Traits, class Storage>
__device__ __forceinline__ void produce_fwd(const FwdParamsSm90& p, Storage& st) {
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kStages = Traits::kStages;
  constexpr int kSlots = Traits::kItemSlots;
  const TileShape& ts = p.base.tile;
  const CUtensorMap* maps =
      p.maps != nullptr ? static_cast<const CUtensorMap*>(p.maps) : p.inline_maps;
  // An uploaded array was written by a copy, which the tensor-map proxy does not observe: the TMA
  // unit may still hold descriptors it cached for the same addresses in an earlier call (the
  // stream-ordered allocation hands the same bytes back call after call), and then loads from the
  // previous call's tensors. The CUDA programming guide asks every thread that uses a map written
  // that way for a tensormap-proxy acquire fence first (.sys: the copy came from the host). This
  // thread issues every TMA load of the block. (Seen once: CudaHopperForward.GraphCapture-
  // WithManyMaps compared 0.057 apart in run S6-H2; UploadedMapsFollowEachCall provokes it.)
  for (int m = 0; m < p.map_count; ++m)
    asm volatile("fence.proxy.tensormap::generic.acquire.sys [%0], 128;" ::"l"(maps + m)
                 : "memory");

  // Writes item w (or, for w >= p.items, the end marker) into slot j % kSlots once the consumers
  // are done with the slot's previous item (j - kSlots). A fresh barrier counts as having
  // completed the phase before its first, so first waits use parity 1 and pass.
  auto plan_item = [&](int64_t w, int j) {
    Barrier::wait(&st.item_empty[j % kSlots], ((j / kSlots) & 1) ^ 1);
    auto& slot = st.item[j % kSlots];
    slot.valid = w < p.items;
    if (w < p.items) {
      const WorkItem item = work_item(p, w);
      slot.b = item.b;
      slot.h = item.h;
      make_q_box(p.base.nb, ts, item.box_index, &slot.box);
    }
  };

  int it = 0;  // KV tiles issued so far (ring position)
  int64_t w = next_nonempty_item(p, blockIdx.x, gridDim.x);
  plan_item(w, 0);
  int j = 0;  // items of this block so far
  for (; w < p.items; ++j) {
    const auto& slot = st.item[j % kSlots];
    const QBox& box = slot.box;
    const int num_spatial = box.num_kv_tiles;
    const int num_tiles =
        num_spatial + (p.base.additional_kv + Traits::kBlockN - 1) / Traits::kBlockN;
    const int hk = slot.h / p.base.heads_ratio;
    int group = 0;
    CUTE_UNROLL
    for (int r = 0; r < 3; ++r) group = group * int(p.base.nb.axis[r].dilation) + box.group[r];
    const CUtensorMap* gmaps = maps + (slot.b * p.groups + group) * kMapsPerGroup;
    const CUtensorMap* extra =
        maps + p.base.batch * p.groups * kMapsPerGroup + slot.b * kMapsPerBatchExtra;

    auto load_kv = [&](int tile) {
      const int s = it % kStages;
      const uint32_t parity = (it / kStages) & 1;
      ++it;
      TmaBox kb, vb;
      if (tile < num_spatial) {
        const KvTile kv = make_kv_tile(ts, box, tile);
        kb = TmaBox{gmaps + kMapK, {kv.base[2], kv.base[1], kv.base[0], hk}};
        vb = TmaBox{gmaps + kMapV, {kv.base[2], kv.base[1], kv.base[0], hk}};
      } else {
        // Additional KV: maps (D, Nadd, 1, 1, Hkv) with boxes of kBlockN tokens.
        const int first = (tile - num_spatial) * Traits::kBlockN;
        kb = TmaBox{extra + kMapAddK, {first, 0, 0, hk}};
        vb = TmaBox{extra + kMapAddV, {first, 0, 0, hk}};
      }
      Barrier::wait(&st.k_empty[s], parity ^ 1);
      Barrier::arrive_and_expect_tx(&st.k_full[s], Traits::kTileBytesKV);
      tma_load_box<Traits>(kb, &st.k_full[s], st.k.data() + s * Traits::kBlockN * Traits::kHeadDim,
                           Traits::kBlockN);
      Barrier::wait(&st.v_empty[s], parity ^ 1);
      Barrier::arrive_and_expect_tx(&st.v_full[s], Traits::kTileBytesKV);
      tma_load_box<Traits>(vb, &st.v_full[s], st.v.data() + s * Traits::kBlockN * Traits::kHeadDim,
                           Traits::kBlockN);
    };
    // The first tiles of the item need ring slots only, not the Q buffer: issue them before
    // waiting for the previous item's last S = Q K^T, so they load while the consumers finish
    // that item (last tiles, epilogue) instead of after it (run H2: the per-item cost was ~20% of
    // seq-32k-blocked's time). kStages - 1 of them: their slots are released by the time of that
    // last S (slot of tile t_last - 1: its P V completes in the last loop iteration), while the
    // next one's V slot frees only after the final P V, which would hold Q back.
    const int early = num_tiles < kStages - 1 ? num_tiles : kStages - 1;
    for (int tile = 0; tile < early; ++tile) load_kv(tile);
    // Q of the previous item must be consumed (its last S = Q K^T done). The arrival on q_full
    // also publishes the item's slot to the consumers (mbarrier arrive releases, wait acquires).
    Barrier::wait(&st.q_empty, (j & 1) ^ 1);
    Barrier::arrive_and_expect_tx(&st.q_full, Traits::kTileBytesQ);
    tma_load_box<Traits>(TmaBox{gmaps + kMapQ, {box.i0[2], box.i0[1], box.i0[0], slot.h}},
                         &st.q_full, st.q.data(), Traits::kBlockM);
    // With the ring full of this item's first tiles, plan the next item: its geometry (64-bit
    // window arithmetic in this one thread) then runs while the consumers work through those
    // tiles. Planned after the last tile's load instead (ncu, bench/RESULTS.md "hopper S5"), it
    // held back the next item's first tiles and Q box: the consumers waited ~6% of their time
    // for Q.
    const int full = num_tiles < kStages ? num_tiles : kStages;
    for (int tile = early; tile < full; ++tile) load_kv(tile);
    w = next_nonempty_item(p, w + gridDim.x, gridDim.x);
    plan_item(w, j + 1);
    for (int tile = full; tile < num_tiles; ++tile) load_kv(tile);
  }
  // Slot j now holds the end marker: publish it like an item without a Q box.
  Barrier::wait(&st.q_empty, (j & 1) ^ 1);
  Barrier::arrive(&st.q_full);
}

}  // namespace fna::cuda::fused
