// CPU-side typed access to strided tensor views: storage types, conversion and token offsets.
#pragma once

#include <cstdint>
#include <utility>

#include "common/half.h"
#include "fna/error.h"
#include "fna/tensor.h"

namespace fna::cpu {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(Half h) { return half_to_float(h.bits); }
inline float to_float(BFloat16 h) { return bf16_to_float(h.bits); }

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
template <>
inline Half from_float<Half>(float x) {
  return Half{float_to_half(x)};
}
template <>
inline BFloat16 from_float<BFloat16>(float x) {
  return BFloat16{float_to_bf16(x)};
}

// Calls f(T{}) with T the storage type of `dtype`.
template <typename F>
decltype(auto) dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat16:
      return f(Half{});
    case DType::kBFloat16:
      return f(BFloat16{});
  }
  throw Error(ErrorKind::kTypeError, "fna: unknown dtype");
}

// Element offsets of a token-major view [B, X(, Y(, Z)), H(, D)]: the offset of (b, x, h) is
// b * sb + sum_r x_r * sx[r] + h * sh. Additional-KV views [B, N, H, D] are rank 1 (x = n).
struct TokenLayout {
  int rank = 1;
  int64_t sb = 0, sx[3] = {0, 0, 0}, sh = 0;

  TokenLayout() = default;
  TokenLayout(const TensorView& t, int spatial_rank) : rank(spatial_rank) {
    sb = t.strides[0];
    for (int r = 0; r < spatial_rank; ++r) sx[r] = t.strides[1 + r];
    sh = t.strides[1 + spatial_rank];
  }
  int64_t offset(int64_t b, const int64_t* x, int64_t h) const {
    int64_t o = b * sb + h * sh;
    for (int r = 0; r < rank; ++r) o += x[r] * sx[r];
    return o;
  }
  // Offset of token t (row-major over the spatial extents) without coordinates.
  int64_t offset(int64_t b, int64_t t, const int64_t* extent, int64_t h) const {
    int64_t o = b * sb + h * sh;
    for (int r = rank - 1; r >= 0; --r) {
      o += (t % extent[r]) * sx[r];
      t /= extent[r];
    }
    return o;
  }
};

}  // namespace fna::cpu
