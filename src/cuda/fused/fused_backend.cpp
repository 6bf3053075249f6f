// Backend `cuda-fused`: the fused sm_80+ kernels (mma.sync through CuTe). This file holds the
// BackendImpl entry: what the backend can run (`unavailable`) and the forward/backward hooks.
#include <cuda_runtime_api.h>

#include <mutex>
#include <string>
#include <vector>

#include "api/backend.h"
#include "cuda/device_info.h"
#include "cuda/fused/fused_config.h"
#include "cuda/fused/fused_launch.h"

namespace fna::cuda::fused {
namespace {}  // namespace

std::string unavailable(const Problem& p, DType dtype, const Device& device) {
  if (device.type != DeviceType::kCUDA)
    return "tensors are on " + device_name(device) + ": cuda-fused needs CUDA tensors";
  std::string why;
  const int cc = compute_capability(device.index, &why);
  if (cc < 0) return why;
  if (cc < 80)
    return "device " + device_name(device) + " has compute capability " + std::to_string(cc / 10) +
           "." + std::to_string(cc % 10) + ": cuda-fused needs sm_80 or newer";
  if (p.head_dim != p.head_dim_v)
    return "head_dim_v = " + std::to_string(p.head_dim_v) +
           " differs from head_dim = " + std::to_string(p.head_dim) + ": cuda-fused needs Dv == D";
  const int d = static_cast<int>(p.head_dim);
  if (!head_dim_supported(d))
    return "head_dim " + std::to_string(p.head_dim) +
           " is not supported by cuda-fused (supported: 32, 64, 128, 256)";
  if (!head_dim_built(d))
    return "head_dim " + std::to_string(d) + " is not compiled: enable with FNA_HEAD_DIMS=" + "\"" +
           built_head_dims_text() + ";" + std::to_string(d) + "\"";
  if (!dtype_built(dtype))
    return std::string("dtype ") + dtype_name(dtype) +
           " is not compiled: enable with FNA_DTYPES=\"fp16;bf16\" (must list " +
           dtype_name(dtype) + ")";
  if (p.batch > 65535)
    return "batch = " + std::to_string(p.batch) + " exceeds 65535 (the CUDA grid's z extent)";
  if (p.heads_q > 65535)
    return "heads_q = " + std::to_string(p.heads_q) + " exceeds 65535 (the CUDA grid's y extent)";
  if (p.additional_kv > (int64_t{1} << 30))
    return "additional_kv = " + std::to_string(p.additional_kv) + " exceeds 2^30";
  for (int r = 0; r < p.rank; ++r)
    if (p.extent[r] > (int64_t{1} << 30))
      return "extent[" + std::to_string(r) + "] = " + std::to_string(p.extent[r]) +
             " exceeds 2^30 (coordinates are 32-bit inside the kernels)";
  return {};
}

const detail::BackendImpl& backend_impl() {
  static const detail::BackendImpl impl{Backend::kCudaFused, &unavailable, &run_forward,
                                        &run_backward};
  return impl;
}

}  // namespace fna::cuda::fused
