// The Hopper (sm_90a) neighborhood-attention forward kernel: TMA + wgmma, warp-specialized,
// persistent.
//
// A work item is one Q box (a box of the grid in dilation-group coordinates, see
// tile_geometry.cuh) of one (batch, head), as in the sm_80 kernel, but the box and its KV boxes
// arrive by TMA straight from the user's [B, X(, Y(, Z)), H, D] tensors (no permutation, no
// copies). One block per SM walks its items (params_fwd_sm90.h). Warpgroup 0 is the producer (one
// thread plans each item into a slot and issues every load into a ring of K/V stages guarded by
// mbarriers, running ahead: the next item's Q and first KV tiles load during the consumers'
// epilogue, load_fwd_sm90.cuh); warpgroups 1 and 2 consume (mainloop_fwd_sm90.cuh). This file only
// orchestrates: shared storage, barrier setup, the role split.
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
  // Rounded up to 1024 bytes by an offset from smem_raw, not through an integer: the compiler then
  // still knows the state space, so the item slots, barriers and row data are read with LDS / STS
  // instead of generic loads and stores (an integer round trip made every one of them generic).
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  Storage& st = *reinterpret_cast<Storage*>(smem_raw + ((1024u - (raw & 1023u)) & 1023u));

  const int warp = int(threadIdx.x) / 32;
  if (warp == 0 && cute::elect_one_sync()) {
    Barrier::init(&st.q_full, 1);
    Barrier::init(&st.q_empty, Traits::kConsumerWarpgroups);
    // Every consumer thread reads its item slot until its epilogue ends, so every one arrives.
    for (int j = 0; j < Traits::kItemSlots; ++j)
      Barrier::init(&st.item_empty[j], Traits::kConsumerThreads);
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

  if (warp < 4) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp == 0 && cute::elect_one_sync()) produce_fwd<Traits>(p, st);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    consume_fwd<Traits>(p, st);
  }
}

}  // namespace fna::cuda::fused
