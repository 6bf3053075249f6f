#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "pattern_fill.h"

namespace fna_gpu_test {
namespace {

__device__ float device_pattern_value(uint64_t seed, uint64_t i) {
  uint64_t z = i + seed * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>((z >> 40) & 0xffff) / 32768.0f - 1.0f;
}

template <class T>
__global__ void fill_kernel(T* data, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = device_pattern_value(seed, static_cast<uint64_t>(i));
    if constexpr (std::is_same_v<T, float>) {
      data[i] = v;
    } else if constexpr (std::is_same_v<T, __half>) {
      data[i] = __float2half_rn(v);
    } else {
      data[i] = __float2bfloat16_rn(v);
    }
  }
}

}  // namespace

void fill_pattern(void* data, fna::DType dtype, int64_t n, uint64_t seed) {
  const int blocks = 4096, threads = 256;
  switch (dtype) {
    case fna::DType::kFloat32:
      fill_kernel<<<blocks, threads>>>(static_cast<float*>(data), n, seed);
      break;
    case fna::DType::kFloat16:
      fill_kernel<<<blocks, threads>>>(static_cast<__half*>(data), n, seed);
      break;
    case fna::DType::kBFloat16:
      fill_kernel<<<blocks, threads>>>(static_cast<__nv_bfloat16*>(data), n, seed);
      break;
  }
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fill_pattern: ") + cudaGetErrorString(e));
}

}  // namespace fna_gpu_test
