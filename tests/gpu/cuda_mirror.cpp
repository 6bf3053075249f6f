#include "cuda_mirror.h"

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace fna_test {
namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

CudaMirror::~CudaMirror() {
  for (auto& [host, dev] : storages_) cudaFree(dev);
}

fna::TensorView CudaMirror::view(const Buffer& b) {
  const auto& bytes = b.storage_bytes();
  auto it = storages_.find(bytes.data());
  if (it == storages_.end()) {
    void* dev = nullptr;
    // 16 spare bytes: a vectorized read of a view's last element may not leave the allocation.
    check_cuda(cudaMalloc(&dev, bytes.size() + 16), "cudaMalloc");
    check_cuda(cudaMemcpy(dev, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "upload");
    it = storages_.emplace(bytes.data(), dev).first;
  }
  fna::TensorView v = b.view();
  v.data =
      static_cast<std::byte*>(it->second) + (static_cast<const std::byte*>(v.data) - bytes.data());
  v.device = fna::Device{fna::DeviceType::kCUDA, 0};
  return v;
}

void CudaMirror::download(const Buffer& b) {
  const auto& bytes = b.storage_bytes();
  auto it = storages_.find(bytes.data());
  if (it == storages_.end()) return;
  // The Buffer owns mutable bytes; storage_bytes() only exposes them as const.
  check_cuda(cudaMemcpy(const_cast<std::byte*>(bytes.data()), it->second, bytes.size(),
                        cudaMemcpyDeviceToHost),
             "download");
}

void CudaMirror::sync() { check_cuda(cudaDeviceSynchronize(), "synchronize"); }

}  // namespace fna_test
