// Host replays of the Hopper forward's geometry (no GPU needed): the 128-column score masks built
// from two 64-bit halves (mask_sm90.cuh) against a brute-force window test, and the persistent
// schedule's empty-item test (scheduler_fwd_sm90.cuh) against the box geometry, on random
// neighborhoods and random 128-row box shapes.
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

TEST(CudaHopperGeometry, ColumnMasksEqualTheWindows) {
  std::mt19937_64 rng(20261125);
  int masked_tiles = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    const int kv_bits = rng() % 4 == 0 ? 6 : 7;  // 64- and 128-row KV tiles
    const TileShape ts = random_shape(rng, nb, kv_bits);
    const ColumnMaskShape mask_shape = column_mask_shape(ts);
    const int boxes = total_boxes(nb, ts);
    for (int probe = 0; probe < 4; ++probe) {
      QBox box;
      if (!make_q_box(nb, ts, static_cast<int>(rng() % boxes), &box)) continue;
      int br[3] = {0, 0, 0};  // the consumers walk the tiles in order (next_kv_tile)
      for (int tile = 0; tile < box.num_kv_tiles; ++tile, next_kv_tile(box, br)) {
        const KvTile kv = kv_tile_at(ts, box, br);
        for (int row = 0; row < 128; ++row) {
          int lq[3];
          box_coords(row, ts.q_shift, lq);
          RowWindow w;
          bool row_ok = true;
          for (int r = 0; r < 3; ++r) {
            row_ok = row_ok && lq[r] < box.count[r];
            const int i = box.i0[r] + std::min(lq[r], box.count[r] - 1);
            int64_t s, e;
            window_in_group(nb.axis[r], box.lg[r], i, &s, &e);
            w.lo[r] = static_cast<int>(s);
            w.hi[r] = static_cast<int>(e);
          }
          uint64_t words[2] = {0, 0};
          if (kv.masked) window_column_mask_2x64(mask_shape, kv, w, words);
          for (int n = 0; n < (1 << kv_bits); ++n) {
            int lk[3];
            box_coords(n, ts.kv_shift, lk);
            bool attended = true;
            for (int r = 0; r < 3; ++r) {
              const int j = kv.base[r] + lk[r];
              attended = attended && w.lo[r] <= j && j < w.hi[r];
            }
            if (!kv.masked) {
              // An unmasked tile must be attended entirely by every real query of the box.
              if (row_ok) {
                ASSERT_TRUE(attended) << "iter " << iter << " tile " << tile << " row " << row;
              }
              continue;
            }
            const bool bit = (words[n / 64] >> (n % 64)) & 1;
            ASSERT_EQ(bit, attended) << "iter " << iter << " tile " << tile << " row " << row
                                     << " column " << n << " kv_bits " << kv_bits;
          }
        }
        masked_tiles += kv.masked;
      }
    }
  }
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

}  // namespace
