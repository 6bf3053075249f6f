// Backend `cuda-naive`: unfused neighborhood attention. Logits, softmax and the weighted sum are
// separate kernels over an fp32 workspace of attention weights; the backward gathers dK/dV over
// each key's attending queries (no atomics, so it is deterministic). The workspace is processed in
// chunks of (batch, kv-head) units so its size stays bounded.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cuda/cuda_check.h"
#include "cuda/naive/naive_host.cuh"
#include "cuda/naive/naive_kernels.cuh"

namespace fna::cuda::naive {
namespace {

// Workspace budget for the attention weights of one chunk (forward: one buffer; backward: two).
constexpr int64_t kWorkspaceBytes = int64_t(1) << 30;

// Units (batch x kv-head) per chunk so `buffers` fp32 workspaces fit the budget.
int64_t units_per_chunk(const Params& p, int buffers) {
  const int64_t per_unit = p.tokens * (p.heads_q / p.heads_kv) * p.slots * 4 * buffers;
  return std::max<int64_t>(1, kWorkspaceBytes / std::max<int64_t>(per_unit, 1));
}

struct Workspace {
  float* ptr = nullptr;
  cudaStream_t stream;
  Workspace(size_t bytes, cudaStream_t s) : stream(s) {
    FNA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ptr), bytes, stream));
  }
  ~Workspace() { cudaFreeAsync(ptr, stream); }
};

template <typename T>
void forward_typed(const Problem& pr, const ForwardArgs& a, cudaStream_t stream) {
  Params p = make_params(pr);
  p.q = layout(a.q, pr.rank);
  p.k = layout(a.k, pr.rank);
  p.v = layout(a.v, pr.rank);
  p.out = layout(a.out, pr.rank);
  if (a.lse) p.lse = layout(*a.lse, pr.rank);
  const T *ak = nullptr, *av = nullptr;
  if (a.additional_k) {
    p.ak = layout(*a.additional_k, 1);
    p.av = layout(*a.additional_v, 1);
    ak = static_cast<const T*>(a.additional_k->data);
    av = static_cast<const T*>(a.additional_v->data);
  }
  const int64_t units = pr.batch * pr.heads_kv, chunk = std::min(units, units_per_chunk(p, 1));
  const int64_t rows_per_unit = p.tokens * (p.heads_q / p.heads_kv);
  Workspace ws(chunk * rows_per_unit * p.slots * sizeof(float), stream);
  for (int64_t u0 = 0; u0 < units; u0 += chunk) {
    const int64_t rows = std::min(chunk, units - u0) * rows_per_unit;
    logits_kernel<T><<<grid_for(rows * p.slots), kThreads, 0, stream>>>(
        p, static_cast<const T*>(a.q.data), static_cast<const T*>(a.k.data), ak, u0, rows, ws.ptr);
    FNA_CUDA_CHECK(cudaGetLastError());
    softmax_kernel<<<grid_for(rows * 32), kThreads, 0, stream>>>(
        p, u0, rows, ws.ptr, a.lse ? static_cast<float*>(a.lse->data) : nullptr, nullptr);
    FNA_CUDA_CHECK(cudaGetLastError());
    slot_sum_kernel<T, true><<<grid_for(rows * p.head_dim_v), kThreads, 0, stream>>>(
        p, ws.ptr, static_cast<const T*>(a.v.data), av, u0, rows, static_cast<T*>(a.out.data));
    FNA_CUDA_CHECK(cudaGetLastError());
  }
}

template <typename T>
void backward_typed(const Problem& pr, const BackwardArgs& a, cudaStream_t stream) {
  Params p = make_params(pr);
  p.q = layout(a.q, pr.rank);
  p.k = layout(a.k, pr.rank);
  p.v = layout(a.v, pr.rank);
  p.lse = layout(a.lse, pr.rank);
  p.dout = layout(a.dout, pr.rank);
  p.dq = layout(a.dq, pr.rank);
  p.dk = layout(a.dk, pr.rank);
  p.dv = layout(a.dv, pr.rank);
  const T *ak = nullptr, *av = nullptr;
  T *dak = nullptr, *dav = nullptr;
  if (pr.additional_kv) {
    p.ak = layout(*a.additional_k, 1);
    p.av = layout(*a.additional_v, 1);
    p.dak = layout(*a.d_additional_k, 1);
    p.dav = layout(*a.d_additional_v, 1);
    ak = static_cast<const T*>(a.additional_k->data);
    av = static_cast<const T*>(a.additional_v->data);
    dak = static_cast<T*>(a.d_additional_k->data);
    dav = static_cast<T*>(a.d_additional_v->data);
  }
  const T* q = static_cast<const T*>(a.q.data);
  const T* k = static_cast<const T*>(a.k.data);
  const T* v = static_cast<const T*>(a.v.data);
  const T* dout = static_cast<const T*>(a.dout.data);
  const int64_t units = pr.batch * pr.heads_kv, chunk = std::min(units, units_per_chunk(p, 2));
  const int64_t rows_per_unit = p.tokens * (p.heads_q / p.heads_kv);
  const int64_t chunk_elems = chunk * rows_per_unit * p.slots;
  Workspace ws(2 * chunk_elems * sizeof(float), stream);
  float *attn = ws.ptr, *dattn = ws.ptr + chunk_elems;
  for (int64_t u0 = 0; u0 < units; u0 += chunk) {
    const int64_t n_units = std::min(chunk, units - u0), rows = n_units * rows_per_unit;
    logits_kernel<T>
        <<<grid_for(rows * p.slots), kThreads, 0, stream>>>(p, q, k, ak, u0, rows, attn);
    FNA_CUDA_CHECK(cudaGetLastError());
    softmax_kernel<<<grid_for(rows * 32), kThreads, 0, stream>>>(
        p, u0, rows, attn, nullptr, static_cast<const float*>(a.lse.data));
    FNA_CUDA_CHECK(cudaGetLastError());
    dprob_kernel<T>
        <<<grid_for(rows * p.slots), kThreads, 0, stream>>>(p, dout, v, av, u0, rows, dattn);
    FNA_CUDA_CHECK(cudaGetLastError());
    dlogits_kernel<<<grid_for(rows * 32), kThreads, 0, stream>>>(p, rows, attn, dattn);
    FNA_CUDA_CHECK(cudaGetLastError());
    slot_sum_kernel<T, false><<<grid_for(rows * p.head_dim), kThreads, 0, stream>>>(
        p, dattn, k, ak, u0, rows, static_cast<T*>(a.dq.data));
    FNA_CUDA_CHECK(cudaGetLastError());
    const int64_t dims = p.head_dim + p.head_dim_v;
    dkv_kernel<T><<<grid_for(n_units * p.tokens * dims), kThreads, 0, stream>>>(
        p, attn, dattn, q, dout, u0, n_units, static_cast<T*>(a.dk.data),
        static_cast<T*>(a.dv.data));
    FNA_CUDA_CHECK(cudaGetLastError());
    if (pr.additional_kv) {
      dkv_additional_kernel<T>
          <<<grid_for(n_units * pr.additional_kv * dims), kThreads, 0, stream>>>(
              p, attn, dattn, q, dout, u0, n_units, dak, dav);
      FNA_CUDA_CHECK(cudaGetLastError());
    }
  }
}

std::string unavailable(const Problem&, DType, const Device& device) {
  if (device.type != DeviceType::kCUDA)
    return "it runs on CUDA tensors only (got " + device_name(device) + ")";
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device.index) {
    cudaGetLastError();  // clear the sticky "no device" error
    return "no usable CUDA device " + std::to_string(device.index) + " on this machine";
  }
  return "";
}

void set_device(const Device& d) { FNA_CUDA_CHECK(cudaSetDevice(d.index)); }

void forward(const Problem& p, const ForwardArgs& a, const Options& o) {
  set_device(a.q.device);
  dispatch(a.q.dtype, [&](auto tag) {
    forward_typed<decltype(tag)>(p, a, static_cast<cudaStream_t>(o.stream));
  });
}

void backward(const Problem& p, const BackwardArgs& a, const Options& o) {
  set_device(a.q.device);
  dispatch(a.q.dtype, [&](auto tag) {
    backward_typed<decltype(tag)>(p, a, static_cast<cudaStream_t>(o.stream));
  });
}

}  // namespace

const detail::BackendImpl& backend() {
  static const detail::BackendImpl impl{Backend::kCudaNaive, &unavailable, &forward, &backward};
  return impl;
}

}  // namespace fna::cuda::naive
