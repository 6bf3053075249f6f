// Inverse neighborhood for the fused backward (host and device): the queries whose windows meet a
// range of keys. Per axis, start(i) and end(i) of the window are non-decreasing in i (DESIGN.md
// section 10), so those queries form an interval found by two binary searches.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"

namespace fna::cuda::fused {

// Queries i (group coordinates, group of length lg) with start(i) <= kb and end(i) > ka, i.e.
// whose window meets keys [ka, kb]: the interval [*qlo, *qhi] (empty when *qlo > *qhi).
FNA_HD void inverse_window(const Axis& a, int64_t lg, int64_t ka, int64_t kb, int64_t* qlo,
                           int64_t* qhi) {
  int64_t lo = 0, hi = lg;  // first i with end(i) > ka
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    int64_t s, e;
    window_in_group(a, lg, mid, &s, &e);
    if (e > ka)
      hi = mid;
    else
      lo = mid + 1;
  }
  *qlo = lo;
  lo = 0;
  hi = lg;  // first i with start(i) > kb
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    int64_t s, e;
    window_in_group(a, lg, mid, &s, &e);
    if (s > kb)
      hi = mid;
    else
      lo = mid + 1;
  }
  *qhi = lo - 1;
}

}  // namespace fna::cuda::fused
