// Host-side helpers shared by the launchers of the tensor-core families (cuda-fused forward and
// backward, cuda-gemm, cuda-hopper): API tensor views -> the kernels' stride records, the 16-byte
// row alignment test of the cp.async paths, and a cache for per-problem tile plans.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>

#include "common/neighborhood.h"
#include "common/problem_util.h"
#include "cuda/fused/common/fused_params.h"
#include "fna/fna.h"
#include "fna/tensor.h"

namespace fna::cuda::fused {

// Element strides of a heads-last view [B, X(, Y(, Z)), H, D] with `rank` spatial axes.
inline TokenStrides token_strides(const TensorView& t, int rank) {
  TokenStrides s;
  s.b = t.strides[0];
  for (int r = 0; r < rank; ++r) s.x[r] = t.strides[1 + r];
  s.h = t.strides[1 + rank];
  return s;
}

// Whether every row of `t` starts on a 16-byte boundary (pointer and every stride of an axis
// longer than 1): the condition for 16-byte cp.async gathers and vector stores.
inline bool rows_aligned(const TensorView& t) {
  const int64_t chunk = 16 / dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return false;
  for (int i = 0; i + 1 < t.rank(); ++i)
    if (t.strides[i] % chunk != 0 && t.shape[i] > 1) return false;
  return true;
}

// The forward kernels' parameters from the API arguments: pointers, strides, the neighborhood,
// heads and scales; `aligned` says whether every row is 16-byte aligned. The caller sets `tile`.
inline FwdParams forward_params(const Problem& pr, const ForwardArgs& args) {
  FwdParams p;
  const int rank = pr.rank;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.q_stride = token_strides(args.q, rank);
  p.k_stride = token_strides(args.k, rank);
  p.v_stride = token_strides(args.v, rank);
  p.out_stride = token_strides(args.out, rank);
  p.aligned = rows_aligned(args.q) && rows_aligned(args.k) && rows_aligned(args.v) &&
              rows_aligned(args.out);
  if (args.lse) {
    p.lse = static_cast<float*>(args.lse->data);
    p.lse_stride = token_strides(*args.lse, rank);  // [B, *spatial, H]: same leading strides
  }
  if (pr.additional_kv > 0) {
    p.add_k = args.additional_k->data;
    p.add_v = args.additional_v->data;
    p.add_k_stride = token_strides(*args.additional_k, 1);
    p.add_v_stride = token_strides(*args.additional_v, 1);
    p.aligned = p.aligned && rows_aligned(*args.additional_k) && rows_aligned(*args.additional_v);
  }
  p.nb = make_neighborhood(pr);
  p.batch = pr.batch;
  p.heads_q = static_cast<int>(pr.heads_q);
  p.heads_ratio = static_cast<int>(pr.heads_q / pr.heads_kv);
  p.additional_kv = static_cast<int>(pr.additional_kv);
  p.scale = static_cast<float>(pr.effective_scale());
  p.scale_log2 = static_cast<float>(pr.effective_scale() * 1.4426950408889634);  // * log2(e)
  return p;
}

// Planners are O(sum of extents) per call (~0.5 ms for a 16k sequence, as long as a small kernel)
// and problems repeat, so plans are cached per (neighborhood, extra) key. `make()` computes a
// missing plan. The cache is a function-local static of this template, so each call site (its
// own lambda type) has its own cache; `extra` holds whatever else the plan depends on (block
// shape, head dim; cuda-hopper: the items per box, the grid and the additional-KV tiles).
template <class Plan, class Make>
Plan cached_plan(const Neighborhood& nb, std::array<int64_t, 4> extra, Make&& make) {
  using Key = std::array<int64_t, 20>;
  Key key{nb.rank, extra[0], extra[1], extra[2], extra[3]};
  for (int r = 0; r < 3; ++r) {
    const Axis& a = nb.axis[r];
    const int64_t v[5] = {a.extent, a.window, a.stride, a.dilation, a.causal};
    for (int i = 0; i < 5; ++i) key[5 + 5 * r + i] = v[i];
  }
  static std::mutex mutex;
  static std::map<Key, Plan> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() > 4096) cache.clear();  // bound the memory of long-running processes
    it = cache.emplace(key, make()).first;
  }
  return it->second;
}

}  // namespace fna::cuda::fused
