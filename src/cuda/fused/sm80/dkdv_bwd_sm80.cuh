// dK / dV kernel of the fused sm_80+ backward. A CTA owns one KV tile (a box of keys of one
// dilation group, or a run of additional tokens) of one KV head, walks the Q tiles of the queries
// whose windows meet it (the inverse neighborhood; every query for additional tokens) over every
// query head of its GQA group, and accumulates dK and dV in registers. It writes each gradient row
// exactly once: no atomics, deterministic.
//
// Per Q tile (warps split the keys, 16 each):  S^T = K Q^T,  dP^T = V dO^T,
//   P^T = exp2(S^T * scale_log2 - lse_log2),  dS^T = P^T (dP^T - delta),
//   dV += P^T dO,  dK += dS^T Q  (scaled by `scale` at the end).
#pragma once

#include "cuda/fused/common/tile_bwd.cuh"
#include "cuda/fused/common/walk_bwd.h"
#include "cuda/fused/sm80/traits_bwd_sm80.cuh"

namespace fna::cuda::fused::sm80 {

// Loads a Q tile's lse, delta and windows (one thread per row) into stage `s`.
template <class Traits>
__device__ __forceinline__ void load_query_rows(BwdSmem<Traits>& sm, int s, const BwdParams& p,
                                                const TileRows& qt, int64_t b, int64_t h) {
  const int row = threadIdx.x;
  if (row >= Traits::kTile) return;
  float lse = INFINITY, delta = 0.f;
  int win[6] = {0, 0, 0, 0, 0, 0};
  int64_t i[3];
  if (qt.coords(row, i)) {
    int64_t off, token;
    row_offset(p.nb, qt, p.q, b, h, row, &off, &token);
    const int64_t idx = (b * p.heads_q + h) * p.tokens + token;
    lse = p.ws_lse[idx];
    delta = p.ws_delta[idx];
    for (int r = 0; r < 3; ++r)
      window32(p.nb.axis[r], static_cast<int>(qt.glen[r]), static_cast<int>(i[r]), &win[2 * r],
               &win[2 * r + 1]);
  }
  sm.lse[s][row] = lse;
  sm.delta[s][row] = delta;
  for (int r = 0; r < 6; ++r) sm.win[s][row][r] = win[r];
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    dkdv_kernel_sm80(const __grid_constant__ BwdParams p) {
  using Element = typename Traits::Element;
  using MmaElement = typename Traits::MmaElement;
  constexpr int kTile = Traits::kTile, kHeadDim = Traits::kHeadDim, kThreads = Traits::kThreads;
  extern __shared__ __align__(128) char smem_buf[];
  auto& sm = *reinterpret_cast<BwdSmem<Traits>*>(smem_buf);
  const Neighborhood& nb = p.nb;
  const int64_t b = blockIdx.z, hkv = blockIdx.y, group_heads = p.heads_q / p.heads_kv;
  const int tid = threadIdx.x;

  // The KV tile this CTA owns (additional tokens first, then spatial boxes).
  TileRows kt;
  if (!kv_tile_of_block(p, blockIdx.x, &kt)) return;  // past a shorter dilation group: no keys
  const bool additional = kt.additional;
  const RowView& kview = additional ? p.ak : p.k;
  const RowView& vview = additional ? p.av : p.v;

  Tensor sK =
      make_tensor(make_smem_ptr(sm.own_a), typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  Tensor sV =
      make_tensor(make_smem_ptr(sm.own_b), typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  load_rows<kTile, kHeadDim, kThreads, MmaElement>(sK, nb, kt, kview, b, hkv, p.vec);
  load_rows<kTile, kHeadDim, kThreads, MmaElement>(sV, nb, kt, vview, b, hkv, p.vec);
  if (tid < kTile) {
    int64_t i[3];
    const bool valid = kt.coords(tid, i);
    for (int r = 0; r < 3; ++r) sm.key[0][tid][r] = valid ? static_cast<int>(i[r]) : -1;
  }

  // The queries whose windows meet this tile, as a walk over Q tiles.
  const TileWalk walk = query_walk(p, kt);
  const int iters = static_cast<int>(group_heads) * walk.count;

  auto load_stage = [&](int it, int s) {
    const int64_t h = hkv * group_heads + static_cast<int>(it) / walk.count;
    const TileRows qt = walk_tile(nb, walk, p.kv_qbox, static_cast<int>(it) % walk.count);
    Tensor sQ = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRows{});
    Tensor sdO = make_tensor(make_smem_ptr(sm.stream_b[s]), typename Traits::SmemLayoutRows{});
    load_rows<kTile, kHeadDim, kThreads, MmaElement>(sQ, nb, qt, p.q, b, h, p.vec);
    load_rows<kTile, kHeadDim, kThreads, MmaElement>(sdO, nb, qt, p.dout, b, h, p.vec);
    load_query_rows<Traits>(sm, s, p, qt, b, h);
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

  Tensor sQ0 = make_tensor(make_smem_ptr(sm.stream_a[0]), typename Traits::SmemLayoutRows{});
  Tensor sQt0 =
      make_tensor(make_smem_ptr(sm.stream_a[0]), typename Traits::SmemLayoutRowsTNoSwizzle{});
  Tensor tSrK = thr_mma.partition_fragment_A(sK);          // (MMA, MMA_N, MMA_D)
  Tensor tSrQ = thr_mma.partition_fragment_B(sQ0);         // (MMA, MMA_M, MMA_D)
  Tensor tdPrV = thr_mma.partition_fragment_A(sV);         // (MMA, MMA_N, MMA_D)
  Tensor tdPrdO = thr_mma.partition_fragment_B(sQ0);       // (MMA, MMA_M, MMA_D)
  Tensor tdVrdOt = thr_mma_rs.partition_fragment_B(sQt0);  // (MMA, MMA_D, MMA_M)
  Tensor tdKrQt = thr_mma_rs.partition_fragment_B(sQt0);   // (MMA, MMA_D, MMA_M)
  Tensor tSsK = thr_copy_a.partition_S(sK);
  Tensor tdPsV = thr_copy_a.partition_S(sV);

  Tensor acc_dk =
      partition_fragment_C(mma_rs, Shape<Int<kTile>, Int<kHeadDim>>{});  // (MMA, MMA_N, MMA_D)
  Tensor acc_dv = partition_fragment_C(mma_rs, Shape<Int<kTile>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));

  if (iters > 0) load_stage(0, 0);
  cp_async_fence();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int s = static_cast<int>(it & 1);
    if (it + 1 < iters) load_stage(it + 1, s ^ 1);
    cp_async_fence();
    cp_async_wait<1>();
    __syncthreads();

    Tensor sQ = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRows{});
    Tensor sdO = make_tensor(make_smem_ptr(sm.stream_b[s]), typename Traits::SmemLayoutRows{});
    Tensor sQt = make_tensor(make_smem_ptr(sm.stream_a[s]), typename Traits::SmemLayoutRowsT{});
    Tensor sdOt = make_tensor(make_smem_ptr(sm.stream_b[s]), typename Traits::SmemLayoutRowsT{});

    Tensor acc_s =
        partition_fragment_C(mma, Shape<Int<kTile>, Int<kTile>>{});  // (MMA, MMA_N, MMA_M)
    Tensor acc_dp = partition_fragment_C(mma, Shape<Int<kTile>, Int<kTile>>{});
    clear(acc_s);
    clear(acc_dp);
    gemm_ss(acc_s, tSrK, tSrQ, tSsK, thr_copy_b.partition_S(sQ), mma, copy_a, thr_copy_a, copy_b,
            thr_copy_b);
    gemm_ss(acc_dp, tdPrV, tdPrdO, tdPsV, thr_copy_b.partition_S(sdO), mma, copy_a, thr_copy_a,
            copy_b, thr_copy_b);

    bool masked = false;
    if (!additional) {
      const TileRows qt = walk_tile(nb, walk, p.kv_qbox, static_cast<int>(it) % walk.count);
      masked = !tile_inside_windows(nb, qt, kt);
    }
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) {
      const int n = get<0>(tScS(i)), m = get<1>(tScS(i));
      float prob = fast_exp2(acc_s(i) * p.scale_log2 - sm.lse[s][m]);
      if (masked && !in_window(sm.win[s][m], sm.key[0][n])) prob = 0.f;
      acc_s(i) = prob;
      acc_dp(i) = prob * (acc_dp(i) - sm.delta[s][m]);
    }
    Tensor rP = to_element<MmaElement>(acc_s);
    Tensor rdS = to_element<MmaElement>(acc_dp);
    gemm_rs(acc_dv, make_tensor(rP.data(), Traits::acc_as_a_operand(rP.layout())), tdVrdOt,
            thr_copy_bt.partition_S(sdOt), mma_rs, copy_bt, thr_copy_bt);
    gemm_rs(acc_dk, make_tensor(rdS.data(), Traits::acc_as_a_operand(rdS.layout())), tdKrQt,
            thr_copy_bt.partition_S(sQt), mma_rs, copy_bt, thr_copy_bt);
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: through shared memory so that global stores are whole 16-byte row chunks.
  Tensor sdK = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(sm.stream_a[0])),
                           typename Traits::SmemLayoutRows{});
  Tensor sdV = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(sm.stream_b[0])),
                           typename Traits::SmemLayoutRows{});
  Tensor tOcO = thr_mma_rs.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kHeadDim>>{}));
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dk); ++i) {
    const int n = get<0>(tOcO(i)), d = get<1>(tOcO(i));
    sdK(n, d) = static_cast<Element>(acc_dk(i) * p.scale);
    sdV(n, d) = static_cast<Element>(acc_dv(i));
  }
  __syncthreads();
  store_rows<kTile, kHeadDim, kThreads, Element>(sdK, nb, kt, additional ? p.dak : p.dk, b, hkv,
                                                 p.vec);
  store_rows<kTile, kHeadDim, kThreads, Element>(sdV, nb, kt, additional ? p.dav : p.dv, b, hkv,
                                                 p.vec);
}

}  // namespace fna::cuda::fused::sm80
