// Random neighborhoods for the host-side replays of the fused kernels' tile walks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

#include "common/neighborhood.h"

namespace fna_test {

// Rank 1-3; extents up to 300 (1-D), 40 (2-D) or `max_extent_3d` (3-D); dilation (1 in 3), stride
// (1 in 3) and causal (1 in 3) per axis, each within the window rules.
inline fna::Neighborhood random_neighborhood(std::mt19937_64& rng, int64_t max_extent_3d) {
  auto uni = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  fna::Neighborhood nb;
  nb.rank = static_cast<int>(uni(1, 3));
  const int64_t max_extent = nb.rank == 1 ? 300 : nb.rank == 2 ? 40 : max_extent_3d;
  for (int r = 0; r < 3; ++r) {
    if (r >= nb.rank) {
      nb.axis[r] = fna::Axis{1, 1, 1, 1, false};
      continue;
    }
    fna::Axis a;
    a.extent = uni(1, max_extent);
    a.dilation = uni(0, 2) == 0 ? uni(1, std::max<int64_t>(1, std::min<int64_t>(4, a.extent))) : 1;
    a.window = uni(1, a.extent / a.dilation);
    a.stride = uni(0, 2) == 0 ? uni(1, a.window) : 1;
    a.causal = uni(0, 2) == 0;
    nb.axis[r] = a;
  }
  return nb;
}

}  // namespace fna_test
