// The CUDA backend table: each family registers its entry here when it has kernels.
#include "api/backend.h"
#include "cuda/gemm/gemm_backend.h"
#include "cuda/naive/naive_launch.h"

namespace fna::cuda::fused {
const detail::BackendImpl& backend_impl();         // src/cuda/fused/fused_backend.cpp
const detail::BackendImpl& hopper_backend_impl();  // src/cuda/fused/sm90/hopper_backend.cpp
}  // namespace fna::cuda::fused

namespace fna::detail {

const BackendImpl* cuda_backend(Backend id) {
  switch (id) {
    case Backend::kCudaNaive:
      return &cuda::naive::backend();
    case Backend::kCudaGemm:
      return &cuda::gemm::backend();
    case Backend::kCudaFused:
      return &cuda::fused::backend_impl();
    case Backend::kCudaHopper:
      return &cuda::fused::hopper_backend_impl();
    default:
      return nullptr;
  }
}

}  // namespace fna::detail
