// dK / dV kernel of the fused sm_80+ backward. A CTA owns one KV tile (a box of keys of one
// dilation group, or a run of additional tokens) of one KV head, walks the Q tiles of the queries
// whose windows meet it (the inverse neighborhood; every query for additional tokens) over every
// query head of its GQA group, and accumulates dK and dV in registers, writing each of their rows
// exactly once. With kAtomicDq (the default path) it also adds dQ's share of every pair of tiles,
// dS K, into the fp32 workspace p.ws_dq with atomics (FlashAttention-2's way): S and dP are formed
// once per pair, 5 products instead of the 7 of the deterministic path (kAtomicDq = false, dQ by
// the dQ kernel, no atomics).
//
// Per Q tile (warps split the keys, 16 each):  S^T = K Q^T,  dP^T = V dO^T,
//   P^T = exp2(S^T * scale_log2 - lse_log2),  dS^T = P^T (dP^T - delta),
//   dV += P^T dO,  dK += dS^T Q  (scaled by `scale` at the end);
//   kAtomicDq: dS to shared memory, then (warps split the queries) ws_dq += dS K.
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

// Per row of a Q box of shape p.kv_qbox: box coordinates and offsets from the box's first row in
// q, dout and the token index (built once per CTA), so a Q tile's row costs one add per load.
// Smem: BwdSmem<Traits>, or the sm_90a kernel's storage (same member names).
template <class Traits, class Smem>
__device__ __forceinline__ void build_qbox_table(Smem& sm, const BwdParams& p) {
  const int row = threadIdx.x;
  if (row >= Traits::kTile) return;
  const int* box = p.kv_qbox;
  const int c[3] = {row / (box[1] * box[2]), row / box[2] % box[1], row % box[2]};
  int64_t q = 0, dout = 0, token = 0, token_stride = 1;
  for (int r = 2; r >= 0; --r) {
    const int64_t step = c[r] * p.nb.axis[r].dilation;
    q += step * p.q.sx[r];
    dout += step * p.dout.sx[r];
    token += step * token_stride;
    token_stride *= p.nb.axis[r].extent;
  }
  sm.qbox_coords[row] = c[0] | c[1] << 8 | c[2] << 16;  // box extents are at most kTile = 64
  sm.qbox_q[row] = q;
  sm.qbox_dout[row] = dout;
  sm.qbox_token[row] = token;
}

// Starts the cp.async loads of the Q tile at `qt` (head h of batch b) into stage `s`: Q, dO, lse
// and delta rows (zero-filled where the tile has no query: with Q = dO = delta = 0 such a row
// adds nothing to dK, dV or dQ whatever its P), the ws_* rows, and the windows if it is masked.
template <class Traits, class Smem>
__device__ __forceinline__ void load_q_stage(Smem& sm, int s, const BwdParams& p,
                                             const WalkCursor& qt, int64_t b, int64_t h,
                                             bool masked) {
  using Element = typename Traits::MmaElement;
  constexpr int kTile = Traits::kTile, kHeadDim = Traits::kHeadDim, kThreads = Traits::kThreads;
  constexpr int kChunk = 16 / sizeof(Element);
  constexpr int kChunksPerRow = kHeadDim / kChunk;
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0, "a pass covers whole rows");
  int64_t off_q = b * p.q.sb + h * p.q.sh, off_do = b * p.dout.sb + h * p.dout.sh, token = 0;
  int lim[3];  // rows with box coordinate c < lim on every axis hold a query
  for (int r = 0; r < 3; ++r) {
    const int64_t x = qt.start[r] * p.nb.axis[r].dilation + qt.group[r];
    off_q += x * p.q.sx[r];
    off_do += x * p.dout.sx[r];
    token = token * p.nb.axis[r].extent + x;
    lim[r] = qt.glen[r] - qt.start[r];
  }
  auto valid = [&](int row) {  // no short-circuit: no branches
    const int c = sm.qbox_coords[row];
    return ((c & 255) < lim[0]) & ((c >> 8 & 255) < lim[1]) & ((c >> 16) < lim[2]);
  };
  Tensor sQ = make_tensor(make_smem_ptr(sm.stream_a[s]),
                          typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  Tensor sdO = make_tensor(make_smem_ptr(sm.stream_b[s]),
                           typename Traits::SmemLayoutRows{});  // (kTile, kHeadDim)
  const Element* q = static_cast<const Element*>(p.q.ptr);
  const Element* dout = static_cast<const Element*>(p.dout.ptr);
  const int col = (threadIdx.x % kChunksPerRow) * kChunk;
  if (p.vec) {
    // A fixed trip count (threadIdx.x < kThreads), and one swizzled offset for both stages (same
    // layout): a data-dependent loop bound and the offset formed twice cost ~15 instructions a row.
    static_assert(kTile % kRowsPerPass == 0, "whole passes");
    const int row0 = threadIdx.x / kChunksPerRow;
    CUTE_UNROLL
    for (int pass = 0; pass < kTile / kRowsPerPass; ++pass) {
      const int row = row0 + pass * kRowsPerPass;
      const bool ok = valid(row);
      const int off = sQ.layout()(row, col);
      cp_async_16(sm.stream_a[s] + off, ok ? q + off_q + sm.qbox_q[row] + col : q, ok);
      cp_async_16(sm.stream_b[s] + off, ok ? dout + off_do + sm.qbox_dout[row] + col : dout, ok);
    }
  } else {
    // Unaligned rows (rare): element copies, not unrolled, to keep the loop's code small.
#pragma unroll 1
    for (int row = threadIdx.x / kChunksPerRow; row < kTile; row += kRowsPerPass) {
      const bool ok = valid(row);
      const Element* src_q = q + off_q + sm.qbox_q[row] + col;
      const Element* src_do = dout + off_do + sm.qbox_dout[row] + col;
      for (int e = 0; e < kChunk; ++e) {
        sQ(row, col + e) = ok ? src_q[e] : Element(0.f);
        sdO(row, col + e) = ok ? src_do[e] : Element(0.f);
      }
    }
  }
  const int row = threadIdx.x;
  if (row >= kTile) return;
  const bool ok = valid(row);
  const int64_t idx = (b * p.heads_q + h) * p.tokens + token + sm.qbox_token[row];
  cp_async_4(&sm.lse[s][row], p.ws_lse + (ok ? idx : 0), ok);
  cp_async_4(&sm.delta[s][row], p.ws_delta + (ok ? idx : 0), ok);
  sm.qrow[s][row] = ok ? idx : -1;
  if (masked) {
    int win[6] = {0, 0, 0, 0, 0, 0};  // no query: an empty window
    if (ok) {
      const int c = sm.qbox_coords[row];
      const int i[3] = {qt.start[0] + (c & 255), qt.start[1] + (c >> 8 & 255),
                        qt.start[2] + (c >> 16)};
      for (int r = 0; r < 3; ++r)
        window32(p.nb.axis[r], qt.glen[r], i[r], &win[2 * r], &win[2 * r + 1]);
    }
    for (int r = 0; r < 6; ++r) sm.win[s][row][r] = win[r];
  }
}

// dQ's share of one pair of tiles: ws_dq[query rows] += dS K (warps split the queries, 16 each),
// in column blocks of kDqCols head dims. sdS: (kTile, kTile) queries x keys (a transposed view);
// sKt: (kHeadDim, kTile).
template <class Traits, class SdS, class SKt, class Mma, class CopyA, class CopyB>
__device__ __forceinline__ void add_dq_share(const BwdSmem<Traits>& sm, int s, const BwdParams& p,
                                             const SdS& sdS, const SKt& sKt, const Mma& mma,
                                             const CopyA& copy_a, const CopyB& copy_b) {
  constexpr int kTile = Traits::kTile, kHeadDim = Traits::kHeadDim, kCols = Traits::kDqCols;
  const int tid = threadIdx.x;
  auto thr_mma = mma.get_thread_slice(tid);
  auto thr_copy_a = copy_a.get_thread_slice(tid);
  auto thr_copy_b = copy_b.get_thread_slice(tid);
  Tensor tdQrdS = thr_mma.partition_fragment_A(sdS);  // (MMA, MMA_M, MMA_K)
  Tensor tdQsdS = thr_copy_a.partition_S(sdS);
  Tensor tdQcdQ = thr_mma.partition_C(
      make_identity_tensor(Shape<Int<kTile>, Int<kCols>>{}));  // (MMA, MMA_M, MMA_N)
  // (rows, cols) views: row r is one query row of this thread, columns come in adjacent pairs.
  Tensor cdQ = make_tensor(tdQcdQ.data(), acc_rowcol(tdQcdQ.layout()));
  constexpr int kRows = decltype(size<0>(cdQ))::value;
  // Per row, its ws_dq row (null where the tile has no query): the atomics of a row then share one
  // pointer and immediate column offsets. A row test and 64-bit address math per atomic cost ~10
  // instructions each, 32 atomics per thread and pair of tiles.
  float* dst[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = sm.qrow[s][get<0>(cdQ(r, 0))];
    dst[r] = row >= 0 ? p.ws_dq + row * kHeadDim : nullptr;
  }
  CUTE_UNROLL
  for (int part = 0; part < kHeadDim / kCols; ++part) {
    Tensor sKt_part =
        local_tile(sKt, Shape<Int<kCols>, Int<kTile>>{}, make_coord(part, 0));  // (kCols, kTile)
    Tensor tdQrKt = thr_mma.partition_fragment_B(sKt_part);  // (MMA, MMA_N, MMA_K)
    Tensor acc_dq =
        partition_fragment_C(mma, Shape<Int<kTile>, Int<kCols>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_dq);
    gemm_ss(acc_dq, tdQrdS, tdQrKt, tdQsdS, thr_copy_b.partition_S(sKt_part), mma, copy_a,
            thr_copy_a, copy_b, thr_copy_b);
    Tensor acc = make_tensor(acc_dq.data(), acc_rowcol(acc_dq.layout()));
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      if (dst[r] == nullptr) continue;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc); c += 2)
        atomic_add2(dst[r] + part * kCols + get<1>(cdQ(r, c)), acc(r, c), acc(r, c + 1));
    }
  }
}

template <class Traits, bool kAtomicDq>
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
  build_qbox_table<Traits>(sm, p);
  __syncthreads();  // the box table is read by every thread's first stage load

  // The queries whose windows meet this tile, as a walk over Q tiles, once per query head of the
  // GQA group. The cursor steps through the walk and the per-axis intervals of unmasked tiles
  // replace tile_inside_windows: no integer division per iteration.
  const TileWalk walk = query_walk(p, kt);
  const int iters = static_cast<int>(group_heads) * walk.count;
  int unmasked_lo[3], unmasked_hi[3];
  unmasked_tiles(nb, walk, p.kv_qbox, kt, unmasked_lo, unmasked_hi);
  WalkCursor cursor(nb, walk);
  int64_t h = hkv * group_heads;  // the query head of the cursor's tile

  // Starts loading the cursor's Q tile into stage `s`; returns whether its pair of tiles needs a
  // mask.
  auto load_stage = [&](int s) {
    bool masked = false;
    for (int r = 0; r < 3; ++r)
      masked |= cursor.tile[r] < unmasked_lo[r] || cursor.tile[r] > unmasked_hi[r];
    load_q_stage<Traits>(sm, s, p, cursor, b, h, masked);
    return masked;
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

  // dQ's share (kAtomicDq): A = dS read from dS^T with ldmatrix.trans, B = K^T read with
  // ldmatrix.trans.
  Tensor sdSt =
      make_tensor(make_smem_ptr(sm.ds), typename Traits::SmemLayoutPair{});  // (keys, queries)
  Tensor sdS =
      make_tensor(make_smem_ptr(sm.ds), typename Traits::SmemLayoutPairT{});  // (queries, keys)
  Tensor sKt = make_tensor(make_smem_ptr(sm.own_a),
                           typename Traits::SmemLayoutRowsT{});  // (kHeadDim, kTile)
  auto copy_dst = make_tiled_copy_A(typename Traits::SmemCopyAtomT{}, mma);
  auto copy_kt = make_tiled_copy_B(typename Traits::SmemCopyAtomT{}, mma);

  bool masked = iters > 0 && load_stage(0);
  cp_async_fence();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int s = it & 1;
    // Stage s has landed and every warp is past iteration it - 1, so the loads of iteration
    // it + 1 may overwrite stage s ^ 1 (and dS) with no barrier at the end of the iteration.
    cp_async_wait<0>();
    __syncthreads();
    bool masked_next = false;
    if (it + 1 < iters) {
      if (cursor.next(nb, walk, p.kv_qbox)) ++h;
      masked_next = load_stage(s ^ 1);
    }
    cp_async_fence();

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

    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) {
      const int m = get<1>(tScS(i));
      const float prob = fast_exp2(acc_s(i) * p.scale_log2 - sm.lse[s][m]);
      acc_s(i) = prob;
      acc_dp(i) = prob * (acc_dp(i) - sm.delta[s][m]);
    }
    // The mask in its own pass, taken only by tiles that straddle a window edge: inside the
    // loop above it cost a branch per element on every tile.
    if (masked) apply_window_mask<false>(acc_s, acc_dp, tScS, sm.win[s], sm.key[0]);
    Tensor rP = to_element<MmaElement>(acc_s);
    Tensor rdS = to_element<MmaElement>(acc_dp);
    if constexpr (kAtomicDq) {
      // dQ sums dS over keys, which the warps split: dS goes through shared memory, stored
      // transposed (keys x queries) so that each thread's two adjacent queries are one store.
      // The addresses come from an opaque thread index, so they are formed here: hoisted out of
      // the loop, the 16 of them were spilled to local memory and reloaded every iteration.
      Tensor tScS_store = mma.get_thread_slice(opaque(tid)).partition_C(
          make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));
      CUTE_UNROLL
      for (int i = 0; i < size(rdS); i += 2)
        store_pair(&sdSt(get<0>(tScS_store(i)), get<1>(tScS_store(i))), rdS(i), rdS(i + 1));
    }
    gemm_rs(acc_dv, make_tensor(rP.data(), Traits::acc_as_a_operand(rP.layout())), tdVrdOt,
            thr_copy_bt.partition_S(sdOt), mma_rs, copy_bt, thr_copy_bt);
    gemm_rs(acc_dk, make_tensor(rdS.data(), Traits::acc_as_a_operand(rdS.layout())), tdKrQt,
            thr_copy_bt.partition_S(sQt), mma_rs, copy_bt, thr_copy_bt);
    if constexpr (kAtomicDq) {
      __syncthreads();
      add_dq_share<Traits>(sm, s, p, sdS, sKt, mma, copy_dst, copy_kt);
    }
    masked = masked_next;
  }
  __syncthreads();  // every warp is done with the stages the epilogue reuses

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
