// Tile-shape planner of the fused backward (host only). Every tile holds kBwdTileRows tokens as a
// box in dilation-group coordinates; the planner picks per-axis box extents (powers of two) that
// minimise the (query, key) pairs each kernel visits, counted exactly per axis: Q boxes and the
// KV boxes they visit form product grids, so the visited pairs are a product of per-axis sums.
#pragma once

#include <cstdint>
#include <limits>

#include "common/neighborhood.h"
#include "cuda/fused/common/geometry_bwd.h"
#include "cuda/fused/common/params_bwd.h"

namespace fna::cuda::fused {

inline constexpr int kBwdTileLog2 = 6;  // log2(kBwdTileRows)
static_assert((1 << kBwdTileLog2) == kBwdTileRows);

struct BwdPlan {
  int dq_qbox[3] = {1, 1, 1}, dq_kbox[3] = {1, 1, 1};
  int kv_qbox[3] = {1, 1, 1}, kv_kbox[3] = {1, 1, 1};
};

// Visited pairs on one axis: dQ kernel (Q boxes of extent t visit KV boxes of extent u laid from
// the start of their KV range) and dK/dV kernel (KV boxes of extent u visit Q boxes of extent t
// laid from the start of their inverse range).
inline void axis_costs(const Axis& a, int64_t t, int64_t u, double* dq, double* kv) {
  *dq = 0;
  *kv = 0;
  for (int64_t g = 0; g < a.dilation; ++g) {
    const int64_t lg = group_length(a, g);
    for (int64_t i = 0; i < lg; i += t) {
      int64_t s, e, s2, e2;
      window_in_group(a, lg, i, &s, &e);
      window_in_group(a, lg, min64(i + t - 1, lg - 1), &s2, &e2);
      *dq += static_cast<double>(t * ceil_div(e2 - s, u) * u);
    }
    for (int64_t j = 0; j < lg; j += u) {
      int64_t qlo, qhi;
      inverse_window(a, lg, j, min64(j + u - 1, lg - 1), &qlo, &qhi);
      if (qlo <= qhi) *kv += static_cast<double>(u * ceil_div(qhi - qlo + 1, t) * t);
    }
  }
}

inline BwdPlan plan_backward(const Neighborhood& nb) {
  BwdPlan plan;
  plan.dq_qbox[0] = plan.dq_kbox[0] = plan.kv_qbox[0] = plan.kv_kbox[0] = kBwdTileRows;
  if (nb.rank == 1) return plan;
  constexpr int kE = kBwdTileLog2 + 1;
  double dq[3][kE][kE], kv[3][kE][kE];
  for (int r = 0; r < nb.rank; ++r)
    for (int e = 0; e < kE; ++e)
      for (int f = 0; f < kE; ++f)
        axis_costs(nb.axis[r], 1 << e, 1 << f, &dq[r][e][f], &kv[r][e][f]);
  // Every split of kBwdTileLog2 over the used axes.
  int splits[64][3], n = 0;
  for (int e0 = 0; e0 <= kBwdTileLog2; ++e0)
    for (int e1 = 0; e1 <= (nb.rank > 1 ? kBwdTileLog2 - e0 : 0); ++e1) {
      const int e2 = kBwdTileLog2 - e0 - e1;
      if (nb.rank == 2 && e2 != 0) continue;
      splits[n][0] = e0;
      splits[n][1] = e1;
      splits[n][2] = nb.rank == 3 ? e2 : 0;
      ++n;
    }
  double best_dq = std::numeric_limits<double>::infinity(), best_kv = best_dq;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double cdq = 1, ckv = 1;
      for (int r = 0; r < nb.rank; ++r) {
        cdq *= dq[r][splits[i][r]][splits[j][r]];
        ckv *= kv[r][splits[i][r]][splits[j][r]];
      }
      if (cdq < best_dq) {
        best_dq = cdq;
        for (int r = 0; r < 3; ++r) {
          plan.dq_qbox[r] = 1 << splits[i][r];
          plan.dq_kbox[r] = 1 << splits[j][r];
        }
      }
      if (ckv < best_kv) {
        best_kv = ckv;
        for (int r = 0; r < 3; ++r) {
          plan.kv_qbox[r] = 1 << splits[i][r];
          plan.kv_kbox[r] = 1 << splits[j][r];
        }
      }
    }
  return plan;
}

// Writes a plan's boxes and the grids' tile counts into `p` (p->nb and p->nadd set).
inline void apply_plan(const BwdPlan& plan, BwdParams* p) {
  for (int r = 0; r < 3; ++r) {
    p->dq_qbox[r] = plan.dq_qbox[r];
    p->dq_kbox[r] = plan.dq_kbox[r];
    p->kv_qbox[r] = plan.kv_qbox[r];
    p->kv_kbox[r] = plan.kv_kbox[r];
    const int64_t longest = ceil_div(p->nb.axis[r].extent, p->nb.axis[r].dilation);
    p->dq_tiles[r] = ceil_div(longest, plan.dq_qbox[r]);
    p->kv_tiles[r] = ceil_div(longest, plan.kv_kbox[r]);
  }
  p->add_tiles = ceil_div(p->nadd, kBwdTileRows);
}

// CTAs of the dQ grid and of the dK/dV grid (x extents).
inline int64_t dq_grid_tiles(const BwdParams& p) {
  int64_t n = 1;
  for (int r = 0; r < 3; ++r) n *= p.nb.axis[r].dilation * p.dq_tiles[r];
  return n;
}
inline int64_t kv_grid_tiles(const BwdParams& p) {
  int64_t n = 1;
  for (int r = 0; r < 3; ++r) n *= p.nb.axis[r].dilation * p.kv_tiles[r];
  return n + p.add_tiles;
}

}  // namespace fna::cuda::fused
