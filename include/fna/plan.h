// The tile plan of a fused backend for one problem: what fna-bench --plan prints. Host-only.
#pragma once

#include <string>

#include "fna/options.h"
#include "fna/problem.h"
#include "fna/tensor.h"

namespace fna {

struct Plan {
  Backend backend = Backend::kCudaFused;  // the kernel family the plan is for
  bool overridden = false;                // tiles came from Options::tiles
  TileBoxes tiles;                        // Q and KV box shapes
  int q_tile_rows = 0, kv_tile_rows = 0;  // rows of a Q / KV tile (the kernel's block shape)
  double q_tiles = 0;                     // thread blocks (Q tiles x heads x batch)
  double computed_pairs = 0;              // (query, key) scores the kernel computes, spatial
  double useful_fraction = 0;             // attended / computed pairs (spatial part)
  double masked_fraction = 0;             // computed pairs in tiles that need a mask
  double predicted_ms = 0;                // forward time of the cost model (H100, 16-bit)
  std::string model;                      // what the prediction is calibrated on
  // cuda-hopper: how the forward splits its last, partial wave of work items over KV chunks on an
  // H100's 132 SMs, e.g. "last 4 items x 16 KV chunks on 132 SMs"; empty when it does not.
  std::string tail;
};

// The forward plan of `options.backend` (auto: cuda-fused) for a problem and dtype; honours
// options.tiles. Pure host arithmetic: works without a GPU and in CPU-only builds. Throws
// fna::Error for an invalid problem or tile override, or a backend without a tile plan.
Plan plan(const Problem& problem, DType dtype, const Options& options = {});

}  // namespace fna
