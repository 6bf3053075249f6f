// Host-side tile planner of the fused family: picks the Q box and KV box shapes for a problem.
//
// Cost rule (DESIGN.md section 10): a Q box covering [a, b] on an axis visits the KV range
// [start(a), end(b)) of extent E, in KV boxes that start at the range's first key, so it loads
// ceil(E / kt) * kt keys on that axis. Work is the product over axes, and since the set of Q
// boxes is a Cartesian product of per-axis (group, box) choices, the total visited work is
//   block_m * prod_r V_r(qt_r, kt_r),   V_r = sum over groups and boxes of ceil(E / kt_r) * kt_r.
// Padding queries (boxes hanging over the group end) are counted too, since a block pays for
// them. The planner minimizes this over power-of-two box shapes with prod qt = block_m and
// prod kt = block_n, i.e. it minimizes visited KV tokens per useful (query, key) pair.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/neighborhood.h"
#include "cuda/fused/common/fused_params.h"
#include "fna/options.h"

namespace fna::cuda::fused {

// Calls fn(s0, e0, s1, e1) for every Q box of extent qt along axis `a`, over all dilation groups
// (group coordinates): [s0, e0) is the window of the box's first query, [s1, e1) its last's, so
// the box's KV range is [s0, e1) and the range inside every query's window is [s1, e0).
template <class Fn>
inline void for_each_q_box(const Axis& a, int64_t qt, Fn&& fn) {
  for (int64_t g = 0; g < a.dilation; ++g) {
    const int64_t lg = group_length(a, g);
    for (int64_t i0 = 0; i0 < lg; i0 += qt) {
      const int64_t i1 = min64(i0 + qt, lg) - 1;
      int64_t s0, e0, s1, e1;
      window_in_group(a, lg, i0, &s0, &e0);
      window_in_group(a, lg, i1, &s1, &e1);
      fn(s0, e0, s1, e1);
    }
  }
}

// KV range extents E of every Q box of extent qt along axis `a`, over all dilation groups.
inline std::vector<int64_t> axis_range_extents(const Axis& a, int64_t qt) {
  std::vector<int64_t> out;
  for_each_q_box(a, qt, [&](int64_t s0, int64_t, int64_t, int64_t e1) { out.push_back(e1 - s0); });
  return out;
}

// Calls fn(bits) for every split of `total` bits over the first `rank` axes (bits[r] >= 0, summing
// to `total`), in a fixed order: the planners keep the first of equal-cost splits, which gives
// the last (contiguous) axis the largest boxes.
template <class Fn>
inline void for_each_bit_split(int rank, int total, Fn&& fn) {
  int s[3] = {0, 0, 0};
  if (rank == 1) {
    s[0] = total;
    fn(static_cast<const int*>(s));
  } else if (rank == 2) {
    for (int a = 0; a <= total; ++a) {
      s[0] = a;
      s[1] = total - a;
      fn(static_cast<const int*>(s));
    }
  } else {
    for (int a = 0; a <= total; ++a)
      for (int b = 0; a + b <= total; ++b) {
        s[0] = a;
        s[1] = b;
        s[2] = total - a - b;
        fn(static_cast<const int*>(s));
      }
  }
}

inline int log2_exact(int64_t x) {
  int s = 0;
  while ((int64_t{1} << s) < x) ++s;
  return s;
}

// Q boxes per axis per group for a Q box extent qt: ceil(ceil(L / d) / qt).
inline int64_t q_tiles_per_axis(const Axis& a, int64_t qt) {
  return ceil_div(ceil_div(a.extent, a.dilation), qt);
}

// Keys visited on axis `a` per Q box, summed over all Q boxes of extent qt along the axis: all of
// them (visited) and those in KV boxes inside every query's window on this axis (unmasked).
struct AxisCost {
  double visited = 0;
  double unmasked = 0;
};

inline AxisCost axis_cost(const Axis& a, int64_t qt, int64_t kt) {
  AxisCost c;
  for_each_q_box(a, qt, [&](int64_t s0, int64_t e0, int64_t s1, int64_t e1) {
    const int64_t tiles = ceil_div(e1 - s0, kt);
    c.visited += static_cast<double>(tiles * kt);
    for (int64_t t = 0; t < tiles; ++t)  // the kernel's test (make_kv_tile)
      if (s0 + t * kt >= s1 && s0 + (t + 1) * kt <= e0) c.unmasked += static_cast<double>(kt);
  });
  return c;
}

// The planned shapes and their cost (spatial part; the Q boxes are a Cartesian product of
// per-axis choices, so the sums over boxes are products of per-axis sums).
struct TilePlan {
  TileShape shape;
  double visited = 0;   // block_m * prod_r visited_r: (query, key) pairs the kernel computes
  double unmasked = 0;  // block_m * prod_r unmasked_r: pairs in tiles that skip the mask
  double useful = 0;    // attended pairs
  double q_boxes = 0;   // Q boxes (blocks per batch and head)
};

// Cost of a given shape (q_shift / kv_shift set; q_tiles filled in here).
inline TilePlan evaluate_tiles(const Neighborhood& nb, TileShape shape, int block_m) {
  TilePlan plan;
  plan.visited = plan.unmasked = block_m;
  plan.useful = plan.q_boxes = 1;
  for (int r = 0; r < 3; ++r) {
    const Axis& a = nb.axis[r];
    const int64_t qt = int64_t{1} << shape.q_shift[r], kt = int64_t{1} << shape.kv_shift[r];
    shape.q_tiles[r] = static_cast<int>(q_tiles_per_axis(a, qt));
    const AxisCost c = axis_cost(a, qt, kt);
    plan.visited *= c.visited;
    plan.unmasked *= c.unmasked;
    plan.useful *= static_cast<double>(axis_attended_pairs(a));
    plan.q_boxes *= static_cast<double>(a.dilation * shape.q_tiles[r]);
  }
  plan.shape = shape;
  return plan;
}

// Why the kernel cannot run with box shapes `boxes` (empty when it can): per axis powers of two,
// 1 past the rank, and box volumes equal to the block's rows.
inline std::string tile_override_error(const Neighborhood& nb, const TileBoxes& boxes, int block_m,
                                       int block_n) {
  auto text = [](const std::array<int, 3>& v) {
    std::string t = "(";
    for (int r = 0; r < 3; ++r) t += std::to_string(v[r]) + (r < 2 ? ", " : ")");
    return t;
  };
  const struct {
    const char* name;
    const std::array<int, 3>& v;
    int rows;
  } sides[2] = {{"q", boxes.q, block_m}, {"kv", boxes.kv, block_n}};
  for (const auto& side : sides) {
    int64_t volume = 1;
    for (int r = 0; r < 3; ++r) {
      const int e = side.v[r];
      if (e < 1 || (e & (e - 1)) != 0)
        return std::string("tiles.") + side.name + " = " + text(side.v) +
               ": every extent must be a power of two";
      if (r >= nb.rank && e != 1)
        return std::string("tiles.") + side.name + " = " + text(side.v) + ": axis " +
               std::to_string(r) + " is past the problem's rank " + std::to_string(nb.rank) +
               " and must be 1";
      volume *= e;
    }
    if (volume != side.rows)
      return std::string("tiles.") + side.name + " = " + text(side.v) + " holds " +
             std::to_string(volume) + " tokens: this kernel's " +
             (side.rows == block_m ? "Q" : "KV") + " tiles have " + std::to_string(side.rows) +
             " rows for this dtype and head dim";
  }
  return {};
}

// The TileShape of valid box shapes (tile_override_error is empty).
inline TileShape shape_from_boxes(const Neighborhood& nb, const TileBoxes& boxes) {
  TileShape t;
  for (int r = 0; r < 3; ++r) {
    t.q_shift[r] = log2_exact(boxes.q[r]);
    t.kv_shift[r] = log2_exact(boxes.kv[r]);
    t.q_tiles[r] = static_cast<int>(q_tiles_per_axis(nb.axis[r], boxes.q[r]));
  }
  return t;
}

inline TileBoxes boxes_of(const TileShape& t) {
  TileBoxes b;
  for (int r = 0; r < 3; ++r) {
    b.q[r] = 1 << t.q_shift[r];
    b.kv[r] = 1 << t.kv_shift[r];
  }
  return b;
}

// block_m, block_n: powers of two (rows of a Q / KV tile).
inline TilePlan plan_tiles(const Neighborhood& nb, int block_m, int block_n) {
  const int lm = log2_exact(block_m), ln = log2_exact(block_n);
  const int rank = nb.rank;
  // cost[r][qs][ks] = V_r(2^qs, 2^ks)
  std::vector<std::vector<std::vector<double>>> cost(rank);
  for (int r = 0; r < rank; ++r) {
    cost[r].assign(lm + 1, std::vector<double>(ln + 1, 0));
    for (int qs = 0; qs <= lm; ++qs) {
      const std::vector<int64_t> ext = axis_range_extents(nb.axis[r], int64_t{1} << qs);
      for (int ks = 0; ks <= ln; ++ks) {
        const int64_t kt = int64_t{1} << ks;
        double v = 0;
        for (int64_t e : ext) v += static_cast<double>(ceil_div(e, kt) * kt);
        cost[r][qs][ks] = v;
      }
    }
  }
  double best = std::numeric_limits<double>::infinity();
  int qs[3] = {0, 0, 0}, ks[3] = {0, 0, 0};
  for_each_bit_split(rank, lm, [&](const int* q) {
    for_each_bit_split(rank, ln, [&](const int* k) {
      double v = block_m;
      for (int r = 0; r < rank; ++r) v *= cost[r][q[r]][k[r]];
      if (v < best) {
        best = v;
        for (int r = 0; r < 3; ++r) {
          qs[r] = q[r];
          ks[r] = k[r];
        }
      }
    });
  });
  TileShape shape;
  for (int r = 0; r < 3; ++r) {
    shape.q_shift[r] = r < rank ? qs[r] : 0;
    shape.kv_shift[r] = r < rank ? ks[r] : 0;
  }
  return evaluate_tiles(nb, shape, block_m);
}

}  // namespace fna::cuda::fused
