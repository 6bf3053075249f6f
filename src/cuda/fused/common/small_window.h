// The small-window schedule of the sm_80+ forward (kernel_fwd_small_sm80.cuh): which problems it
// runs and its geometry. Host-safe constexpr data and a host test; no CUDA code.
//
// Why a second schedule: with 2-D windows of at most 7 x 7 (NAT-style models, D = 32) the general
// kernel's Q box of 64 queries visits ~4 KV tiles of 64 keys of which ~20% are attended, and a
// block's setup (box and window arithmetic, three barriers, pipeline fill) is paid for those few
// tiles. Here a block loads the whole KV range of its 8 x 8 Q box into shared memory once (14 x 14
// keys), and each warp computes its own 2 x 8 queries against exactly the 8 x 14 keys their windows
// can reach (a contiguous run of 112 rows of the 14-wide region): 49 of 112 keys attended per
// query (44%), one softmax pass (no online rescale: the warp sees all its keys at once), no tile
// loop, one barrier.
#pragma once

#include "common/neighborhood.h"

namespace fna::cuda::fused {

struct SmallWindow {
  static constexpr int kMaxWindow = 7;                 // per axis
  static constexpr int kBoxRows = 8;                   // Q box, axis 0
  static constexpr int kBoxCols = 8;                   // Q box, axis 1
  static constexpr int kWarpRows = 2;                  // a warp's queries: 2 x 8 = 16 rows
  static constexpr int kWarps = kBoxRows / kWarpRows;  // 4
  static constexpr int kRegionRows = kBoxRows + kMaxWindow - 1;    // 14: the box's KV range
  static constexpr int kRegionCols = kBoxCols + kMaxWindow - 1;    // 14
  static constexpr int kWarpKeyRows = kWarpRows + kMaxWindow - 1;  // 8
  static constexpr int kWarpKeys = kWarpKeyRows * kRegionCols;     // 112 = 7 MMA k-steps of 16
  static constexpr int kHeadDim = 32;
  // Blocks per SM the register allocation must allow (__launch_bounds__): a warp holds 56 fp32
  // scores, 16 fp32 outputs and 8 Q registers at once. 4 blocks: 126 registers, no spill (ncu on
  // nat-56: 25% occupancy, 66.6% issue slots busy); 5 blocks (96 registers) spilled 16 bytes.
  static constexpr int kMinBlocks = 4;
};

// Whether the small-window schedule runs a forward problem: rank 2, 16-bit, D = 32, windows of at
// most 7 x 7 with stride 1 and no dilation (causal allowed), no additional KV, 16-byte aligned rows
// and a positive scale. Then every query's window start moves by at most one key per query, which
// the fixed 8 x 14 per-warp key run relies on (2 rows reach at most 7 + 1 keys, 8 columns 7 + 7).
inline bool small_window_runs(const Neighborhood& nb, int head_dim, bool sixteen_bit, bool aligned,
                              int additional_kv, float scale_log2) {
  if (!sixteen_bit || head_dim != SmallWindow::kHeadDim || nb.rank != 2) return false;
  if (!aligned || additional_kv != 0 || !(scale_log2 > 0.f)) return false;
  for (int r = 0; r < 2; ++r) {
    const Axis& a = nb.axis[r];
    if (a.dilation != 1 || a.stride != 1 || a.window > SmallWindow::kMaxWindow) return false;
  }
  return true;
}

}  // namespace fna::cuda::fused
