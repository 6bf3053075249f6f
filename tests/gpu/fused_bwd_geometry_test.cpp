// CPU replay of the cuda-fused backward's tile walks (no GPU needed): for random problems and
// random tile boxes (and the planner's), run the grid decode, the inverse-neighborhood Q walk of
// every dK/dV CTA, the KV walk of every dQ CTA and the no-mask test with the same walk_bwd.h
// functions the kernels call, and check against a brute-force mask written here: every key and
// query is owned by exactly one CTA, every attended (query, key) pair - additional tokens
// included - is visited exactly once by each kernel, and tiles run without a mask hold attended
// pairs only.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cuda/fused/common/plan_bwd.h"
#include "cuda/fused/common/walk_bwd.h"
#include "random_neighborhood.h"

namespace {

using namespace fna;
using namespace fna::cuda::fused;

// DESIGN.md section 2, written out independently of neighborhood.h.
bool oracle_axis(const Axis& a, int64_t x, int64_t y) {
  const int64_t d = a.dilation, k = a.window, s = a.stride;
  if (x % d != y % d) return false;
  const int64_t g = x % d, i = x / d, j = y / d, lg = (a.extent - g + d - 1) / d;
  int64_t start, end;
  if (a.causal) {
    const int64_t lead = std::min(i / s * s + s - 1, lg - 1);
    start = std::max<int64_t>(lead - k + 1, 0);
    end = std::min(i + 1, lg);
  } else {
    const int64_t left = k / 2, right = k - 1 - left;
    const int64_t lead = std::min(i / s * s + s / 2, lg - 1);
    start = std::max<int64_t>(lead - left, 0);
    if (lead + right >= lg) start = lg - k;
    end = start + k;
  }
  return j >= start && j < end;
}

struct Problem {
  Neighborhood nb;
  int64_t nadd = 0;
};

Problem random_problem(std::mt19937_64& rng) {
  auto uni = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Problem pr;
  pr.nb = fna_test::random_neighborhood(rng, 13);
  pr.nadd = uni(0, 2) == 0 ? uni(1, 140) : 0;
  return pr;
}

// A random split of kBwdTileRows over the used axes (powers of two).
void random_box(std::mt19937_64& rng, int rank, int* box) {
  int left = kBwdTileLog2;
  for (int r = 0; r < 3; ++r) box[r] = 1;
  for (int r = 0; r < rank; ++r) {
    const int e = r + 1 == rank ? left : std::uniform_int_distribution<int>(0, left)(rng);
    box[r] = 1 << e;
    left -= e;
  }
}

// Replays both kernels' walks; returns the first failure (empty when every check holds).
std::string replay(const Problem& pr, const BwdPlan& plan) {
  BwdParams p;
  p.nb = pr.nb;
  p.nadd = pr.nadd;
  apply_plan(plan, &p);
  const Neighborhood& nb = p.nb;
  const int64_t tokens = nb.tokens(), keys = tokens + pr.nadd;
  std::vector<std::vector<int64_t>> coords(tokens, std::vector<int64_t>(3, 0));
  for (int64_t t = 0; t < tokens; ++t) nb.coords(t, coords[t].data());
  auto attends = [&](int64_t q, int64_t k) {
    if (k >= tokens) return true;
    for (int r = 0; r < nb.rank; ++r)
      if (!oracle_axis(nb.axis[r], coords[q][r], coords[k][r])) return false;
    return true;
  };
  // Token ids of a tile's valid rows (additional tokens after the spatial ones).
  auto rows = [&](const TileRows& t) {
    std::vector<int64_t> ids;
    for (int row = 0; row < kBwdTileRows; ++row) {
      int64_t i[3], x[3] = {0, 0, 0};
      if (!t.coords(row, i)) continue;
      if (t.additional) {
        ids.push_back(tokens + i[0]);
        continue;
      }
      t.grid_coords(nb, i, x);
      ids.push_back(nb.token(x));
    }
    return ids;
  };
  auto check_pairs = [&](const std::vector<uint8_t>& count, const char* kernel) -> std::string {
    for (int64_t q = 0; q < tokens; ++q)
      for (int64_t k = 0; k < keys; ++k)
        if (count[q * keys + k] != (attends(q, k) ? 1 : 0))
          return std::string(kernel) + ": pair (" + std::to_string(q) + ", " + std::to_string(k) +
                 ") visited " + std::to_string(count[q * keys + k]) + " times";
    return "";
  };

  // dK/dV kernel.
  std::vector<uint8_t> owned(keys, 0), count(tokens * keys, 0);
  for (int64_t x = 0; x < kv_grid_tiles(p); ++x) {
    TileRows kt;
    if (!kv_tile_of_block(p, x, &kt)) continue;
    const std::vector<int64_t> kids = rows(kt);
    for (int64_t k : kids) ++owned[k];
    const TileWalk w = query_walk(p, kt);
    std::vector<uint8_t> seen(tokens, 0);
    // The kernel's incremental form of the walk and of the no-mask test, checked against
    // walk_tile and tile_inside_windows over two passes (two query heads).
    int lo[3], hi[3];
    unmasked_tiles(nb, w, p.kv_qbox, kt, lo, hi);
    WalkCursor cursor(nb, w);
    for (int step = 0; step < 2 * w.count; ++step) {
      const int idx = step % w.count;
      if (step > 0 && cursor.next(nb, w, p.kv_qbox) != (idx == 0))
        return "dK/dV: cursor wrapped at step " + std::to_string(step);
      const TileRows qt = walk_tile(nb, w, p.kv_qbox, idx), qc = cursor.rows(p.kv_qbox);
      for (int r = 0; r < 3; ++r)
        if (qc.start[r] != qt.start[r] || qc.glen[r] != qt.glen[r] || qc.group[r] != qt.group[r])
          return "dK/dV: cursor differs from walk_tile at step " + std::to_string(step);
      bool in_ranges = true;
      for (int r = 0; r < 3; ++r) in_ranges &= cursor.tile[r] >= lo[r] && cursor.tile[r] <= hi[r];
      const bool unmasked = !kt.additional && tile_inside_windows(nb, qt, kt);
      if (in_ranges != (kt.additional || unmasked))
        return "dK/dV: unmasked_tiles differs from tile_inside_windows at step " +
               std::to_string(step);
      if (step >= w.count) continue;
      for (int64_t q : rows(qt)) {
        if (++seen[q] > 1) return "dK/dV: query " + std::to_string(q) + " twice in one walk";
        for (int64_t k : kids) {
          const bool a = attends(q, k);
          if (unmasked && !a) return "dK/dV: unmasked tile holds a non-attended pair";
          if (a) ++count[q * keys + k];
        }
      }
    }
  }
  for (int64_t k = 0; k < keys; ++k)
    if (owned[k] != 1)
      return "dK/dV: key " + std::to_string(k) + " owned " + std::to_string(owned[k]) + " times";
  std::string failure = check_pairs(count, "dK/dV");
  if (!failure.empty()) return failure;

  // dQ kernel: the spatial KV walk, then every additional tile.
  std::vector<uint8_t> qowned(tokens, 0);
  std::fill(count.begin(), count.end(), 0);
  for (int64_t x = 0; x < dq_grid_tiles(p); ++x) {
    TileRows qt;
    if (!q_tile_of_block(p, x, &qt)) continue;
    const std::vector<int64_t> qids = rows(qt);
    for (int64_t q : qids) ++qowned[q];
    const TileWalk w = key_walk(p, qt);
    std::vector<uint8_t> seen(keys, 0);
    for (int it = 0; it < w.count + p.add_tiles; ++it) {
      const TileRows kt = it < w.count ? walk_tile(nb, w, p.dq_kbox, it)
                                       : additional_tile((it - w.count) * int64_t{kBwdTileRows},
                                                         p.nadd, kBwdTileRows);
      const bool unmasked = it >= w.count || tile_inside_windows(nb, qt, kt);
      for (int64_t k : rows(kt)) {
        if (++seen[k] > 1) return "dQ: key " + std::to_string(k) + " twice in one walk";
        for (int64_t q : qids) {
          const bool a = attends(q, k);
          if (unmasked && !a) return "dQ: unmasked tile holds a non-attended pair";
          if (a) ++count[q * keys + k];
        }
      }
    }
  }
  for (int64_t q = 0; q < tokens; ++q)
    if (qowned[q] != 1)
      return "dQ: query " + std::to_string(q) + " owned " + std::to_string(qowned[q]) + " times";
  return check_pairs(count, "dQ");
}

std::string describe(const Problem& pr, const BwdPlan& plan) {
  std::string s = "rank " + std::to_string(pr.nb.rank) + " nadd " + std::to_string(pr.nadd);
  for (int r = 0; r < pr.nb.rank; ++r) {
    const Axis& a = pr.nb.axis[r];
    s += " | L" + std::to_string(a.extent) + " K" + std::to_string(a.window) + " s" +
         std::to_string(a.stride) + " d" + std::to_string(a.dilation) + (a.causal ? " c" : "");
  }
  s += " | boxes dq " + std::to_string(plan.dq_qbox[0]) + "x" + std::to_string(plan.dq_qbox[1]) +
       "x" + std::to_string(plan.dq_qbox[2]) + "/" + std::to_string(plan.dq_kbox[0]) + "x" +
       std::to_string(plan.dq_kbox[1]) + "x" + std::to_string(plan.dq_kbox[2]) + " kv " +
       std::to_string(plan.kv_kbox[0]) + "x" + std::to_string(plan.kv_kbox[1]) + "x" +
       std::to_string(plan.kv_kbox[2]) + "/" + std::to_string(plan.kv_qbox[0]) + "x" +
       std::to_string(plan.kv_qbox[1]) + "x" + std::to_string(plan.kv_qbox[2]);
  return s;
}

TEST(FusedBackwardGeometry, WalksVisitEveryAttendedPairOnce) {
  std::mt19937_64 rng(20261125);
  for (int i = 0; i < 300; ++i) {
    const Problem pr = random_problem(rng);
    BwdPlan planned = plan_backward(pr.nb), random;
    random_box(rng, pr.nb.rank, random.dq_qbox);
    random_box(rng, pr.nb.rank, random.dq_kbox);
    random_box(rng, pr.nb.rank, random.kv_qbox);
    random_box(rng, pr.nb.rank, random.kv_kbox);
    for (const BwdPlan& plan : {planned, random}) {
      const std::string failure = replay(pr, plan);
      ASSERT_TRUE(failure.empty()) << "case " << i << ": " << describe(pr, plan) << ": " << failure;
    }
  }
}

}  // namespace
