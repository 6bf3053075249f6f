// Kernel parameters of the batched-GEMM unfused family (backend `cuda-gemm`). Host-safe: plain
// data only, filled by gemm_backend.cu and passed by value to the kernels.
//
// The family materializes attention weights in the fp32 workspace of backend `cuda-naive` (rows
// ordered (unit, q head in group, token) with unit = (batch, kv head), W = prod(window) +
// additional_kv slots per row), so the two families share the softmax and its backward. Two
// tensor-core kernels do the products around it, both on the tile geometry of the fused family
// (Q boxes in dilation-group coordinates, KV boxes over the box's KV range):
//  - window scores: ws[row, slot] = scale * a_row . b_key for every key in the row's window
//    (QK^T for the logits, dO V^T for dP);
//  - window sum: out_row = sum over the row's slots of ws[row, slot] * x_key (P V, dS K), or, in
//    the inverse direction, out_key = sum over the queries attending the key of
//    ws[query, slot] * x_query (dS^T Q, P^T dO), gathered per key box: no atomics.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"
#include "cuda/fused/common/fused_params.h"

namespace fna::cuda::gemm {

using fused::TileShape;
using fused::TokenStrides;

struct GemmParams {
  Neighborhood nb;  // unused axes are extent 1, window 1
  TileShape tile;   // planned for (kBlockM, kBlockN) by the fused planner
  int64_t tokens = 1;
  int64_t slots = 1;        // W = prod(window) + additional_kv
  int64_t unit0 = 0;        // first (batch, kv head) unit of this workspace chunk
  int slot_stride[3] = {};  // slot = sum_r (key_r - window_start_r) * slot_stride[r]
  int spatial_slots = 1;    // prod(window)
  int heads_kv = 1;
  int group = 1;  // heads_q / heads_kv
  int additional_kv = 0;
  float scale = 1.f;     // scores: multiplies the products
  float fill = 0.f;      // scores: value of the slots past a causal window's end
  bool causal = false;   // some axis is causal: windows may be shorter than the slot count
  bool aligned = false;  // every gathered row starts 16-byte aligned (cp.async allowed)

  // Scores: `rows` are the box side (Q or dO, head h), `cols` the gathered side (K or V, head hk;
  // `cols_add` the additional KV). Window sum: `cols` (+ `cols_add`) is the gathered side (V or K
  // forward, Q or dO inverse) and `out` the result (out or dq at head h; dk or dv at head hk).
  const void* rows = nullptr;
  const void* cols = nullptr;
  const void* cols_add = nullptr;
  void* out = nullptr;
  TokenStrides rows_stride, cols_stride, cols_add_stride, out_stride;
  float* ws = nullptr;  // this chunk's workspace, [units, group, tokens, slots]
};

}  // namespace fna::cuda::gemm
