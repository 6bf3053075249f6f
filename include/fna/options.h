// Options: which backend runs and how.
#pragma once

#include <string>
#include <vector>

namespace fna {

enum class Backend {
  kAuto,        // the fastest backend usable for the problem and device
  kReference,   // CPU, direct, fp64 accumulation: the oracle
  kCpu,         // CPU, fused and tiled, OpenMP, fp32 accumulation
  kCudaNaive,   // CUDA, unfused per-element kernels
  kCudaGemm,    // CUDA, unfused batched GEMM on tensor cores
  kCudaFused,   // CUDA sm_80+, fused (mma.sync)
  kCudaHopper,  // CUDA sm_90a, fused (TMA + wgmma)
};

// "auto", "reference", "cpu", "cuda-naive", "cuda-gemm", "cuda-fused", "cuda-hopper".
const char* backend_name(Backend backend);
// Inverse of backend_name; throws fna::Error naming the valid choices.
Backend parse_backend(const std::string& name);
// Every backend except kAuto, in a stable order.
std::vector<Backend> all_backends();

struct Options {
  Backend backend = Backend::kAuto;
  // cudaStream_t for CUDA backends (nullptr = the legacy default stream). Ignored on CPU.
  void* stream = nullptr;
  // Bitwise-reproducible results run to run (backward without atomics on GPU).
  bool deterministic = false;
};

}  // namespace fna
