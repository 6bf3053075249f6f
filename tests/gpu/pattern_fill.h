// Deterministic device fills for large GPU tests: element i of a buffer gets pattern_value(seed,
// i), computed identically on the host, so a test can check a few outputs of a multi-GiB problem
// without host copies of its inputs.
#pragma once

#include <cstdint>

#include "fna/tensor.h"

namespace fna_gpu_test {

// A value in [-1, 1) with 16 significant bits (exact in fp32; bf16 rounds it to nearest even).
inline float pattern_value(uint64_t seed, uint64_t i) {
  uint64_t z = i + seed * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>((z >> 40) & 0xffff) / 32768.0f - 1.0f;
}

// Fills n elements of `dtype` at device pointer `data` with pattern_value(seed, i).
void fill_pattern(void* data, fna::DType dtype, int64_t n, uint64_t seed);

}  // namespace fna_gpu_test
