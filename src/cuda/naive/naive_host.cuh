// Host-side helpers of the naive CUDA family, shared by backend `cuda-naive` (naive_backend.cu)
// and the unfused ops (unfused_ops.cu): kernel parameters from a Problem, view layouts, launch
// sizes and dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "common/problem_util.h"
#include "cuda/naive/naive_common.cuh"
#include "fna/tensor.h"

namespace fna::cuda::naive {

inline constexpr int kThreads = 256;

// Offsets of a token-major view [B, X(, Y(, Z)), H, ...] with `rank` spatial dims.
inline Layout layout(const TensorView& t, int rank) {
  Layout l;
  l.sb = t.strides[0];
  for (int r = 0; r < rank; ++r) l.sx[r] = t.strides[1 + r];
  l.sh = t.strides[1 + rank];
  return l;
}

inline Params make_params(const Problem& pr) {
  Params p{};
  p.nb = make_neighborhood(pr);
  p.batch = pr.batch;
  p.tokens = pr.tokens();
  p.heads_q = pr.heads_q;
  p.heads_kv = pr.heads_kv;
  p.head_dim = pr.head_dim;
  p.head_dim_v = pr.head_dim_v;
  p.additional_kv = pr.additional_kv;
  int64_t spatial = 1;
  for (int r = 0; r < 3; ++r) {
    p.window[r] = r < pr.rank ? pr.window[r] : 1;
    spatial *= p.window[r];
  }
  p.slots = spatial + pr.additional_kv;
  p.scale = static_cast<float>(pr.effective_scale());
  return p;
}

// Blocks of kThreads for a grid-stride loop over `work` items (capped: the loops stride).
inline unsigned grid_for(int64_t work) {
  return static_cast<unsigned>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, 65535 * 8));
}

// Calls f(T{}) with T the CUDA storage type of `dtype`.
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat16:
      return f(__half{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
  }
}

}  // namespace fna::cuda::naive
