// The shape grid of DESIGN.md section 7 that every GPU backend's tests sweep, and the helpers to
// build and filter its problems.
#pragma once

#include <cstdint>
#include <vector>

#include "fna/fna.h"

namespace fna_test {

// A problem with `rank` axes; empty stride / dilation / causal mean 1 / 1 / false on every axis.
// Batch 1, one head, D = Dv = head_dim (the sweeps overwrite D per head dim they run).
fna::Problem grid_problem(int rank, std::vector<int64_t> extent, std::vector<int64_t> window,
                          std::vector<int64_t> stride = {}, std::vector<int64_t> dilation = {},
                          std::vector<int> causal = {}, int64_t head_dim = 64);

// Valid for the library and runnable by `backend` on CUDA device 0 in `dtype`.
bool runnable_on_gpu(fna::Backend backend, const fna::Problem& p, fna::DType dtype);

// Odd extents, odd and even windows, window = extent, stride, dilation, every causal combination,
// GQA/MQA, additional KV (1-3 tiles, the last partial), NAT/DiNAT sizes, a custom scale; plus
// problems large enough for several 128-row Q boxes, unmasked interior KV tiles, tile-aligned
// blocked windows and partial boxes at group ends, and one with 54 TMA tensor maps.
std::vector<fna::Problem> shape_grid();

}  // namespace fna_test
