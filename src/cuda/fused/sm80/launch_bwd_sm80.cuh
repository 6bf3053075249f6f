// Launcher of the fused sm_80+ backward for one (dtype, head dim): the delta kernel, then either
// the dK/dV kernel that also sums dQ into p.ws_dq with atomics and the dQ conversion kernel (the
// default; on an sm_90 device with an sm_90a instance, the wgmma dK/dV kernel), or, when p.ws_dq is
// null (Options::deterministic), the atomic-free dK/dV and dQ kernels (independent of each other;
// both read delta). Included only by the generated instances
// src/cuda/instances/fused_bwd_hdim<D>_<dtype>_sm80.cu.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_check.h"
#include "cuda/fused/backward_launch.h"
#include "cuda/fused/common/plan_bwd.h"
#include "cuda/fused/sm80/dkdv_bwd_sm80.cuh"
#include "cuda/fused/sm80/dq_bwd_sm80.cuh"
#include "fna/error.h"

namespace fna::cuda::fused::sm80 {

inline constexpr int kDeltaWarps = 8;  // rows per CTA of the delta kernel (one warp per row)

// delta = rowsum(dO * O) in fp32 and lse * log2(e), both into [B, Hq, tokens] workspaces.
template <class Element, int kHeadDim>
__global__ void __launch_bounds__(kDeltaWarps * 32)
    delta_kernel_sm80(const __grid_constant__ BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kDeltaWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.tokens * p.heads_q) return;
  const int64_t h = row % p.heads_q, t = (row / p.heads_q) % p.tokens;
  const int64_t b = row / (p.heads_q * p.tokens);
  int64_t x[3] = {0, 0, 0};
  p.nb.coords(t, x);
  int64_t off_o = b * p.out.sb + h * p.out.sh, off_do = b * p.dout.sb + h * p.dout.sh;
  int64_t off_lse = b * p.lse.sb + h * p.lse.sh;
  for (int r = 0; r < p.nb.rank; ++r) {
    off_o += x[r] * p.out.sx[r];
    off_do += x[r] * p.dout.sx[r];
    off_lse += x[r] * p.lse.sx[r];
  }
  const Element* o = static_cast<const Element*>(p.out.ptr) + off_o;
  const Element* dout = static_cast<const Element*>(p.dout.ptr) + off_do;
  float acc = 0.f;
#pragma unroll
  for (int d = lane; d < kHeadDim; d += 32)
    acc += static_cast<float>(o[d]) * static_cast<float>(dout[d]);
#pragma unroll
  for (int w = 16; w > 0; w /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, w);
  if (lane == 0) {
    const int64_t idx = (b * p.heads_q + h) * p.tokens + t;
    p.ws_delta[idx] = acc;
    p.ws_lse[idx] = static_cast<const float*>(p.lse.ptr)[off_lse] * 1.4426950408889634f;
  }
}

// dq = scale * ws_dq in Element, one warp per row (rows in delta_kernel_sm80's order); kGmmaOrder:
// ws_dq rows in ws_dq_gmma_col order (the sm_90a dK/dV kernel's), else in head-dim order.
template <class Element, int kHeadDim, bool kGmmaOrder>
__global__ void __launch_bounds__(kDeltaWarps * 32)
    dq_convert_kernel_sm80(const __grid_constant__ BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kDeltaWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.tokens * p.heads_q) return;
  const int64_t h = row % p.heads_q, t = (row / p.heads_q) % p.tokens;
  const int64_t b = row / (p.heads_q * p.tokens);
  int64_t x[3] = {0, 0, 0};
  p.nb.coords(t, x);
  int64_t off = b * p.dq.sb + h * p.dq.sh;
  for (int r = 0; r < p.nb.rank; ++r) off += x[r] * p.dq.sx[r];
  Element* dq = static_cast<Element*>(p.dq.ptr) + off;
  const float* src = p.ws_dq + ((b * p.heads_q + h) * p.tokens + t) * kHeadDim;
#pragma unroll
  for (int d = lane; d < kHeadDim; d += 32)
    dq[d] = static_cast<Element>(src[kGmmaOrder ? ws_dq_gmma_col(d) : d] * p.scale);
}

}  // namespace fna::cuda::fused::sm80

namespace fna::cuda::fused {

template <class Element, int kHeadDim>
void launch_bwd_sm80(const BwdParams& p, cudaStream_t stream) {
  using namespace sm80;
  using Traits = BwdTraits<Element, kHeadDim>;
  const int64_t rows = p.batch * p.tokens * p.heads_q;
  delta_kernel_sm80<Element, kHeadDim>
      <<<static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps), kDeltaWarps * 32, 0,
         stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());

  constexpr int kSmem = sizeof(BwdSmem<Traits>);
  // fp32 at head dim 128 needs ~218 KB: more than sm_80/sm_86/sm_89 allow per block.
  int device = 0, max_smem = 0;
  FNA_CUDA_CHECK(cudaGetDevice(&device));
  FNA_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (kSmem > max_smem)
    throw Error(ErrorKind::kNotAvailable,
                "fna: cuda-fused backward: head_dim " + std::to_string(kHeadDim) + " in " +
                    (Traits::kTf32 ? "fp32" : "16-bit") + " needs " + std::to_string(kSmem) +
                    " bytes of shared memory per block; device " + std::to_string(device) +
                    " allows " + std::to_string(max_smem));
  const int64_t kv_tiles = kv_grid_tiles(p), dq_tiles = dq_grid_tiles(p);
  const dim3 kv_grid(static_cast<unsigned>(kv_tiles), static_cast<unsigned>(p.heads_kv),
                     static_cast<unsigned>(p.batch));
  if (p.ws_dq != nullptr) {
    bool sm90 = false;
    if constexpr (dkdv_sm90_built<Element, kHeadDim>()) {
      int major = 0, minor = 0;
      FNA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
      FNA_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
      sm90 = major == 9 && minor == 0;
    }
    const unsigned convert_blocks = static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps);
    if (sm90) {
      launch_dkdv_sm90<Element, kHeadDim>(p, stream);
      if constexpr (dkdv_sm90_built<Element, kHeadDim>())  // ws_dq in the sm_90a kernel's order
        dq_convert_kernel_sm80<Element, kHeadDim, true>
            <<<convert_blocks, kDeltaWarps * 32, 0, stream>>>(p);
    } else {
      FNA_CUDA_CHECK(cudaFuncSetAttribute(dkdv_kernel_sm80<Traits, true>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      dkdv_kernel_sm80<Traits, true><<<kv_grid, Traits::kThreads, kSmem, stream>>>(p);
      FNA_CUDA_CHECK(cudaGetLastError());
      dq_convert_kernel_sm80<Element, kHeadDim, false>
          <<<convert_blocks, kDeltaWarps * 32, 0, stream>>>(p);
    }
    FNA_CUDA_CHECK(cudaGetLastError());
    return;
  }
  FNA_CUDA_CHECK(cudaFuncSetAttribute(dkdv_kernel_sm80<Traits, false>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  FNA_CUDA_CHECK(cudaFuncSetAttribute(dq_kernel_sm80<Traits>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  dkdv_kernel_sm80<Traits, false><<<kv_grid, Traits::kThreads, kSmem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
  const dim3 dq_grid(static_cast<unsigned>(dq_tiles), static_cast<unsigned>(p.heads_q),
                     static_cast<unsigned>(p.batch));
  dq_kernel_sm80<Traits><<<dq_grid, Traits::kThreads, kSmem, stream>>>(p);
  FNA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fna::cuda::fused
