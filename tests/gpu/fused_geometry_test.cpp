// CPU replay of the cuda-fused forward kernel's tile walk (no GPU needed): for random problems and
// every block shape, walk each Q box's KV tiles with the same tile_geometry.cuh functions the
// kernel calls (box setup, KV tiles, gather row offsets and zero-fill, unmasked-tile test, 64-bit
// column masks) and check that every (query, key) pair the kernel would score is attended, every
// attended pair is scored exactly once, and every scored key was loaded from the right token.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/neighborhood.h"
#include "cuda/fused/common/tile_geometry.cuh"
#include "cuda/fused/common/tile_plan.h"
#include "random_neighborhood.h"

namespace {

using namespace fna;
using namespace fna::cuda::fused;

// Returns an empty string when the walk scores exactly the attended pairs.
std::string replay(const Neighborhood& nb, int block_m, int block_n) {
  const TileShape ts = plan_tiles(nb, block_m, block_n).shape;
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
    for (int tile = 0; tile < tiles; ++tile) {
      const KvTile kv = make_kv_tile(ts, box, tile);
      const KvTileRows rows = kv_tile_rows(nb, ts, box, kv, s, 0, 0);
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
        const uint64_t mask =
            kv.masked ? window_column_mask(ts, kv, row_window(nb, ts, box, m)) : ~uint64_t{0};
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

TEST(CudaFusedGeometry, TileWalkScoresExactlyTheWindow) {
  std::mt19937_64 rng(20261125);
  const int shapes[][2] = {{128, 64}, {64, 64}, {64, 32}};
  for (int it = 0; it < 200; ++it) {
    const Neighborhood nb = fna_test::random_neighborhood(rng, 14);
    for (const auto& bs : shapes) {
      const std::string f = replay(nb, bs[0], bs[1]);
      ASSERT_TRUE(f.empty()) << "problem " << it << " " << describe(nb) << " block " << bs[0] << "x"
                             << bs[1] << ": " << f;
    }
  }
}

}  // namespace
