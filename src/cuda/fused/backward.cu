// run_backward of backend `cuda-fused`: turns the API arguments into BwdParams, plans the tile
// boxes, allocates the fp32 workspace on the stream and dispatches to the generated (storage
// type, head dim) instance. By default dQ is summed with fp32 atomics into a zeroed
// [B, Hq, tokens, D] workspace by the dK/dV kernel (5 products per pair of tiles; the summation
// order varies from run to run). Options::deterministic selects the atomic-free path: every
// gradient row is written once by the CTA that owns it (7 products per pair).
#include <cuda_runtime_api.h>
#include <cutlass/numeric_types.h>

#include <array>
#include <map>
#include <mutex>
#include <string>

#include "common/problem_util.h"
#include "cuda/cuda_check.h"
#include "cuda/fused/backward_launch.h"
#include "cuda/fused/common/host_views.h"
#include "cuda/fused/common/plan_bwd.h"
#include "cuda/fused/fused_config.h"
#include "cuda/fused/fused_launch.h"
#include "fna/error.h"

namespace fna::cuda::fused {
namespace {

RowView row_view(const TensorView& t, int spatial_rank) {
  RowView v;
  v.ptr = t.data;
  v.sb = t.strides[0];
  for (int r = 0; r < spatial_rank; ++r) v.sx[r] = t.strides[1 + r];
  v.sh = t.strides[1 + spatial_rank];
  return v;
}

template <class Element, int kHeadDim>
void launch(const BwdParams& p, cudaStream_t stream) {
  if constexpr (head_dim_built(kHeadDim)) {
    launch_bwd_sm80<Element, kHeadDim>(p, stream);
  } else {
    throw Error(ErrorKind::kNotAvailable,
                "fna: cuda-fused backward: head_dim " + std::to_string(kHeadDim) +
                    " is not compiled: enable with FNA_HEAD_DIMS=" + std::to_string(kHeadDim));
  }
}

template <class Element>
void dispatch_head_dim(const BwdParams& p, int64_t head_dim, cudaStream_t stream) {
  switch (head_dim) {
    case 32:
      return launch<Element, 32>(p, stream);
    case 64:
      return launch<Element, 64>(p, stream);
    case 128:
      return launch<Element, 128>(p, stream);
    default:
      throw Error(ErrorKind::kNotAvailable,
                  "fna: cuda-fused backward: head_dim " + std::to_string(head_dim) +
                      " is not supported (the backward supports 32, 64, 128)");
  }
}

// Restores the calling thread's current CUDA device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FNA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) FNA_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

void run_backward(const Problem& pr, const BackwardArgs& args, const Options& options) {
  if (pr.head_dim != 32 && pr.head_dim != 64 && pr.head_dim != 128)
    throw Error(ErrorKind::kNotAvailable,
                "fna: cuda-fused backward: head_dim " + std::to_string(pr.head_dim) +
                    " is not supported (the backward supports 32, 64, 128)");
  const int rank = pr.rank;
  BwdParams p;
  p.nb = make_neighborhood(pr);
  p.batch = pr.batch;
  p.heads_q = pr.heads_q;
  p.heads_kv = pr.heads_kv;
  p.tokens = pr.tokens();
  p.nadd = pr.additional_kv;
  p.scale = static_cast<float>(pr.effective_scale());
  p.scale_log2 = static_cast<float>(pr.effective_scale() * 1.4426950408889634);
  p.q = row_view(args.q, rank);
  p.k = row_view(args.k, rank);
  p.v = row_view(args.v, rank);
  p.out = row_view(args.out, rank);
  p.dout = row_view(args.dout, rank);
  p.dq = row_view(args.dq, rank);
  p.dk = row_view(args.dk, rank);
  p.dv = row_view(args.dv, rank);
  p.lse = row_view(args.lse, rank);
  bool aligned = true;
  for (const TensorView* t : {&args.q, &args.k, &args.v, &args.dout, &args.dq, &args.dk, &args.dv})
    aligned = aligned && rows_aligned(*t);
  if (pr.additional_kv > 0) {
    p.ak = row_view(*args.additional_k, 1);
    p.av = row_view(*args.additional_v, 1);
    p.dak = row_view(*args.d_additional_k, 1);
    p.dav = row_view(*args.d_additional_v, 1);
    for (const TensorView* t :
         {&*args.additional_k, &*args.additional_v, &*args.d_additional_k, &*args.d_additional_v})
      aligned = aligned && rows_aligned(*t);
  }
  p.vec = aligned;

  apply_plan(cached_plan<BwdPlan>(p.nb, {0, 0}, [&] { return plan_backward(p.nb); }), &p);
  const int64_t dq_ctas = dq_grid_tiles(p), kv_ctas = kv_grid_tiles(p);
  if (dq_ctas > 0x7fffffff || kv_ctas > 0x7fffffff)
    throw Error(ErrorKind::kInvalidArgument, "fna: cuda-fused backward: the grid has " +
                                                 std::to_string(std::max(dq_ctas, kv_ctas)) +
                                                 " tiles, more than a CUDA grid holds (2^31 - 1)");

  DeviceGuard guard(args.q.device.index);
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  const int64_t rows = pr.batch * pr.heads_q * p.tokens;
  const int64_t dq_floats = options.deterministic ? 0 : rows * pr.head_dim;
  float* workspace = nullptr;
  FNA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&workspace),
                                 (2 * rows + dq_floats) * sizeof(float), stream));
  // ws_dq first: cudaMallocAsync's base is 256-byte aligned and the sm_90a dK/dV kernel adds into
  // ws_dq with 16-byte vector reductions (lse and delta have no alignment needs).
  p.ws_lse = workspace + dq_floats;
  p.ws_delta = p.ws_lse + rows;
  try {
    if (dq_floats > 0) {
      p.ws_dq = workspace;
      FNA_CUDA_CHECK(cudaMemsetAsync(p.ws_dq, 0, dq_floats * sizeof(float), stream));
    }
    switch (args.q.dtype) {
      case DType::kFloat32:
        dispatch_head_dim<float>(p, pr.head_dim, stream);
        break;
#if defined(FNA_BUILT_FP16)
      case DType::kFloat16:
        dispatch_head_dim<cutlass::half_t>(p, pr.head_dim, stream);
        break;
#endif
#if defined(FNA_BUILT_BF16)
      case DType::kBFloat16:
        dispatch_head_dim<cutlass::bfloat16_t>(p, pr.head_dim, stream);
        break;
#endif
      default:
        throw Error(ErrorKind::kNotAvailable,
                    std::string("fna: cuda-fused backward: dtype ") + dtype_name(args.q.dtype) +
                        " is not compiled: enable with FNA_DTYPES=" + dtype_name(args.q.dtype));
    }
  } catch (...) {
    cudaFreeAsync(workspace, stream);
    throw;
  }
  FNA_CUDA_CHECK(cudaFreeAsync(workspace, stream));
}

}  // namespace fna::cuda::fused
