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
  // cuda-hopper (a persistent kernel: each SM runs a fixed share of the work items) only: the
  // grid the model assumes (the calibration GPU's SMs), the most loaded SM's load / the mean
  // SM load (the prediction is the most loaded SM's time), and that SM's (query, key) pairs
  // in unmasked and masked tiles and its work items (bench/plan_sweep.py fits the model to them).
  int sms = 0;
  double imbalance = 1;
  double critical_unmasked = 0, critical_masked = 0, critical_items = 0;
};

// The forward plan of `options.backend` (auto: cuda-fused) for a problem and dtype; honours
// options.tiles. Pure host arithmetic: works without a GPU and in CPU-only builds. Throws
// fna::Error for an invalid problem or tile override, or a backend without a tile plan.
Plan plan(const Problem& problem, DType dtype, const Options& options = {});

}  // namespace fna
