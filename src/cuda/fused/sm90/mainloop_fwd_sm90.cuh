// Consumer warpgroups of the Hopper forward: S = Q K^T and O += P V on wgmma, online softmax,
// masks on tiles that straddle a window edge, and the epilogue (O / rowsum and lse, stored from
// registers straight into the user's out and lse views).
//
// Each warpgroup owns 64 rows of the 128-row Q box. Within a warpgroup the GEMMs of tile t
// overlap the softmax of the same tile (FlashAttention-3's intra-warpgroup overlap):
//   issue S(t) = Q K(t); issue O += P(t-1) V(t-1); wait S(t); mask + softmax(t) while P V runs;
//   wait P V; rescale O; P(t) = bf16(S(t)).
// and the two warpgroups interleave on the tensor cores on their own.
#pragma once

#include <cutlass/arch/barrier.h>

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm90/gmma_sm90.cuh"
#include "cuda/fused/sm90/mask_sm90.cuh"
#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "cuda/fused/sm90/scheduler_fwd_sm90.cuh"
#include "cuda/fused/sm90/softmax_sm90.cuh"

namespace fna::cuda::fused {

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
// Named barrier 3: the consumer threads only (the mask table is filled).
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 3, 256;\n" ::: "memory"); }

// Column masks: quad-split words (mask_sm90.cuh), each lane of a quad builds one of the quad's
// 2 rows x 2 words from a per-item window, the axis patterns read from a per-launch table placed
// right after the shared storage (Traits::kSmemBytes counts it).
template <class Traits, class Storage>
__device__ __forceinline__ void consume_fwd(const FwdParamsSm90& p, Storage& st) {
  using namespace cute;
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  static_assert(kBlockN <= 128, "column masks are 2 x 64 bits");
  const int tidx = int(threadIdx.x) - 128;  // index among the consumer threads
  const FwdParams& fp = p.base;
  const TileShape& ts = fp.tile;

  Tensor sQ = make_tensor(make_smem_ptr(st.q.data()), typename Traits::SmemLayoutQ{});  // (M, D)
  Tensor sK =
      make_tensor(make_smem_ptr(st.k.data()), typename Traits::SmemLayoutKV{});  // (N, D, S)
  Tensor sVt =
      make_tensor(make_smem_ptr(st.v.data()), typename Traits::SmemLayoutVt{});  // (D, N, S)

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tidx);
  auto thr_o = mma_o.get_thread_slice(tidx);
  // The shared-memory descriptors depend on the warpgroup only. Derived from a warp-uniform
  // warpgroup index (a shuffle from lane 0, as CUTLASS's canonical_warp_group_idx), they can live
  // in uniform registers instead of being moved there (R2UR) before every wgmma.
  const int wg = __shfl_sync(0xffffffffu, tidx / 128, 0);
  auto wg_s = mma_s.get_thread_slice(wg * 128);
  auto wg_o = mma_o.get_thread_slice(wg * 128);
  Tensor tSrQ = wg_s.partition_fragment_A(sQ);  // (MMA, MMA_M, MMA_D) descriptors
  Tensor tSrK = warp_uniform_descriptors(wg_s.partition_fragment_B(sK));   // (MMA, MMA_N, MMA_D, S)
  Tensor tOrV = warp_uniform_descriptors(wg_o.partition_fragment_B(sVt));  // (MMA, MMA_D, MMA_N, S)
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
  const int lane = tidx % 32;
  const int quad = lane % 4;  // the quad's lanes share rows (softmax_sm90.cuh)

  // One arrival per consumer warpgroup releases a ring slot (the empty barriers count them).
  auto release = [&](uint64_t* bar) {
    if (tidx % 128 == 0) cutlass::arch::ClusterBarrier::arrive(bar);
  };
  auto convert_p = [&]() {
    CUTE_UNROLL
    for (int e = 0; e < size(acc_s); ++e) r_p(e) = static_cast<Element>(acc_s(e));
  };

  const ColumnMaskShape mask_shape = column_mask_shape(ts);     // launch constant
  uint64_t* mask_table = reinterpret_cast<uint64_t*>(&st + 1);  // mask_table_entries words
  for (int k = tidx; k < mask_table_entries(mask_shape); k += Traits::kConsumerThreads)
    mask_table[k] = mask_table_entry(mask_shape, k);
  int table_offset[3];
  mask_table_offsets(mask_shape, table_offset);
  consumer_sync();
  // A shared-space address: through the generic pointer ptxas emits generic loads (LD, not LDS).
  const uint32_t table_smem = static_cast<uint32_t>(__cvta_generic_to_shared(mask_table));
  auto prefix = [&](int r, int x) {
    uint64_t v;
    asm volatile("ld.shared.u64 %0, [%1];" : "=l"(v) : "r"(table_smem + 8 * (table_offset[r] + x)));
    return v;
  };
  // Scores stay unscaled until the exponent (one FFMA there). A non-positive scale would flip or
  // flatten the max, so it is applied up front instead (rare: uniform over the launch).
  const bool prescale = !(fp.scale_log2 > 0.f);
  const float scale_log2 = prescale ? 1.f : fp.scale_log2;

  int it = 0;  // KV tiles consumed so far (ring position)
  static_assert(Traits::kConsumerWarpgroups == 2, "the scheduler barriers count 2 x 128 threads");
  if (wg == 1) scheduler_arrive_other(wg);  // warpgroup 0 issues first
  for (int j = 0;; ++j) {                   // j: items of this block so far
    Barrier::wait(&st.q_full, j & 1);
    const auto& slot = st.item[j % Traits::kItemSlots];
    if (!slot.valid) break;
    const QBox& box = slot.box;
    // Warp-uniform for the compiler too (the ring position below, and with it the K / V
    // descriptors, then stay in uniform registers).
    const int num_spatial = __shfl_sync(0xffffffffu, box.num_kv_tiles, 0);
    const int num_tiles = num_spatial + (fp.additional_kv + kBlockN - 1) / kBlockN;

    // This lane's row window (lane q of a quad builds word q % 2 of row q / 2; kRows = 2): read
    // on masked items only, so computed only for those (the block-sparse cases have none and
    // skip this per-item arithmetic).
    const bool item_masked = item_has_masked_tile(ts, box);
    RowMaskWindow mask_window{};
    if (item_masked) {
      const int row = (quad >> 1) ? get<0>(tScS_rc(1, 0)) : get<0>(tScS_rc(0, 0));
      mask_window = row_mask_window(mask_shape, box, row_window(fp.nb, ts, box, row), quad & 1);
    }

    // Scale, mask and fold tile `tile` into the softmax state; returns the O corrections. Tiles
    // come in walk order, so the spatial tile's coordinates advance in `br` (no index decode).
    int br[3] = {0, 0, 0};
    auto softmax_tile = [&](int tile, SplitOnlineSoftmax<kRows>& sm, float(&corr)[kRows]) {
      if (prescale) {
        CUTE_UNROLL
        for (int e = 0; e < size(s_rc); ++e) s_rc(e) *= fp.scale_log2;
      }
      if (tile < num_spatial) {
        if (item_masked) {
          const uint64_t word = column_mask_word(mask_shape, ts, mask_window, br, prefix);
          next_kv_tile(box, br);
          // A warp vote instead of the box-level straddle test: a warp whose 16 rows attend
          // the whole tile skips the mask.
          const uint64_t all = mask_window.empty ? 0 : ~uint64_t{0};
          if (__any_sync(0xffffffffu, word != all)) {
            CUTE_UNROLL
            for (int i = 0; i < kRows; ++i) {
              const int src = (lane & ~3) | (2 * i);  // the lanes that built row i's words
              const uint64_t lo = __shfl_sync(0xffffffffu, word, src) >> n0;
              const uint64_t hi = __shfl_sync(0xffffffffu, word, src + 1) >> n0;
              CUTE_UNROLL
              for (int c = 0; c < kCols; ++c) {
                // Column n0 + k of this thread: bit k of the shifted words (k < 64 exactly for
                // the columns below 64, since n0 + (k mod 8) < 8).
                const int k = get<1>(tScS_rc(i, c)) - n0;
                const bool keep = k < 64 ? (lo >> k) & 1 : (hi >> (k - 64)) & 1;
                if (!keep) s_rc(i, c) = -INFINITY;
              }
            }
          }
        }
      } else {
        const int first = (tile - num_spatial) * kBlockN;
        if (first + kBlockN > fp.additional_kv) {
          CUTE_UNROLL
          for (int i = 0; i < kRows; ++i) {
            CUTE_UNROLL
            for (int c = 0; c < kCols; ++c)
              if (first + get<1>(tScS_rc(i, c)) >= fp.additional_kv) s_rc(i, c) = -INFINITY;
          }
        }
      }
      sm.scores(s_rc, scale_log2, corr);
    };

    SplitOnlineSoftmax<kRows> softmax;
    softmax.init();
    float corr[kRows];
    clear(acc_o);

    // Ring position of the item's first tile; advanced per tile without divisions (t % 3 and
    // t / 3 cost a multiply-high chain at the top of every tile, ncu run S8-1).
    int stage = it % kStages;
    uint32_t phase = (it / kStages) & 1;
    {
      const int s = stage;
      Barrier::wait(&st.k_full[s], phase);
      scheduler_sync(wg);
      warpgroup_gemm<true, -1, false>(mma_s, tSrQ, tSrK(_, _, _, s), acc_s);
      scheduler_arrive_other(wg);
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_s);
      release(&st.k_empty[s]);
      softmax_tile(0, softmax, corr);
      convert_p();
    }
    for (int tile = 1; tile < num_tiles; ++tile) {
      const int sp = stage;
      const uint32_t phase_p = phase;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
      const int s = stage;
      Barrier::wait(&st.k_full[s], phase);
      scheduler_sync(wg);
      warpgroup_gemm<true, -1, false>(mma_s, tSrQ, tSrK(_, _, _, s), acc_s);
      // V only now: a late V then delays P V, not S (as FlashAttention-3 orders them).
      Barrier::wait(&st.v_full[sp], phase_p);
      warpgroup_gemm<false, -1, true>(mma_o, tOrP, tOrV(_, _, _, sp), acc_o);
      scheduler_arrive_other(wg);
      warpgroup_wait<1>();  // S(tile) is done; P V of the previous tile may still run
      warpgroup_fence_operand(acc_s);
      release(&st.k_empty[s]);
      softmax_tile(tile, softmax, corr);
      // Wait for P V only now, behind a branch on the softmax's result: with the wait in the
      // softmax's basic block, ptxas hoisted it to the top of the softmax (ncu SASS), so the
      // softmax never overlapped this warpgroup's P V.
      if (softmax.needs_rescale(corr)) {
        warpgroup_wait<0>();
        warpgroup_fence_operand(acc_o);
        softmax.rescale(o_rc, corr);
      } else {
        warpgroup_wait<0>();
        warpgroup_fence_operand(acc_o);
      }
      release(&st.v_empty[sp]);
      convert_p();
    }
    release(&st.q_empty);  // every S = Q K^T of this item is done: the next Q may load
    const int sl = stage;  // the last tile's
    Barrier::wait(&st.v_full[sl], phase);
    scheduler_sync(wg);
    warpgroup_gemm<false, -1, true>(mma_o, tOrP, tOrV(_, _, _, sl), acc_o);
    scheduler_arrive_other(wg);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
    release(&st.v_empty[sl]);
    it += num_tiles;

    // ---- epilogue: O / rowsum and lse, straight from registers -------------------------------
    float lse[kRows];
    softmax.finalize(o_rc, lse);
    Element* out = static_cast<Element*>(fp.out);
    const bool odd = tidx & 1;
    CUTE_UNROLL
    for (int i = 0; i < kRows; ++i) {
      int qi[3];
      // Uniform over the quad that shares the row (the shuffles below need all 32 lanes).
      const bool valid = row_valid(ts, box, get<0>(tOcO_rc(i, 0)), qi);
      int x[3];
      CUTE_UNROLL
      for (int r = 0; r < 3; ++r) x[r] = box.coord(fp.nb, r, qi[r]);
      Element* row = out + token_offset(fp.out_stride, slot.b, x, slot.h);
      CUTE_UNROLL
      for (int c = 0; c < size<1>(o_rc); c += 4) {
        // Columns (c, c + 1) and (c + 2, c + 3) are 2 dims in each of two adjacent 8-dim groups;
        // an even and an odd thread of the quad swap one pair, so each holds 4 adjacent dims:
        // 8-byte stores whose quad covers 32 contiguous bytes (4-byte stores wrote half sectors:
        // ncu counted 52% excess store sectors, run S5-P1). Rows are 16-byte aligned (host check).
        cutlass::Array<Element, 4> v;
        v[0] = static_cast<Element>(o_rc(i, c));
        v[1] = static_cast<Element>(o_rc(i, c + 1));
        v[2] = static_cast<Element>(o_rc(i, c + 2));
        v[3] = static_cast<Element>(o_rc(i, c + 3));
        uint32_t(&w)[2] = *reinterpret_cast<uint32_t(*)[2]>(&v);
        const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? w[0] : w[1], 1);
        const uint2 packed = odd ? make_uint2(got, w[1]) : make_uint2(w[0], got);
        const int dim = odd ? get<1>(tOcO_rc(i, c + 2)) - 2 : get<1>(tOcO_rc(i, c));
        if (valid) *reinterpret_cast<uint2*>(row + dim) = packed;
      }
      if (valid && fp.lse != nullptr && tidx % 4 == 0)
        fp.lse[token_offset(fp.lse_stride, slot.b, x, slot.h)] = lse[i];
    }
    cutlass::arch::ClusterBarrier::arrive(&st.item_empty[j % Traits::kItemSlots]);
  }
}

}  // namespace fna::cuda::fused
