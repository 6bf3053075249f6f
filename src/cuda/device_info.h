// Facts about a CUDA device that the backends' `unavailable` rules and launchers need, queried once
// per device and cached (the attribute queries cost microseconds and every call asks).
#pragma once

#include <string>

namespace fna::cuda {

// Compute capability (major * 10 + minor) of `device`, or -1 with the CUDA error in `why`.
int compute_capability(int device, std::string* why);

// Number of streaming multiprocessors of `device`; throws fna::Error if it cannot be queried.
int sm_count(int device);

}  // namespace fna::cuda
