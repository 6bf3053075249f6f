// The Hopper (sm_90a) neighborhood-attention forward kernel: TMA + wgmma, warp-specialized.
//
// One block computes one Q box (a box of the grid in dilation-group coordinates, see
// tile_geometry.cuh) for one (batch, head), like the sm_80 kernel, but the box and its KV boxes
// arrive by TMA straight from the user's [B, X(, Y(, Z)), H, D] tensors (no permutation, no
// copies). Warpgroup 0 is the producer (one thread issues every load into a ring of K/V stages
// guarded by mbarriers, load_fwd_sm90.cuh); warpgroups 1 and 2 consume (mainloop_fwd_sm90.cuh).
// This file only orchestrates: shared storage, barrier setup, the role split.
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include <cute/arch/cluster_sm90.hpp>

#include "cuda/fused/sm90/kernel_traits_fwd_sm90.cuh"
#include "cuda/fused/sm90/load_fwd_sm90.cuh"
#include "cuda/fused/sm90/mainloop_fwd_sm90.cuh"

namespace fna::cuda::fused {

template <class Traits>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    fwd_kernel_sm90(const __grid_constant__ FwdParamsSm90 p) {
  using Storage = typename Traits::SharedStorage;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  extern __shared__ char smem_raw[];
  Storage& st = *reinterpret_cast<Storage*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                            ~uintptr_t{1023});

  const int warp = int(threadIdx.x) / 32;
  // One thread per axis computes the box geometry (64-bit window arithmetic).
  if (threadIdx.x < 3) make_q_box_axis(p.base.nb, p.base.tile, blockIdx.x, threadIdx.x, &st.box);
  if (warp == 1 && cute::elect_one_sync()) {
    Barrier::init(&st.q_full, 1);
    CUTE_UNROLL
    for (int s = 0; s < Traits::kStages; ++s) {
      Barrier::init(&st.k_full[s], 1);
      Barrier::init(&st.v_full[s], 1);
      Barrier::init(&st.k_empty[s], Traits::kConsumerWarpgroups);
      Barrier::init(&st.v_empty[s], Traits::kConsumerWarpgroups);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
  const QBox& box = st.box;
  if (box.count[0] == 0 || box.count[1] == 0 || box.count[2] == 0) return;  // past a group end
  const int num_spatial = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
  const int num_tiles =
      num_spatial + (p.base.additional_kv + Traits::kBlockN - 1) / Traits::kBlockN;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;

  if (warp < 4) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp == 0 && cute::elect_one_sync())
      produce_fwd<Traits>(p, st, num_spatial, num_tiles, b, h, h / p.base.heads_ratio);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    consume_fwd<Traits>(p, st, num_spatial, num_tiles, b, h);
  }
}

}  // namespace fna::cuda::fused
