// Backend `cuda-gemm`: unfused neighborhood attention with the products on tensor cores.
// Forward: window scores (QK^T into the fp32 attention workspace of cuda-naive), cuda-naive's
// softmax, window sum (P V). Backward: scores again and their softmax against the saved lse,
// dP = dO V^T as window scores, cuda-naive's softmax backward (dS), dQ = dS K as a window sum,
// and dK = dS^T Q, dV = P^T dO as inverse-direction window sums (gathered per key box: no
// atomics, deterministic); the additional KV gradients use cuda-naive's gathered kernel.
// The workspace is processed in chunks of (batch, kv head) units so its size stays bounded.
#include <cuda_runtime.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cuda/cuda_check.h"
#include "cuda/device_info.h"
#include "cuda/fused/common/host_views.h"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/fused_config.h"
#include "cuda/gemm/gemm_backend.h"
#include "cuda/gemm/launch_gemm.h"
#include "cuda/naive/naive_host.cuh"
#include "cuda/naive/naive_kernels.cuh"
#include "fna/error.h"

namespace fna::cuda::gemm {
namespace {

using fused::rows_aligned;
using fused::token_strides;

// Workspace budget of one chunk (forward: one buffer of attention weights; backward: two).
constexpr int64_t kWorkspaceBytes = int64_t(1) << 30;
constexpr int kHeadDims[] = {32, 64, 128};

struct Kernels {
  void (*scores)(const GemmParams&, dim3, cudaStream_t);
  void (*sum)(const GemmParams&, dim3, cudaStream_t);
  void (*sum_inverse)(const GemmParams&, dim3, cudaStream_t);
};

template <class Element, int kHeadDim>
Kernels kernels_of() {
  if constexpr (fused::head_dim_built(kHeadDim)) {
    return {&launch_window_scores_sm80<Element, kHeadDim>,
            &launch_window_sum_sm80<Element, kHeadDim>,
            &launch_window_sum_inverse_sm80<Element, kHeadDim>};
  } else {
    throw Error(ErrorKind::kNotAvailable,
                "fna: cuda-gemm: head_dim " + std::to_string(kHeadDim) +
                    " is not compiled: enable with FNA_HEAD_DIMS=" + std::to_string(kHeadDim));
  }
}

template <class Element>
Kernels kernels_of(int head_dim) {
  switch (head_dim) {
    case 32:
      return kernels_of<Element, 32>();
    case 64:
      return kernels_of<Element, 64>();
    case 128:
      return kernels_of<Element, 128>();
    default:
      throw Error(ErrorKind::kNotAvailable, "fna: cuda-gemm: head_dim " + std::to_string(head_dim) +
                                                " is not supported (supported: 32, 64, 128)");
  }
}

// Calls f(Element{}, T{}) with the CuTe storage type and the matching CUDA type (cuda-naive's
// kernels) of `dtype`.
template <class F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{}, float{});
#if defined(FNA_BUILT_FP16)
    case DType::kFloat16:
      return f(cutlass::half_t{}, __half{});
#endif
#if defined(FNA_BUILT_BF16)
    case DType::kBFloat16:
      return f(cutlass::bfloat16_t{}, __nv_bfloat16{});
#endif
    default:
      throw Error(ErrorKind::kNotAvailable, std::string("fna: cuda-gemm: dtype ") +
                                                dtype_name(dtype) +
                                                " is not compiled: enable with FNA_DTYPES");
  }
}

struct Setup {
  GemmParams g;
  naive::Params np;  // for cuda-naive's softmax / softmax backward / additional-KV kernels
  unsigned boxes = 1;
  int64_t units = 1, chunk = 1, rows_per_unit = 1;
};

Setup make_setup(const Problem& pr, int buffers) {
  Setup s;
  GemmParams& g = s.g;
  g.nb = make_neighborhood(pr);
  g.tile = fused::cached_plan<TileShape>(
      g.nb, {kBlockM, kBlockN}, [&] { return fused::plan_tiles(g.nb, kBlockM, kBlockN).shape; });
  g.tokens = pr.tokens();
  int64_t stride = 1;
  for (int r = 2; r >= 0; --r) {
    g.slot_stride[r] = static_cast<int>(stride);
    stride *= g.nb.axis[r].window;
  }
  g.spatial_slots = static_cast<int>(stride);
  g.slots = stride + pr.additional_kv;
  g.heads_kv = static_cast<int>(pr.heads_kv);
  g.group = static_cast<int>(pr.heads_q / pr.heads_kv);
  g.additional_kv = static_cast<int>(pr.additional_kv);
  for (int r = 0; r < pr.rank; ++r) g.causal = g.causal || pr.causal[r];
  s.np = naive::make_params(pr);
  int64_t boxes = 1;
  for (int r = 0; r < 3; ++r) boxes *= g.nb.axis[r].dilation * g.tile.q_tiles[r];
  if (boxes > 0x7fffffff)
    throw Error(ErrorKind::kInvalidArgument, "fna: cuda-gemm: the grid has " +
                                                 std::to_string(boxes) +
                                                 " boxes, more than a CUDA grid holds (2^31 - 1)");
  s.boxes = static_cast<unsigned>(boxes);
  s.units = pr.batch * pr.heads_kv;
  s.rows_per_unit = g.tokens * g.group;
  const int64_t per_unit = s.rows_per_unit * g.slots * 4 * buffers;
  s.chunk = std::clamp<int64_t>(kWorkspaceBytes / per_unit, 1, 65535 / g.group);
  s.chunk = std::min(s.chunk, s.units);
  return s;
}

struct Workspace {
  float* ptr = nullptr;
  cudaStream_t stream;
  Workspace(size_t bytes, cudaStream_t st) : stream(st) {
    FNA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ptr), bytes, stream));
  }
  ~Workspace() { cudaFreeAsync(ptr, stream); }
};

template <class Element, class T>
void forward_typed(const Problem& pr, const ForwardArgs& a, cudaStream_t stream) {
  const Kernels kn = kernels_of<Element>(static_cast<int>(pr.head_dim));
  Setup s = make_setup(pr, 1);
  GemmParams& g = s.g;
  g.aligned = rows_aligned(a.q) && rows_aligned(a.k) && rows_aligned(a.v);
  if (a.additional_k)
    g.aligned = g.aligned && rows_aligned(*a.additional_k) && rows_aligned(*a.additional_v);
  if (a.lse) s.np.lse = naive::layout(*a.lse, pr.rank);
  float* lse = a.lse ? static_cast<float*>(a.lse->data) : nullptr;
  Workspace ws(s.chunk * s.rows_per_unit * g.slots * sizeof(float), stream);
  g.ws = ws.ptr;
  for (int64_t u0 = 0; u0 < s.units; u0 += s.chunk) {
    const int64_t n_units = std::min(s.chunk, s.units - u0), rows = n_units * s.rows_per_unit;
    const dim3 grid(s.boxes, static_cast<unsigned>(n_units * g.group));
    g.unit0 = u0;
    g.rows = a.q.data;
    g.rows_stride = token_strides(a.q, pr.rank);
    g.cols = a.k.data;
    g.cols_stride = token_strides(a.k, pr.rank);
    g.cols_add = a.additional_k ? a.additional_k->data : nullptr;
    if (a.additional_k) g.cols_add_stride = token_strides(*a.additional_k, 1);
    g.scale = static_cast<float>(pr.effective_scale());
    g.fill = -INFINITY;
    kn.scores(g, grid, stream);
    naive::softmax_kernel<<<naive::grid_for(rows * 32), naive::kThreads, 0, stream>>>(
        s.np, u0, rows, ws.ptr, lse, nullptr);
    FNA_CUDA_CHECK(cudaGetLastError());
    g.cols = a.v.data;
    g.cols_stride = token_strides(a.v, pr.rank);
    g.cols_add = a.additional_v ? a.additional_v->data : nullptr;
    if (a.additional_v) g.cols_add_stride = token_strides(*a.additional_v, 1);
    g.out = a.out.data;
    g.out_stride = token_strides(a.out, pr.rank);
    kn.sum(g, grid, stream);
  }
}

template <class Element, class T>
void backward_typed(const Problem& pr, const BackwardArgs& a, cudaStream_t stream) {
  const Kernels kn = kernels_of<Element>(static_cast<int>(pr.head_dim));
  Setup s = make_setup(pr, 2);
  GemmParams& g = s.g;
  naive::Params& np = s.np;
  const int rank = pr.rank;
  const bool add = pr.additional_kv > 0;
  g.aligned = rows_aligned(a.q) && rows_aligned(a.k) && rows_aligned(a.v) && rows_aligned(a.dout);
  if (add) g.aligned = g.aligned && rows_aligned(*a.additional_k) && rows_aligned(*a.additional_v);
  np.lse = naive::layout(a.lse, rank);
  np.q = naive::layout(a.q, rank);
  np.dout = naive::layout(a.dout, rank);
  if (add) {
    np.dak = naive::layout(*a.d_additional_k, 1);
    np.dav = naive::layout(*a.d_additional_v, 1);
  }
  const int64_t chunk_elems = s.chunk * s.rows_per_unit * g.slots;
  Workspace ws(2 * chunk_elems * sizeof(float), stream);
  float *attn = ws.ptr, *dattn = ws.ptr + chunk_elems;
  const float scale = static_cast<float>(pr.effective_scale());
  // One window product: rows/cols/out views (nullptr: unused) into the workspace `w`.
  auto set = [&](const TensorView* rows, const TensorView* cols, const TensorView* cols_add,
                 const TensorView* out, int out_rank, float* w) {
    g.rows = rows ? rows->data : nullptr;
    if (rows) g.rows_stride = token_strides(*rows, rank);
    g.cols = cols->data;
    g.cols_stride = token_strides(*cols, rank);
    g.cols_add = cols_add ? cols_add->data : nullptr;
    if (cols_add) g.cols_add_stride = token_strides(*cols_add, 1);
    g.out = out ? out->data : nullptr;
    if (out) g.out_stride = token_strides(*out, out_rank);
    g.ws = w;
  };
  const TensorView* ak = add ? &*a.additional_k : nullptr;
  const TensorView* av = add ? &*a.additional_v : nullptr;
  for (int64_t u0 = 0; u0 < s.units; u0 += s.chunk) {
    const int64_t n_units = std::min(s.chunk, s.units - u0), rows = n_units * s.rows_per_unit;
    const dim3 grid(s.boxes, static_cast<unsigned>(n_units * g.group));
    const dim3 grid_keys(s.boxes, static_cast<unsigned>(n_units));
    g.unit0 = u0;
    // P, recomputed against the saved lse.
    set(&a.q, &a.k, ak, nullptr, rank, attn);
    g.scale = scale;
    g.fill = -INFINITY;
    kn.scores(g, grid, stream);
    naive::softmax_kernel<<<naive::grid_for(rows * 32), naive::kThreads, 0, stream>>>(
        np, u0, rows, attn, nullptr, static_cast<const float*>(a.lse.data));
    FNA_CUDA_CHECK(cudaGetLastError());
    // dP = dO V^T over the windows, then dS = scale * P * (dP - rowsum(P * dP)).
    set(&a.dout, &a.v, av, nullptr, rank, dattn);
    g.scale = 1.f;
    g.fill = 0.f;
    kn.scores(g, grid, stream);
    naive::dlogits_kernel<<<naive::grid_for(rows * 32), naive::kThreads, 0, stream>>>(np, rows,
                                                                                      attn, dattn);
    FNA_CUDA_CHECK(cudaGetLastError());
    // dQ = dS K; dK = dS^T Q; dV = P^T dO.
    set(nullptr, &a.k, ak, &a.dq, rank, dattn);
    kn.sum(g, grid, stream);
    set(nullptr, &a.q, nullptr, &a.dk, rank, dattn);
    kn.sum_inverse(g, grid_keys, stream);
    set(nullptr, &a.dout, nullptr, &a.dv, rank, attn);
    kn.sum_inverse(g, grid_keys, stream);
    if (add) {
      const int64_t dims = pr.head_dim + pr.head_dim_v;
      naive::dkv_additional_kernel<T>
          <<<naive::grid_for(n_units * pr.additional_kv * dims), naive::kThreads, 0, stream>>>(
              np, attn, dattn, static_cast<const T*>(a.q.data), static_cast<const T*>(a.dout.data),
              u0, n_units, static_cast<T*>(a.d_additional_k->data),
              static_cast<T*>(a.d_additional_v->data));
      FNA_CUDA_CHECK(cudaGetLastError());
    }
  }
}

std::string unavailable(const Problem& p, DType dtype, const Device& device) {
  if (device.type != DeviceType::kCUDA)
    return "tensors are on " + device_name(device) + ": cuda-gemm needs CUDA tensors";
  std::string why;
  const int cc = compute_capability(device.index, &why);
  if (cc < 0) return why;
  if (cc < 80)
    return "device " + device_name(device) + " has compute capability " + std::to_string(cc / 10) +
           "." + std::to_string(cc % 10) + ": cuda-gemm needs sm_80 or newer";
  if (p.head_dim != p.head_dim_v)
    return "head_dim_v = " + std::to_string(p.head_dim_v) +
           " differs from head_dim = " + std::to_string(p.head_dim) + ": cuda-gemm needs Dv == D";
  const int d = static_cast<int>(p.head_dim);
  if (std::find(std::begin(kHeadDims), std::end(kHeadDims), d) == std::end(kHeadDims))
    return "head_dim " + std::to_string(p.head_dim) +
           " is not supported by cuda-gemm (supported: 32, 64, 128)";
  if (!fused::head_dim_built(d))
    return "head_dim " + std::to_string(d) + " is not compiled: enable with FNA_HEAD_DIMS=\"" +
           fused::built_head_dims_text() + ";" + std::to_string(d) + "\"";
  if (!fused::dtype_built(dtype))
    return std::string("dtype ") + dtype_name(dtype) +
           " is not compiled: enable with FNA_DTYPES=\"fp16;bf16\" (must list " +
           dtype_name(dtype) + ")";
  for (int r = 0; r < p.rank; ++r)
    if (p.extent[r] > (int64_t{1} << 30))
      return "extent[" + std::to_string(r) + "] = " + std::to_string(p.extent[r]) +
             " exceeds 2^30 (coordinates are 32-bit inside the kernels)";
  if (p.heads_q / p.heads_kv > 65535)
    return "heads_q / heads_kv = " + std::to_string(p.heads_q / p.heads_kv) +
           " exceeds 65535 (the CUDA grid's y extent)";
  if (p.additional_kv > (int64_t{1} << 30))
    return "additional_kv = " + std::to_string(p.additional_kv) + " exceeds 2^30";
  return "";
}

void forward(const Problem& p, const ForwardArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.q.device.index));
  dispatch(a.q.dtype, [&](auto element, auto t) {
    forward_typed<decltype(element), decltype(t)>(p, a, static_cast<cudaStream_t>(o.stream));
  });
}

void backward(const Problem& p, const BackwardArgs& a, const Options& o) {
  FNA_CUDA_CHECK(cudaSetDevice(a.q.device.index));
  dispatch(a.q.dtype, [&](auto element, auto t) {
    backward_typed<decltype(element), decltype(t)>(p, a, static_cast<cudaStream_t>(o.stream));
  });
}

}  // namespace

const detail::BackendImpl& backend() {
  static const detail::BackendImpl impl{Backend::kCudaGemm, &unavailable, &forward, &backward};
  return impl;
}

}  // namespace fna::cuda::gemm
