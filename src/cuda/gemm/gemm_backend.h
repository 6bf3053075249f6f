// Host-side entry of the batched-GEMM unfused CUDA family (backend `cuda-gemm`). Host-only header.
#pragma once

#include "api/backend.h"

namespace fna::cuda::gemm {
const detail::BackendImpl& backend();
}  // namespace fna::cuda::gemm
