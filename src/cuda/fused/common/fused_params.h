// Kernel parameters of the fused sm_80+ family (backend `cuda-fused`). Host-safe: plain data only,
// filled on the host by the launchers and passed by value to the kernels.
//
// Tiling (DESIGN.md section 10). A Q tile is a box of `q_tile[r]` queries per axis in
// dilation-group coordinates (i = x div d inside group g = x mod d); a KV tile is a box of
// `kv_tile[r]` keys. Both box shapes are powers of two per axis, chosen per problem by the planner
// (tile_plan.h), so the kernels decode a row index into box coordinates with shifts (`*_shift[r]` =
// log2 of the extent).
#pragma once

#include <cstdint>

#include "common/neighborhood.h"

namespace fna::cuda::fused {

// Element strides of a token-major view [B, X(, Y(, Z)), H(, D)]; additional-KV views
// [B, N, H, D] use x[0] for N.
struct TokenStrides {
  int64_t b = 0;
  int64_t x[3] = {0, 0, 0};
  int64_t h = 0;
};

// The box geometry the planner picked for a problem and a block shape (rows of a Q / KV tile).
struct TileShape {
  int q_shift[3] = {0, 0, 0};   // Q box extent per axis = 1 << q_shift[r]
  int kv_shift[3] = {0, 0, 0};  // KV box extent per axis = 1 << kv_shift[r]
  int q_tiles[3] = {1, 1, 1};   // Q boxes per axis per dilation group: ceil(ceil(L / d) / qt)
};

struct FwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* add_k = nullptr;  // additional KV, [B, Nadd, Hkv, D]; null when Nadd == 0
  const void* add_v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // may be null
  TokenStrides q_stride, k_stride, v_stride, add_k_stride, add_v_stride, out_stride, lse_stride;

  Neighborhood nb;  // the one definition; unused axes are extent 1, window 1
  TileShape tile;
  int64_t batch = 1;
  int heads_q = 1;
  int heads_ratio = 1;     // heads_q / heads_kv: query head h reads KV head h / heads_ratio
  int additional_kv = 0;   // Nadd
  float scale = 1.f;       // softmax scale
  float scale_log2 = 1.f;  // scale * log2(e): the kernels use exp2
  bool aligned = false;    // every row start is 16-byte aligned: cp.async and vector stores allowed
  bool small_window = false;  // run the small-window kernel (small_window.h); `tile` is unused
};

}  // namespace fna::cuda::fused
