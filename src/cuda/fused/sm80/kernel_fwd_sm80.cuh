// The fused neighborhood-attention forward kernel for sm_80+ (mma.sync through CuTe).
//
// One block computes one Q box (a small box of the grid in dilation-group coordinates, see
// tile_geometry.cuh) for one (batch, head). It visits the KV boxes that tile the box's KV range,
// then the additional-KV tiles, flash-attention-2 style: S = Q K^T in fp32, online softmax with
// exp2, O += P V, and finally O / rowsum and lse. KV boxes entirely inside every query's window
// skip masking. Out-of-range KV rows are zero-filled, so masked P = 0 never meets a NaN.
//
// Pipeline: kStages shared-memory buffers of K and V (a ring); while tile t computes, tiles
// t+1 .. t+kStages-1 are in flight (cp.async groups, one per tile), so one block barrier per
// tile suffices and small-window blocks, which visit only a few tiles, load most of them at once.
#pragma once

#include <cmath>
#include <cute/tensor.hpp>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/common/gather_copy.cuh"
#include "cuda/fused/common/softmax.cuh"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/sm80/kernel_traits_fwd_sm80.cuh"

namespace fna::cuda::fused {

// Stores two adjacent output elements (a 4- or 8-byte store when the row start is aligned).
template <class Element>
__device__ __forceinline__ void store_pair(Element* dst, float a, float b, bool aligned) {
  if (aligned) {
    cutlass::Array<Element, 2> v;
    v[0] = static_cast<Element>(a);
    v[1] = static_cast<Element>(b);
    *reinterpret_cast<cutlass::Array<Element, 2>*>(dst) = v;
  } else {
    dst[0] = static_cast<Element>(a);
    dst[1] = static_cast<Element>(b);
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocks)
    fwd_kernel_sm80(const __grid_constant__ FwdParams p) {
  using namespace cute;
  using Element = typename Traits::Element;
  using SmemT = typename Traits::SmemT;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kStages = Traits::kStages;
  static_assert(kStages >= 2, "the pipeline keeps at least one tile in flight");
  static_assert(kBlockN <= 64, "column masks are 64-bit");

  const TileShape& ts = p.tile;
  // Box-local KV row n -> its byte offset from the KV box's first key (K and V strides) and
  // its packed local coordinates (10 bits per axis). The same for every block and tile: only
  // the box's first key changes, so per tile a row costs one add instead of a coordinate decode.
  __shared__ int64_t kv_row_offset_k[kBlockN], kv_row_offset_v[kBlockN];
  __shared__ int kv_row_coords[kBlockN];
  for (int row = threadIdx.x; row < kBlockN; row += kNThreads) {
    kv_row_offset_k[row] =
        kv_row_local_offset(p.nb, ts, p.k_stride, row) * int64_t(sizeof(Element));
    kv_row_offset_v[row] =
        kv_row_local_offset(p.nb, ts, p.v_stride, row) * int64_t(sizeof(Element));
    kv_row_coords[row] = kv_row_packed_coords(ts, row);
  }
  // Block-uniform geometry lives in shared memory: in registers it would cost ~50 registers
  // per thread next to the accumulators (the row windows are read only on masked tiles). One
  // thread per axis computes the box (the window arithmetic is 64-bit); a row's window is the
  // product of per-axis windows, so only sum_r qt_r (not kBlockM * 3) windows are computed.
  __shared__ QBox box;
  __shared__ int axis_lo[3][kBlockM], axis_hi[3][kBlockM];
  if (threadIdx.x < 3) make_q_box_axis(p.nb, ts, blockIdx.x, threadIdx.x, &box);
  __syncthreads();
  if (box.count[0] == 0 || box.count[1] == 0 || box.count[2] == 0) return;  // past a group end
  const int h = blockIdx.y;
  const int hk = h / p.heads_ratio;  // GQA/MQA: K/V are read in place, never repeated
  const int64_t b = blockIdx.z;
  for (int k = threadIdx.x; k < 3 * kBlockM; k += kNThreads) {
    const int r = k / kBlockM, l = k % kBlockM;
    if (l < (1 << ts.q_shift[r])) axis_window(p.nb, box, r, l, &axis_lo[r][l], &axis_hi[r][l]);
  }
  // The K and V tile walks' offsets (per tile: first key = origin + sum_r br[r] * step[r]).
  __shared__ KvWalkOffsets kv_walk[2];
  if (threadIdx.x == kNThreads - 1) kv_walk[0] = kv_walk_offsets(p.nb, ts, box, p.k_stride, b, hk);
  if (threadIdx.x == kNThreads - 2) kv_walk[1] = kv_walk_offsets(p.nb, ts, box, p.v_stride, b, hk);
  __syncthreads();

  extern __shared__ __align__(128) char smem[];
  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<SmemT*>(smem)),
                          typename Traits::SmemLayoutQ{});  // (M, D)
  SmemT* const k_smem = sQ.data().get() + size(sQ);         // kStages K tiles, then kStages V tiles
  SmemT* const v_smem = k_smem + kStages * Traits::kKVElems;
  auto stage_k = [&](int stage) {
    return make_tensor(make_smem_ptr(k_smem + stage * Traits::kKVElems),
                       typename Traits::SmemLayoutKV{});  // (N, D)
  };
  auto stage_v = [&](int stage) {
    return make_tensor(make_smem_ptr(v_smem + stage * Traits::kKVElems),
                       typename Traits::SmemLayoutKV{});  // (N, D)
  };
  auto stage_vt = [&](int stage) {
    return make_tensor(make_smem_ptr(v_smem + stage * Traits::kKVElems),
                       typename Traits::SmemLayoutVt{});  // (D, N)
  };
  Tensor sK = stage_k(0);  // (N, D): the stage-0 view gives the register fragments' shapes
  Tensor sVtNoSwizzle =
      make_tensor(make_smem_ptr(v_smem), typename Traits::SmemLayoutVtNoSwizzle{});  // (D, N)

  // ---- gathers -----------------------------------------------------------------------------
  const Element* q_ptr = static_cast<const Element*>(p.q);
  const Element* k_ptr = static_cast<const Element*>(p.k);
  const Element* v_ptr = static_cast<const Element*>(p.v);
  const Element* ak_ptr = static_cast<const Element*>(p.add_k);
  const Element* av_ptr = static_cast<const Element*>(p.add_v);
  const int num_spatial = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
  const int num_tiles = num_spatial + (p.additional_kv + kBlockN - 1) / kBlockN;

  // Gathers K (or V) of KV tile `kv` (spatial: rows past the KV range are zero-filled) or of
  // additional-KV tile `tile` (past the spatial ones) into `dst`.
  auto load_kv = [&](int tile, const KvTile& kv, const int* br, const Element* spatial,
                     const KvWalkOffsets& walk, const int64_t* row_offset, const Element* extra,
                     const TokenStrides& es, auto&& dst) {
    if (tile < num_spatial) {
      const KvTileRows rows = kv_tile_rows_at(ts, box, kv, walk, br);
      // Offsets from the tile's first key: per row one shared-memory load and one address add.
      const Element* first = spatial + rows.first;
      if (rows.inside) {  // most tiles: no row lies past the KV range, no per-row test
        gather_rows<kBlockN, kHeadDim, kNThreads, false, true>(
            first, dst, p.aligned, [&](int row) { return row_offset[row]; });
      } else {
        gather_rows<kBlockN, kHeadDim, kNThreads, true, true>(
            first, dst, p.aligned, [&](int row) -> int64_t {
              return kv_row_in_range(rows, kv_row_coords[row]) ? row_offset[row] : -1;
            });
      }
    } else {
      const int first = (tile - num_spatial) * kBlockN;
      gather_rows<kBlockN, kHeadDim, kNThreads>(extra, dst, p.aligned, [&](int row) -> int64_t {
        const int a = first + row;
        if (a >= p.additional_kv) return -1;
        return b * es.b + int64_t(a) * es.x[0] + int64_t(hk) * es.h;
      });
    }
  };

  gather_rows<kBlockM, kHeadDim, kNThreads>(q_ptr, sQ, p.aligned, [&](int row) -> int64_t {
    int i[3];
    if (!row_valid(ts, box, row, i)) return -1;
    int x[3];
    CUTE_UNROLL
    for (int r = 0; r < 3; ++r) x[r] = box.coord(p.nb, r, i[r]);
    return token_offset(p.q_stride, b, x, h);
  });
  // K and V of tile `tile` into ring stage tile % kStages, as one cp.async group (empty past the
  // last tile, so the group count per iteration stays uniform). Tiles load in walk order, so the
  // loader keeps its tile coordinates (no index decode) and leaves each spatial tile's geometry
  // in `tile_info` for the iteration that computes it (written >= 1 barrier before it is read).
  __shared__ KvTile tile_info[kStages];
  // A row's column mask on a masked tile is the AND of one factor per axis (axis_column_mask)
  // that depends only on the row's coordinate l_r on that axis: the loader tabulates the
  // sum_r qt_r factors of each masked tile next to its KvTile, so a row's mask costs 3 shared
  // loads instead of ~40 instructions per straddling axis in every thread.
  // Factor of axis r, coordinate l: mask_factors[stage][factor_offset(r) + l].
  constexpr int kMaskFactors = kBlockM + 2;  // sum_r qt_r <= prod_r qt_r + 2
  __shared__ uint64_t mask_factors[kStages][kMaskFactors];
  auto factor_offset = [&](int r) {
    return r == 0 ? 0 : r == 1 ? 1 << ts.q_shift[0] : (1 << ts.q_shift[0]) + (1 << ts.q_shift[1]);
  };
  int load_br[3] = {0, 0, 0};
  auto load_stage = [&](int tile) {
    if (tile < num_tiles) {
      const int stage = tile % kStages;
      KvTile kv{};
      const int br[3] = {load_br[0], load_br[1], load_br[2]};
      if (tile < num_spatial) {
        kv = kv_tile_at(ts, box, load_br);
        next_kv_tile(box, load_br);
        if (threadIdx.x == 0) tile_info[stage] = kv;
        if (kv.masked) {
          for (int k = threadIdx.x; k < kMaskFactors; k += kNThreads) {
            const int r = k < factor_offset(1) ? 0 : k < factor_offset(2) ? 1 : 2;
            const int l = k - factor_offset(r);
            if (l >= (1 << ts.q_shift[r])) continue;  // past this box shape's coordinates
            // (a select, not kv.base[r]: a run-time index would put kv in local memory)
            const int base = r == 0 ? kv.base[0] : r == 1 ? kv.base[1] : kv.base[2];
            mask_factors[stage][k] =
                (kv.straddle >> r) & 1 ? axis_column_mask(ts, r, base, axis_lo[r][l], axis_hi[r][l])
                                       : ~uint64_t{0};
          }
        }
      }
      load_kv(tile, kv, br, k_ptr, kv_walk[0], kv_row_offset_k, ak_ptr, p.add_k_stride,
              stage_k(stage));
      load_kv(tile, kv, br, v_ptr, kv_walk[1], kv_row_offset_v, av_ptr, p.add_v_stride,
              stage_v(stage));
    }
    cp_async_commit();
  };
  // Rolled: one copy of the loader's code instead of kStages - 1 (the kernel's code is large for
  // short blocks, which stall on instruction fetch).
#pragma unroll 1
  for (int t = 0; t < kStages - 1; ++t) load_stage(t);  // Q joins the first group

  // ---- MMA partitions ------------------------------------------------------------------------
  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);             // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sK);             // (MMA, MMA_N, MMA_K)
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtNoSwizzle);  // (MMA, MMA_D, MMA_N)
  Tensor acc_o =
      partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_D)
  auto copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto copy_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
  Tensor tSsQ = copy_q.get_thread_slice(threadIdx.x).partition_S(sQ);

  // Coordinates (row, col) of this thread's score elements, in the (rows, cols) view.
  Tensor cS = make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{});
  Tensor tScS = thr_mma.partition_C(cS);
  Tensor tScS_rc = make_tensor(tScS.data(), acc_rowcol(tScS.layout()));  // (rows, cols)
  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  constexpr int kCols = decltype(size<1>(tScS_rc))::value;

  OnlineSoftmax<kRows> softmax;
  softmax.init();
  clear(acc_o);
  Tensor o_rc = make_tensor(acc_o.data(), acc_rowcol(acc_o.layout()));  // (rows, dims)

  // ---- main loop -----------------------------------------------------------------------------
  // Scores stay unscaled until the exponent (one FFMA there, OnlineSoftmax). A non-positive
  // scale would flip or flatten the max, so it is applied up front instead (rare: block-uniform).
  const bool prescale = !(p.scale_log2 > 0.f);
  const float scale_log2 = prescale ? 1.f : p.scale_log2;
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile % kStages;
    cp_async_wait<kStages - 2>();
    __syncthreads();  // this tile's K and V (and Q) landed; every warp is done with tile - 1,
                      // whose stage the next load refills
    load_stage(tile + kStages - 1);

    // Column masks first: one 64-bit word per row (tile_geometry.cuh), shifted to this thread's
    // first column so the per-element tests use compile-time bit positions. A warp whose rows
    // attend no key of the tile skips it (its softmax state would not change): the rows of one
    // warp span a smaller range than the whole Q box, so rim tiles often miss them.
    const int n0 = get<1>(tScS_rc(0, 0));
    uint64_t row_mask[kRows];
    bool masked = false;
    if (tile < num_spatial) {
      const KvTile kv = tile_info[stage];
      masked = kv.masked;
      if (masked) {
        bool live = false;
        CUTE_UNROLL
        for (int i = 0; i < kRows; ++i) {
          int l[3];
          box_coords(get<0>(tScS_rc(i, 0)), ts.q_shift, l);
          const uint64_t* f = mask_factors[stage];
          const uint64_t m = f[l[0]] & f[factor_offset(1) + l[1]] & f[factor_offset(2) + l[2]];
          row_mask[i] = m >> n0;
          live = live || row_mask[i] != 0;
        }
        if (!__any_sync(0xffffffffu, live)) continue;
      }
    }

    Tensor acc_s = partition_fragment_C(
        tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_s);
    Tensor tSsK = copy_k.get_thread_slice(threadIdx.x).partition_S(stage_k(stage));
    gemm_ss(acc_s, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, copy_q, copy_k);

    Tensor s = make_tensor(acc_s.data(), acc_rowcol(acc_s.layout()));  // (rows, cols)
    if (prescale) {
      CUTE_UNROLL
      for (int e = 0; e < size(s); ++e) s(e) *= p.scale_log2;
    }
    if (masked) {
      CUTE_UNROLL
      for (int i = 0; i < kRows; ++i) {
        CUTE_UNROLL
        for (int j = 0; j < kCols; ++j)
          if (!((row_mask[i] >> (get<1>(tScS_rc(i, j)) - n0)) & 1)) s(i, j) = -INFINITY;
      }
    } else if (tile >= num_spatial) {
      const int first = (tile - num_spatial) * kBlockN;
      if (first + kBlockN > p.additional_kv) {
        CUTE_UNROLL
        for (int i = 0; i < kRows; ++i) {
          CUTE_UNROLL
          for (int j = 0; j < kCols; ++j)
            if (first + get<1>(tScS_rc(i, j)) >= p.additional_kv) s(i, j) = -INFINITY;
        }
      }
    }

    softmax.update(s, o_rc, scale_log2);
    Tensor tOsVt = copy_v.get_thread_slice(threadIdx.x).partition_S(stage_vt(stage));

    if constexpr (Traits::kTf32) {
      // P goes through shared memory (see SmemLayoutP). Each warp writes and reads only its own
      // rows, so a warp barrier suffices.
      Tensor sP = make_tensor(make_smem_ptr(reinterpret_cast<SmemT*>(
                                  smem + Traits::kSmemQ + 2 * kStages * Traits::kSmemKV)),
                              typename Traits::SmemLayoutP{});  // (M, N)
      Tensor tPsP = thr_mma.partition_C(sP);
      __syncwarp();
      CUTE_UNROLL
      for (int e = 0; e < size(acc_s); ++e) tPsP(e) = SmemT::bitcast(__float_as_uint(acc_s(e)));
      __syncwarp();
      auto copy_p = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
      Tensor tOrP = thr_mma.partition_fragment_A(sP);  // (MMA, MMA_M, MMA_N)
      Tensor tOsP = copy_p.get_thread_slice(threadIdx.x).partition_S(sP);
      gemm_ss(acc_o, tOrP, tOrVt, tOsP, tOsVt, tiled_mma, copy_p, copy_v);
    } else {
      Tensor r_p = convert_fragment<SmemT>(acc_s);
      Tensor tOrP =
          make_tensor(r_p.data(), acc_as_a_operand(r_p.layout()));  // ((4, 2), MMA_M, MMA_N / 2)
      gemm_rs(acc_o, tOrP, tOrVt, tOsVt, tiled_mma, copy_v);
    }
  }
  cp_async_wait<0>();

  // ---- epilogue: O / rowsum, lse ---------------------------------------------------------------
  float lse[kRows];
  softmax.finalize(o_rc, lse);
  Tensor cO = make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor tOcO = thr_mma.partition_C(cO);
  Tensor tOcO_rc = make_tensor(tOcO.data(), acc_rowcol(tOcO.layout()));  // (rows, dims)
  Element* out_ptr = static_cast<Element*>(p.out);
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) {
    int qi[3];
    if (!row_valid(ts, box, get<0>(tOcO_rc(i, 0)), qi)) continue;
    int x[3];
    CUTE_UNROLL
    for (int r = 0; r < 3; ++r) x[r] = box.coord(p.nb, r, qi[r]);
    Element* row = out_ptr + token_offset(p.out_stride, b, x, h);
    CUTE_UNROLL
    for (int j = 0; j < size<1>(o_rc); j += 2)
      store_pair(row + get<1>(tOcO_rc(i, j)), o_rc(i, j), o_rc(i, j + 1), p.aligned);
    if (p.lse != nullptr && threadIdx.x % 4 == 0)
      p.lse[token_offset(p.lse_stride, b, x, h)] = lse[i];
  }
}

}  // namespace fna::cuda::fused
