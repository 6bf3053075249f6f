// Error checking for CUDA runtime calls: every call goes through FNA_CUDA_CHECK.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "fna/error.h"

#define FNA_CUDA_CHECK(expr)                                                                   \
  do {                                                                                         \
    const cudaError_t fna_err_ = (expr);                                                       \
    if (fna_err_ != cudaSuccess)                                                               \
      throw ::fna::Error(::fna::ErrorKind::kRuntime,                                           \
                         std::string("fna: CUDA error ") + cudaGetErrorName(fna_err_) + " (" + \
                             cudaGetErrorString(fna_err_) + ") at " __FILE__ ":" +             \
                             std::to_string(__LINE__) + " in " #expr);                         \
  } while (0)
