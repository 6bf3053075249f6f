// Producer of the Hopper forward: warp 0 of warpgroup 0, one lane of which issues every TMA load
// of a block. Per work item: the item's geometry into box[j % 2] (three lanes, one axis each), its
// Q box into the next of two Q stages (two boxes along D at D = 128), then per KV tile a K box and
// a V box into their rings' next stages. Spatial KV boxes start at the Q box's KV range
// (QBox::kv_lo) and step by the KV box extent; TMA zero-fills rows past the dilation group's end,
// so no load is masked. The K/V ring runs on across items, so the next item's first tiles load
// while the consumers finish the previous one.
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
  const TileShape& ts = p.base.tile;
  const CUtensorMap* maps =
      p.maps != nullptr ? static_cast<const CUtensorMap*>(p.maps) : p.inline_maps;
  // The whole warp walks the items; lanes 0-2 compute one axis of a box each (the window
  // arithmetic is 64-bit: one thread doing all three axes took ~8k cycles per item, run A3),
  // lane 0 issues every load.
  const int lane = int(threadIdx.x) % 32;
  int it = 0;  // KV tiles issued so far (ring position)
  int j = 0;   // non-empty items of this block so far
  for (int64_t w = blockIdx.x; w < p.items; w += gridDim.x) {
    const WorkItem item = work_item(p, w);
    if (!item_nonempty(p, item.box_index)) continue;
    // The slot's previous item (j - 2) must be finished, epilogue included, before its geometry
    // is overwritten. A fresh barrier counts as having completed the phase before its first, so
    // first waits use parity 1 and pass.
    Barrier::wait(&st.box_empty[j & 1], ((j >> 1) & 1) ^ 1);
    QBox& box = st.box[j & 1];
    if (lane < 3) make_q_box_axis(p.base.nb, ts, item.box_index, lane, &box);
    __syncwarp();
    if (lane == 0) box.num_kv_tiles = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
    __syncwarp();
    const int num_spatial = box.num_kv_tiles;
    const int num_tiles =
        num_spatial + (p.base.additional_kv + Traits::kBlockN - 1) / Traits::kBlockN;
    const int hk = item.h / p.base.heads_ratio;
    int group = 0;
    CUTE_UNROLL
    for (int r = 0; r < 3; ++r) group = group * int(p.base.nb.axis[r].dilation) + box.group[r];
    const CUtensorMap* gmaps = maps + (item.b * p.groups + group) * kMapsPerGroup;
    const CUtensorMap* extra =
        maps + p.base.batch * p.groups * kMapsPerGroup + item.b * kMapsPerBatchExtra;

    // Q first: its stage was freed by item j - 2's last S = Q K^T, long done, so the Q box loads
    // while the consumers still run item j - 1. The arrival on q_full also publishes box[j % 2]
    // to the consumers (mbarrier arrive releases, wait acquires).
    const int qs = j % Traits::kStagesQ;
    Barrier::wait(&st.q_empty[qs], ((j / Traits::kStagesQ) & 1) ^ 1);
    if (lane == 0) {
      Barrier::arrive_and_expect_tx(&st.q_full[qs], Traits::kTileBytesQ);
      tma_load_box<Traits>(TmaBox{gmaps + kMapQ, {box.i0[2], box.i0[1], box.i0[0], item.h}},
                           &st.q_full[qs], st.q.data() + qs * Traits::kBlockM * Traits::kHeadDim,
                           Traits::kBlockM);
    }
    for (int tile = 0; tile < num_tiles; ++tile, ++it) {
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
      const int ks = it % Traits::kStagesK, vs = it % Traits::kStagesV;
      Barrier::wait(&st.k_empty[ks], ((it / Traits::kStagesK) & 1) ^ 1);
      if (lane == 0) {
        Barrier::arrive_and_expect_tx(&st.k_full[ks], Traits::kTileBytesKV);
        tma_load_box<Traits>(kb, &st.k_full[ks],
                             st.k.data() + ks * Traits::kBlockN * Traits::kHeadDim,
                             Traits::kBlockN);
      }
      Barrier::wait(&st.v_empty[vs], ((it / Traits::kStagesV) & 1) ^ 1);
      if (lane == 0) {
        Barrier::arrive_and_expect_tx(&st.v_full[vs], Traits::kTileBytesKV);
        tma_load_box<Traits>(vb, &st.v_full[vs],
                             st.v.data() + vs * Traits::kBlockN * Traits::kHeadDim,
                             Traits::kBlockN);
      }
    }
    ++j;
  }
}

}  // namespace fna::cuda::fused
