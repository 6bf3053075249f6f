// Host replays of the Hopper forward's geometry (no GPU needed): the 128-column score masks built
// from two 64-bit quad-split words (mask_sm90.cuh) against a brute-force window test, and the
// persistent schedules' empty-item test and walks (scheduler_fwd_sm90.cuh) against the box
// geometry, the planner's dynamic schedule model (plan_sm90.h) against their replay, on
// random neighborhoods and random 128-row box shapes; the tail split's rule and schedule
// (split_fwd_sm90.h): every tile of every item run exactly once; each consumer warpgroup's skipped
// KV tiles (wg_tiles_sm90.h) and the planner's count of them (wg_skip_count.h) against every
// row's window.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/neighborhood.h"
#include "common/problem_util.h"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/sm90/mask_sm90.cuh"
#include "cuda/fused/sm90/plan_sm90.h"
#include "cuda/fused/sm90/scheduler_fwd_sm90.cuh"
#include "cuda/fused/sm90/split_fwd_sm90.h"
#include "cuda/fused/sm90/wg_skip_count.h"
#include "cuda/fused/sm90/wg_tiles_sm90.h"
#include "fna/fna.h"
#include "fna/plan.h"
#include "random_neighborhood.h"
#include "tail_split_cases.h"

namespace {

using namespace fna;
using namespace fna::cuda::fused;

// A random split of `bits` over the first `rank` axes (box extents 2^shift, product 2^bits).
void random_split(std::mt19937_64& rng, int rank, int bits, int* shift) {
  for (int r = 0; r < 3; ++r) shift[r] = 0;
  for (int b = 0; b < bits; ++b) ++shift[rng() % rank];
}

TileShape random_shape(std::mt19937_64& rng, const Neighborhood& nb, int kv_bits) {
  TileShape t;
  random_split(rng, nb.rank, 7, t.q_shift);
  random_split(rng, nb.rank, kv_bits, t.kv_shift);
  for (int r = 0; r < 3; ++r)
    t.q_tiles[r] = static_cast<int>(q_tiles_per_axis(nb.axis[r], int64_t{1} << t.q_shift[r]));
  return t;
}

int total_boxes(const Neighborhood& nb, const TileShape& t) {
  int n = 1;
  for (int r = 0; r < 3; ++r) n *= static_cast<int>(nb.axis[r].dilation) * t.q_tiles[r];
  return n;
}

// The producers' walk of the units on `grid` blocks (scheduler_fwd_sm90.cuh), run(u, block) per
// unit. Static: block x takes x, x + grid, ... Dynamic: block x takes unit x, then, whenever it
// frees (unit u takes cost(u); the block of the least finish time first, the lower index on
// ties, as HopperModel's list_schedule), the counter's next units, skipped past empty ones by
// first_nonempty_unit as the producer does.
template <class Cost, class Run>
void walk_schedule(const FwdParamsSm90& p, int64_t grid, bool dynamic, Cost&& cost, Run&& run) {
  grid = std::min(grid, p.units);
  if (!dynamic) {
    auto next = [&](int64_t u) { return u + grid; };
    for (int64_t x = 0; x < grid; ++x)
      for (int64_t u = first_nonempty_unit(p, x, next); u < p.units;
           u = first_nonempty_unit(p, next(u), next))
        run(u, x);
    return;
  }
  int64_t counter = 0;  // FwdParamsSm90::next_unit
  auto next = [&](int64_t) { return grid + counter++; };
  std::vector<double> finish(static_cast<size_t>(grid), 0);
  std::vector<bool> done(static_cast<size_t>(grid), false);
  for (int64_t x = 0; x < grid; ++x)
    if (unit_nonempty(p, x)) {  // else the block fetches at time 0, below
      run(x, x);
      finish[static_cast<size_t>(x)] = cost(x);
    }
  for (;;) {
    int64_t x = -1;
    for (int64_t y = 0; y < grid; ++y)
      if (!done[static_cast<size_t>(y)] &&
          (x < 0 || finish[static_cast<size_t>(y)] < finish[static_cast<size_t>(x)]))
        x = y;
    if (x < 0) break;
    const int64_t u = first_nonempty_unit(p, next(0), next);
    if (u >= p.units) {
      done[static_cast<size_t>(x)] = true;
      continue;
    }
    run(u, x);
    finish[static_cast<size_t>(x)] += cost(u);
  }
}

// One (KV tile, query row) of a random Q box, as the consumers see it.
struct TileRow {
  TileShape ts;
  ColumnMaskShape mask_shape;
  QBox box;
  int br[3];  // the tile's walk coordinates
  KvTile kv;
  RowWindow w;  // the row's window (rows past the group end: the last valid query's)
  bool row_ok;  // a real query
  int kv_rows;  // rows of the KV tile (64 or 128)

  // Brute force: whether the row attends box row n of the tile.
  bool attended(int n) const {
    if (n >= kv_rows) return false;
    int lk[3];
    box_coords(n, ts.kv_shift, lk);
    bool in = true;
    for (int r = 0; r < 3; ++r) {
      const int j = kv.base[r] + lk[r];
      in = in && w.lo[r] <= j && j < w.hi[r];
    }
    return in;
  }
};

// Block-sparse neighborhoods (stride = window, the window a power of two that the random box
// extents of its rank mostly divide): the queries of an aligned Q box share one window, so most
// items have no masked tile (random neighborhoods: hardly any).
Neighborhood block_sparse_neighborhood(std::mt19937_64& rng) {
  Neighborhood nb;
  nb.rank = 1 + static_cast<int>(rng() % 3);
  const int64_t window = nb.rank == 1 ? 256 : nb.rank == 2 ? 32 : 16;
  for (int r = 0; r < 3; ++r) {
    nb.axis[r] = Axis{1, 1, 1, 1, false};
    if (r >= nb.rank) continue;
    const int64_t dilation = 1 + static_cast<int64_t>(rng() % 2);
    // 1-3 whole blocks and sometimes a partial one (a shorter last block: masked items).
    const int64_t extent = window * (1 + static_cast<int64_t>(rng() % 3)) +
                           (rng() % 2 == 0 ? 0 : static_cast<int64_t>(rng() % window));
    nb.axis[r] = Axis{extent * dilation, window, window, dilation, false};
  }
  return nb;
}

// Calls fn(TileRow) for every (tile, row) of random Q boxes of random (or block-sparse)
// neighborhoods with 64- and 128-row KV boxes, tiles in the consumers' walk order. Returns the
// number of masked tiles.
template <class Fn>
int for_each_tile_row(uint64_t seed, Fn&& fn, bool block_sparse = false) {
  std::mt19937_64 rng(seed);
  int masked_tiles = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb =
        block_sparse ? block_sparse_neighborhood(rng) : fna_test::random_neighborhood(rng, 14);
    const int kv_bits = rng() % 4 == 0 ? 6 : 7;
    TileRow c;
    c.ts = random_shape(rng, nb, kv_bits);
    c.mask_shape = column_mask_shape(c.ts);
    c.kv_rows = 1 << kv_bits;
    const int boxes = total_boxes(nb, c.ts);
    for (int probe = 0; probe < 4; ++probe) {
      if (!make_q_box(nb, c.ts, static_cast<int>(rng() % boxes), &c.box)) continue;
      c.br[0] = c.br[1] = c.br[2] = 0;
      for (int tile = 0; tile < c.box.num_kv_tiles; ++tile, next_kv_tile(c.box, c.br)) {
        c.kv = kv_tile_at(c.ts, c.box, c.br);
        for (int row = 0; row < 128; ++row) {
          int lq[3];
          box_coords(row, c.ts.q_shift, lq);
          c.row_ok = true;
          for (int r = 0; r < 3; ++r) {
            c.row_ok = c.row_ok && lq[r] < c.box.count[r];
            const int i = c.box.i0[r] + std::min(lq[r], c.box.count[r] - 1);
            int64_t s, e;
            window_in_group(nb.axis[r], c.box.lg[r], i, &s, &e);
            c.w.lo[r] = static_cast<int>(s);
            c.w.hi[r] = static_cast<int>(e);
          }
          fn(c);
          if (::testing::Test::HasFatalFailure()) return masked_tiles;
        }
        masked_tiles += c.kv.masked;
      }
    }
  }
  return masked_tiles;
}

// The kernel skips every mask of an item without a masked tile (item_has_masked_tile): each tile
// of such an item is attended entirely by every real query of the box, and a masked tile makes
// its item masked.
TEST(CudaHopperGeometry, UnmaskedItemsAttendEveryColumn) {
  for (const bool block_sparse : {false, true}) {
    int masked_tiles = 0, unmasked_item_rows = 0;
    masked_tiles = for_each_tile_row(
        20261125,
        [&](const TileRow& c) {
          const bool item_masked = item_has_masked_tile(c.ts, c.box);
          if (c.kv.masked) {
            ASSERT_TRUE(item_masked);
          }
          if (item_masked || !c.row_ok) return;
          ++unmasked_item_rows;
          for (int n = 0; n < c.kv_rows; ++n) ASSERT_TRUE(c.attended(n)) << "column " << n;
        },
        block_sparse);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_GT(masked_tiles, 1000) << "block sparse " << block_sparse;
    if (block_sparse) {
      EXPECT_GT(unmasked_item_rows, 10000);
    }
  }
}

// The quad-split words: word h of a row from its per-item window and the tile's walk coordinates
// only, on every tile (the kernel masks whenever a warp's words are not all ones), with the axis
// patterns computed or read from the launch's table (the kernel's), equal the windows bit for
// bit; the second word of a 64-row tile is 0.
TEST(CudaHopperGeometry, QuadMaskWordsEqualTheWindows) {
  const int masked_tiles = for_each_tile_row(20261128, [](const TileRow& c) {
    uint64_t table[kMaskTableWords];
    const int entries = mask_table_entries(c.mask_shape);
    ASSERT_LE(entries, kMaskTableWords);
    for (int k = 0; k < entries; ++k) table[k] = mask_table_entry(c.mask_shape, k);
    int offset[3];
    mask_table_offsets(c.mask_shape, offset);
    auto computed = [&](int r, int x) { return axis_prefix(c.mask_shape, r, x); };
    auto from_table = [&](int r, int x) { return table[offset[r] + x]; };
    for (int h = 0; h < 2; ++h) {
      const RowMaskWindow rw = row_mask_window(c.mask_shape, c.box, c.w, h);
      const uint64_t word = column_mask_word(c.mask_shape, c.ts, rw, c.br, computed);
      ASSERT_EQ(column_mask_word(c.mask_shape, c.ts, rw, c.br, from_table), word);
      for (int k = 0; k < 64; ++k)
        ASSERT_EQ(((word >> k) & 1) != 0, c.attended(64 * h + k))
            << "word " << h << " bit " << k << " kv rows " << c.kv_rows;
    }
  });
  EXPECT_GT(masked_tiles, 1000);
}

TEST(CudaHopperGeometry, EmptyItemsAreTheEmptyBoxes) {
  std::mt19937_64 rng(20261126);
  int empty = 0, total = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    FwdParamsSm90 p;
    p.base.nb = nb;
    p.base.tile = random_shape(rng, nb, 7);
    p.base.heads_q = 3;
    p.boxes = total_boxes(nb, p.base.tile);
    p.items = int64_t{p.boxes} * 3 * 2;
    for (int64_t w = 0; w < p.items; ++w) {
      const WorkItem item = work_item(p, w);
      ASSERT_EQ(item.box_index, w % p.boxes);
      ASSERT_EQ(item.h, (w / p.boxes) % 3);
      ASSERT_EQ(item.b, w / (int64_t{p.boxes} * 3));
      QBox box;
      const bool nonempty = make_q_box(nb, p.base.tile, item.box_index, &box);
      ASSERT_EQ(item_nonempty(p, item.box_index), nonempty) << "iter " << iter << " item " << w;
      empty += !nonempty;
      ++total;
    }
  }
  EXPECT_GT(empty, 0);
  EXPECT_GT(total, empty);
}

// Brute force over every row: whether a real query among rows [64 wg, 64 wg + 64) of the box
// attends a key of the spatial KV tile at walk coordinates br. Each row's window comes from
// neighborhood.h at the row's spatial coordinates; a window and a tile are both products of
// per-axis ranges (keys past the group end do not exist), so they share a pair iff their ranges
// meet on every axis.
bool wg_attends_tile(const Neighborhood& nb, const TileShape& t, const QBox& box, int wg,
                     const int* br) {
  for (int row = 64 * wg; row < 64 * wg + 64; ++row) {
    int l[3];
    box_coords(row, t.q_shift, l);
    bool meets = true;
    for (int r = 0; r < 3; ++r) {
      if (l[r] >= box.count[r]) {
        meets = false;  // padding
        break;
      }
      const AxisRange w = axis_window(nb.axis[r], box.coord(nb, r, box.i0[r] + l[r]));
      const int64_t first = box.kv_lo[r] + (int64_t{br[r]} << t.kv_shift[r]);
      const int64_t end = std::min<int64_t>(first + (int64_t{1} << t.kv_shift[r]), box.lg[r]);
      meets = meets && std::max(first, w.start) < std::min(end, w.end);
    }
    if (meets) return true;
  }
  return false;
}

// Each warpgroup visits exactly the spatial tiles some real query of its 64 rows attends, on
// random neighborhoods and box shapes; warpgroups of items without a masked tile skip nothing
// (the kernel tests wg_skips_some on masked items only).
TEST(CudaHopperGeometry, WarpgroupsSkipExactlyTheUnattendedTiles) {
  std::mt19937_64 rng(20261129);
  int skipped = 0, visited = 0, padding_halves = 0;
  for (int iter = 0; iter < 400; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    const TileShape ts = random_shape(rng, nb, rng() % 4 == 0 ? 6 : 7);
    const int boxes = total_boxes(nb, ts);
    for (int probe = 0; probe < 6; ++probe) {
      QBox box;
      if (!make_q_box(nb, ts, static_cast<int>(rng() % boxes), &box)) continue;
      for (int wg = 0; wg < 2; ++wg) {
        const WgTiles w = wg_tiles(nb, ts, box, wg);
        padding_halves += w.hi == 0;
        if (!item_has_masked_tile(ts, box)) {
          ASSERT_FALSE(wg_skips_some(w, box));
        }
        bool all = true;
        int br[3] = {0, 0, 0};
        for (int tile = 0; tile < box.num_kv_tiles; ++tile, next_kv_tile(box, br)) {
          const bool attends = wg_attends_tile(nb, ts, box, wg, br);
          ASSERT_EQ(wg_visits(w, br), attends)
              << "iter " << iter << " warpgroup " << wg << " tile " << tile;
          all = all && attends;
          (attends ? visited : skipped) += 1;
        }
        ASSERT_EQ(wg_skips_some(w, box), !all) << "iter " << iter;
      }
    }
  }
  EXPECT_GT(skipped, 1000);
  EXPECT_GT(visited, skipped);
  EXPECT_GT(padding_halves, 10);
}

// The planner's count: (spatial tile, warpgroup) pairs visited with skipping, and without, equal
// the brute-force count over every Q box.
TEST(CudaHopperGeometry, WarpgroupTilePairsCount) {
  std::mt19937_64 rng(20261130);
  double saved = 0;
  for (int iter = 0; iter < 150; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 12);
    const TileShape ts = random_shape(rng, nb, rng() % 4 == 0 ? 6 : 7);
    double visited = 0, total = 0;
    const int boxes = total_boxes(nb, ts);
    for (int index = 0; index < boxes; ++index) {
      QBox box;
      if (!make_q_box(nb, ts, index, &box)) continue;
      total += 2 * box.num_kv_tiles;
      for (int wg = 0; wg < 2; ++wg) {
        int br[3] = {0, 0, 0};
        for (int tile = 0; tile < box.num_kv_tiles; ++tile, next_kv_tile(box, br))
          visited += wg_attends_tile(nb, ts, box, wg, br);
      }
    }
    const WgTilePairs count = wg_tile_pairs(nb, ts);
    ASSERT_EQ(count.total, total) << "iter " << iter;
    ASSERT_EQ(count.visited, visited) << "iter " << iter;
    saved += total - visited;
  }
  EXPECT_GT(saved, 100);
}

// The cost model's per-box counts (HopperModel, per-axis tables in closed form) are the kernel's:
// with one block (sms = 1) its load is the sum over every box of the tiles make_q_box walks,
// weighted by kv_tile_at's masked test, plus one per non-empty item; its totals are
// evaluate_tiles's; and the planner's pick is a valid 128 x 128 box pair.
TEST(CudaHopperGeometry, PlannerCountsAreTheKernels) {
  std::mt19937_64 rng(20261127);
  // Seconds per pair 1 (unmasked) and 3 (masked) at D = 128, 1000 per item, per extra tile 1.
  const HopperCostModel unit{4.0 * 128, 4.0 * 128 / 3, 1000, 1};
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 40);
    const TileShape ts = random_shape(rng, nb, 7);
    const int64_t extra = static_cast<int64_t>(rng() % 3);
    const HopperModel model(nb, 128, HopperWork{1, 1, extra}, unit);
    double load = 0, items = 0;
    for (int i = 0; i < total_boxes(nb, ts); ++i) {
      QBox box;
      if (!make_q_box(nb, ts, i, &box)) continue;
      int br[3] = {0, 0, 0};
      for (int t = 0; t < box.num_kv_tiles; ++t, next_kv_tile(box, br))
        load += 128.0 * 128 * (kv_tile_at(ts, box, br).masked ? 3 : 1);
      load += 128.0 * 128 * extra + 1000;
      items += 1;
    }
    const HopperTime t = model.time(ts);
    ASSERT_DOUBLE_EQ(t.seconds, load) << "iter " << iter;
    ASSERT_DOUBLE_EQ(t.items, items) << "iter " << iter;
    ASSERT_NEAR(t.imbalance, 1, 1e-12) << "iter " << iter;
    const TilePlan p = evaluate_tiles(nb, ts, 128);
    ASSERT_DOUBLE_EQ(t.unmasked, p.unmasked + 128.0 * 128 * extra * items) << "iter " << iter;
    ASSERT_DOUBLE_EQ(t.masked, p.visited - p.unmasked) << "iter " << iter;
    const TilePlan plan = plan_tiles_sm90(nb, 128, HopperWork{});
    const std::string why = tile_override_error(nb, boxes_of(plan.shape), 128, 128);
    ASSERT_TRUE(why.empty()) << why;
    ASSERT_GT(plan.visited, 0);
    ASSERT_LE(plan.useful, plan.visited);
  }
}

// The schedule part: HopperModel's time and last block equal a replay of the kernel's dynamic
// schedule (walk_schedule: the producer's walk, first_nonempty_unit with the counter; without a
// tail split) with each item's cost from the kernel's geometry, on random neighborhoods, heads
// and SM counts; the time is within one item of the mean load (list scheduling's bound), which
// the static round-robin often is not. list_schedule alone against a brute-force greedy on
// random costs with empty units.
TEST(CudaHopperGeometry, PlannerScheduleIsTheKernels) {
  std::mt19937_64 rng(20261129);
  const HopperCostModel unit{4.0 * 128, 4.0 * 128 / 3, 1000, 1};
  int static_uneven = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 30);
    FwdParamsSm90 p;
    p.base.nb = nb;
    p.base.tile = random_shape(rng, nb, 7);
    p.base.heads_q = 1 + static_cast<int>(rng() % 5);
    const int64_t batch = 1 + static_cast<int64_t>(rng() % 3);
    const int sms = 1 + static_cast<int>(rng() % 140);
    p.boxes = total_boxes(nb, p.base.tile);
    p.items = int64_t{p.boxes} * p.base.heads_q * batch;
    p.main_items = p.units = p.items;  // no split: the units are the items
    const int64_t grid = std::min<int64_t>(p.items, sms);
    auto cost = [&](int64_t w) {
      QBox box;
      make_q_box(nb, p.base.tile, work_item(p, w).box_index, &box);
      double c = 1000;
      int br[3] = {0, 0, 0};
      for (int t = 0; t < box.num_kv_tiles; ++t, next_kv_tile(box, br))
        c += 128.0 * 128 * (kv_tile_at(p.base.tile, box, br).masked ? 3 : 1);
      return c;
    };
    double max_cost = 0, total = 0;
    for (int64_t w = 0; w < p.items; ++w)
      if (item_nonempty(p, int(w % p.boxes))) {
        max_cost = std::max(max_cost, cost(w));
        total += cost(w);
      }
    std::vector<double> load(static_cast<size_t>(grid)), items(static_cast<size_t>(grid));
    walk_schedule(p, grid, true, cost, [&](int64_t w, int64_t b) {
      load[static_cast<size_t>(b)] += cost(w);
      items[static_cast<size_t>(b)] += 1;
    });
    const size_t last = static_cast<size_t>(std::max_element(load.begin(), load.end()) -
                                            load.begin());  // the first of equal maxima
    const HopperModel model(nb, 128, HopperWork{p.base.heads_q * batch, sms, 0}, unit);
    const HopperTime t = model.time(p.base.tile);
    ASSERT_DOUBLE_EQ(t.seconds, load[last]) << "iter " << iter;
    ASSERT_DOUBLE_EQ(t.items, items[last]) << "iter " << iter;
    ASSERT_GE(t.imbalance, 1 - 1e-12) << "iter " << iter;
    ASSERT_LE(t.seconds, total / double(grid) + max_cost) << "iter " << iter;
    std::vector<double> static_load(static_cast<size_t>(grid));
    walk_schedule(p, grid, false, cost,
                  [&](int64_t w, int64_t b) { static_load[static_cast<size_t>(b)] += cost(w); });
    static_uneven +=
        *std::max_element(static_load.begin(), static_load.end()) > total / double(grid) + max_cost;
  }
  EXPECT_GT(static_uneven, 5);  // the round-robin's worst block: more than one item above the mean
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<double> cost(1 + rng() % 300);
    for (double& c : cost) c = rng() % 5 == 0 ? 0 : static_cast<double>(rng() % 1000);
    const int64_t n = static_cast<int64_t>(cost.size()) * (1 + static_cast<int64_t>(rng() % 20));
    const int64_t g = std::min<int64_t>(n, 1 + static_cast<int64_t>(rng() % 200));
    std::vector<double> finish(static_cast<size_t>(g));
    std::vector<int64_t> owner(static_cast<size_t>(n), -1);
    for (int64_t w = 0; w < n; ++w) {
      const double c = cost[static_cast<size_t>(w) % cost.size()];
      int64_t b = w;  // the first wave: block w
      if (w >= g) {
        if (c == 0) continue;
        b = std::min_element(finish.begin(), finish.end()) - finish.begin();
      }
      finish[static_cast<size_t>(b)] += c;
      if (c > 0) owner[static_cast<size_t>(w)] = b;
    }
    const int64_t direct = std::max_element(finish.begin(), finish.end()) - finish.begin();
    int64_t arg = -1;
    std::vector<int64_t> got(static_cast<size_t>(n), -1);
    ASSERT_EQ(list_schedule(cost, n, g, &arg,
                            [&](int64_t w, size_t box, int64_t b) {
                              ASSERT_EQ(box, static_cast<size_t>(w) % cost.size());
                              got[static_cast<size_t>(w)] = b;
                            }),
              finish[static_cast<size_t>(direct)])
        << "iter " << iter;
    ASSERT_EQ(arg, direct) << "iter " << iter;
    ASSERT_EQ(got, owner) << "iter " << iter;
  }
}

// Options::autotune's candidates: the planner's pick first, then distinct valid 128 x 128 box
// pairs (at most per_variant per cost-model variant), the first ones in increasing model time.
TEST(CudaHopperGeometry, AutotuneCandidates) {
  std::mt19937_64 rng(20261125);
  auto same = [](const TileShape& a, const TileShape& b) {
    for (int r = 0; r < 3; ++r)
      if (a.q_shift[r] != b.q_shift[r] || a.kv_shift[r] != b.kv_shift[r]) return false;
    return true;
  };
  int several = 0;
  for (int iter = 0; iter < 200; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 40);
    const HopperWork work{1 + static_cast<int64_t>(rng() % 50), 132, 0};
    const std::vector<TileShape> c = candidate_tiles_sm90(nb, 128, work, 3);
    ASSERT_FALSE(c.empty());
    ASSERT_LE(c.size(), 3u * 3);
    ASSERT_TRUE(same(c[0], plan_tiles_sm90(nb, 128, work).shape)) << "iter " << iter;
    const HopperModel model(nb, 128, work);
    for (size_t i = 0; i < c.size(); ++i) {
      const std::string why = tile_override_error(nb, boxes_of(c[i]), 128, 128);
      ASSERT_TRUE(why.empty()) << why;
      for (size_t j = 0; j < i; ++j) ASSERT_FALSE(same(c[i], c[j])) << "iter " << iter;
    }
    for (size_t i = 1; i < std::min<size_t>(c.size(), 3); ++i)
      ASSERT_LE(model.time(c[i - 1]).seconds, model.time(c[i]).seconds) << "iter " << iter;
    // No shape beats the pick (best() prunes by the mean load; this checks it against every
    // shape whose mean load is below the pick's time: the time is never below the mean load,
    // PlannerScheduleIsTheKernels, and the list schedule makes evaluating all of them slow).
    const double pick = model.time(c[0]).seconds;
    model.for_each_shape([&](const TileShape& s) {
      if (model.mean_seconds(s) < pick) {
        ASSERT_GE(model.time(s).seconds, pick) << "iter " << iter;
      }
    });
    several += c.size() > 1;
  }
  EXPECT_GT(several, 100);  // most problems have more than one shape worth timing
}

}  // namespace

namespace {

// The launch parameters the schedule reads, as hopper_backend.cpp fills them for `grid` blocks.
FwdParamsSm90 schedule_params(const Neighborhood& nb, const TileShape& shape, int heads,
                              int64_t batch, int additional_kv, int64_t grid) {
  FwdParamsSm90 p;
  p.base.nb = nb;
  p.base.tile = shape;
  p.base.heads_q = heads;
  p.base.batch = batch;
  p.base.additional_kv = additional_kv;
  p.boxes = total_boxes(nb, shape);
  p.items = int64_t{p.boxes} * heads * batch;
  const TailSplit split =
      plan_tail_split(nb, shape, p.boxes, heads * batch, additional_kv, grid, 128);
  p.main_items = split.main_items;
  p.chunks = split.chunks;
  p.units = split.units;
  return p;
}

// Replays every block's walk of the units (the producer's: first_nonempty_unit, work_unit,
// chunk_first_tile), static or dynamic (with chunk costs: the tiles plus one), and checks that
// each non-empty item's tiles run exactly once and empty items' never; returns the number of
// units run.
int64_t replay_schedule(const FwdParamsSm90& p, int64_t grid, bool dynamic,
                        const std::string& what) {
  const int add_tiles = (p.base.additional_kv + 127) / 128;
  std::vector<std::vector<int>> runs(p.items);
  int64_t units = 0;
  auto chunk_cost = [&](int64_t u) {
    const WorkUnit unit = work_unit(p, u);
    QBox box;
    make_q_box(p.base.nb, p.base.tile, int(unit.item % p.boxes), &box);
    const int tiles = box.num_kv_tiles + add_tiles;
    const int chunks = unit.item < p.main_items ? 1 : p.chunks;
    return 1.0 + chunk_first_tile(tiles, chunks, unit.chunk + 1) -
           chunk_first_tile(tiles, chunks, unit.chunk);
  };
  walk_schedule(p, grid, dynamic, chunk_cost, [&](int64_t u, int64_t) {
    const WorkUnit unit = work_unit(p, u);
    QBox box;
    EXPECT_TRUE(make_q_box(p.base.nb, p.base.tile, int(unit.item % p.boxes), &box)) << what;
    const int tiles = box.num_kv_tiles + add_tiles;
    const int chunks = unit.item < p.main_items ? 1 : p.chunks;
    EXPECT_LE(chunks, tiles) << what << " item " << unit.item;
    auto& r = runs[unit.item];
    r.resize(tiles);
    const int first = chunk_first_tile(tiles, chunks, unit.chunk);
    const int end = chunk_first_tile(tiles, chunks, unit.chunk + 1);
    EXPECT_LT(first, end) << what << " unit " << u;
    for (int t = first; t < end; ++t) ++r[t];
    // The consumer decodes the chunk's first spatial tile (kv_tile_coords) where a whole item
    // walks there from tile 0 (next_kv_tile).
    if (first < box.num_kv_tiles) {
      int walked[3] = {0, 0, 0}, decoded[3];
      for (int t = 0; t < first; ++t) next_kv_tile(box, walked);
      kv_tile_coords(box, first, decoded);
      for (int a = 0; a < 3; ++a) EXPECT_EQ(decoded[a], walked[a]) << what << " unit " << u;
    }
    ++units;
  });
  for (int64_t w = 0; w < p.items; ++w) {
    if (!item_nonempty(p, int(w % p.boxes))) {
      EXPECT_TRUE(runs[w].empty()) << what << " empty item " << w;
      continue;
    }
    EXPECT_FALSE(runs[w].empty()) << what << " item " << w << " never ran";
    for (size_t t = 0; t < runs[w].size(); ++t)
      EXPECT_EQ(runs[w][t], 1) << what << " item " << w << " tile " << t;
  }
  return units;
}

}  // namespace

TEST(CudaHopperGeometry, TailSplitRule) {
  EXPECT_EQ(tail_chunks(4096, 132, 16), 16);     // seq-32k-blocked: 4 items x 16 one-tile chunks
  EXPECT_EQ(tail_chunks(4096, 132, 40), 33);     // 4 x 33 = 132 units: one wave
  EXPECT_EQ(tail_chunks(3072, 132, 30), 3);      // 23 waves + 36 items: 36 x 3 = 108 units
  EXPECT_EQ(tail_chunks(132 * 5, 132, 16), 1);   // no tail
  EXPECT_EQ(tail_chunks(132 + 67, 132, 16), 1);  // a tail over half the grid: 2 chunks won't fit
  EXPECT_EQ(tail_chunks(132 + 66, 132, 16), 2);
  EXPECT_EQ(tail_chunks(4, 132, 1), 1);      // one-tile items
  EXPECT_EQ(tail_chunks(4, 132, 2), 1);      // 2 chunks of one tile save one tile: not worth it
  EXPECT_EQ(tail_chunks(4, 132, 3), 3);      // 3 chunks of one tile save two
  EXPECT_EQ(tail_chunks(1, 132, 500), 132);  // one item alone: every SM
  EXPECT_EQ(tail_chunks(7, 1, 9), 1);        // one block
}

// On random neighborhoods, box shapes, heads, batches, additional KV and grids: the split's
// schedule runs every tile once; when it splits, the split items are the last nonempty % grid
// non-empty ones, every chunk has a tile, and without empty items the split units fit one wave.
TEST(CudaHopperGeometry, TailSplitSchedule) {
  std::mt19937_64 rng(20261125);
  int split = 0;
  for (int iter = 0; iter < 400; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    const TileShape shape = random_shape(rng, nb, 7);
    const int heads = 1 + static_cast<int>(rng() % 3);
    const int64_t batch = 1 + static_cast<int64_t>(rng() % 2);
    const int add = rng() % 3 == 0 ? static_cast<int>(rng() % 300) : 0;
    const int64_t grid = 1 + static_cast<int64_t>(rng() % 40);
    const FwdParamsSm90 p = schedule_params(nb, shape, heads, batch, add, grid);
    const std::string what = "iter " + std::to_string(iter) + " grid " + std::to_string(grid);
    const int64_t nonempty = nonempty_boxes(nb, shape) * heads * batch;
    int64_t counted = 0;
    for (int64_t w = 0; w < p.items; ++w) counted += item_nonempty(p, int(w % p.boxes));
    ASSERT_EQ(nonempty, counted) << what;
    for (const bool dynamic : {false, true}) replay_schedule(p, grid, dynamic, what);
    if (p.chunks == 1) {
      ASSERT_EQ(p.main_items, p.items) << what;
      ASSERT_EQ(p.units, p.items) << what;
      continue;
    }
    ++split;
    int64_t tail = 0;
    for (int64_t w = p.main_items; w < p.items; ++w) tail += item_nonempty(p, int(w % p.boxes));
    ASSERT_EQ(tail, nonempty % grid) << what;
    ASSERT_TRUE(item_nonempty(p, int(p.main_items % p.boxes))) << what;
    ASSERT_GE(p.chunks, 2) << what;
    ASSERT_LE(tail * p.chunks, grid) << what;
    if (nonempty == p.items) {
      ASSERT_EQ(p.main_items % grid, 0) << what;
      ASSERT_LE(p.units - p.main_items, grid) << what;
    }
  }
  EXPECT_GT(split, 50);
}

// The GPU test's tail-split problems (tail_split_cases.h) split under their grids.
TEST(CudaHopperGeometry, TailSplitCasesSplit) {
  for (const fna_test::TailSplitCase& c : fna_test::tail_split_cases()) {
    const Neighborhood nb = make_neighborhood(c.problem);
    // The shape cuda-hopper plans on an H100 (132 SMs: FNA_HOPPER_GRID moves the schedule only).
    const TileShape shape =
        plan_tiles_sm90(nb, static_cast<int>(c.problem.head_dim), hopper_work(c.problem, 132))
            .shape;
    const int64_t items = total_boxes(nb, shape) * c.problem.heads_q * c.problem.batch;
    const int64_t grid_env = fna_test::tail_split_grid(items, c.tail);
    const int64_t grid = grid_env > 0 ? grid_env : 132;
    ASSERT_GE(grid, 2) << c.what;
    const FwdParamsSm90 p =
        schedule_params(nb, shape, static_cast<int>(c.problem.heads_q), c.problem.batch,
                        static_cast<int>(c.problem.additional_kv), grid);
    EXPECT_GE(p.chunks, 2) << c.what << ": " << p.items << " items on " << grid << " blocks";
    std::printf("%s: %lld items on %lld blocks: the last %lld items x %d chunks\n", c.what.c_str(),
                static_cast<long long>(p.items), static_cast<long long>(grid),
                static_cast<long long>(p.items - p.main_items), p.chunks);
    for (const bool dynamic : {false, true}) replay_schedule(p, grid, dynamic, c.what);
  }
}

// fna::plan (fna-bench --plan) reports the split of the public cases on an H100's 132 SMs.
TEST(CudaHopperGeometry, PlanReportsTheTailSplit) {
  fna::Problem blocked = fna::Problem::make({32768}, {2048}, 1, 16, 128);
  blocked.stride = {256, 1, 1};
  fna::Options o;
  o.backend = fna::Backend::kCudaHopper;
  EXPECT_EQ(fna::plan(blocked, fna::DType::kBFloat16, o).tail,
            "last 4 items x 16 KV chunks on 132 SMs");  // 4096 items = 31 x 132 + 4
  const fna::Problem img = fna::Problem::make({128, 128}, {31, 31}, 1, 24, 128);
  EXPECT_EQ(fna::plan(img, fna::DType::kBFloat16, o).tail,
            "last 36 items x 3 KV chunks on 132 SMs");
  const fna::Problem video = fna::Problem::make({30, 48, 80}, {18, 24, 24}, 1, 24, 128);
  EXPECT_EQ(fna::plan(video, fna::DType::kBFloat16, o).tail, "");  // 84 of 132: not split
}
