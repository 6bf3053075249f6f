// dQ kernel of the fused sm_80+ backward. A CTA owns one Q tile (a box of queries of one dilation
// group) of one query head and visits the KV tiles covering its KV range (the union of its
// queries' windows, from neighborhood.h) and then every additional-token tile. It writes each dQ
// row exactly once: no atomics, deterministic.
//
// Per KV tile (warps split the queries, 16 each):  S = Q K^T,  dP = dO V^T,
//   P = exp2(S * scale_log2 - lse_log2),  dS = P (dP - delta),  dQ += dS K  (times `scale`).
#pragma once

#include "cuda/fused/common/tile_bwd.cuh"
#include "cuda/fused/common/walk_bwd.h"
#include "cuda/fused/sm80/dkdv_bwd_sm80.cuh"
#include "cuda/fused/sm80/traits_bwd_sm80.cuh"

namespace fna::cuda::fused::sm80 {

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    dq_kernel_sm80(const __grid_constant__ BwdParams p) {
  using Element = typename Traits::Element;
  using MmaElement = typename Traits::MmaElement;
  constexpr int kTile = Traits::kTile, kHeadDim = Traits::kHeadDim, kThreads = Traits::kThreads;
  extern __shared__ __align__(128) char smem_buf[];
  auto& sm = *reinterpret_cast<BwdSmem<Traits>*>(smem_buf);
  const Neighborhood& nb = p.nb;
  const int64_t b = blockIdx.z, h = blockIdx.y, hkv = h / (p.heads_q / p.heads_kv);
  const int tid = threadIdx.x;

  // The Q tile this CTA owns.
  TileRows qt;
  if (!q_tile_of_block(p, blockIdx.x, &qt)) return;  // past a shorter dilation group: no queries
  Tensor sQ =
      make_tensor(make_smem_ptr(sm.own_a), typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  Tensor sdO =
      make_tensor(make_smem_ptr(sm.own_b), typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  load_rows<kTile, kHeadDim, kThreads, MmaElement>(sQ, nb, qt, p.q, b, h, p.vec);
  load_rows<kTile, kHeadDim, kThreads, MmaElement>(sdO, nb, qt, p.dout, b, h, p.vec);
  load_query_rows<Traits>(sm, 0, p, qt, b, h);

  // The KV tiles covering the tile's KV range, then every additional-token tile.
  const TileWalk walk = key_walk(p, qt);
  const int iters = walk.count + static_cast<int>(p.add_tiles);

  auto kv_tile = [&](int it) {
    return it < walk.count
               ? walk_tile(nb, walk, p.dq_kbox, it)
               : additional_tile(static_cast<int64_t>(it - walk.count) * kTile, p.nadd, kTile);
  };
  auto load_stage = [&](int it, int s) {
    const TileRows kt = kv_tile(it);
    Tensor sK = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRows{});
    Tensor sV = make_tensor(make_smem_ptr(sm.stream_b[s]), typename Traits::SmemLayoutRows{});
    load_rows<kTile, kHeadDim, kThreads, MmaElement>(sK, nb, kt, kt.additional ? p.ak : p.k, b, hkv,
                                                     p.vec);
    load_rows<kTile, kHeadDim, kThreads, MmaElement>(sV, nb, kt, kt.additional ? p.av : p.v, b, hkv,
                                                     p.vec);
    if (tid < kTile) {
      int64_t i[3];
      const bool valid = kt.coords(tid, i);
      for (int r = 0; r < 3; ++r) sm.key[s][tid][r] = valid ? static_cast<int>(i[r]) : -1;
    }
  };

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  auto copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto thr_copy_a = copy_a.get_thread_slice(tid);
  auto copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto thr_copy_b = copy_b.get_thread_slice(tid);
  typename Traits::TiledMmaRs mma_rs;
  auto thr_mma_rs = mma_rs.get_thread_slice(tid);
  auto copy_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomT{}, mma_rs);
  auto thr_copy_bt = copy_bt.get_thread_slice(tid);

  Tensor sK0 = make_tensor(make_smem_ptr(sm.stream_a[0]), typename Traits::SmemLayoutRows{});
  Tensor sKt0 =
      make_tensor(make_smem_ptr(sm.stream_a[0]), typename Traits::SmemLayoutRowsTNoSwizzle{});
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);         // (MMA, MMA_M, MMA_D)
  Tensor tSrK = thr_mma.partition_fragment_B(sK0);        // (MMA, MMA_N, MMA_D)
  Tensor tdPrdO = thr_mma.partition_fragment_A(sdO);      // (MMA, MMA_M, MMA_D)
  Tensor tdPrV = thr_mma.partition_fragment_B(sK0);       // (MMA, MMA_N, MMA_D)
  Tensor tdQrKt = thr_mma_rs.partition_fragment_B(sKt0);  // (MMA, MMA_D, MMA_N)
  Tensor tSsQ = thr_copy_a.partition_S(sQ);
  Tensor tdPsdO = thr_copy_a.partition_S(sdO);

  Tensor acc_dq =
      partition_fragment_C(mma_rs, Shape<Int<kTile>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_D)
  clear(acc_dq);
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));

  load_stage(0, 0);  // iters >= 1: every query attends at least itself
  cp_async_fence();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int s = static_cast<int>(it & 1);
    if (it + 1 < iters) load_stage(it + 1, s ^ 1);
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sK = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRows{});
    Tensor sV = make_tensor(make_smem_ptr(sm.stream_b[s]), typename Traits::SmemLayoutRows{});
    Tensor sKt = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRowsT{});

    Tensor acc_s =
        partition_fragment_C(mma, Shape<Int<kTile>, Int<kTile>>{});  // (MMA, MMA_M, MMA_N)
    Tensor acc_dp = partition_fragment_C(mma, Shape<Int<kTile>, Int<kTile>>{});
    clear(acc_s);
    clear(acc_dp);
    gemm_ss(acc_s, tSrQ, tSrK, tSsQ, thr_copy_b.partition_S(sK), mma, copy_a, thr_copy_a, copy_b,
            thr_copy_b);
    gemm_ss(acc_dp, tdPrdO, tdPrV, tdPsdO, thr_copy_b.partition_S(sV), mma, copy_a, thr_copy_a,
            copy_b, thr_copy_b);

    const bool masked = it < walk.count && !tile_inside_windows(nb, qt, kv_tile(it));
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) {
      const int m = get<0>(tScS(i));
      const float prob = fast_exp2(acc_s(i) * p.scale_log2 - sm.lse[0][m]);
      acc_s(i) = prob;
      acc_dp(i) = prob * (acc_dp(i) - sm.delta[0][m]);
    }
    if (masked) apply_window_mask<true>(acc_s, acc_dp, tScS, sm.win[0], sm.key[s]);
    Tensor rdS = to_element<MmaElement>(acc_dp);
    gemm_rs(acc_dq, make_tensor(rdS.data(), Traits::acc_as_a_operand(rdS.layout())), tdQrKt,
            thr_copy_bt.partition_S(sKt), mma_rs, copy_bt, thr_copy_bt);
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();

  Tensor sdQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(sm.stream_a[0])),
                           typename Traits::SmemLayoutRows{});
  Tensor tOcO = thr_mma_rs.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kHeadDim>>{}));
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dq); ++i)
    sdQ(get<0>(tOcO(i)), get<1>(tOcO(i))) = static_cast<Element>(acc_dq(i) * p.scale);
  __syncthreads();
  store_rows<kTile, kHeadDim, kThreads, Element>(sdQ, nb, qt, p.dq, b, h, p.vec);
}

}  // namespace fna::cuda::fused::sm80
