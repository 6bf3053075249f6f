// Parameters of the fused sm_80+ backward (backend `cuda-fused`). Host-safe: shared by the host
// launcher (src/cuda/fused/backward.cu) and the generated kernel instances.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"

namespace fna::cuda::fused {

// A token-major strided tensor [B, X(, Y(, Z)), H(, D)]: the row of (b, x, h) starts at
// ptr + b * sb + sum_r x_r * sx[r] + h * sh elements. Additional-KV views use sx[0] for the token.
struct RowView {
  void* ptr = nullptr;
  int64_t sb = 0;
  int64_t sx[3] = {0, 0, 0};
  int64_t sh = 0;
};

// Rows per tile: every Q box and every KV box of the backward holds this many tokens (a box of
// the grid in dilation-group coordinates whose extents multiply to kBwdTileRows).
inline constexpr int kBwdTileRows = 64;

// Position in a ws_dq row of head dim d as the sm_90a dK/dV kernel adds it. Per 64-column block,
// d = 8 j + 2 t + e (wgmma accumulator column group j < 8, lane t < 4 of a row's quad of lanes,
// element e < 2) goes to 16 (j / 2) + 4 t + 2 (j % 2) + e: each lane's values of two adjacent
// column groups form one 16-byte vector and a quad's four vectors 64 contiguous bytes, so every
// reduction instruction covers 8 rows x 64 bytes (head-dim order: 8 rows x 32 bytes). A
// bijection of each block; dq_convert_kernel_sm80 reads the row back through it.
constexpr int ws_dq_gmma_col(int d) {
  const int n = d % 64, j = n / 8, t = n % 8 / 2, e = n % 2;
  return d - n + 16 * (j / 2) + 4 * t + 2 * (j % 2) + e;
}

struct BwdParams {
  Neighborhood nb;
  int64_t batch = 1, heads_q = 1, heads_kv = 1, tokens = 1, nadd = 0;
  float scale = 1.f;       // softmax scale
  float scale_log2 = 1.f;  // scale * log2(e): probabilities are exp2(s * scale_log2 - lse_log2)
  RowView q, k, v, out, dout, dq, dk, dv, ak, av, dak, dav;
  RowView lse;                // fp32 [B, ..., Hq] (sb, sx, sh only)
  float* ws_lse = nullptr;    // [B, Hq, tokens]: lse * log2(e); +inf marks no row
  float* ws_delta = nullptr;  // [B, Hq, tokens]: rowsum(dO * O) in fp32
  // [B, Hq, tokens, D] fp32, unscaled dS K summed with atomics by the dK/dV kernel (the default
  // path); null on the deterministic path, where the dQ kernel owns every dQ row. The sm_90a
  // kernel stores a row's columns in ws_dq_gmma_col order, the sm_80 one in head-dim order.
  float* ws_dq = nullptr;
  bool vec = true;  // every row start is 16-byte aligned: 16-byte copies
  // Box extents (group coordinates) of the dQ kernel's Q tiles and the KV tiles it visits, and of
  // the dK/dV kernel's KV tiles and the Q tiles it visits.
  int dq_qbox[3] = {1, 1, 1}, dq_kbox[3] = {1, 1, 1};
  int kv_qbox[3] = {1, 1, 1}, kv_kbox[3] = {1, 1, 1};
  // Tiles per dilation group per axis (of the longest group) for the dQ grid and the dK/dV grid.
  int64_t dq_tiles[3] = {1, 1, 1}, kv_tiles[3] = {1, 1, 1};
  int64_t add_tiles = 0;  // KV tiles of additional tokens: ceil(nadd / kBwdTileRows)
};

}  // namespace fna::cuda::fused
