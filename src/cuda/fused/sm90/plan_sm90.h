// Block shape and cost model of the Hopper forward (backend cuda-hopper): the kernel's tile rows
// and what fna::plan predicts. Host-only, no CUDA includes (fna::plan works in CPU-only builds).
//
// The kernel is persistent: block b of the grid (one per SM) runs work items b, b + grid, ...,
// item w being Q box w % boxes of some head (scheduler_fwd_sm90.cuh), so the time is that of the
// most loaded block, not the total work over the SMs. Model:
//   t = max over blocks of sum over its items of
//       4 * D * (unmasked / rate_unmasked + masked / rate_masked) + t_item,
// with unmasked / masked the (query, key) pairs of the item's KV tiles without / with a column mask
// and per-SM rates. Box tile counts vary across the grid (windows clamp at the borders), and the
// round-robin hands each block a fixed stride through the boxes: when that stride resonates with
// the box grid's period, some blocks get only the large boxes. That is what the counts alone
// missed: video-small's Q box 1x16x8 sends every block 24-tile or 36-tile items only (largest /
// mean block load 1.24), 1x8x16 alternates them (1.03), with the same total: 1.74 vs 1.45 ms
// measured (session 7 sweep). A warp-level mask count (the kernel's warp vote) explained nothing
// more: its fitted rate equals the masked one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_plan.h"
#include "fna/problem.h"

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
  double rate_unmasked;  // FLOP/s of one SM on tiles that skip the mask
  double rate_masked;    // FLOP/s of one SM on tiles with a column mask
  double t_item;         // seconds per work item (Q box x head x batch) on its SM
  int sms;               // SMs of the calibration device: fna::plan (no device) assumes its grid
};

// Fitted by `bench/plan_sweep.py --from bench/sweeps/s6f1.json --from bench/sweeps/s7-img-128.json
// --from bench/sweeps/s7-video-small.json` (least squares on relative error, the most loaded SM's
// counts) to 39 timed shapes of the six public cuda-hopper cases on H100s (132 SMs): runs S6-F1
// and the session 7 sweeps of img-128 and video-small: median error 2.3%, max 4.9% (the
// count-only model of S6-F1 on the same shapes: 6%, 16%). Machine-wide 589 / 541 TFLOP/s:
// masked tiles cost 1.09x unmasked ones.
inline constexpr HopperCostModel kHopperCostModel{589.3e12 / 132, 541.5e12 / 132, 2.32e-6, 132};
inline constexpr const char* kHopperCalibration =
    "H100 (132 SMs), cuda-hopper a186c79 / b9039ee, D=128 bf16 (bench/sweeps: run S6-F1, "
    "session 7 sweeps): the persistent schedule's most loaded SM";

// What the schedule model needs beyond the neighborhood.
struct HopperWork {
  int64_t heads = 1;               // batch x query heads: the items of each Q box
  int sms = kHopperCostModel.sms;  // the grid: min(items, SMs) blocks
  int64_t extra_tiles = 0;         // additional-KV tiles every item visits: ceil(Nadd / kBlockN)
};

// The HopperWork of a problem on a device with `sms` SMs.
inline HopperWork hopper_work(const Problem& p, int sms) {
  return HopperWork{p.batch * p.heads_q, sms,
                    ceil_div(p.additional_kv, FwdBlockShapeSm90::kBlockN)};
}

// KV tiles of one Q box along one axis: all of them and those inside every query's window on
// this axis. A box's tiles (unmasked tiles) are the product over axes, since a tile skips the
// mask iff it is inside the full range on every axis.
struct AxisBoxTiles {
  int64_t tiles = 0;  // 0: the box lies past its dilation group's end (an empty item)
  int64_t unmasked = 0;
};

// Axis `a`'s Q boxes of extent qt in the kernel's box order (group-major, tile_geometry.cuh's
// q_box_axis_index), empty boxes included. KV box t of a Q box with KV range [s0, e1) and full
// range [s1, e0) skips the mask when s0 + t * kt >= s1 and s0 + (t + 1) * kt <= e0 (make_kv_tile's
// straddle test), i.e. for t in [ceil((s1 - s0) / kt), floor((e0 - s0) / kt) - 1]: closed form.
inline std::vector<AxisBoxTiles> axis_box_tiles(const Axis& a, int64_t qt, int64_t kt) {
  const int64_t per_group = q_tiles_per_axis(a, qt);
  std::vector<AxisBoxTiles> out(static_cast<size_t>(a.dilation * per_group));
  for (int64_t g = 0; g < a.dilation; ++g) {
    const int64_t lg = group_length(a, g);
    for (int64_t i = 0; i < per_group && i * qt < lg; ++i) {
      int64_t s0, e0, s1, e1;
      window_in_group(a, lg, i * qt, &s0, &e0);
      window_in_group(a, lg, min64(i * qt + qt, lg) - 1, &s1, &e1);
      AxisBoxTiles& b = out[static_cast<size_t>(g * per_group + i)];
      b.tiles = ceil_div(e1 - s0, kt);
      const int64_t first = s1 > s0 ? ceil_div(s1 - s0, kt) : 0;
      const int64_t last = e0 - s0 >= kt ? (e0 - s0) / kt - 1 : -1;
      b.unmasked = last >= first ? last - first + 1 : 0;
    }
  }
  return out;
}

// The largest sum of cost[w % P] over w = b, b + g, b + 2g, ... < n over blocks b < g (n >= g):
// the persistent schedule's most loaded block, P = cost.size(). O(P + g) instead of O(n): block
// b's boxes (b + k g) mod P cycle with period P / gcd(g, P) through the boxes of b's residue
// mod gcd(g, P), so its load is whole cycles plus a stretch of one, from prefix sums along the
// cycle. Returns the block index in *arg.
inline double max_block_load(const std::vector<double>& cost, int64_t n, int64_t g, int64_t* arg) {
  const int64_t p = static_cast<int64_t>(cost.size());
  const int64_t d = std::gcd(g, p), period = p / d;
  std::vector<int64_t> pos(static_cast<size_t>(p));  // box -> its place in its cycle
  std::vector<double> prefix(static_cast<size_t>(d * (period + 1)));  // per residue
  for (int64_t r = 0; r < d; ++r) {
    double* ps = &prefix[static_cast<size_t>(r * (period + 1))];
    ps[0] = 0;
    for (int64_t j = 0, x = r; j < period; ++j, x = (x + g) % p) {
      pos[static_cast<size_t>(x)] = j;
      ps[j + 1] = ps[j] + cost[static_cast<size_t>(x)];
    }
  }
  double best = -1;
  for (int64_t b = 0; b < g; ++b) {
    const int64_t items = (n - b + g - 1) / g, x = b % p, j = pos[static_cast<size_t>(x)];
    const double* ps = &prefix[static_cast<size_t>((x % d) * (period + 1))];
    const int64_t rest = items % period, end = j + rest;
    double load = static_cast<double>(items / period) * ps[period];
    load += end <= period ? ps[end] - ps[j] : ps[period] - ps[j] + ps[end - period];
    if (load > best) {
      best = load;
      *arg = b;
    }
  }
  return best;
}

// The model's time of one shape and the counts behind it (per SM: the most loaded block).
struct HopperTime {
  double seconds = 0;    // the most loaded block's load
  double imbalance = 1;  // its load / the mean block load
  double unmasked = 0;   // its (query, key) pairs in unmasked tiles (additional KV included)
  double masked = 0;     // its pairs in masked tiles
  double items = 0;      // its non-empty work items
};

// The cost model over the power-of-two shapes of one problem: per-axis box tables for every Q and
// KV extent (the sums over boxes are products of per-axis sums, as in plan_tiles), then a shape's
// time from its per-box costs (P of them) and the schedule (max_block_load).
class HopperModel {
 public:
  static constexpr int kQBits = 7, kKvBits = 7;  // log2 of kBlockM, kBlockN
  static constexpr double kPairs = FwdBlockShapeSm90::kBlockM * FwdBlockShapeSm90::kBlockN;
  static_assert(FwdBlockShapeSm90::kBlockM == 1 << kQBits);
  static_assert(FwdBlockShapeSm90::kBlockN == 1 << kKvBits);

  HopperModel(const Neighborhood& nb, int head_dim, const HopperWork& work,
              const HopperCostModel& m = kHopperCostModel)
      : nb_(nb), work_(work), m_(m) {
    pair_seconds_[0] = 4.0 * head_dim / m.rate_unmasked;
    pair_seconds_[1] = 4.0 * head_dim / m.rate_masked;
    for (int r = 0; r < nb.rank; ++r)
      for (int qs = nb.rank == 1 ? kQBits : 0; qs <= kQBits; ++qs)
        for (int ks = 0; ks <= kKvBits; ++ks) {
          auto& t = table_[r][qs][ks];
          t = axis_box_tiles(nb.axis[r], int64_t{1} << qs, int64_t{1} << ks);
          Sum& s = sums_[r][qs][ks];
          for (const AxisBoxTiles& b : t) {
            s.tiles += static_cast<double>(b.tiles);
            s.unmasked += static_cast<double>(b.unmasked);
            s.boxes += b.tiles > 0;
          }
        }
  }

  // Every shape of kBlockM x kBlockN boxes, in for_each_bit_split order.
  template <class Fn>
  void for_each_shape(Fn&& fn) const {
    for_each_bit_split(nb_.rank, kQBits, [&](const int* q) {
      for_each_bit_split(nb_.rank, kKvBits, [&](const int* k) {
        TileShape s;
        for (int r = 0; r < nb_.rank; ++r) {
          s.q_shift[r] = q[r];
          s.kv_shift[r] = k[r];
        }
        fn(s);
      });
    });
  }

  // The mean block load (the total over all items / the grid), O(rank): a lower bound of
  // time(s).seconds.
  double mean_seconds(const TileShape& s) const {
    double tiles = 1, unmasked = 1, boxes = 1;  // sums over the non-empty boxes
    for (int r = 0; r < nb_.rank; ++r) {
      const Sum& a = sums_[r][s.q_shift[r]][s.kv_shift[r]];
      tiles *= a.tiles;
      unmasked *= a.unmasked;
      boxes *= a.boxes;
    }
    const double total = kPairs * ((unmasked + boxes * work_.extra_tiles) * pair_seconds_[0] +
                                   (tiles - unmasked) * pair_seconds_[1]) +
                         boxes * m_.t_item;
    return total * static_cast<double>(work_.heads) / static_cast<double>(grid(s));
  }

  HopperTime time(const TileShape& s) const {
    int64_t n[3] = {1, 1, 1};
    const std::vector<AxisBoxTiles>* axis[3] = {&kOne, &kOne, &kOne};
    for (int r = 0; r < nb_.rank; ++r) {
      axis[r] = &table_[r][s.q_shift[r]][s.kv_shift[r]];
      n[r] = static_cast<int64_t>(axis[r]->size());
    }
    std::vector<double> cost(static_cast<size_t>(n[0] * n[1] * n[2]));
    size_t i = 0;
    for (const AxisBoxTiles& a : *axis[0])
      for (const AxisBoxTiles& b : *axis[1])
        for (const AxisBoxTiles& c : *axis[2]) {  // last axis fastest, as the box index
          const double tiles = static_cast<double>(a.tiles * b.tiles * c.tiles);
          const double u = static_cast<double>(a.unmasked * b.unmasked * c.unmasked);
          cost[i++] = tiles > 0 ? kPairs * ((u + work_.extra_tiles) * pair_seconds_[0] +
                                            (tiles - u) * pair_seconds_[1]) +
                                      m_.t_item
                                : 0;
        }
    const int64_t items = static_cast<int64_t>(cost.size()) * work_.heads, g = grid(s);
    int64_t block = 0;
    HopperTime t;
    t.seconds = max_block_load(cost, items, g, &block);
    t.imbalance = t.seconds / std::max(mean_seconds(s), 1e-300);
    // The most loaded block's counts (plan_sweep.py fits the rates to them).
    for (int64_t w = block; w < items; w += g) {
      const int64_t box = w % static_cast<int64_t>(cost.size());
      const AxisBoxTiles& a = (*axis[0])[static_cast<size_t>(box / (n[1] * n[2]))];
      const AxisBoxTiles& b = (*axis[1])[static_cast<size_t>(box / n[2] % n[1])];
      const AxisBoxTiles& c = (*axis[2])[static_cast<size_t>(box % n[2])];
      const double tiles = static_cast<double>(a.tiles * b.tiles * c.tiles);
      if (tiles == 0) continue;
      const double u = static_cast<double>(a.unmasked * b.unmasked * c.unmasked);
      t.unmasked += kPairs * (u + work_.extra_tiles);
      t.masked += kPairs * (tiles - u);
      t.items += 1;
    }
    return t;
  }

  // Shapes in increasing model time, the first `count` of them (ties: lower mean load first,
  // then for_each_bit_split order). Shapes whose mean load (a lower bound) is above the
  // count-th best time found are never evaluated, so this costs a few time() calls, not one per
  // shape.
  std::vector<TileShape> best(int count) const {
    std::vector<std::pair<double, TileShape>> all;
    for_each_shape([&](const TileShape& s) { all.push_back({mean_seconds(s), s}); });
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::pair<double, TileShape>> top;  // sorted by time, at most `count`
    for (const auto& [lower, s] : all) {
      if (static_cast<int>(top.size()) == count && lower >= top.back().first) break;
      const double t = time(s).seconds;
      auto at = std::upper_bound(top.begin(), top.end(), t,
                                 [](double v, const auto& e) { return v < e.first; });
      top.insert(at, {t, s});
      if (static_cast<int>(top.size()) > count) top.pop_back();
    }
    std::vector<TileShape> out;
    for (const auto& e : top) out.push_back(e.second);
    return out;
  }

 private:
  struct Sum {
    double tiles = 0, unmasked = 0, boxes = 0;
  };
  int64_t grid(const TileShape& s) const {
    int64_t boxes = 1;
    for (int r = 0; r < nb_.rank; ++r)
      boxes *= static_cast<int64_t>(table_[r][s.q_shift[r]][s.kv_shift[r]].size());
    return std::max<int64_t>(1, std::min<int64_t>(boxes * work_.heads, work_.sms));
  }
  static inline const std::vector<AxisBoxTiles> kOne{AxisBoxTiles{1, 1}};
  Neighborhood nb_;
  HopperWork work_;
  HopperCostModel m_;
  double pair_seconds_[2];  // seconds per (query, key) pair: unmasked, masked tiles
  std::vector<AxisBoxTiles> table_[3][kQBits + 1][kKvBits + 1];
  Sum sums_[3][kQBits + 1][kKvBits + 1];
};

// The Hopper forward's box shapes: those of the least model time (HopperModel), e.g.
// video-hunyuan gets Q 16x8x1 / KV 4x4x8 (measured fastest of 9 shapes timed in run S6-F1; the
// count-only model picked 2x8x8 / 2x8x8, 7.7% slower) and video-small a Q box whose blocks get
// balanced loads.
inline TilePlan plan_tiles_sm90(const Neighborhood& nb, int head_dim, const HopperWork& work) {
  return evaluate_tiles(nb, HopperModel(nb, head_dim, work).best(1).front(),
                        FwdBlockShapeSm90::kBlockM);
}

// Shapes worth timing (Options::autotune): the model's best `per_variant` (its pick first), then
// the best `per_variant` with masked tiles as cheap as unmasked ones and with them 1.25x the
// unmasked cost (the masked rate is the fit's least determined constant: 541 TFLOP/s here, 505
// in run S6-F1's count-only fit). No duplicates.
inline std::vector<TileShape> candidate_tiles_sm90(const Neighborhood& nb, int head_dim,
                                                   const HopperWork& work, int per_variant) {
  const HopperCostModel& m = kHopperCostModel;
  const HopperCostModel variants[3] = {m,
                                       {m.rate_unmasked, m.rate_unmasked, m.t_item, m.sms},
                                       {m.rate_unmasked, m.rate_unmasked / 1.25, m.t_item, m.sms}};
  auto same = [](const TileShape& a, const TileShape& b) {
    for (int r = 0; r < 3; ++r)
      if (a.q_shift[r] != b.q_shift[r] || a.kv_shift[r] != b.kv_shift[r]) return false;
    return true;
  };
  std::vector<TileShape> out;
  for (const HopperCostModel& v : variants)
    for (const TileShape& s : HopperModel(nb, head_dim, work, v).best(per_variant)) {
      bool seen = false;
      for (const TileShape& o : out) seen = seen || same(o, s);
      if (!seen) out.push_back(s);
    }
  return out;
}

}  // namespace fna::cuda::fused
