// Host replays of the Hopper forward's geometry (no GPU needed): the 128-column score masks built
// from two 64-bit quad-split words (mask_sm90.cuh) against a brute-force window test, and the
// persistent schedule's empty-item test (scheduler_fwd_sm90.cuh) against the box geometry, on
// random neighborhoods and random 128-row box shapes; each consumer warpgroup's skipped KV tiles
// (wg_tiles_sm90.h) and the planner's count of them (wg_skip_count.h) against every row's window.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/sm90/mask_sm90.cuh"
#include "cuda/fused/sm90/plan_sm90.h"
#include "cuda/fused/sm90/scheduler_fwd_sm90.cuh"
#include "cuda/fused/sm90/wg_skip_count.h"
#include "cuda/fused/sm90/wg_tiles_sm90.h"
#include "random_neighborhood.h"

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

// The Hopper planner's closed-form count of unmasked tiles equals tile_plan.h's tile-by-tile one,
// and its chosen shape is a valid 128 x 128 box pair.
TEST(CudaHopperGeometry, PlannerCountsAndShapes) {
  std::mt19937_64 rng(20261127);
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 40);
    for (int r = 0; r < nb.rank; ++r)
      for (int qs = 0; qs <= 7; qs += 1 + static_cast<int>(rng() % 3))
        for (int ks = 0; ks <= 7; ks += 1 + static_cast<int>(rng() % 3)) {
          const AxisCost slow = axis_cost(nb.axis[r], int64_t{1} << qs, int64_t{1} << ks);
          const AxisCost fast = axis_cost_fast(nb.axis[r], int64_t{1} << qs, int64_t{1} << ks);
          ASSERT_EQ(fast.visited, slow.visited) << "iter " << iter;
          ASSERT_EQ(fast.unmasked, slow.unmasked) << "iter " << iter << " axis " << r;
        }
    const TilePlan plan = plan_tiles_sm90(nb, 128);
    const std::string why = tile_override_error(nb, boxes_of(plan.shape), 128, 128);
    ASSERT_TRUE(why.empty()) << why;
    ASSERT_GT(plan.visited, 0);
    ASSERT_LE(plan.useful, plan.visited);
  }
}

// Options::autotune's candidates: the planner's pick first, then distinct valid 128 x 128 box
// pairs (at most one per penalty and rank), and the model's counts agree with evaluate_tiles.
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
    const std::vector<TileShape> c = candidate_tiles_sm90(nb, 128, 3);
    ASSERT_FALSE(c.empty());
    ASSERT_LE(c.size(), 1u + 4 * 3);
    ASSERT_TRUE(same(c[0], plan_tiles_sm90(nb, 128).shape)) << "iter " << iter;
    for (size_t i = 0; i < c.size(); ++i) {
      const std::string why = tile_override_error(nb, boxes_of(c[i]), 128, 128);
      ASSERT_TRUE(why.empty()) << why;
      for (size_t j = 0; j < i; ++j) ASSERT_FALSE(same(c[i], c[j])) << "iter " << iter;
    }
    several += c.size() > 1;
  }
  EXPECT_GT(several, 100);  // most problems have more than one shape worth timing
  // for_each_shape_sm90's counts are evaluate_tiles's (the planner and autotune rank by them).
  const Neighborhood nb = fna_test::random_neighborhood(rng, 40);
  for_each_shape_sm90(nb, [&](const TileShape& shape, double unmasked, double masked, double) {
    const TilePlan p = evaluate_tiles(nb, shape, 128);
    ASSERT_EQ(unmasked, p.unmasked);
    ASSERT_EQ(unmasked + masked, p.visited);
  });
}

}  // namespace
