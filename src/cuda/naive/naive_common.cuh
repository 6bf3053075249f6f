// Shared device pieces of the unfused (naive) CUDA backend: typed loads/stores, token offsets and
// the per-query window slots. One thread does one scalar of one query's work; the attention
// weights live in an fp32 workspace [B, T, Hq, W] with W = prod(window) + additional_kv slots.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/neighborhood.h"

namespace fna::cuda::naive {

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// Element offsets of a token-major view [B, X(, Y(, Z)), H, D] (additional KV: rank 1, x = n).
struct Layout {
  int64_t sb = 0, sx[3] = {0, 0, 0}, sh = 0;

  __device__ __forceinline__ int64_t at(int64_t b, const int64_t* x, int rank, int64_t h) const {
    int64_t o = b * sb + h * sh;
    for (int r = 0; r < rank; ++r) o += x[r] * sx[r];
    return o;
  }
};

// Everything a naive kernel needs to know about the problem (passed by value).
struct Params {
  Neighborhood nb;
  int64_t batch, tokens, heads_q, heads_kv, head_dim, head_dim_v, additional_kv;
  int64_t slots;      // W = prod(window) + additional_kv
  int64_t window[3];  // per-axis window (1 on unused axes)
  float scale;
  Layout q, k, v, out, lse, ak, av;   // forward
  Layout dout, dq, dk, dv, dak, dav;  // backward
};

// Key coordinates of window slot `slot` (< prod(window)) of the query at `x`; false when the slot
// lies past a causal window's end. Slots enumerate the per-axis window offsets row-major.
__device__ __forceinline__ bool slot_key(const Params& p, const int64_t* x, int64_t slot,
                                         int64_t* y) {
  for (int r = p.nb.rank - 1; r >= 0; --r) {
    const int64_t off = slot % p.window[r];
    slot /= p.window[r];
    const AxisRange w = axis_window(p.nb.axis[r], x[r]);
    if (w.start + off >= w.end) return false;
    y[r] = (w.start + off) * p.nb.axis[r].dilation + w.group;
  }
  return true;
}

// The slot that key `y` occupies in the window of query `x`, or -1 when x does not attend y.
__device__ __forceinline__ int64_t key_slot(const Params& p, const int64_t* x, const int64_t* y) {
  int64_t slot = 0;
  for (int r = 0; r < p.nb.rank; ++r) {
    const Axis& a = p.nb.axis[r];
    if (!axis_attends(a, x[r], y[r])) return -1;
    slot = slot * p.window[r] + (y[r] / a.dilation - axis_window(a, x[r]).start);
  }
  return slot;
}

}  // namespace fna::cuda::naive
