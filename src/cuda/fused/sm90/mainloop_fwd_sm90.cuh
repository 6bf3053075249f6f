// Consumer warpgroups of the Hopper forward: S = Q K^T and O += P V on wgmma, online softmax,
// masks on tiles that straddle a window edge, and the epilogue (O / rowsum and lse, stored from
// registers straight into the user's out and lse views).
//
// Each warpgroup owns 64 rows of the 128-row Q box. Within a warpgroup the GEMMs of tile t
// overlap the softmax of the same tile (FlashAttention-3's intra-warpgroup overlap):
//   issue S(t) = Q K(t); issue O += P(t-1) V(t-1); wait S(t); mask + softmax(t) while P V runs;
//   wait P V; rescale O; P(t) = bf16(S(t)).
// Across the items of the persistent loop the same overlap continues: the next item's first
// S = Q K^T (its Q is double-buffered) is issued with the current item's last P V, and the
// epilogue follows them. The two warpgroups take turns issuing GEMMs (scheduler barriers below).
#pragma once

#include <cutlass/arch/barrier.h>

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/mask_sm90.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/scheduler_fwd_sm90.cuh"
#include "cuda/fused/sm90/softmax_sm90.cuh"

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

// Named barriers 1 and 2 order the two consumer warpgroups' GEMM issue (FlashAttention-3's warp
// scheduler barriers): warpgroup w waits on barrier 1 + w before issuing a tile's GEMMs and then
// lets the other one go, so one warpgroup's softmax runs while the other's GEMMs hold the tensor
// cores instead of both contending for them at once. (0 is __syncthreads.)
__device__ __forceinline__ void scheduler_sync(int wg) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wg) : "memory");
}
__device__ __forceinline__ void scheduler_arrive_other(int wg) {
  asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - wg) : "memory");
}

template <class Traits, class Storage>
__device__ __forceinline__ void consume_fwd(const FwdParamsSm90& p, Storage& st) {
  using namespace cute;
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStagesK = Traits::kStagesK;
  constexpr int kStagesV = Traits::kStagesV;
  static_assert(kBlockN <= 128, "column masks are 2 x 64 bits");
  const int tidx = int(threadIdx.x) - 128;  // index among the consumer threads
  const FwdParams& fp = p.base;
  const TileShape& ts = fp.tile;

  Tensor sQ =
      make_tensor(make_smem_ptr(st.q.data()), typename Traits::SmemLayoutQ{});  // (M, D, S)
  Tensor sK =
      make_tensor(make_smem_ptr(st.k.data()), typename Traits::SmemLayoutK{});  // (N, D, S)
  Tensor sVt =
      make_tensor(make_smem_ptr(st.v.data()), typename Traits::SmemLayoutVt{});  // (D, N, S)

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tidx);
  auto thr_o = mma_o.get_thread_slice(tidx);
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);   // (MMA, MMA_M, MMA_D, S) descriptors
  Tensor tSrK = thr_s.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_D, S)
  Tensor tOrV = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_D, MMA_N, S)
  Tensor acc_s =
      partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
  Tensor acc_o =
      partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});     // (MMA, MMA_M, MMA_D)
  Tensor s_rc = make_tensor(acc_s.data(), gmma_acc_rowcol(acc_s.layout()));  // (rows, cols)
  Tensor o_rc = make_tensor(acc_o.data(), gmma_acc_rowcol(acc_o.layout()));  // (rows, dims)
  // P in 16 bits, written only while no P V wgmma is in flight.
  Tensor r_p = make_tensor<Element>(acc_s.layout());  // (MMA, MMA_M, MMA_N)
  Tensor tOrP = make_tensor(r_p.data(), gmma_acc_as_a_operand(r_p.layout()));  // A of P V

  // (row, col) in the block of each of this thread's scores / outputs.
  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_s.partition_C(cS);
  Tensor tScS_rc = make_tensor(tScS.data(), gmma_acc_rowcol(tScS.layout()));  // (rows, cols)
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_o.partition_C(cO);
  Tensor tOcO_rc = make_tensor(tOcO.data(), gmma_acc_rowcol(tOcO.layout()));  // (rows, dims)
  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  constexpr int kCols = decltype(size<1>(tScS_rc))::value;
  const int n0 = get<1>(tScS_rc(0, 0));

  // One arrival per consumer warpgroup releases a ring slot (the empty barriers count them).
  auto release = [&](uint64_t* bar) {
    if (tidx % 128 == 0) cutlass::arch::ClusterBarrier::arrive(bar);
  };
  auto convert_p = [&]() {
    CUTE_UNROLL
    for (int e = 0; e < size(acc_s); ++e) r_p(e) = static_cast<Element>(acc_s(e));
  };

  const ColumnMaskShape mask_shape = column_mask_shape(ts);  // launch constant
  // Scores stay unscaled until the exponent (one FFMA there). A non-positive scale would flip or
  // flatten the max, so it is applied up front instead (rare: uniform over the launch).
  const bool prescale = !(fp.scale_log2 > 0.f);
  const float scale_log2 = prescale ? 1.f : fp.scale_log2;

  // One work item as the consumers see it: its place in the block's sequence (j: box slot and
  // barrier phases), tile counts and, on items with a masked tile, this thread's rows' windows.
  struct Item {
    WorkItem id;
    int j;
    int qs;  // Q stage
    int num_spatial, num_tiles;
    RowWindow windows[kRows];  // read on masked tiles only
    int br[3];                 // walk coordinates of the next spatial tile to fold in
  };
  // The next non-empty item at or after w (p.items when none): the producer skips the same ones.
  auto next_item = [&](int64_t w) {
    while (w < p.items && !item_nonempty(p, work_item(p, w).box_index)) w += gridDim.x;
    return w;
  };
  // Waits for the item's Q (the arrival on q_full also publishes box[j % 2]) and sets it up.
  auto begin_item = [&](int64_t w, int j, Item& c) {
    c.id = work_item(p, w);
    c.j = j;
    c.qs = j % Traits::kStagesQ;
    Barrier::wait(&st.q_full[c.qs], (j / Traits::kStagesQ) & 1);
    const QBox& box = st.box[j & 1];
    c.num_spatial = box.num_kv_tiles;
    c.num_tiles = c.num_spatial + (fp.additional_kv + kBlockN - 1) / kBlockN;
    // A tile is masked iff it leaves [full_lo, full_hi) on some axis: the block-sparse cases have
    // none and skip the per-item window arithmetic.
    bool masked = false;
    CUTE_UNROLL
    for (int r = 0; r < 3; ++r) {
      masked = masked || box.kv_lo[r] < box.full_lo[r] ||
               box.kv_lo[r] + (box.kv_tiles[r] << ts.kv_shift[r]) > box.full_hi[r];
      c.br[r] = 0;
    }
    if (masked) {
      CUTE_UNROLL
      for (int i = 0; i < kRows; ++i)
        c.windows[i] = row_window(fp.nb, ts, box, get<0>(tScS_rc(i, 0)));
    }
  };

  // Scale, mask and fold tile `tile` of item c into the softmax state; returns the O corrections.
  // Tiles come in walk order, so the spatial tile's coordinates advance in c.br (no index decode).
  auto softmax_tile = [&](Item& c, int tile, SplitOnlineSoftmax<kRows>& sm,
                          float(&corr)[kRows]) {
    if (prescale) {
      CUTE_UNROLL
      for (int e = 0; e < size(s_rc); ++e) s_rc(e) *= fp.scale_log2;
    }
    if (tile < c.num_spatial) {
      const QBox& box = st.box[c.j & 1];
      const KvTile kv = kv_tile_at(ts, box, c.br);
      next_kv_tile(box, c.br);
      if (kv.masked) {
        CUTE_UNROLL
        for (int i = 0; i < kRows; ++i) {
          uint64_t words[2];
          window_column_mask_2x64(mask_shape, kv, c.windows[i], words);
          const uint64_t lo = words[0] >> n0, hi = words[1] >> n0;
          CUTE_UNROLL
          for (int col = 0; col < kCols; ++col) {
            // Column n0 + k of this thread: bit k of the shifted words (k < 64 exactly for
            // the columns below 64, since n0 + (k mod 8) < 8).
            const int k = get<1>(tScS_rc(i, col)) - n0;
            const bool keep = k < 64 ? (lo >> k) & 1 : (hi >> (k - 64)) & 1;
            if (!keep) s_rc(i, col) = -INFINITY;
          }
        }
      }
    } else {
      const int first = (tile - c.num_spatial) * kBlockN;
      if (first + kBlockN > fp.additional_kv) {
        CUTE_UNROLL
        for (int i = 0; i < kRows; ++i) {
          CUTE_UNROLL
          for (int col = 0; col < kCols; ++col)
            if (first + get<1>(tScS_rc(i, col)) >= fp.additional_kv) s_rc(i, col) = -INFINITY;
        }
      }
    }
    sm.scores(s_rc, scale_log2, corr);
  };

  // O / rowsum and lse of item `id` (slot j), straight from registers; then box[j % 2] may be
  // reused.
  auto epilogue = [&](const WorkItem& id, int j, SplitOnlineSoftmax<kRows>& sm) {
    float lse[kRows];
    sm.finalize(o_rc, lse);
    const QBox& box = st.box[j & 1];
    Element* out = static_cast<Element*>(fp.out);
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      int qi[3];
      if (!row_valid(ts, box, get<0>(tOcO_rc(i, 0)), qi)) continue;
      int x[3];
      CUTE_UNROLL
      for (int r = 0; r < 3; ++r) x[r] = box.coord(fp.nb, r, qi[r]);
      Element* row = out + token_offset(fp.out_stride, id.b, x, id.h);
      CUTE_UNROLL
      for (int col = 0; col < size<1>(o_rc); col += 2) {
        // Columns col, col + 1 are adjacent dims; rows are 16-byte aligned (host check): 4 bytes.
        cutlass::Array<Element, 2> v;
        v[0] = static_cast<Element>(o_rc(i, col));
        v[1] = static_cast<Element>(o_rc(i, col + 1));
        *reinterpret_cast<cutlass::Array<Element, 2>*>(row + get<1>(tOcO_rc(i, col))) = v;
      }
      if (fp.lse != nullptr && tidx % 4 == 0)
        fp.lse[token_offset(fp.lse_stride, id.b, x, id.h)] = lse[i];
    }
    cutlass::arch::ClusterBarrier::arrive(&st.box_empty[j & 1]);
  };

  static_assert(Traits::kConsumerWarpgroups == 2, "the scheduler barriers count 2 x 128 threads");
  const int wg = tidx / 128;
  if (wg == 1) scheduler_arrive_other(wg);  // warpgroup 0 issues first

  int64_t w = next_item(blockIdx.x);
  if (w >= p.items) return;
  int it = 0;  // KV tiles consumed so far (ring position)
  Item cur;
  begin_item(w, 0, cur);
  SplitOnlineSoftmax<kRows> softmax;
  softmax.init();
  float corr[kRows];
  clear(acc_o);
  // The block's first S = Q K^T runs alone; every later item's first one is issued together with
  // the previous item's last P V (below).
  {
    const int s = it % kStagesK;
    Barrier::wait(&st.k_full[s], (it / kStagesK) & 1);
    scheduler_sync(wg);
    warpgroup_gemm<true, -1, false>(mma_s, tSrQ(_, _, _, cur.qs), tSrK(_, _, _, s), acc_s);
    scheduler_arrive_other(wg);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_s);
    release(&st.k_empty[s]);
    if (cur.num_tiles == 1) release(&st.q_empty[cur.qs]);
    softmax_tile(cur, 0, softmax, corr);
    convert_p();
  }
  while (true) {
    for (int tile = 1; tile < cur.num_tiles; ++tile) {
      const int t = it + tile;
      const int s = t % kStagesK, sp = (t - 1) % kStagesV;
      Barrier::wait(&st.k_full[s], (t / kStagesK) & 1);
      Barrier::wait(&st.v_full[sp], ((t - 1) / kStagesV) & 1);
      scheduler_sync(wg);
      warpgroup_gemm<true, -1, false>(mma_s, tSrQ(_, _, _, cur.qs), tSrK(_, _, _, s), acc_s);
      warpgroup_gemm<false, -1, true>(mma_o, tOrP, tOrV(_, _, _, sp), acc_o);
      scheduler_arrive_other(wg);
      warpgroup_wait<1>();  // S(tile) is done; P V of the previous tile may still run
      warpgroup_fence_operand(acc_s);
      release(&st.k_empty[s]);
      if (tile == cur.num_tiles - 1) release(&st.q_empty[cur.qs]);  // the item's last S is done
      softmax_tile(cur, tile, softmax, corr);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_o);
      release(&st.v_empty[sp]);
      softmax.rescale(o_rc, corr);
      convert_p();
    }
    const int t_last = it + cur.num_tiles - 1;
    const int sl = t_last % kStagesV;
    it += cur.num_tiles;
    const int64_t w_next = next_item(w + gridDim.x);
    if (w_next >= p.items) {  // the block's last item: its last P V runs alone
      Barrier::wait(&st.v_full[sl], (t_last / kStagesV) & 1);
      scheduler_sync(wg);
      warpgroup_gemm<false, -1, true>(mma_o, tOrP, tOrV(_, _, _, sl), acc_o);
      scheduler_arrive_other(wg);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_o);
      release(&st.v_empty[sl]);
      epilogue(cur.id, cur.j, softmax);
      return;
    }
    // Across items: the next item's first S = Q K^T runs with this item's last P V, and its
    // softmax while that P V finishes; the epilogue follows. (Otherwise each item would start
    // and end with a GEMM that has nothing to overlap: ~20% of seq-32k-blocked, run H2.)
    // `cur` becomes the next item (no struct copies: they would go through local memory); the
    // epilogue still needs the finished item's place.
    const WorkItem done_id = cur.id;
    const int done_j = cur.j;
    begin_item(w_next, done_j + 1, cur);
    const int s = it % kStagesK;
    Barrier::wait(&st.k_full[s], (it / kStagesK) & 1);
    Barrier::wait(&st.v_full[sl], (t_last / kStagesV) & 1);
    scheduler_sync(wg);
    warpgroup_gemm<true, -1, false>(mma_s, tSrQ(_, _, _, cur.qs), tSrK(_, _, _, s), acc_s);
    warpgroup_gemm<false, -1, true>(mma_o, tOrP, tOrV(_, _, _, sl), acc_o);
    scheduler_arrive_other(wg);
    warpgroup_wait<1>();
    warpgroup_fence_operand(acc_s);
    release(&st.k_empty[s]);
    if (cur.num_tiles == 1) release(&st.q_empty[cur.qs]);
    SplitOnlineSoftmax<kRows> next_softmax;
    next_softmax.init();
    softmax_tile(cur, 0, next_softmax, corr);  // corr unused: the next O starts at zero
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
    release(&st.v_empty[sl]);
    convert_p();  // P V no longer reads r_p; acc_s is free during the epilogue
    epilogue(done_id, done_j, softmax);
    clear(acc_o);
    softmax = next_softmax;
    w = w_next;
  }
}

}  // namespace fna::cuda::fused
