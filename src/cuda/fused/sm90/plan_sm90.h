// Block shape and cost model of the Hopper forward (backend cuda-hopper): the kernel's tile rows
// and what fna::plan predicts. Host-only, no CUDA includes (fna::plan works in CPU-only builds).
//
// The forward takes the same box planner as cuda-fused (tile_plan.h) with 128 x 128 blocks, so
// the plan's counts (computed, unmasked, useful pairs, Q boxes) come from the same code; only
// the rates differ. Model: t = B * Hq * (4 * D * (unmasked / rate_unmasked + masked /
// rate_masked) + q_boxes * t_item). Fitted on the H100 run of da1ed52 (bench/RESULTS.md,
// "cuda-hopper"): rate_unmasked and t_item from seq-32k-blocked and video-hunyuan-strided (no
// masked tiles), rate_masked from video-hunyuan (all tiles masked). It reproduces those three,
// seq-32k within 4%, and underestimates img-128 and video-small (small, 2-D / 3-D masks) by
// ~25%: masks that straddle several axes cost more than the one fitted rate.
#pragma once

namespace fna::cuda::fused {

// Rows of a Q tile / KV tile. 128 x 128 for D = 64 and 128:
//  - 128 queries = two consumer warpgroups of 64 rows each (the wgmma M extent), the
//    FlashAttention-3 split: one warpgroup's softmax runs while the other's GEMMs use the
//    tensor cores.
//  - 128 keys: S is 64 fp32 registers per thread next to a 64-register O (D = 128); a 176-key
//    tile (FA3's dense choice) is not a power of two, which the box planner and the
//    bit-field column masks need.
struct FwdBlockShapeSm90 {
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 128;
};

struct HopperCostModel {
  double rate_unmasked;  // FLOP/s on tiles that skip the mask
  double rate_masked;    // FLOP/s on tiles with a column mask
  double t_item;         // seconds per work item (Q box x head x batch), machine-wide
};

inline constexpr HopperCostModel kHopperCostModel{511e12, 351e12, 4.93e-8};
inline constexpr const char* kHopperCalibration =
    "H100, cuda-hopper da1ed52, D=128 bf16 (bench/RESULTS.md)";

}  // namespace fna::cuda::fused
