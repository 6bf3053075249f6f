#include "cuda/device_info.h"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>

#include "cuda/cuda_check.h"

namespace fna::cuda {

int compute_capability(int device, std::string* why) {
  static std::mutex mutex;
  static std::map<int, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  int major = 0, minor = 0;
  cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it, so that it does not surface at the next CUDA call
    *why = std::string("CUDA device ") + std::to_string(device) + " cannot be queried (" +
           cudaGetErrorString(e) + ")";
    return -1;  // not cached: a device that appears later (e.g. after a driver load) is seen
  }
  const int cc = major * 10 + minor;
  cache.emplace(device, cc);
  return cc;
}

int sm_count(int device) {
  static std::mutex mutex;
  static std::map<int, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  int n = 0;
  FNA_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  cache.emplace(device, n);
  return n;
}

}  // namespace fna::cuda
