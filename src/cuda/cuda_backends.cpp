// The CUDA backend table: each family registers its entry here when it has kernels.
#include "api/backend.h"

namespace fna::detail {

const BackendImpl* cuda_backend(Backend id) {
  switch (id) {
    default: return nullptr;
  }
}

}  // namespace fna::detail
