// The small-window forward kernel for sm_80+ (mma.sync m16n8k16 through CuTe's MMA atoms): rank-2
// problems with windows of at most 7 x 7 at D = 32 (which problems: small_window.h).
//
// One block = one 8 x 8 Q box of one (batch, head), 4 warps. The block gathers Q (64 rows) and the
// box's whole KV range, a 14 x 14 region of keys starting at the box's first window start per axis
// (keys past the grid are zero-filled; no window reaches them), into shared memory with cp.async,
// then waits once. Warp w owns the box's grid rows 2w, 2w + 1 (16 queries, MMA rows: row = 8 * a +
// column). Their windows lie inside 8 region rows starting at the window start of row 2w, i.e. in
// the 8 * 14 = 112 consecutive shared-memory rows from 14 * (start - region start): the warp's keys
// are one contiguous run, so ldmatrix reads them with one base address per lane plus compile-time
// offsets. S = Q K^T (16 x 112), a per-row 112-bit window mask, one softmax pass, O = P V, O / sum.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cutlass/numeric_types.h>

#include <cmath>
#include <cstdint>
#include <cute/arch/mma_sm80.hpp>
#include <type_traits>

#include "cuda/fused/common/cute_utils.cuh"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/common/gather_copy.cuh"
#include "cuda/fused/common/small_window.h"
#include "cuda/fused/common/softmax.cuh"

namespace fna::cuda::fused {
namespace small_window {

template <class Element>
using MmaOp =
    std::conditional_t<std::is_same_v<Element, cutlass::half_t>, cute::SM80_16x8x16_F32F16F16F32_TN,
                       cute::SM80_16x8x16_F32BF16BF16F32_TN>;

// ldmatrix .x4 from a 32-bit shared address (plain and transposed): one 8 x 8 matrix of 16-bit
// elements per register, lane l giving the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.x4.m8n8.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.x4.trans.m8n8.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Two floats as a packed pair of 16-bit values (the MMA A-operand register of P).
template <class Element>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (std::is_same_v<Element, cutlass::half_t>) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

// Shared memory: 64-byte rows (32 16-bit elements, 4 chunks of 16 bytes), chunk c of row r stored
// at chunk c ^ ((r >> 1) & 3): any 8 consecutive rows then cover the 8 distinct 16-byte bank
// groups of a 128-byte line, so ldmatrix over 8 consecutive rows is conflict-free, and moving by
// 8 rows keeps the permutation (a constant offset of 512 bytes).
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  return uint32_t(row) * 64u + (uint32_t(chunk ^ ((row >> 1) & 3)) << 4);
}

// Window [lo, hi) of query i on axis `a` (dilation 1: group coordinates are coordinates), with
// queries past the grid clamped to the last one (their scores stay finite; they are not stored).
__device__ __forceinline__ void window_of(const Axis& a, int i, int* lo, int* hi) {
  int64_t s, e;
  window_in_group(a, a.extent, min64(i, a.extent - 1), &s, &e);
  *lo = int(s);
  *hi = int(e);
}

}  // namespace small_window

template <class Element>
__global__ void __launch_bounds__(SmallWindow::kWarps * 32, SmallWindow::kMinBlocks)
    fwd_small_kernel_sm80(const __grid_constant__ FwdParams p) {
  using namespace small_window;
  using SW = SmallWindow;
  constexpr int kQRows = SW::kBoxRows * SW::kBoxCols;         // 64
  constexpr int kRegion = SW::kRegionRows * SW::kRegionCols;  // 196 keys
  constexpr int kRegionPadded = (kRegion + 7) / 8 * 8;        // 200: V keeps K's swizzle phase
  constexpr int kTiles = SW::kWarpKeys / 8;                   // 14 key tiles of 8 (MMA n)
  static_assert(SW::kWarpKeys % 16 == 0, "the P V GEMM steps over keys 16 at a time");
  static_assert(SW::kWarpKeys <= 128, "a row's window mask is 2 x 64 bits");
  static_assert(SW::kBoxCols == 8, "MMA row = 8 * (grid row) + column: 8 columns per grid row");
  // Rows: Q [0, 64), K [64, 264), V [264, 464).
  constexpr int kRowK = kQRows, kRowV = kQRows + kRegionPadded;
  __shared__ __align__(128) uint8_t smem[(kQRows + 2 * kRegionPadded) * 64];
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  const Axis& ax0 = p.nb.axis[0];
  const Axis& ax1 = p.nb.axis[1];
  const int L0 = int(ax0.extent), L1 = int(ax1.extent);
  const int boxes1 = (L1 + SW::kBoxCols - 1) / SW::kBoxCols;
  const int i0 = int(blockIdx.x / boxes1) * SW::kBoxRows;  // the box's first query per axis
  const int j0 = int(blockIdx.x % boxes1) * SW::kBoxCols;
  const int h = blockIdx.y;
  const int64_t hk = h / p.heads_ratio;  // GQA/MQA: K/V read in place
  const int64_t b = blockIdx.z;
  int r0, c0, unused;
  window_of(ax0, i0, &r0, &unused);  // the region's first key per axis
  window_of(ax1, j0, &c0, &unused);

  // ---- gathers: one 16-byte chunk per thread and row, 4 threads per row ----------------------
  const int chunk = threadIdx.x & 3;
  const int lane_row = threadIdx.x >> 2;  // 0 .. 31
  {
    const Element* q = static_cast<const Element*>(p.q) + b * p.q_stride.b + h * p.q_stride.h;
#pragma unroll
    for (int it = 0; it < kQRows / 32; ++it) {
      const int row = lane_row + 32 * it;
      const int i = i0 + row / SW::kBoxCols, j = j0 + row % SW::kBoxCols;
      const bool valid = i < L0 && j < L1;
      const Element* src = q + (valid ? i * p.q_stride.x[0] + j * p.q_stride.x[1] : 0) + 8 * chunk;
      cp_async_16(smem + swizzled(row, chunk), src, valid);
    }
    const Element* k = static_cast<const Element*>(p.k) + b * p.k_stride.b + hk * p.k_stride.h;
    const Element* v = static_cast<const Element*>(p.v) + b * p.v_stride.b + hk * p.v_stride.h;
#pragma unroll
    for (int it = 0; it < (kRegion + 31) / 32; ++it) {
      const int key = lane_row + 32 * it;
      if (it == kRegion / 32 && key >= kRegion) break;
      const int x0 = r0 + key / SW::kRegionCols, x1 = c0 + key % SW::kRegionCols;
      const bool valid = x0 < L0 && x1 < L1;
      const int64_t ko = valid ? x0 * p.k_stride.x[0] + x1 * p.k_stride.x[1] : 0;
      const int64_t vo = valid ? x0 * p.v_stride.x[0] + x1 * p.v_stride.x[1] : 0;
      cp_async_16(smem + swizzled(kRowK + key, chunk), k + ko + 8 * chunk, valid);
      cp_async_16(smem + swizzled(kRowV + key, chunk), v + vo + 8 * chunk, valid);
    }
  }
  cp_async_commit();

  // ---- per-warp geometry (overlaps the gathers) ------------------------------------------------
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wi = i0 + SW::kWarpRows * warp;  // the warp's first grid row
  const int qcol = lane >> 2, quad = lane & 3;
  int wr0, unused_hi;
  window_of(ax0, wi, &wr0, &unused_hi);
  const int key_row0 = (wr0 - r0) * SW::kRegionCols;  // the warp's first key (region index)
  // Window masks of this thread's two query rows (MMA rows qcol and qcol + 8 = grid rows wi and
  // wi + 1, column j0 + qcol): bit n = key n of the warp's run (n = 14 * row + column), shifted
  // down by 2 * quad so that this thread's key 8 * t + 2 * quad + e is bit 8 * t + e.
  uint64_t mask_lo[2], mask_hi[2];
  {
    int clo, chi;
    window_of(ax1, j0 + qcol, &clo, &chi);
    const uint64_t cols = ((uint64_t{1} << (chi - clo)) - 1) << (clo - c0);
#pragma unroll
    for (int a = 0; a < 2; ++a) {
      int rlo, rhi;
      window_of(ax0, wi + a, &rlo, &rhi);
      rlo -= wr0;
      rhi -= wr0;
      uint64_t lo = 0, hi = 0;
#pragma unroll
      for (int r = 0; r < SW::kWarpKeyRows; ++r) {
        const uint64_t t = (r >= rlo && r < rhi) ? cols : 0;
        constexpr int kCols = SW::kRegionCols;
        const int pos = kCols * r;  // compile-time after unrolling
        if (pos < 64) {
          lo |= t << pos;
          if (pos + kCols > 64) hi |= t >> (64 - pos);
        } else {
          hi |= t << (pos - 64);
        }
      }
      const int s = 2 * quad;  // 0 .. 6; (hi << 1) << (63 - s) is hi << (64 - s), and 0 at s = 0
      mask_lo[a] = (lo >> s) | ((hi << 1) << (63 - s));
      mask_hi[a] = hi >> s;
    }
  }
  // ldmatrix lane addresses. Q (A operand, 16 x 16 per k-step): rows lane % 16, chunk lane / 16
  // (+ 2 per k-step: an XOR of the swizzled address, the chunk bits being above the row's).
  // K and V (8 keys x 4 chunks per ldmatrix.x4): key lane % 8, chunk lane / 8; the next 8 keys
  // are 512 bytes further (the swizzle repeats every 8 rows), V's are K's + (kRowV - kRowK) rows.
  const uint32_t q_addr =
      smem_base + swizzled(SW::kWarpRows * SW::kBoxCols * warp + (lane & 15), lane >> 4);
  const uint32_t k_addr = smem_base + swizzled(kRowK + key_row0 + (lane & 7), lane >> 3);
  const uint32_t v_addr = k_addr + (kRowV - kRowK) * 64;

  cp_async_wait<0>();
  __syncthreads();
  if (wi >= L0) return;  // the warp's rows are past the grid (no barrier follows)

  // ---- S = Q K^T ---------------------------------------------------------------------------
  using Mma = MmaOp<Element>;
  uint32_t qa[2][4];
  ldsm_x4(q_addr, qa[0]);
  ldsm_x4(q_addr ^ 32u, qa[1]);
  float s[kTiles][4];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) {
    uint32_t kb[4];
    ldsm_x4(k_addr + t * 512, kb);
    Mma::fma(s[t][0], s[t][1], s[t][2], s[t][3], qa[0][0], qa[0][1], qa[0][2], qa[0][3], kb[0],
             kb[1], 0.f, 0.f, 0.f, 0.f);
    Mma::fma(s[t][0], s[t][1], s[t][2], s[t][3], qa[1][0], qa[1][1], qa[1][2], qa[1][3], kb[2],
             kb[3], s[t][0], s[t][1], s[t][2], s[t][3]);
  }

  // ---- mask, softmax (one pass: the warp holds all its keys) ---------------------------------
  // Element (t, 2a + e) is row qcol + 8a, key 8t + 2 * quad + e.
  const float c = p.scale_log2;
  float m_scaled[2], sum[2];
#pragma unroll
  for (int a = 0; a < 2; ++a) {
    float m = -INFINITY;
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int bit = 8 * t + e;
        const bool on = bit < 64 ? (mask_lo[a] >> bit) & 1 : (mask_hi[a] >> (bit - 64)) & 1;
        if (!on) s[t][2 * a + e] = -INFINITY;
        m = fmaxf(m, s[t][2 * a + e]);
      }
    }
    // Every row attends at least one key of the run (its own window), so m is finite.
    m_scaled[a] = quad_max(m) * c;
    float acc = 0.f;
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pr = fast_exp2(fmaf(s[t][2 * a + e], c, -m_scaled[a]));
        s[t][2 * a + e] = pr;
        acc += pr;
      }
    }
    sum[a] = quad_sum(acc);
  }

  // ---- O = P V -------------------------------------------------------------------------------
  // P's A operand for keys [16k, 16k + 16) is key tiles 2k and 2k + 1 of the accumulators;
  // V's B operand for dims [8d, 8d + 8) is register d of the transposed loads of those key tiles.
  float o[4][4];
#pragma unroll
  for (int d = 0; d < 4; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
#pragma unroll
  for (int k = 0; k < kTiles / 2; ++k) {
    const uint32_t pa0 = pack2<Element>(s[2 * k][0], s[2 * k][1]);
    const uint32_t pa1 = pack2<Element>(s[2 * k][2], s[2 * k][3]);
    const uint32_t pa2 = pack2<Element>(s[2 * k + 1][0], s[2 * k + 1][1]);
    const uint32_t pa3 = pack2<Element>(s[2 * k + 1][2], s[2 * k + 1][3]);
    uint32_t v0[4], v1[4];
    ldsm_x4_t(v_addr + (2 * k) * 512, v0);
    ldsm_x4_t(v_addr + (2 * k + 1) * 512, v1);
#pragma unroll
    for (int d = 0; d < 4; ++d)
      Mma::fma(o[d][0], o[d][1], o[d][2], o[d][3], pa0, pa1, pa2, pa3, v0[d], v1[d], o[d][0],
               o[d][1], o[d][2], o[d][3]);
  }

  // ---- epilogue: O / sum, lse ------------------------------------------------------------------
  Element* out = static_cast<Element*>(p.out);
  const int j = j0 + qcol;
#pragma unroll
  for (int a = 0; a < 2; ++a) {
    const int i = wi + a;
    if (i >= L0 || j >= L1) continue;
    const float inv = 1.f / sum[a];
    Element* row = out + b * p.out_stride.b + h * p.out_stride.h + i * p.out_stride.x[0] +
                   j * p.out_stride.x[1] + 2 * quad;
#pragma unroll
    for (int d = 0; d < 4; ++d)
      *reinterpret_cast<uint32_t*>(row + 8 * d) =
          pack2<Element>(o[d][2 * a] * inv, o[d][2 * a + 1] * inv);
    if (p.lse != nullptr && quad == 0)
      p.lse[b * p.lse_stride.b + h * p.lse_stride.h + i * p.lse_stride.x[0] +
            j * p.lse_stride.x[1]] = (m_scaled[a] + log2f(sum[a])) * 0.6931471805599453f;
  }
}

}  // namespace fna::cuda::fused
