// The one definition of the neighborhood (DESIGN.md section 2). Host and device callable; every
// backend, the FLOP counter, the tile planner and the CLI use it. Tests check it against a
// brute-force mask written independently in the test code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FNA_HD __host__ __device__ __forceinline__
#else
#define FNA_HD inline
#endif

namespace fna {

// One spatial axis: extent L, window K, stride s, dilation d, causal c.
// Rules (checked by validation): 1 <= s <= K, K * d <= L, d >= 1.
struct Axis {
  int64_t extent = 1;
  int64_t window = 1;
  int64_t stride = 1;
  int64_t dilation = 1;
  bool causal = false;
};

// A half-open range of keys on one axis, in dilation-group coordinates: keys j in [start, end)
// of group `group`, i.e. key coordinates y = j * dilation + group.
struct AxisRange {
  int64_t start;
  int64_t end;
  int64_t group;

  FNA_HD int64_t size() const { return end - start; }
};

FNA_HD int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}
FNA_HD int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
FNA_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
FNA_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Length of dilation group g: ceil((L - g) / d).
FNA_HD int64_t group_length(const Axis& a, int64_t group) {
  return ceil_div(a.extent - group, a.dilation);
}

// Window start/end for index i inside a group of length lg (group coordinates).
FNA_HD void window_in_group(const Axis& a, int64_t lg, int64_t i, int64_t* start, int64_t* end) {
  const int64_t k = a.window, s = a.stride;
  if (a.causal) {
    const int64_t lead = min64((i / s) * s + s - 1, lg - 1);
    *start = max64(lead - k + 1, 0);
    *end = min64(i + 1, lg);
  } else {
    const int64_t left = k / 2, right = k - 1 - left;
    const int64_t lead = min64((i / s) * s + s / 2, lg - 1);
    int64_t st = max64(lead - left, 0);
    if (lead + right >= lg) st = lg - k;
    *start = st;
    *end = st + k;
  }
}

// The keys a query at coordinate x attends on this axis.
FNA_HD AxisRange axis_window(const Axis& a, int64_t x) {
  const int64_t g = x % a.dilation, i = x / a.dilation;
  AxisRange r{0, 0, g};
  window_in_group(a, group_length(a, g), i, &r.start, &r.end);
  return r;
}

// Whether the query at coordinate x attends the key at coordinate y on this axis.
FNA_HD bool axis_attends(const Axis& a, int64_t x, int64_t y) {
  if (x % a.dilation != y % a.dilation) return false;
  const AxisRange r = axis_window(a, x);
  const int64_t j = y / a.dilation;
  return j >= r.start && j < r.end;
}

// Number of keys the query at x attends on this axis.
FNA_HD int64_t axis_window_size(const Axis& a, int64_t x) { return axis_window(a, x).size(); }

// All axes of a problem (rank 1..3; unused axes are extent 1, window 1).
struct Neighborhood {
  int rank = 1;
  Axis axis[3];

  // Whether query q attends key k (coordinates per axis).
  FNA_HD bool attends(const int64_t* q, const int64_t* k) const {
    for (int r = 0; r < rank; ++r)
      if (!axis_attends(axis[r], q[r], k[r])) return false;
    return true;
  }
  // Number of spatial keys query q attends (product over axes).
  FNA_HD int64_t window_size(const int64_t* q) const {
    int64_t n = 1;
    for (int r = 0; r < rank; ++r) n *= axis_window_size(axis[r], q[r]);
    return n;
  }
  FNA_HD int64_t tokens() const {
    int64_t n = 1;
    for (int r = 0; r < rank; ++r) n *= axis[r].extent;
    return n;
  }
  // Row-major token index <-> coordinates.
  FNA_HD void coords(int64_t token, int64_t* c) const {
    for (int r = rank - 1; r >= 0; --r) {
      c[r] = token % axis[r].extent;
      token /= axis[r].extent;
    }
  }
  FNA_HD int64_t token(const int64_t* c) const {
    int64_t t = 0;
    for (int r = 0; r < rank; ++r) t = t * axis[r].extent + c[r];
    return t;
  }
};

// Sum over all queries of an axis of their window sizes: O(L). The attended pairs of a problem
// are the product of these over its axes, since the window is a product of per-axis ranges.
inline int64_t axis_attended_pairs(const Axis& a) {
  int64_t total = 0;
  for (int64_t x = 0; x < a.extent; ++x) total += axis_window_size(a, x);
  return total;
}

}  // namespace fna
