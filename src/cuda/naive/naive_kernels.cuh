// The unfused kernels: logits (QK over each query's window), softmax, weighted sum (AV) and their
// backward (non-template kernels are `static`: this header is included by several .cu files).
// Rows of the fp32 workspace are queries of one chunk of (batch, kv-head) units, ordered
// (unit, q-head-in-group, token); each row holds W = prod(window) + additional_kv slots.
#pragma once

#include <cmath>

#include "cuda/naive/naive_common.cuh"

namespace fna::cuda::naive {

// Decodes workspace row `row` of the chunk starting at unit `unit0` into batch, q head, token and
// its coordinates.
struct Row {
  int64_t b, h, hk, t, x[3];
};
__device__ __forceinline__ Row decode_row(const Params& p, int64_t unit0, int64_t row) {
  const int64_t group = p.heads_q / p.heads_kv;
  Row r;
  r.t = row % p.tokens;
  const int64_t gh = (row / p.tokens) % group;
  const int64_t unit = unit0 + row / (p.tokens * group);
  r.b = unit / p.heads_kv;
  r.hk = unit % p.heads_kv;
  r.h = r.hk * group + gh;
  p.nb.coords(r.t, r.x);
  return r;
}

// K or V row offset of slot `slot` for this query; `valid` false for slots past a causal end.
template <bool kValue>
__device__ __forceinline__ int64_t slot_offset(const Params& p, const Row& r, int64_t slot,
                                               bool* additional, bool* valid) {
  const int64_t spatial = p.slots - p.additional_kv;
  *valid = true;
  if (slot >= spatial) {
    *additional = true;
    const int64_t n = slot - spatial;
    return (kValue ? p.av : p.ak).at(r.b, &n, 1, r.hk);
  }
  *additional = false;
  int64_t y[3];
  *valid = slot_key(p, r.x, slot, y);
  return *valid ? (kValue ? p.v : p.k).at(r.b, y, p.nb.rank, r.hk) : 0;
}

// attn[row, slot] = scale * q . k (or -inf for slots outside a causal window).
template <typename T>
__global__ void logits_kernel(Params p, const T* q, const T* k, const T* ak, int64_t unit0,
                              int64_t rows, float* attn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * p.slots;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t slot = i % p.slots;
    const Row r = decode_row(p, unit0, i / p.slots);
    bool add, valid;
    const int64_t ko = slot_offset<false>(p, r, slot, &add, &valid);
    if (!valid) {
      attn[i] = -INFINITY;
      continue;
    }
    const T* qrow = q + p.q.at(r.b, r.x, p.nb.rank, r.h);
    const T* krow = (add ? ak : k) + ko;
    float s = 0.f;
    for (int64_t d = 0; d < p.head_dim; ++d) s += load(qrow + d) * load(krow + d);
    attn[i] = s * p.scale;
  }
}

// One warp per row: attn <- softmax(attn); lse (natural log) written when `lse` is given.
// With `use_lse` the row is exponentiated against the given lse instead (backward recompute).
static __global__ void softmax_kernel(Params p, int64_t unit0, int64_t rows, float* attn,
                                      float* lse, const float* lse_in) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    float* a = attn + row * p.slots;
    const Row r = decode_row(p, unit0, row);
    float m, l;
    if (lse_in) {
      m = lse_in[p.lse.at(r.b, r.x, p.nb.rank, r.h)];
      l = 1.f;
    } else {
      m = -INFINITY;
      for (int64_t j = lane; j < p.slots; j += 32) m = fmaxf(m, a[j]);
      for (int o = 16; o; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      l = 0.f;
      for (int64_t j = lane; j < p.slots; j += 32) l += expf(a[j] - m);
      for (int o = 16; o; o /= 2) l += __shfl_xor_sync(0xffffffffu, l, o);
    }
    for (int64_t j = lane; j < p.slots; j += 32) a[j] = expf(a[j] - m) / l;
    if (lse && lane == 0) lse[p.lse.at(r.b, r.x, p.nb.rank, r.h)] = m + logf(l);
  }
}

// out[row, d] = sum_slot w[row, slot] * x[slot, d]: the forward's attn V (kValue: x = v, written
// to out) and the backward's dq = dS K (x = k, written to dq).
template <typename T, bool kValue>
__global__ void slot_sum_kernel(Params p, const float* w, const T* x, const T* ax, int64_t unit0,
                                int64_t rows, T* out) {
  const int64_t dim = kValue ? p.head_dim_v : p.head_dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * dim;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % dim, row = i / dim;
    const Row r = decode_row(p, unit0, row);
    const float* wr = w + row * p.slots;
    float acc = 0.f;
    for (int64_t slot = 0; slot < p.slots; ++slot) {
      bool add, valid;
      const int64_t xo = slot_offset<kValue>(p, r, slot, &add, &valid);
      if (valid) acc += wr[slot] * load((add ? ax : x) + xo + d);
    }
    store(out + (kValue ? p.out : p.dq).at(r.b, r.x, p.nb.rank, r.h) + d, acc);
  }
}

// dattn[row, slot] = dout[row] . v[slot].
template <typename T>
__global__ void dprob_kernel(Params p, const T* dout, const T* v, const T* av, int64_t unit0,
                             int64_t rows, float* dattn) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * p.slots;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t slot = i % p.slots;
    const Row r = decode_row(p, unit0, i / p.slots);
    bool add, valid;
    const int64_t vo = slot_offset<true>(p, r, slot, &add, &valid);
    float s = 0.f;
    if (valid) {
      const T* dorow = dout + p.dout.at(r.b, r.x, p.nb.rank, r.h);
      for (int64_t d = 0; d < p.head_dim_v; ++d)
        s += load(dorow + d) * load((add ? av : v) + vo + d);
    }
    dattn[i] = s;
  }
}

// One warp per row: dattn <- scale * P * (dP - sum(P * dP)), the gradient of the scaled logits'
// dot products.
static __global__ void dlogits_kernel(Params p, int64_t rows, const float* attn, float* dattn) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    const float* a = attn + row * p.slots;
    float* da = dattn + row * p.slots;
    float delta = 0.f;
    for (int64_t j = lane; j < p.slots; j += 32) delta += a[j] * da[j];
    for (int o = 16; o; o /= 2) delta += __shfl_xor_sync(0xffffffffu, delta, o);
    for (int64_t j = lane; j < p.slots; j += 32) da[j] = p.scale * a[j] * (da[j] - delta);
  }
}

// The queries (group coordinates) whose window on this axis contains key j: an interval, since a
// window's start and end are non-decreasing in the query index. Binary searches over the group.
__device__ __forceinline__ void attending_queries(const Axis& a, int64_t y, int64_t* lo,
                                                  int64_t* hi) {
  const int64_t g = y % a.dilation, j = y / a.dilation, lg = group_length(a, g);
  int64_t s, e;
  int64_t l = 0, h = lg;  // first i with end(i) > j
  while (l < h) {
    const int64_t m = (l + h) / 2;
    window_in_group(a, lg, m, &s, &e);
    if (e > j)
      h = m;
    else
      l = m + 1;
  }
  *lo = l;
  l = 0;
  h = lg;  // first i with start(i) > j
  while (l < h) {
    const int64_t m = (l + h) / 2;
    window_in_group(a, lg, m, &s, &e);
    if (s > j)
      h = m;
    else
      l = m + 1;
  }
  *hi = l;  // exclusive
}

// dk / dv of spatial keys, gathered (no atomics, deterministic): for key (unit, token) and dim d,
// sum over the attending queries of every q head of the group. `kind` 0 -> dk, 1 -> dv.
template <typename T>
__global__ void dkv_kernel(Params p, const float* attn, const float* dattn, const T* q,
                           const T* dout, int64_t unit0, int64_t units, T* dk, T* dv) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t dims = p.head_dim + p.head_dim_v;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < units * p.tokens * dims;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t dd = i % dims, t = (i / dims) % p.tokens, u = i / (dims * p.tokens);
    const bool is_k = dd < p.head_dim;
    const int64_t d = is_k ? dd : dd - p.head_dim;
    const int64_t unit = unit0 + u, b = unit / p.heads_kv, hk = unit % p.heads_kv;
    int64_t y[3], lo[3] = {0, 0, 0}, hi[3] = {1, 1, 1};
    p.nb.coords(t, y);
    for (int r = 0; r < p.nb.rank; ++r) attending_queries(p.nb.axis[r], y[r], &lo[r], &hi[r]);
    float acc = 0.f;
    int64_t x[3];
    for (int64_t i0 = lo[0]; i0 < hi[0]; ++i0)
      for (int64_t i1 = lo[1]; i1 < hi[1]; ++i1)
        for (int64_t i2 = lo[2]; i2 < hi[2]; ++i2) {
          const int64_t idx[3] = {i0, i1, i2};
          for (int r = 0; r < p.nb.rank; ++r)
            x[r] = idx[r] * p.nb.axis[r].dilation + y[r] % p.nb.axis[r].dilation;
          const int64_t slot = key_slot(p, x, y);
          const int64_t qt = p.nb.token(x);
          for (int64_t gh = 0; gh < group; ++gh) {
            const int64_t row = (u * group + gh) * p.tokens + qt;
            const int64_t h = hk * group + gh;
            if (is_k)
              acc += dattn[row * p.slots + slot] * load(q + p.q.at(b, x, p.nb.rank, h) + d);
            else
              acc += attn[row * p.slots + slot] * load(dout + p.dout.at(b, x, p.nb.rank, h) + d);
          }
        }
    if (is_k)
      store(dk + p.dk.at(b, y, p.nb.rank, hk) + d, acc);
    else
      store(dv + p.dv.at(b, y, p.nb.rank, hk) + d, acc);
  }
}

// Gradients of the additional KV tokens: every query of the unit contributes.
template <typename T>
__global__ void dkv_additional_kernel(Params p, const float* attn, const float* dattn, const T* q,
                                      const T* dout, int64_t unit0, int64_t units, T* dak, T* dav) {
  const int64_t group = p.heads_q / p.heads_kv;
  const int64_t dims = p.head_dim + p.head_dim_v, spatial = p.slots - p.additional_kv;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       i < units * p.additional_kv * dims; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t dd = i % dims, n = (i / dims) % p.additional_kv, u = i / (dims * p.additional_kv);
    const bool is_k = dd < p.head_dim;
    const int64_t d = is_k ? dd : dd - p.head_dim;
    const int64_t unit = unit0 + u, b = unit / p.heads_kv, hk = unit % p.heads_kv;
    float acc = 0.f;
    for (int64_t gh = 0; gh < group; ++gh)
      for (int64_t t = 0; t < p.tokens; ++t) {
        int64_t x[3];
        p.nb.coords(t, x);
        const int64_t row = (u * group + gh) * p.tokens + t, h = hk * group + gh;
        if (is_k)
          acc += dattn[row * p.slots + spatial + n] * load(q + p.q.at(b, x, p.nb.rank, h) + d);
        else
          acc += attn[row * p.slots + spatial + n] * load(dout + p.dout.at(b, x, p.nb.rank, h) + d);
      }
    if (is_k)
      store(dak + p.dak.at(b, &n, 1, hk) + d, acc);
    else
      store(dav + p.dav.at(b, &n, 1, hk) + d, acc);
  }
}

}  // namespace fna::cuda::naive
