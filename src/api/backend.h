// The internal backend interface. API code dispatches through this table; each backend family
// only *declares* its entry here, so the API never includes CUDA or CuTe headers.
#pragma once

#include <string>

#include "fna/fna.h"

namespace fna::detail {

struct BackendImpl {
  Backend id;
  // Empty when the backend can run this problem / dtype / device, else the reason (a sentence
  // that names the rule, e.g. "head_dim 96 is not compiled: enable with FNA_HEAD_DIMS=...").
  std::string (*unavailable)(const Problem&, DType, const Device&);
  // Called only after validation and `unavailable` passed.
  void (*forward)(const Problem&, const ForwardArgs&, const Options&);
  void (*backward)(const Problem&, const BackwardArgs&, const Options&);
};

// Entries defined by the backend families (compiled in or not per build options).
const BackendImpl& reference_backend();
const BackendImpl& cpu_backend();
#if defined(FNA_WITH_CUDA)
// Defined in src/cuda when CUDA is enabled; nullptr when this family has no kernels yet.
const BackendImpl* cuda_backend(Backend id);
#endif

// nullptr when `id` is not compiled into this build.
const BackendImpl* find_backend(Backend id);

}  // namespace fna::detail
