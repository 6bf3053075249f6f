// CPU replay of the cuda-fused forward kernel's tile walk (no GPU needed): for random problems and
// every block shape, walk each Q box's KV tiles with the same tile_geometry.cuh functions the
// kernel calls (box setup, KV tiles, gather row offsets and zero-fill, unmasked-tile test, 64-bit
// column masks) and check that every (query, key) pair the kernel would score is attended, every
// attended pair is scored exactly once, and every scored key was loaded from the right token.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <random>
#include <string>
#include <vector>

#include "common/neighborhood.h"
#include "common/problem_util.h"
#include "cuda/fused/common/small_window.h"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/common/tile_plan.h"
#include "fna/fna.h"
#include "random_neighborhood.h"

namespace {

using namespace fna;
using namespace fna::cuda::fused;

// Returns an empty string when the walk of tile shape `ts` scores exactly the attended pairs and
// the planner's cost count (evaluate_tiles: computed and unmasked pairs) matches the walk.
std::string replay(const Neighborhood& nb, const TileShape& ts, int block_m, int block_n) {
  const TilePlan cost = evaluate_tiles(nb, ts, block_m);
  double visited = 0, unmasked = 0;
  // Token-index strides: a row's offset is its key token's row-major index.
  TokenStrides s;
  int64_t stride = 1;
  for (int r = 2; r >= 0; --r) {
    s.x[r] = stride;
    stride *= nb.axis[r].extent;
  }
  const int64_t tokens = nb.tokens();
  std::vector<int> scored(tokens * tokens, 0);
  int boxes = 1;
  for (int r = 0; r < 3; ++r) boxes *= static_cast<int>(nb.axis[r].dilation) * ts.q_tiles[r];
  for (int index = 0; index < boxes; ++index) {
    QBox box;
    bool nonempty = true;
    for (int r = 0; r < 3; ++r) nonempty = make_q_box_axis(nb, ts, index, r, &box) && nonempty;
    if (!nonempty) continue;
    const int tiles = box.kv_tiles[0] * box.kv_tiles[1] * box.kv_tiles[2];
    int br[3] = {0, 0, 0};  // the kernel's loader walks the tiles in order (next_kv_tile)
    const KvWalkOffsets walk = kv_walk_offsets(nb, ts, box, s, 0, 0);
    for (int tile = 0; tile < tiles; ++tile, next_kv_tile(box, br)) {
      const KvTile kv = make_kv_tile(ts, box, tile);
      const KvTile walked = kv_tile_at(ts, box, br);
      for (int r = 0; r < 3; ++r)
        if (walked.base[r] != kv.base[r] || walked.straddle != kv.straddle)
          return "box " + std::to_string(index) + " tile " + std::to_string(tile) +
                 ": the in-order walk and the index decode disagree";
      visited += double(block_m) * block_n;
      if (!kv.masked) unmasked += double(block_m) * block_n;
      const KvTileRows rows = kv_tile_rows(nb, ts, box, kv, s, 0, 0);
      const KvTileRows walked_rows = kv_tile_rows_at(ts, box, walked, walk, br);
      bool same = walked_rows.first == rows.first && walked_rows.inside == rows.inside;
      for (int r = 0; r < 3; ++r) same = same && walked_rows.limit[r] == rows.limit[r];
      if (!same)
        return "box " + std::to_string(index) + " tile " + std::to_string(tile) +
               ": the walk offsets (kv_tile_rows_at) and kv_tile_rows disagree";
      std::vector<int64_t> key(block_n);
      for (int n = 0; n < block_n; ++n)
        key[n] =
            kv_row_offset(rows, kv_row_packed_coords(ts, n), kv_row_local_offset(nb, ts, s, n));
      for (int m = 0; m < block_m; ++m) {
        int i[3];
        if (!row_valid(ts, box, m, i)) continue;
        int64_t x[3];
        for (int r = 0; r < 3; ++r) x[r] = box.coord(nb, r, i[r]);
        const int64_t q = nb.token(x);
        // The forward kernel's mask: per straddling axis one factor (tabulated per tile), AND-ed.
        const RowWindow w = row_window(nb, ts, box, m);
        uint64_t mask = ~uint64_t{0};
        for (int r = 0; r < 3; ++r)
          if ((kv.straddle >> r) & 1) mask &= axis_column_mask(ts, r, kv.base[r], w.lo[r], w.hi[r]);
        for (int n = 0; n < block_n; ++n) {
          if (!((mask >> n) & 1)) continue;
          if (key[n] < 0 || key[n] >= tokens)
            return "box " + std::to_string(index) + " tile " + std::to_string(tile) + " row " +
                   std::to_string(n) + ": scored but not loaded";
          ++scored[q * tokens + key[n]];
        }
      }
    }
  }
  if (visited != cost.visited || unmasked != cost.unmasked)
    return "planner counts " + std::to_string(cost.visited) + " computed / " +
           std::to_string(cost.unmasked) + " unmasked pairs, the walk " + std::to_string(visited) +
           " / " + std::to_string(unmasked);
  for (int64_t q = 0; q < tokens; ++q) {
    int64_t xq[3], xk[3];
    nb.coords(q, xq);
    for (int64_t k = 0; k < tokens; ++k) {
      nb.coords(k, xk);
      const int want = nb.attends(xq, xk) ? 1 : 0;
      if (scored[q * tokens + k] != want)
        return "query " + std::to_string(q) + " key " + std::to_string(k) + " scored " +
               std::to_string(scored[q * tokens + k]) + " times, attended " + std::to_string(want);
    }
  }
  return {};
}

std::string describe(const Neighborhood& nb) {
  std::string d = "rank " + std::to_string(nb.rank);
  for (int r = 0; r < nb.rank; ++r) {
    const Axis& a = nb.axis[r];
    d += " [L=" + std::to_string(a.extent) + " K=" + std::to_string(a.window) +
         " s=" + std::to_string(a.stride) + " d=" + std::to_string(a.dilation) +
         " c=" + std::to_string(a.causal) + "]";
  }
  return d;
}

// Random power-of-two box extents over the first `rank` axes with product `rows`.
std::array<int, 3> random_box(std::mt19937_64& rng, int rank, int rows) {
  std::array<int, 3> box{1, 1, 1};
  for (; rows > 1; rows /= 2) box[std::uniform_int_distribution<int>(0, rank - 1)(rng)] *= 2;
  return box;
}

TEST(CudaFusedGeometry, TileWalkScoresExactlyTheWindow) {
  std::mt19937_64 rng(20261125);
  const int shapes[][2] = {{128, 64}, {64, 64}, {64, 32}, {64, 16}};
  for (int it = 0; it < 200; ++it) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    for (const auto& bs : shapes) {
      // The planner's shapes and a random override (what Options::tiles may ask for).
      TileBoxes boxes;
      boxes.q = random_box(rng, nb.rank, bs[0]);
      boxes.kv = random_box(rng, nb.rank, bs[1]);
      ASSERT_EQ(tile_override_error(nb, boxes, bs[0], bs[1]), "");
      const TileShape planned = plan_tiles(nb, bs[0], bs[1]).shape;
      for (const TileShape& ts : {planned, shape_from_boxes(nb, boxes)}) {
        const std::string f = replay(nb, ts, bs[0], bs[1]);
        ASSERT_TRUE(f.empty()) << "problem " << it << " " << describe(nb) << " block " << bs[0]
                               << "x" << bs[1] << ": " << f;
      }
    }
  }
}

TEST(CudaFusedGeometry, TileOverrideRulesNameTheField) {
  Neighborhood nb;
  nb.rank = 2;
  nb.axis[0] = Axis{56, 7, 1, 1, false};
  nb.axis[1] = Axis{56, 7, 1, 1, false};
  nb.axis[2] = Axis{1, 1, 1, 1, false};
  TileBoxes ok;
  ok.q = {8, 8, 1};
  ok.kv = {4, 16, 1};
  EXPECT_EQ(tile_override_error(nb, ok, 64, 64), "");
  auto expect_error = [&](TileBoxes b, const std::string& words) {
    const std::string e = tile_override_error(nb, b, 64, 64);
    EXPECT_NE(e.find(words), std::string::npos) << e;
  };
  TileBoxes b = ok;
  b.q = {4, 12, 1};
  expect_error(b, "tiles.q = (4, 12, 1): every extent must be a power of two");
  b = ok;
  b.kv = {4, 4, 4};
  expect_error(b, "tiles.kv = (4, 4, 4): axis 2 is past the problem's rank 2");
  b = ok;
  b.q = {8, 16, 1};
  expect_error(b, "tiles.q = (8, 16, 1) holds 128 tokens: this kernel's Q tiles have 64 rows");
  b = ok;
  b.kv = {0, 64, 1};
  expect_error(b, "tiles.kv = (0, 64, 1): every extent must be a power of two");
  // The planner's choice is a valid override of itself.
  EXPECT_EQ(tile_override_error(nb, boxes_of(plan_tiles(nb, 64, 64).shape), 64, 64), "");
}

// fna::plan (what fna-bench --plan prints) reports the planner's boxes and counts, honours and
// validates Options::tiles, and refuses backends without a tile plan. (D = 64: at D = 32 this
// problem takes the small-window kernel, next test.)
TEST(CudaFusedGeometry, PublicPlanMatchesThePlanner) {
  const fna::Problem p = fna::Problem::make({56, 56}, {7, 7}, 64, 4, 64);
  const fna::Plan pl = fna::plan(p, fna::DType::kBFloat16);
  const Neighborhood nb = make_neighborhood(p);
  const TilePlan tp = plan_tiles(nb, 64, 64);
  EXPECT_FALSE(pl.overridden);
  EXPECT_EQ(pl.q_tile_rows, 64);
  EXPECT_EQ(pl.kv_tile_rows, 64);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(pl.tiles.q[r], 1 << tp.shape.q_shift[r]);
    EXPECT_EQ(pl.tiles.kv[r], 1 << tp.shape.kv_shift[r]);
  }
  EXPECT_DOUBLE_EQ(pl.computed_pairs, tp.visited);
  EXPECT_DOUBLE_EQ(pl.useful_fraction, tp.useful / tp.visited);
  EXPECT_DOUBLE_EQ(pl.q_tiles, tp.q_boxes * 64 * 4);
  EXPECT_GT(pl.predicted_ms, 0);

  fna::Options o;
  o.tiles = fna::TileBoxes{{4, 16, 1}, {8, 8, 1}};
  const fna::Plan over = fna::plan(p, fna::DType::kBFloat16, o);
  EXPECT_TRUE(over.overridden);
  EXPECT_EQ(over.tiles.q[1], 16);
  EXPECT_EQ(over.tiles.kv[0], 8);
  EXPECT_LT(over.useful_fraction, pl.useful_fraction);

  o.tiles = fna::TileBoxes{{4, 12, 1}, {8, 8, 1}};
  try {
    fna::plan(p, fna::DType::kBFloat16, o);
    ADD_FAILURE() << "a 4x12 Q box was accepted";
  } catch (const fna::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiles.q = (4, 12, 1)"), std::string::npos) << e.what();
  }
  o.tiles.reset();
  o.backend = fna::Backend::kCpu;
  EXPECT_THROW(fna::plan(p, fna::DType::kBFloat16, o), fna::Error);
}

// The layout the small-window kernel relies on, for every problem small_window_runs accepts: the
// windows of a block's 8 x 8 queries lie in its 14 x 14 KV region (from the first row's / column's
// window start), and the windows of a warp's 2 grid rows in the 8 region rows from its first
// row's window start (queries past the grid take the last query's window, as in the kernel).
TEST(CudaFusedGeometry, SmallWindowRunsCoverWindows) {
  using SW = SmallWindow;
  auto window = [](const Axis& a, int64_t i, int64_t* lo, int64_t* hi) {
    window_in_group(a, a.extent, std::min(i, a.extent - 1), lo, hi);
  };
  int checked = 0;
  for (int64_t L : {1, 2, 5, 7, 8, 9, 13, 14, 15, 16, 17, 23, 30}) {
    for (int64_t k = 1; k <= std::min<int64_t>(L, SW::kMaxWindow); ++k) {
      for (bool causal : {false, true}) {
        Neighborhood nb;
        nb.rank = 2;
        nb.axis[0] = Axis{L, k, 1, 1, causal};
        nb.axis[1] = Axis{L + 3, std::min<int64_t>(k + 1, SW::kMaxWindow), 1, 1, !causal};
        ASSERT_TRUE(small_window_runs(nb, SW::kHeadDim, true, true, 0, 1.f));
        for (int r = 0; r < 2; ++r) {
          const Axis& a = nb.axis[r];
          const int box = r == 0 ? SW::kBoxRows : SW::kBoxCols;
          const int region = r == 0 ? SW::kRegionRows : SW::kRegionCols;
          for (int64_t i0 = 0; i0 < a.extent; i0 += box) {
            int64_t r0, unused, lo, hi;
            window(a, i0, &r0, &unused);
            for (int l = 0; l < box; ++l) {
              window(a, i0 + l, &lo, &hi);
              EXPECT_GE(lo, r0);
              EXPECT_LE(hi, r0 + region) << "L " << L << " k " << k << " query " << i0 + l;
              if (r == 0) {  // the warp of grid rows i0 + l - l % 2, i0 + l - l % 2 + 1
                int64_t w0;
                window(a, i0 + l - l % SW::kWarpRows, &w0, &unused);
                EXPECT_GE(lo, w0);
                EXPECT_LE(hi, w0 + SW::kWarpKeyRows);
                EXPECT_LE(w0 + SW::kWarpKeyRows, r0 + region);
              }
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
  // Outside its rules the kernel is not chosen.
  Neighborhood nb;
  nb.rank = 2;
  nb.axis[0] = nb.axis[1] = Axis{20, 7, 1, 1, false};
  EXPECT_FALSE(small_window_runs(nb, 64, true, true, 0, 1.f));   // head dim
  EXPECT_FALSE(small_window_runs(nb, 32, false, true, 0, 1.f));  // fp32
  EXPECT_FALSE(small_window_runs(nb, 32, true, false, 0, 1.f));  // unaligned rows
  EXPECT_FALSE(small_window_runs(nb, 32, true, true, 5, 1.f));   // additional KV
  EXPECT_FALSE(small_window_runs(nb, 32, true, true, 0, -1.f));  // non-positive scale
  nb.axis[1].stride = 2;
  EXPECT_FALSE(small_window_runs(nb, 32, true, true, 0, 1.f));
  nb.axis[1].stride = 1;
  nb.axis[0].dilation = 2;
  EXPECT_FALSE(small_window_runs(nb, 32, true, true, 0, 1.f));
  nb.axis[0].dilation = 1;
  nb.axis[0].window = 9;
  EXPECT_FALSE(small_window_runs(nb, 32, true, true, 0, 1.f));
}

// nat-56 at D = 32 (16-bit) plans the small-window kernel: 8 x 8 Q boxes with 14 x 14 KV regions,
// 16 x 112 scores per warp (49 of 112 keys attended per query: 7/16 useful); fp32, a tile override
// or a 9-wide window take the general kernel.
TEST(CudaFusedGeometry, SmallWindowPlan) {
  const fna::Problem p = fna::Problem::make({56, 56}, {7, 7}, 64, 4, 32);
  const fna::Plan pl = fna::plan(p, fna::DType::kBFloat16);
  EXPECT_EQ(pl.tiles.q[0], 8);
  EXPECT_EQ(pl.tiles.q[1], 8);
  EXPECT_EQ(pl.tiles.kv[0], 14);
  EXPECT_EQ(pl.tiles.kv[1], 14);
  EXPECT_DOUBLE_EQ(pl.q_tiles, 49.0 * 64 * 4);
  EXPECT_DOUBLE_EQ(pl.computed_pairs, 28.0 * 7 * 16 * 112);
  EXPECT_DOUBLE_EQ(pl.useful_fraction, 7.0 / 16);
  EXPECT_GT(pl.predicted_ms, 0);
  EXPECT_EQ(fna::plan(p, fna::DType::kFloat32).kv_tile_rows, 32);  // fp32: 64 x 32 blocks
  fna::Options o;
  o.tiles = fna::TileBoxes{{8, 8, 1}, {4, 16, 1}};
  EXPECT_TRUE(fna::plan(p, fna::DType::kBFloat16, o).overridden);
  const fna::Problem wide = fna::Problem::make({56, 56}, {9, 9}, 64, 4, 32);
  EXPECT_EQ(fna::plan(wide, fna::DType::kBFloat16).kv_tile_rows, 64);
}

}  // namespace
