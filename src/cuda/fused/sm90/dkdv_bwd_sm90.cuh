// dK / dV kernel of the fused backward on sm_90a (16-bit, head dim 128): the sm_80 kernel's work
// split and loads (dkdv_bwd_sm80.cuh: a CTA owns one 64-key tile of one KV head, walks the Q
// tiles of the inverse neighborhood over the GQA group, double-buffered cp.async with the Q-box
// table, masks only on straddling tiles, dQ's share added into p.ws_dq with atomics), but the
// five products run on wgmma: the CTA is one warpgroup, and wgmma reads its shared-memory
// operands once per warpgroup instead of ldmatrix into every warp (what bound the mma.sync
// kernel, .notes/fused_bwd.md "Session 5").
//
// Per Q tile (M = the tile's 64 keys for the first four products):
//   S^T = K Q^T, dP^T = V dO^T            SS, (64 keys x 64 queries x D), K-major operands
//   P^T = exp2(S^T * scale_log2 - lse)     while dP^T runs; masked to 0 outside the windows
//   dV += P^T dO                           RS (P^T from registers), dO as MN-major B
//   dS^T = P^T (dP^T - delta)              while dV runs; to registers (A of dK) and to smem
//   dK += dS^T Q                           RS, Q as MN-major B
//   dQ_share = dS K                        SS, (64 queries x D x 64 keys), both MN-major, in two
//                                          column blocks
//   ws_dq += dQ_share                      float4 reductions from registers (ws_dq_gmma_col order)
#pragma once

#include <cutlass/arch/barrier.h>

#include <cute/tensor.hpp>

#include "cuda/fused/sm80/dkdv_bwd_sm80.cuh"
#include "cuda/fused/sm90/gmma_sm90.cuh"

namespace fna::cuda::fused::sm90 {

using namespace cute;

template <class Element_, int kHeadDim_>
struct BwdTraitsSm90 {
  using Element = Element_;
  using MmaElement = Element;  // the shared loaders' name for the smem element type
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kTile = kBwdTileRows;  // keys per CTA and queries per Q tile
  static constexpr int kThreads = 128;        // one warpgroup: wgmma M = 64 = kTile
  static constexpr int kTileElems = kTile * kHeadDim;
  static_assert(kTile == 64, "one wgmma M block per tile");
  static_assert(sizeof(Element) == 2, "wgmma from 16-bit operands");
  static_assert(kHeadDim == 128, "the register budget below is for D = 128");

  // What the shared cp.async loaders and the epilogue address (element offsets, the swizzle
  // folded into the layout): 128-byte rows, 16-byte chunks XORed by row mod 8. On a 1024-byte
  // aligned buffer that is the byte pattern of GMMA's 128-byte swizzle, which the wgmma views
  // below describe (tests/gpu/fused_bwd_sm90_layout_test.cu checks the two agree).
  using Sm80 = sm80::BwdTraits<Element, kHeadDim>;
  using SmemLayoutRows = typename Sm80::SmemLayoutRows;  // (kTile, kHeadDim)
  using SmemLayoutPair = typename Sm80::SmemLayoutPair;  // (keys, queries): dS^T

  using GmmaRows = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<Element>{},
                                          Shape<Int<kTile>, Int<kHeadDim>>{}));  // (rows, D)
  using GmmaRowsT = decltype(composition(
      GmmaRows{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kTile>>{},
                                      Step<_2, _1>{})));  // (D, rows): the same bytes
  using GmmaStages = decltype(tile_to_shape(
      GMMA::Layout_K_SW128_Atom<Element>{},
      Shape<Int<kTile>, Int<kHeadDim>, _2>{}));  // (rows, D, stage): Q or dO, both stages
  using GmmaStagesT = decltype(composition(
      GmmaStages{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kTile>, _2>{},
                                        Step<_2, _1, _3>{})));  // (D, rows, stage)
  // dS^T (keys x queries, queries contiguous) read as dS (queries, keys): GMMA's canonical
  // MN-major layout, the same bytes as SmemLayoutPair transposed.
  using GmmaPairT = decltype(tile_to_shape(GMMA::Layout_MN_SW128_Atom<Element>{},
                                           Shape<Int<kTile>, Int<kTile>>{}));  // (queries, keys)

  // S^T and dP^T: (keys, queries, D), both operands K-major.
  using TiledMmaSdP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<Int<kTile>, Int<kTile>, Int<kHeadDim>>>()));
  // dV += P^T dO, dK += dS^T Q: (keys, D, queries), A from registers, B = the Q tile's rows
  // read D-contiguous (MN-major).
  using TiledMmaKV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<Int<kTile>, Int<kHeadDim>, Int<kTile>>,
                           GMMA::Major::K, GMMA::Major::MN>()));
  // dQ's share dS K: (queries, kDqCols dims, keys) per column block; A = dS^T in smem read
  // query-contiguous, B = K read D-contiguous: both MN-major. Column blocks of 64: a whole
  // 64 x 128 block (64 accumulator registers) next to dK, dV, P and dS spilled 516 bytes.
  static constexpr int kDqCols = 64;
  using TiledMmaDq = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<Int<kTile>, Int<kDqCols>, Int<kTile>>,
                           GMMA::Major::MN, GMMA::Major::MN>()));
};

// dst[0..3] += a, b, c, d in global memory (16-byte aligned): one vector reduction (sm_90).
__device__ __forceinline__ void atomic_add4(float* dst, float a, float b, float c, float d) {
  atomicAdd(reinterpret_cast<float4*>(dst), make_float4(a, b, c, d));
}

// Shared memory: the sm_80 kernel's members (the loaders use the names), with every wgmma operand
// on a 1024-byte boundary (the 128-byte swizzle repeats every 8 rows; descriptors assume tiles
// that start on that period). key[] is not staged: the CTA's keys never change.
template <class Traits>
struct BwdSmemSm90 {
  using Element = typename Traits::Element;
  static constexpr int kTile = Traits::kTile;
  alignas(1024) Element own_a[Traits::kTileElems];        // K
  alignas(1024) Element own_b[Traits::kTileElems];        // V
  alignas(1024) Element stream_a[2][Traits::kTileElems];  // Q, two stages
  alignas(1024) Element stream_b[2][Traits::kTileElems];  // dO, two stages
  alignas(1024) Element ds[kTile * kTile];                // dS^T, keys x queries
  float lse[2][kTile];
  float delta[2][kTile];
  int win[2][kTile][6];
  int key[kTile][3];
  int64_t qrow[2][kTile];
  int qbox_coords[kTile];
  int64_t qbox_q[kTile], qbox_dout[kTile], qbox_token[kTile];
};

// Bytes of dynamic shared memory: +1 KiB to round the base up to 1024 bytes in the kernel.
template <class Traits>
inline constexpr int kBwdSmemBytesSm90 = int(sizeof(BwdSmemSm90<Traits>)) + 1024;

// The next Q tile's loads are issued before S^T and dP^T: issuing them between the two products
// and the softmax (the other placement tried) kept the walk cursor live across the wgmmas, spilled
// 122 B instead of 28 B and ran 1.04-1.05x slower on video-hunyuan-strided (run S6-B1,
// bench/RESULTS.md).
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 2)
    dkdv_kernel_sm90(const __grid_constant__ BwdParams p) {
  using Element = typename Traits::Element;
  constexpr int kTile = Traits::kTile, kHeadDim = Traits::kHeadDim, kThreads = Traits::kThreads;
  extern __shared__ char smem_raw[];
  // Rounded up to 1024 bytes by an offset from smem_raw, not through an integer: the compiler
  // then still knows the state space (LDS / STS instead of generic loads and stores).
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  auto& sm = *reinterpret_cast<BwdSmemSm90<Traits>*>(smem_raw + ((1024u - (raw & 1023u)) & 1023u));
  const Neighborhood& nb = p.nb;
  const int64_t b = blockIdx.z, hkv = blockIdx.y, group_heads = p.heads_q / p.heads_kv;
  const int tid = threadIdx.x;

  TileRows kt;
  if (!kv_tile_of_block(p, blockIdx.x, &kt)) return;  // past a shorter dilation group: no keys
  const bool additional = kt.additional;
  load_rows<kTile, kHeadDim, kThreads, Element>(
      make_tensor(make_smem_ptr(sm.own_a), typename Traits::SmemLayoutRows{}), nb, kt,
      additional ? p.ak : p.k, b, hkv, p.vec);
  load_rows<kTile, kHeadDim, kThreads, Element>(
      make_tensor(make_smem_ptr(sm.own_b), typename Traits::SmemLayoutRows{}), nb, kt,
      additional ? p.av : p.v, b, hkv, p.vec);
  if (tid < kTile) {
    int64_t i[3];
    const bool valid = kt.coords(tid, i);
    for (int r = 0; r < 3; ++r) sm.key[tid][r] = valid ? static_cast<int>(i[r]) : -1;
  }
  sm80::build_qbox_table<Traits>(sm, p);
  __syncthreads();  // the box table is read by every thread's first stage load

  const TileWalk walk = query_walk(p, kt);
  const int iters = static_cast<int>(group_heads) * walk.count;
  int unmasked_lo[3], unmasked_hi[3];
  unmasked_tiles(nb, walk, p.kv_qbox, kt, unmasked_lo, unmasked_hi);
  WalkCursor cursor(nb, walk);
  int64_t h = hkv * group_heads;  // the query head of the cursor's tile
  auto load_stage = [&](int s) {  // as the sm_80 kernel's: returns whether the pair is masked
    bool masked = false;
    for (int r = 0; r < 3; ++r)
      masked |= cursor.tile[r] < unmasked_lo[r] || cursor.tile[r] > unmasked_hi[r];
    sm80::load_q_stage<Traits>(sm, s, p, cursor, b, h, masked);
    return masked;
  };

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmaKV mma_kv;
  typename Traits::TiledMmaDq mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_kv = mma_kv.get_thread_slice(tid);
  auto thr_dq = mma_dq.get_thread_slice(tid);

  Tensor sK = make_tensor(make_smem_ptr(sm.own_a), typename Traits::GmmaRows{});  // (keys, D)
  Tensor sV = make_tensor(make_smem_ptr(sm.own_b), typename Traits::GmmaRows{});  // (keys, D)
  constexpr int kDqCols = Traits::kDqCols;
  Tensor sKt = make_tensor(make_smem_ptr(sm.own_a), typename Traits::GmmaRowsT{});  // (D, keys)
  Tensor sKt_blocks = local_tile(sKt, Shape<Int<kDqCols>, Int<kTile>>{},
                                 make_coord(_, 0));  // (kDqCols, keys, column block)
  Tensor sQ = make_tensor(make_smem_ptr(sm.stream_a[0]),
                          typename Traits::GmmaStages{});  // (queries, D, stage)
  Tensor sdO = make_tensor(make_smem_ptr(sm.stream_b[0]), typename Traits::GmmaStages{});
  Tensor sQt = make_tensor(make_smem_ptr(sm.stream_a[0]),
                           typename Traits::GmmaStagesT{});  // (D, queries, stage)
  Tensor sdOt = make_tensor(make_smem_ptr(sm.stream_b[0]), typename Traits::GmmaStagesT{});
  Tensor sdS = make_tensor(make_smem_ptr(sm.ds), typename Traits::GmmaPairT{});  // (queries, keys)

  // wgmma descriptors (MMA, MMA_M or MMA_N, MMA_K(, stage)).
  Tensor tSrK = thr_sdp.partition_fragment_A(sK);
  Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);
  Tensor tdPrV = thr_sdp.partition_fragment_A(sV);
  Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);
  Tensor tdVrdOt = thr_kv.partition_fragment_B(sdOt);
  Tensor tdKrQt = thr_kv.partition_fragment_B(sQt);
  Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tdQrKt = thr_dq.partition_fragment_B(sKt_blocks);  // (MMA, MMA_N, MMA_K, column block)

  Tensor acc_dk =
      partition_fragment_C(mma_kv, Shape<Int<kTile>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_N)
  Tensor acc_dv = partition_fragment_C(mma_kv, Shape<Int<kTile>, Int<kHeadDim>>{});
  clear(acc_dk);
  clear(acc_dv);
  // (key, query) of each S^T / dP^T element of this thread, and (query, dim) of each dQ element.
  Tensor tScS = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));
  Tensor tdQcdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kDqCols>>{}));
  Tensor cdQ = make_tensor(tdQcdQ.data(), gmma_acc_rowcol(tdQcdQ.layout()));  // (rows, cols)
  const typename Traits::SmemLayoutPair ds_layout{};

  bool masked = iters > 0 && load_stage(0);
  cp_async_fence();
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int s = it & 1;
    // Stage s (and, at it = 0, K and V) has landed; the fence makes this thread's cp.async and
    // st.shared writes visible to wgmma (the async proxy), the barrier everyone's. Every wgmma of
    // iteration it - 1 completed before its atomics, so stage s ^ 1 and dS^T are free.
    cp_async_wait<0>();
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
    bool masked_next = false;
    if (it + 1 < iters) {
      if (cursor.next(nb, walk, p.kv_qbox)) ++h;
      masked_next = load_stage(s ^ 1);
    }
    cp_async_fence();

    Tensor acc_s =
        partition_fragment_C(mma_sdp, Shape<Int<kTile>, Int<kTile>>{});  // (MMA, MMA_M, MMA_N)
    Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kTile>, Int<kTile>>{});
    warpgroup_gemm<true, -1, false>(mma_sdp, tSrK, tSrQ(_, _, _, s), acc_s);
    warpgroup_gemm<true, -1, false>(mma_sdp, tdPrV, tdPrdO(_, _, _, s), acc_dp);
    warpgroup_wait<1>();  // S^T is done, dP^T may still run
    warpgroup_fence_operand(acc_s);
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i)
      acc_s(i) = fast_exp2(acc_s(i) * p.scale_log2 - sm.lse[s][get<1>(tScS(i))]);
    // Outside the windows P may be inf: zeroed here, so dS = P (dP - delta) is 0 there as well.
    if (masked) {
      CUTE_UNROLL
      for (int i = 0; i < size(acc_s); ++i)
        if (!sm80::in_window(sm.win[s][get<1>(tScS(i))], sm.key[get<0>(tScS(i))])) acc_s(i) = 0.f;
    }
    Tensor rP = make_tensor<Element>(acc_s.layout());
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) rP(i) = static_cast<Element>(acc_s(i));
    warpgroup_gemm<false, -1, true>(mma_kv,
                                    make_tensor(rP.data(), gmma_acc_as_a_operand(rP.layout())),
                                    tdVrdOt(_, _, _, s), acc_dv);
    warpgroup_wait<1>();  // dP^T is done, dV may still run
    warpgroup_fence_operand(acc_dp);
    Tensor rdS = make_tensor<Element>(acc_dp.layout());
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dp); ++i)
      rdS(i) = static_cast<Element>(acc_s(i) * (acc_dp(i) - sm.delta[s][get<1>(tScS(i))]));
    // dS^T to shared memory for dQ's share: a thread's elements i, i + 1 are adjacent queries
    // of one key, so one 4-byte store each. Stored before dK's wgmma is issued: PTX makes any
    // access to the A registers of a wgmma in flight undefined until a wait covers it. The
    // addresses come from an opaque thread index, so they are formed here: hoisted out of the
    // loop, ptxas spilled them (as in the sm_80 kernel).
    Tensor tScS_store = mma_sdp.get_thread_slice(sm80::opaque(tid))
                            .partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));
    CUTE_UNROLL
    for (int i = 0; i < size(rdS); i += 2)
      sm80::store_pair(&sm.ds[ds_layout(get<0>(tScS_store(i)), get<1>(tScS_store(i)))], rdS(i),
                       rdS(i + 1));
    warpgroup_gemm<false, -1, true>(mma_kv,
                                    make_tensor(rdS.data(), gmma_acc_as_a_operand(rdS.layout())),
                                    tdKrQt(_, _, _, s), acc_dk);
    cutlass::arch::fence_view_async_shared();
    __syncthreads();  // every warp's dS^T rows are in place (the CTA is the warpgroup)

    // dQ's share in two column blocks, one after the other (block 1's wgmma issued before block
    // 0 is added needs 32 more registers: ptxas spilled 56 B).
    auto add_dq_share = [&](auto& acc_dq, int part) {
      Tensor dq = make_tensor(acc_dq.data(), gmma_acc_rowcol(acc_dq.layout()));  // (rows, cols)
      // ws_dq rows are in ws_dq_gmma_col order: this lane's columns c .. c + 3 of a row (two
      // adjacent column groups) are one 16-byte vector, next to the vectors of the other three
      // lanes of the row's quad. The lane's first column is below 16, and 16 columns further on
      // (c + 4) are 16 positions further on: one pointer, immediate offsets (the layout test
      // checks every element's position).
      const int pos0 = ws_dq_gmma_col(get<1>(cdQ(0, 0)));
      CUTE_UNROLL
      for (int r = 0; r < size<0>(dq); ++r) {
        const int64_t row = sm.qrow[s][get<0>(cdQ(r, 0))];
        if (row < 0) continue;  // no query
        float* dst = p.ws_dq + row * kHeadDim + part * kDqCols + pos0;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(dq); c += 4)
          atomic_add4(dst + (get<1>(cdQ(r, c)) - get<1>(cdQ(r, 0))), dq(r, c), dq(r, c + 1),
                      dq(r, c + 2), dq(r, c + 3));
      }
    };
    CUTE_UNROLL
    for (int part = 0; part < kHeadDim / kDqCols; ++part) {
      Tensor acc_dq =
          partition_fragment_C(mma_dq, Shape<Int<kTile>, Int<kDqCols>>{});  // (MMA, MMA_M, MMA_N)
      // The first block's wait also completes dV and dK.
      warpgroup_gemm<true, 0, false>(mma_dq, tdQrdS, tdQrKt(_, _, _, part), acc_dq);
      add_dq_share(acc_dq, part);
    }
    // dV and dK read P^T and dS^T from these registers until the wait above: the fences keep
    // them (and the accumulators) from being reused or touched before it.
    warpgroup_fence_operand(rP);
    warpgroup_fence_operand(rdS);
    warpgroup_fence_operand(acc_dv);
    warpgroup_fence_operand(acc_dk);
    masked = masked_next;
  }
  __syncthreads();  // every warp is done with the stages the epilogue reuses

  // Epilogue: through shared memory so that global stores are whole 16-byte row chunks.
  Tensor sdK = make_tensor(make_smem_ptr(sm.stream_a[0]), typename Traits::SmemLayoutRows{});
  Tensor sdV = make_tensor(make_smem_ptr(sm.stream_b[0]), typename Traits::SmemLayoutRows{});
  Tensor tOcO = thr_kv.partition_C(make_identity_tensor(Shape<Int<kTile>, Int<kHeadDim>>{}));
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

}  // namespace fna::cuda::fused::sm90
