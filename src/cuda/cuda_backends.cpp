// The CUDA backend table: each family registers its entry here when it has kernels.
#include "api/backend.h"
#include "cuda/naive/naive_launch.h"

namespace fna::detail {

const BackendImpl* cuda_backend(Backend id) {
  switch (id) {
    case Backend::kCudaNaive: return &cuda::naive::backend();
    default: return nullptr;
  }
}

}  // namespace fna::detail
