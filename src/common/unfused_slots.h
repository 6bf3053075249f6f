// Window slots of the unfused ops (include/fna/unfused.h): the slot -> key map and the relative
// positional bias index. Host and device callable; the CPU and CUDA implementations share it.
#pragma once

#include <cstdint>

#include "common/neighborhood.h"

namespace fna {

// One query's window on every axis, with its index inside its dilation group.
struct QueryWindow {
  int rank;
  AxisRange range[3];  // keys (group coordinates) per axis; {0, 1, 0} on unused axes
  int64_t index[3];    // the query's index inside its dilation group, i = x div d
  int64_t window[3];   // K per axis (1 on unused axes)
  int64_t dilation[3];
};

FNA_HD QueryWindow query_window(const Neighborhood& nb, const int64_t* x) {
  QueryWindow w;
  w.rank = nb.rank;
  for (int r = 0; r < 3; ++r) {
    if (r < nb.rank) {
      w.range[r] = axis_window(nb.axis[r], x[r]);
      w.index[r] = x[r] / nb.axis[r].dilation;
      w.window[r] = nb.axis[r].window;
      w.dilation[r] = nb.axis[r].dilation;
    } else {
      w.range[r] = AxisRange{0, 1, 0};
      w.index[r] = 0;
      w.window[r] = 1;
      w.dilation[r] = 1;
    }
  }
  return w;
}

// Slot `slot` (< prod(window)) enumerates the per-axis offsets o_r in [0, K_r) row-major (last
// axis fastest). Writes the key coordinates y and, per axis, the bias index
//   rel_r = (j_r - i_r) + K_r - 1,   j_r = start_r + o_r the key's index in the group.
// Returns false when the slot lies past a causal window's end (then y / rel are unspecified).
//
// Why rel_r is in [0, 2K_r - 2] (non-causal; rpb with a causal axis is rejected by validation):
// the window [start, start + K) always contains the query's own index i, so |j - i| <= K - 1.
// With left = floor(K/2), right = K-1-left and lead = min(floor(i/s)*s + floor(s/2), Lg-1):
//   (a) without clamping, i - lead lies in [-floor(s/2), ceil(s/2) - 1]; s <= K gives
//       floor(s/2) <= left and ceil(s/2) - 1 <= right, so i is in [lead - left, lead + right];
//       if lead was clamped to Lg-1 (smaller), i <= Lg-1 = lead and i - lead only grew, so the
//       same holds.
//   (b) start = lead - left (no border clamp): the window is [lead - left, lead + right] by (a).
//   (c) start = 0 (lead - left < 0): i <= lead + right < left + right + 1 = K, so i in [0, K).
//   (d) start = Lg - K (lead + right >= Lg): i >= lead - left >= Lg - right - left = Lg - K + 1,
//       and i < Lg, so i is in [Lg - K, Lg).
// Dilation changes nothing: i and j are both indices inside the same group of length Lg.
FNA_HD bool window_slot(const QueryWindow& w, int64_t slot, int64_t* y, int64_t* rel) {
  for (int r = w.rank - 1; r >= 0; --r) {
    const int64_t off = slot % w.window[r];
    slot /= w.window[r];
    const int64_t j = w.range[r].start + off;
    if (j >= w.range[r].end) return false;
    y[r] = j * w.dilation[r] + w.range[r].group;
    rel[r] = j - w.index[r] + w.window[r] - 1;
  }
  return true;
}

}  // namespace fna
