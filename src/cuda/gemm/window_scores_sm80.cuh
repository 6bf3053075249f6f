// The window-scores kernel of backend `cuda-gemm` (sm_80+, mma.sync through CuTe): for one Q box
// and one q head, S = rows * cols^T between the box's rows (Q, or dO) and the gathered KV boxes
// over its KV range (K, or V) plus the additional KV tiles, with tensor cores; only the
// in-window elements of S are written, scaled, into their workspace slots. Slots past a causal
// window's end get `p.fill` (-inf for logits, 0 for dP).
#pragma once

#include <cute/tensor.hpp>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/gemm/tile_lookup.cuh"
#include "cuda/gemm/traits_sm80.cuh"

namespace fna::cuda::gemm {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads)
    window_scores_kernel_sm80(const __grid_constant__ GemmParams p) {
  using namespace cute;
  using Element = typename Traits::Element;
  using SmemT = typename Traits::SmemT;
  constexpr int kM = Traits::kBlockM, kN = Traits::kBlockN, kD = Traits::kHeadDim;
  constexpr int kThreads = Traits::kNThreads;

  __shared__ QBox box;
  __shared__ RowWindow windows[kM];
  __shared__ int64_t row_ws[kM];
  __shared__ int64_t col_local[kN];
  __shared__ int col_coords[kN];
  __shared__ TileLookup<kM, kN> lut;
  if (threadIdx.x < 3) fused::make_q_box_axis(p.nb, p.tile, blockIdx.x, threadIdx.x, &box);
  __syncthreads();
  if (box.count[0] == 0 || box.count[1] == 0 || box.count[2] == 0) return;  // past a group end
  const Heads hd = forward_heads(p, blockIdx.y);
  setup_query_rows<kM, kThreads>(p, box, hd, windows, row_ws);
  setup_cols<kN, kThreads>(p, p.cols_stride, col_local, col_coords);

  extern __shared__ __align__(128) char smem[];
  Tensor sRows = make_tensor(make_smem_ptr(reinterpret_cast<SmemT*>(smem)),
                             typename Traits::SmemLayoutRows{});  // (M, D)
  Tensor sCols =
      make_tensor(sRows.data() + size(sRows), typename Traits::SmemLayoutCols{});  // (N, D)

  const Element* rows_ptr = static_cast<const Element*>(p.rows);
  fused::gather_rows<kM, kD, kThreads>(rows_ptr, sRows, p.aligned, [&](int row) -> int64_t {
    int i[3], x[3];
    if (!fused::row_valid(p.tile, box, row, i)) return -1;
    box_token(p.nb, box, i, x);
    return fused::token_offset(p.rows_stride, hd.b, x, hd.h);
  });

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
  Tensor tSrQ = thr_mma.partition_fragment_A(sRows);  // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_mma.partition_fragment_B(sCols);  // (MMA, MMA_N, MMA_K)
  auto copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
  Tensor tSsQ = copy_q.get_thread_slice(threadIdx.x).partition_S(sRows);
  Tensor tSsK = copy_k.get_thread_slice(threadIdx.x).partition_S(sCols);
  Tensor cS = make_identity_tensor(Shape<Int<kM>, Int<kN>>{});
  Tensor tScS = thr_mma.partition_C(cS);  // (MMA, MMA_M, MMA_N) -> (row, col)

  const int num_spatial = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
  const int num_tiles = num_spatial + (p.additional_kv + kN - 1) / kN;
  const Element* cols_ptr = static_cast<const Element*>(p.cols);
  const Element* add_ptr = static_cast<const Element*>(p.cols_add);
  for (int tile = 0; tile < num_tiles; ++tile) {
    __syncthreads();  // every warp is done with the previous tile's columns and lookup
    gather_tile<kN, kD, kThreads>(p, box, tile, num_spatial, cols_ptr, p.cols_stride, add_ptr,
                                  p.cols_add_stride, col_local, col_coords, hd.b, hd.hk, sCols);
    fused::cp_async_commit();
    lookup_forward<kM, kN, kThreads>(p, box, tile, num_spatial, windows, row_ws, col_coords, &lut);
    fused::cp_async_wait<0>();
    __syncthreads();

    Tensor acc = partition_fragment_C(tiled_mma, Shape<Int<kM>, Int<kN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc);
    fused::gemm_ss(acc, tSrQ, tSrK, tSsQ, tSsK, tiled_mma, copy_q, copy_k);
    CUTE_UNROLL
    for (int e = 0; e < size(acc); ++e) {
      const int row = get<0>(tScS(e)), col = get<1>(tScS(e));
      if ((lut.row_mask[row] >> col) & 1)
        p.ws[lut.row_base[row] + lut.col_off[col]] = p.scale * acc(e);
    }
  }

  if (p.causal) {
    // Slots whose per-axis offset reaches the row's (causally shortened) window length.
    for (int e = threadIdx.x; e < kM * p.spatial_slots; e += kThreads) {
      const int row = e / p.spatial_slots;
      if (row_ws[row] < 0) continue;
      int slot = e % p.spatial_slots;
      bool outside = false;
      for (int r = 2; r >= 0; --r) {
        const int k = int(p.nb.axis[r].window);
        outside = outside || slot % k >= windows[row].hi[r] - windows[row].lo[r];
        slot /= k;
      }
      if (outside) p.ws[row_ws[row] + e % p.spatial_slots] = p.fill;
    }
  }
}

}  // namespace fna::cuda::gemm
