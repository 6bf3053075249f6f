// Options: which backend runs and how.
#pragma once

#include <array>
#include <optional>
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

// Tile shapes of a fused kernel, per spatial axis (the first `rank` entries; the others stay 1),
// in tokens of one dilation group: a Q tile is a box of q[r] queries per axis, a KV tile a box of
// kv[r] keys. Each fused backend has its own rules (cuda-fused: powers of two, prod(q) and
// prod(kv) equal its Q-tile and KV-tile rows for the dtype and head dim: fna::plan reports them);
// a shape the backend cannot run raises fna::Error naming the rule.
struct TileBoxes {
  std::array<int, 3> q{1, 1, 1};
  std::array<int, 3> kv{1, 1, 1};
};

struct Options {
  Backend backend = Backend::kAuto;
  // cudaStream_t for CUDA backends (nullptr = the legacy default stream). Ignored on CPU.
  void* stream = nullptr;
  // Bitwise-reproducible results run to run (backward without atomics on GPU).
  bool deterministic = false;
  // Forward tile shapes instead of the planner's choice (fna::plan prints both). Honoured by the
  // fused forward kernels; the other backends and the backward ignore it.
  std::optional<TileBoxes> tiles;
  // cuda-hopper forward: on the first call of a problem (shape, dtype, device), time the planner's
  // pick and the cost model's next-best tile shapes on these tensors and keep the fastest for
  // later calls, as cuDNN's benchmark mode does. That first call runs several forward passes
  // (all write `out`; the last one is the kept shape's). Ignored when `tiles` is given and under
  // CUDA graph capture (the planner's pick runs); the other backends ignore it.
  bool autotune = false;
};

}  // namespace fna
