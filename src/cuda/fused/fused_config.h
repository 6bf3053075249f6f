// What the fused family supports and what this build compiled, for `unavailable` messages and
// dispatch. Host-only.
#pragma once

#include <string>

#include "fna/tensor.h"

namespace fna::cuda::fused {

// Head dims the fused kernels have instances for (tools/generate_instances.py).
inline constexpr int kFusedHeadDims[] = {32, 64, 128, 256};

inline constexpr bool head_dim_supported(int d) {
  for (int x : kFusedHeadDims)
    if (x == d) return true;
  return false;
}

// FNA_BUILT_HDIM_<D> / FNA_BUILT_<DTYPE> come from cmake/FnaCuda.cmake (FNA_HEAD_DIMS,
// FNA_DTYPES). fp32 instances are compiled for every built head dim.
inline constexpr bool kBuiltHeadDimFlags[] = {
#if defined(FNA_BUILT_HDIM_32)
    true,
#else
    false,
#endif
#if defined(FNA_BUILT_HDIM_64)
    true,
#else
    false,
#endif
#if defined(FNA_BUILT_HDIM_128)
    true,
#else
    false,
#endif
#if defined(FNA_BUILT_HDIM_256)
    true,
#else
    false,
#endif
};

inline constexpr bool head_dim_built(int d) {
  for (int i = 0; i < 4; ++i)
    if (kFusedHeadDims[i] == d) return kBuiltHeadDimFlags[i];
  return false;
}

inline constexpr bool dtype_built(DType t) {
  switch (t) {
    case DType::kFloat32:
      return true;
    case DType::kFloat16:
#if defined(FNA_BUILT_FP16)
      return true;
#else
      return false;
#endif
    case DType::kBFloat16:
#if defined(FNA_BUILT_BF16)
      return true;
#else
      return false;
#endif
  }
  return false;
}

inline std::string built_head_dims_text() {
  std::string s;
  for (int i = 0; i < 4; ++i)
    if (kBuiltHeadDimFlags[i]) s += (s.empty() ? "" : ";") + std::to_string(kFusedHeadDims[i]);
  return s;
}

}  // namespace fna::cuda::fused
