#include "device_case.h"

#include <exception>
#include <string>

#include "cuda_mirror.h"

namespace fna_gpu_test {

double forward_tolerance(fna::DType dtype, fna::Backend backend) {
  const bool tensor_cores = backend == fna::Backend::kCudaFused ||
                            backend == fna::Backend::kCudaHopper ||
                            backend == fna::Backend::kCudaGemm;
  if (dtype == fna::DType::kFloat32 && tensor_cores) return 2e-3;
  return fna_test::forward_tolerance(dtype);
}

DeviceCaseResult run_device_case(const fna_test::CaseSpec& spec, fna::Backend backend) {
  try {
    fna_test::CudaMirror dev;
    return fna_test::run_case(spec, backend, dev, forward_tolerance(spec.dtype, backend));
  } catch (const std::exception& e) {  // an upload or download failed
    DeviceCaseResult r;
    r.failure = std::string("CUDA: ") + e.what();
    return r;
  }
}

}  // namespace fna_gpu_test
