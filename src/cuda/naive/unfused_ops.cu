// CUDA implementation of the unfused ops (include/fna/unfused.h), in the style of the naive
// family: one thread per output scalar, grid-stride loops, fp32 accumulation. The key-side
// gradients (dk, dv) gather over each key's attending queries and d_rpb is a fixed-order block
// reduction per bias element, so every op is deterministic (no atomics).
#include <cuda_runtime.h>

#include <cmath>

#include "common/unfused_slots.h"
#include "cuda/cuda_check.h"
#include "cuda/naive/naive_host.cuh"
#include "cuda/naive/naive_kernels.cuh"
#include "cuda/naive/unfused_launch.h"

namespace fna::cuda::naive {
namespace {

// Attention weights / bias: fp32 or the token dtype, chosen at run time (one load per slot).
struct WeightView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Layout l;                     // token views [B, *extent, Hq, W]
  int64_t s[4] = {0, 0, 0, 0};  // bias views [Hq, 2K0-1, ...]: strides
};

__device__ __forceinline__ float load_weight(const WeightView& w, int64_t off) {
  switch (w.dtype) {
    case DType::kFloat16:
      return load(static_cast<const __half*>(w.data) + off);
    case DType::kBFloat16:
      return load(static_cast<const __nv_bfloat16*>(w.data) + off);
    default:
      return load(static_cast<const float*>(w.data) + off);
  }
}
__device__ __forceinline__ void store_weight(const WeightView& w, int64_t off, float x) {
  switch (w.dtype) {
    case DType::kFloat16:
      return store(static_cast<__half*>(w.data) + off, x);
    case DType::kBFloat16:
      return store(static_cast<__nv_bfloat16*>(w.data) + off, x);
    default:
      return store(static_cast<float*>(w.data) + off, x);
  }
}

WeightView token_weights(const TensorView& t, int rank) {
  WeightView w;
  w.data = t.data;
  w.dtype = t.dtype;
  w.l = layout(t, rank);
  return w;
}
WeightView bias_weights(const TensorView& t) {
  WeightView w;
  w.data = t.data;
  w.dtype = t.dtype;
  for (int i = 0; i < t.rank(); ++i) w.s[i] = t.strides[i];
  return w;
}

// Item i of a [B, T, H, n] iteration space (n fastest).
struct Item {
  int64_t b, t, h, j, x[3];
};
__device__ __forceinline__ Item decode(const Params& p, int64_t i, int64_t heads, int64_t n) {
  Item it;
  it.j = i % n;
  i /= n;
  it.h = i % heads;
  i /= heads;
  it.t = i % p.tokens;
  it.b = i / p.tokens;
  it.x[0] = it.x[1] = it.x[2] = 0;
  p.nb.coords(it.t, it.x);
  return it;
}

// out[b, x, h, s] = lhs[b, x, h] . rhs[b, key(x, s), h / group] (+ bias), -inf past a causal end
// (`masked_value`), for na_qk (q, k, rpb) and the d_attn of na_av_backward (d_out, v).
template <typename T>
__global__ void slot_dot_kernel(Params p, const T* lhs, Layout la, const T* rhs, Layout lb,
                                int64_t dim, WeightView out, bool has_bias, WeightView bias,
                                float masked_value) {
  const int64_t group = p.heads_q / p.heads_kv, n = p.batch * p.tokens * p.heads_q * p.slots;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Item it = decode(p, i, p.heads_q, p.slots);
    const QueryWindow w = query_window(p.nb, it.x);
    int64_t y[3] = {0, 0, 0}, rel[3] = {0, 0, 0};
    float s = masked_value;
    if (window_slot(w, it.j, y, rel)) {
      const T* arow = lhs + la.at(it.b, it.x, p.nb.rank, it.h);
      const T* brow = rhs + lb.at(it.b, y, p.nb.rank, it.h / group);
      s = 0.f;
      for (int64_t d = 0; d < dim; ++d) s += load(arow + d) * load(brow + d);
      if (has_bias) {
        int64_t o = it.h * bias.s[0];
        for (int r = 0; r < p.nb.rank; ++r) o += rel[r] * bias.s[1 + r];
        s += load_weight(bias, o);
      }
    }
    store_weight(out, out.l.at(it.b, it.x, p.nb.rank, it.h) + it.j, s);
  }
}

// out[b, x, h, d] = sum over valid slots s of wgt[b, x, h, s] * rows[b, key(x, s), h / group, d],
// for na_av (attn, v) and the dq of na_qk_backward (d_attn, k).
template <typename T>
__global__ void slot_sum_kernel(Params p, WeightView wgt, const T* rows, Layout lr, int64_t dim,
                                T* out, Layout lo) {
  const int64_t group = p.heads_q / p.heads_kv, n = p.batch * p.tokens * p.heads_q * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Item it = decode(p, i, p.heads_q, dim);
    const QueryWindow w = query_window(p.nb, it.x);
    const int64_t wrow = wgt.l.at(it.b, it.x, p.nb.rank, it.h);
    float acc = 0.f;
    for (int64_t s = 0; s < p.slots; ++s) {
      int64_t y[3] = {0, 0, 0}, rel[3];
      if (!window_slot(w, s, y, rel)) continue;
      acc +=
          load_weight(wgt, wrow + s) * load(rows + lr.at(it.b, y, p.nb.rank, it.h / group) + it.j);
    }
    store(out + lo.at(it.b, it.x, p.nb.rank, it.h) + it.j, acc);
  }
}

// grad[b, y, hk, d] = sum over the queries x attending key y and the q heads h of hk's group of
// wgt[b, x, h, slot(x, y)] * rows[b, x, h, d]: dk (d_attn, q) and dv (attn, d_out), gathered.
template <typename T>
__global__ void key_gather_kernel(Params p, WeightView wgt, const T* rows, Layout lr, int64_t dim,
                                  T* grad, Layout lg) {
  const int64_t group = p.heads_q / p.heads_kv, n = p.batch * p.tokens * p.heads_kv * dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const Item it = decode(p, i, p.heads_kv, dim);  // it.x: the key's coordinates, it.h: kv head
    int64_t lo[3] = {0, 0, 0}, hi[3] = {1, 1, 1};
    for (int r = 0; r < p.nb.rank; ++r) attending_queries(p.nb.axis[r], it.x[r], &lo[r], &hi[r]);
    float acc = 0.f;
    for (int64_t i0 = lo[0]; i0 < hi[0]; ++i0)
      for (int64_t i1 = lo[1]; i1 < hi[1]; ++i1)
        for (int64_t i2 = lo[2]; i2 < hi[2]; ++i2) {
          const int64_t idx[3] = {i0, i1, i2};
          int64_t x[3] = {0, 0, 0};
          for (int r = 0; r < p.nb.rank; ++r)
            x[r] = idx[r] * p.nb.axis[r].dilation + it.x[r] % p.nb.axis[r].dilation;
          const int64_t slot = key_slot(p, x, it.x);
          for (int64_t gh = 0; gh < group; ++gh) {
            const int64_t h = it.h * group + gh;
            acc += load_weight(wgt, wgt.l.at(it.b, x, p.nb.rank, h) + slot) *
                   load(rows + lr.at(it.b, x, p.nb.rank, h) + it.j);
          }
        }
    store(grad + lg.at(it.b, it.x, p.nb.rank, it.h) + it.j, acc);
  }
}

constexpr int kBiasThreads = 256;

// d_rpb[h, e] = sum over batches and queries of d_attn at the slot whose bias index is e (at
// most one per query, since each axis's window holds each relative offset once). One block per
// (h, e); a fixed-order tree reduction keeps it deterministic.
__global__ void bias_grad_kernel(Params p, int64_t bias_elems, WeightView d_attn,
                                 WeightView d_rpb) {
  __shared__ float partial[kBiasThreads];
  int64_t e = blockIdx.x;
  const int64_t h = e / bias_elems;
  e %= bias_elems;
  int64_t rel[3] = {0, 0, 0};
  for (int r = p.nb.rank - 1; r >= 0; --r) {
    const int64_t span = 2 * p.window[r] - 1;
    rel[r] = e % span;
    e /= span;
  }
  float acc = 0.f;
  for (int64_t n = threadIdx.x; n < p.batch * p.tokens; n += blockDim.x) {
    const int64_t t = n % p.tokens, b = n / p.tokens;
    int64_t x[3] = {0, 0, 0};
    p.nb.coords(t, x);
    const QueryWindow w = query_window(p.nb, x);
    int64_t slot = 0;
    bool valid = true;
    for (int r = 0; r < p.nb.rank; ++r) {
      const int64_t off = rel[r] - (w.window[r] - 1) + w.index[r] - w.range[r].start;
      valid = valid && off >= 0 && off < w.range[r].size();
      slot = slot * w.window[r] + off;
    }
    if (valid) acc += load_weight(d_attn, d_attn.l.at(b, x, p.nb.rank, h) + slot);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kBiasThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int64_t o = h * d_rpb.s[0];
    for (int r = 0; r < p.nb.rank; ++r) o += rel[r] * d_rpb.s[1 + r];
    store_weight(d_rpb, o, partial[0]);
  }
}

cudaStream_t stream_of(const Options& o) { return static_cast<cudaStream_t>(o.stream); }

template <typename T>
const T* cptr(const TensorView& t) {
  return static_cast<const T*>(t.data);
}
template <typename T>
T* mptr(const TensorView& t) {
  return static_cast<T*>(t.data);
}

}  // namespace

void unfused_qk(const Problem& pr, const QkArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.q.device.index));
  const Params p = make_params(pr);
  const WeightView bias = a.rpb ? bias_weights(*a.rpb) : WeightView{};
  dispatch(a.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    slot_dot_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_q * p.slots), kThreads, 0, stream_of(o)>>>(
            p, cptr<T>(a.q), layout(a.q, pr.rank), cptr<T>(a.k), layout(a.k, pr.rank), p.head_dim,
            token_weights(a.attn, pr.rank), a.rpb.has_value(), bias, -INFINITY);
  });
  FNA_CUDA_CHECK(cudaGetLastError());
}

void unfused_av(const Problem& pr, const AvArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.v.device.index));
  const Params p = make_params(pr);
  dispatch(a.v.dtype, [&](auto tag) {
    using T = decltype(tag);
    slot_sum_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_q * p.head_dim_v), kThreads, 0, stream_of(o)>>>(
            p, token_weights(a.attn, pr.rank), cptr<T>(a.v), layout(a.v, pr.rank), p.head_dim_v,
            mptr<T>(a.out), layout(a.out, pr.rank));
  });
  FNA_CUDA_CHECK(cudaGetLastError());
}

void unfused_qk_backward(const Problem& pr, const QkBackwardArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.q.device.index));
  const Params p = make_params(pr);
  const WeightView d_attn = token_weights(a.d_attn, pr.rank);
  dispatch(a.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    slot_sum_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_q * p.head_dim), kThreads, 0, stream_of(o)>>>(
            p, d_attn, cptr<T>(a.k), layout(a.k, pr.rank), p.head_dim, mptr<T>(a.dq),
            layout(a.dq, pr.rank));
    FNA_CUDA_CHECK(cudaGetLastError());
    key_gather_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_kv * p.head_dim), kThreads, 0, stream_of(o)>>>(
            p, d_attn, cptr<T>(a.q), layout(a.q, pr.rank), p.head_dim, mptr<T>(a.dk),
            layout(a.dk, pr.rank));
    FNA_CUDA_CHECK(cudaGetLastError());
  });
  if (!a.d_rpb) return;
  int64_t bias_elems = 1;
  for (int r = 0; r < pr.rank; ++r) bias_elems *= 2 * pr.window[r] - 1;
  bias_grad_kernel<<<static_cast<unsigned>(pr.heads_q * bias_elems), kBiasThreads, 0,
                     stream_of(o)>>>(p, bias_elems, d_attn, bias_weights(*a.d_rpb));
  FNA_CUDA_CHECK(cudaGetLastError());
}

void unfused_av_backward(const Problem& pr, const AvBackwardArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.v.device.index));
  const Params p = make_params(pr);
  dispatch(a.v.dtype, [&](auto tag) {
    using T = decltype(tag);
    slot_dot_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_q * p.slots), kThreads, 0, stream_of(o)>>>(
            p, cptr<T>(a.d_out), layout(a.d_out, pr.rank), cptr<T>(a.v), layout(a.v, pr.rank),
            p.head_dim_v, token_weights(a.d_attn, pr.rank), false, WeightView{}, 0.f);
    FNA_CUDA_CHECK(cudaGetLastError());
    key_gather_kernel<T>
        <<<grid_for(p.batch * p.tokens * p.heads_kv * p.head_dim_v), kThreads, 0, stream_of(o)>>>(
            p, token_weights(a.attn, pr.rank), cptr<T>(a.d_out), layout(a.d_out, pr.rank),
            p.head_dim_v, mptr<T>(a.dv), layout(a.dv, pr.rank));
    FNA_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace fna::cuda::naive
