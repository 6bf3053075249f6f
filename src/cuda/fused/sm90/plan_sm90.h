// Block shape and cost model of the Hopper forward (backend cuda-hopper): the kernel's tile rows
// and what fna::plan predicts. Host-only, no CUDA includes (fna::plan works in CPU-only builds).
//
// The forward takes the same box planner as cuda-fused (tile_plan.h) with 128 x 128 blocks, so
// the plan's counts (computed, unmasked, useful pairs, Q boxes) come from the same code; only
// the rates differ. Model: t = B * Hq * (4 * D * (unmasked / rate_unmasked + masked /
// rate_masked) + q_boxes * t_item). Fitted by bench/plan_sweep.py (least squares on relative
// error) to 23 timed shapes of the six public cuda-hopper cases on the H100 run S6-F1 (a186c79:
// quad-split table masks): median error 3.5%, max 15%. What it does not see: shapes with the
// same counts differ by up to 16% (video-small: Q = KV box 4x8x4 1.45 ms, 2x8x8 1.69, 4x4x8
// 1.76; img-128: 16x8 0.77, 8x16 0.82), so its pick can be that far from the fastest shape
// (bench/RESULTS.md S6-F1 lists them; fna::Options::tiles takes a measured choice).
#pragma once

#include <cstdint>
#include <algorithm>
#include <limits>
#include <vector>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_plan.h"

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

inline constexpr HopperCostModel kHopperCostModel{603e12, 505e12, 4.09e-8};
inline constexpr const char* kHopperCalibration =
    "H100, cuda-hopper a186c79, D=128 bf16 (bench/RESULTS.md run S6-F1)";

// tile_plan.h's axis_cost with the unmasked tiles of a box counted in closed form: KV box t of a
// Q box with KV range [s0, e1) and full range [s1, e0) skips the mask when
// s0 + t * kt >= s1 and s0 + (t + 1) * kt <= e0, i.e. for t in [ceil((s1 - s0) / kt),
// floor((e0 - s0) / kt) - 1]. O(boxes) instead of O(boxes x tiles), so the planner can try
// every shape (tests/gpu/hopper_geometry_test.cpp checks it equals axis_cost).
inline AxisCost axis_cost_fast(const Axis& a, int64_t qt, int64_t kt) {
  AxisCost c;
  for_each_q_box(a, qt, [&](int64_t s0, int64_t e0, int64_t s1, int64_t e1) {
    const int64_t tiles = ceil_div(e1 - s0, kt);
    c.visited += static_cast<double>(tiles * kt);
    const int64_t first = s1 > s0 ? ceil_div(s1 - s0, kt) : 0;
    const int64_t last = e0 - s0 >= kt ? (e0 - s0) / kt - 1 : -1;
    if (last >= first) c.unmasked += static_cast<double>((last - first + 1) * kt);
  });
  return c;
}

// Every power-of-two Q and KV box shape of kBlockM and kBlockN rows with what the cost model
// needs: fn(shape, unmasked, masked, items), with unmasked / masked the computed pairs in tiles
// without / with a column mask and items the Q boxes, per batch and query head. The sums over
// boxes are products of per-axis sums, as in plan_tiles.
template <class Fn>
void for_each_shape_sm90(const Neighborhood& nb, Fn&& fn) {
  constexpr int kQBits = 7, kKvBits = 7;  // log2 of kBlockM, kBlockN
  static_assert(FwdBlockShapeSm90::kBlockM == 1 << kQBits);
  static_assert(FwdBlockShapeSm90::kBlockN == 1 << kKvBits);
  const int rank = nb.rank;
  AxisCost cost[3][kQBits + 1][kKvBits + 1];
  double boxes[3][kQBits + 1];
  for (int r = 0; r < rank; ++r)
    for (int qs = 0; qs <= kQBits; ++qs) {
      boxes[r][qs] =
          static_cast<double>(nb.axis[r].dilation * q_tiles_per_axis(nb.axis[r], int64_t{1} << qs));
      for (int ks = 0; ks <= kKvBits; ++ks)
        cost[r][qs][ks] = axis_cost_fast(nb.axis[r], int64_t{1} << qs, int64_t{1} << ks);
    }
  for_each_bit_split(rank, kQBits, [&](const int* q) {
    for_each_bit_split(rank, kKvBits, [&](const int* k) {
      double visited = FwdBlockShapeSm90::kBlockM, unmasked = visited, items = 1;
      TileShape shape;
      for (int r = 0; r < rank; ++r) {
        visited *= cost[r][q[r]][k[r]].visited;
        unmasked *= cost[r][q[r]][k[r]].unmasked;
        items *= boxes[r][q[r]];
        shape.q_shift[r] = q[r];
        shape.kv_shift[r] = k[r];
      }
      fn(shape, unmasked, visited - unmasked, items);
    });
  });
}

// Model time of one batch x head, with masked tiles costing `masked_penalty` x unmasked ones
// (the fitted model: rate_unmasked / rate_masked).
inline double model_seconds_sm90(double unmasked, double masked, double items, int head_dim,
                                 double masked_penalty) {
  const HopperCostModel& m = kHopperCostModel;
  return 4.0 * head_dim * (unmasked + masked_penalty * masked) / m.rate_unmasked +
         items * m.t_item;
}

// The Hopper forward's box shapes: those that minimize the time kHopperCostModel predicts (masked
// tiles cost 1.19x unmasked ones, plus a fixed cost per Q box), not just the computed pairs: e.g.
// video-hunyuan gets KV boxes 2x8x8 (66% of the work masked) instead of the pair-minimal 1x4x32
// (all masked).
inline TilePlan plan_tiles_sm90(const Neighborhood& nb, int head_dim) {
  const double penalty = kHopperCostModel.rate_unmasked / kHopperCostModel.rate_masked;
  double best = std::numeric_limits<double>::infinity();
  TileShape pick;
  for_each_shape_sm90(nb, [&](const TileShape& shape, double u, double m, double items) {
    const double t = model_seconds_sm90(u, m, items, head_dim, penalty);
    if (t < best) {  // ties keep the first split: the last (contiguous) axis gets the most
      best = t;
      pick = shape;
    }
  });
  return evaluate_tiles(nb, pick, FwdBlockShapeSm90::kBlockM);
}

// Shapes worth timing (Options::autotune): the model's pick first, then the best `per_penalty`
// shapes under masked-tile penalties from 1 to 1.8 - the model cannot tell apart shapes with equal
// counts, which measured up to 16% apart (run S6-F1), and its penalty is a fit. No duplicates.
inline std::vector<TileShape> candidate_tiles_sm90(const Neighborhood& nb, int head_dim,
                                                   int per_penalty) {
  struct Entry {
    TileShape shape;
    double u, m, items;
  };
  std::vector<Entry> all;
  for_each_shape_sm90(nb, [&](const TileShape& shape, double u, double m, double items) {
    all.push_back({shape, u, m, items});
  });
  std::vector<TileShape> out{plan_tiles_sm90(nb, head_dim).shape};
  auto same = [](const TileShape& a, const TileShape& b) {
    for (int r = 0; r < 3; ++r)
      if (a.q_shift[r] != b.q_shift[r] || a.kv_shift[r] != b.kv_shift[r]) return false;
    return true;
  };
  for (double penalty : {1.0, 1.19, 1.46, 1.8}) {
    auto t = [&](const Entry& e) { return model_seconds_sm90(e.u, e.m, e.items, head_dim, penalty); };
    std::stable_sort(all.begin(), all.end(),
                     [&](const Entry& a, const Entry& b) { return t(a) < t(b); });
    for (int i = 0; i < per_penalty && i < static_cast<int>(all.size()); ++i) {
      bool seen = false;
      for (const TileShape& s : out) seen = seen || same(s, all[i].shape);
      if (!seen) out.push_back(all[i].shape);
    }
  }
  return out;
}

}  // namespace fna::cuda::fused
