// Host-side entry of the unfused CUDA family (backend `cuda-naive`). Host-only header.
#pragma once

#include "api/backend.h"

namespace fna::cuda::naive {
const detail::BackendImpl& backend();
}  // namespace fna::cuda::naive
