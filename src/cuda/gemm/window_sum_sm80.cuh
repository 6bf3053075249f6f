// The window-sum kernel of backend `cuda-gemm` (sm_80+, mma.sync through CuTe): out = W * X for
// one box, where W (box rows x gathered columns) is read from the fp32 workspace through the
// tile lookup (zero where a row does not attend a column) and X is the gathered tile.
//  - Forward direction (kInverse = false), one Q box and q head: W = P (or dS), X = V (or K) of
//    the KV boxes over the box's KV range and the additional KV tiles; out = O (or dQ).
//  - Inverse direction (kInverse = true), one key box and kv head: W = dS^T (or P^T) of every
//    q head of the group, X = Q (or dO) of the query boxes over the range of queries attending
//    the box's keys; out = dK (or dV). Every key is written by exactly one block: no atomics.
#pragma once

#include <cute/tensor.hpp>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/gemm/tile_lookup.cuh"
#include "cuda/gemm/traits_sm80.cuh"

namespace fna::cuda::gemm {

template <class Traits, bool kInverse>
__global__ void __launch_bounds__(Traits::kNThreads)
    window_sum_kernel_sm80(const __grid_constant__ GemmParams p) {
  using namespace cute;
  using Element = typename Traits::Element;
  using SmemT = typename Traits::SmemT;
  constexpr int kM = Traits::kBlockM, kN = Traits::kBlockN, kD = Traits::kHeadDim;
  constexpr int kThreads = Traits::kNThreads;

  __shared__ QBox box;
  __shared__ RowWindow row_ranges[kM];  // query windows, or a key's attending queries
  __shared__ int64_t row_part[kM];      // row_ws (forward) or key_part (inverse); -1: padding
  __shared__ int64_t col_local[kN];
  __shared__ int col_coords[kN];
  __shared__ TileLookup<kM, kN> lut;
  if (threadIdx.x < 3) {
    if constexpr (kInverse)
      make_key_box_axis(p.nb, p.tile, blockIdx.x, threadIdx.x, &box);
    else
      fused::make_q_box_axis(p.nb, p.tile, blockIdx.x, threadIdx.x, &box);
  }
  __syncthreads();
  if (box.count[0] == 0 || box.count[1] == 0 || box.count[2] == 0) return;  // past a group end
  // Forward: grid y = (unit, q head in group); inverse: grid y = unit, out at the kv head.
  const Heads hd = forward_heads(p, kInverse ? int64_t(blockIdx.y) * p.group : blockIdx.y);
  if constexpr (kInverse)
    setup_key_rows<kM, kThreads>(p, box, row_ranges, row_part);
  else
    setup_query_rows<kM, kThreads>(p, box, hd, row_ranges, row_part);
  setup_cols<kN, kThreads>(p, p.cols_stride, col_local, col_coords);

  extern __shared__ __align__(128) char smem[];
  Tensor sW = make_tensor(make_smem_ptr(reinterpret_cast<SmemT*>(smem)),
                          typename Traits::SmemLayoutW{});                           // (M, N)
  Tensor sX = make_tensor(sW.data() + size(sW), typename Traits::SmemLayoutCols{});  // (N, D)
  Tensor sXt = make_tensor(sX.data(), typename Traits::SmemLayoutColsT{});           // (D, N)
  Tensor sXtNoSwizzle =
      make_tensor(sX.data().get(), typename Traits::SmemLayoutColsTNoSwizzle{});  // (D, N)

  typename Traits::TiledMma tiled_mma;
  auto thr_mma = tiled_mma.get_thread_slice(threadIdx.x);
  Tensor tOrW = thr_mma.partition_fragment_A(sW);             // (MMA, MMA_M, MMA_N)
  Tensor tOrXt = thr_mma.partition_fragment_B(sXtNoSwizzle);  // (MMA, MMA_D, MMA_N)
  auto copy_w = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
  auto copy_x = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
  Tensor tOsW = copy_w.get_thread_slice(threadIdx.x).partition_S(sW);
  Tensor tOsXt = copy_x.get_thread_slice(threadIdx.x).partition_S(sXt);
  Tensor acc = partition_fragment_C(tiled_mma, Shape<Int<kM>, Int<kD>>{});  // (MMA, MMA_M, MMA_D)
  clear(acc);

  const int num_spatial = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
  const int num_tiles =
      kInverse ? p.group * num_spatial : num_spatial + (p.additional_kv + kN - 1) / kN;
  const Element* cols_ptr = static_cast<const Element*>(p.cols);
  const Element* add_ptr = static_cast<const Element*>(p.cols_add);
  for (int t = 0; t < num_tiles; ++t) {
    __syncthreads();  // every warp is done with the previous W and X
    if constexpr (kInverse) {
      const int gh = t / num_spatial, tile = t % num_spatial;
      gather_tile<kN, kD, kThreads>(p, box, tile, num_spatial, cols_ptr, p.cols_stride, add_ptr,
                                    p.cols_add_stride, col_local, col_coords, hd.b,
                                    hd.hk * p.group + gh, sX);
      fused::cp_async_commit();
      lookup_inverse<kM, kN, kThreads>(p, box, tile, gh, blockIdx.y, row_ranges, row_part,
                                       col_coords, &lut);
    } else {
      gather_tile<kN, kD, kThreads>(p, box, t, num_spatial, cols_ptr, p.cols_stride, add_ptr,
                                    p.cols_add_stride, col_local, col_coords, hd.b, hd.hk, sX);
      fused::cp_async_commit();
      lookup_forward<kM, kN, kThreads>(p, box, t, num_spatial, row_ranges, row_part, col_coords,
                                       &lut);
    }
    __syncthreads();  // lookup ready
    // Consecutive threads take consecutive columns of a row: its slots are mostly contiguous.
    for (int e = threadIdx.x; e < kM * kN; e += kThreads) {
      const int row = e / kN, col = e % kN;
      const float w =
          (lut.row_mask[row] >> col) & 1 ? p.ws[lut.row_base[row] + lut.col_off[col]] : 0.f;
      sW(row, col) = weight_to_smem<SmemT>(w);
    }
    fused::cp_async_wait<0>();
    __syncthreads();  // W and X landed
    fused::gemm_ss(acc, tOrW, tOrXt, tOsW, tOsXt, tiled_mma, copy_w, copy_x);
  }

  __syncthreads();  // row_part is visible even when the loop ran no tile (keys nobody attends)

  // Epilogue: every real row of the box, all kD columns (zero when nothing was attended).
  Tensor cO = make_identity_tensor(Shape<Int<kM>, Int<kD>>{});
  Tensor tOcO = thr_mma.partition_C(cO);  // (MMA, MMA_M, MMA_D) -> (row, dim)
  Element* out_ptr = static_cast<Element*>(p.out);
  const int out_head = kInverse ? hd.hk : hd.h;
  CUTE_UNROLL
  for (int e = 0; e < size(acc); ++e) {
    const int row = get<0>(tOcO(e));
    if (row_part[row] < 0) continue;
    int i[3], x[3];
    fused::row_valid(p.tile, box, row, i);
    box_token(p.nb, box, i, x);
    out_ptr[fused::token_offset(p.out_stride, hd.b, x, out_head) + get<1>(tOcO(e))] =
        static_cast<Element>(acc(e));
  }
}

}  // namespace fna::cuda::gemm
