// Problems that make the cuda-hopper forward split its last wave (split_fwd_sm90.h) under a
// chosen grid (FNA_HOPPER_GRID): hopper_gpu_test.cpp runs them against the oracle, and
// hopper_geometry_test.cpp checks on the host that the split engages on each.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fna/problem.h"
#include "fna/tensor.h"

namespace fna_test {

struct TailSplitCase {
  fna::Problem problem;
  fna::DType dtype;
  bool with_lse;
  // Items in the last wave: grid = items - tail (one full wave before it); 0: a grid of 4x the
  // items (the only wave is partial); kH100Grid: no override, one block per SM of an H100.
  int tail;
  std::string what;
};

inline constexpr int kH100Grid = -132;

// The grid of a case (FNA_HOPPER_GRID, except for kH100Grid: 0, no override).
inline int64_t tail_split_grid(int64_t items, int tail) {
  return tail == kH100Grid ? 0 : tail == 0 ? 4 * items : items - tail;
}

inline std::vector<TailSplitCase> tail_split_cases() {
  auto make = [](int rank, std::vector<int64_t> extent, std::vector<int64_t> window) {
    fna::Problem p;
    p.rank = rank;
    for (int r = 0; r < rank; ++r) {
      p.extent[r] = extent[r];
      p.window[r] = window[r];
    }
    return p;
  };
  std::vector<TailSplitCase> cases;
  {  // masked tiles, 1-D, several KV tiles per item
    fna::Problem p = make(1, {1000}, {300});
    p.heads_q = p.heads_kv = 2;
    p.head_dim = p.head_dim_v = 128;
    cases.push_back({p, fna::DType::kBFloat16, true, 1, "1-D masked, D 128 bf16"});
  }
  {  // 2-D, dilation, GQA, fp16, D 64
    fna::Problem p = make(2, {40, 52}, {13, 25});
    p.dilation = {2, 1, 1};
    p.heads_q = 4;
    p.heads_kv = 2;
    p.head_dim = p.head_dim_v = 64;
    cases.push_back({p, fna::DType::kFloat16, true, 2, "2-D dilated GQA, D 64 fp16"});
  }
  {  // 3-D with additional KV (a partial additional tile), lse null
    fna::Problem p = make(3, {8, 12, 20}, {5, 7, 9});
    p.heads_q = p.heads_kv = 2;
    p.head_dim = p.head_dim_v = 128;
    p.additional_kv = 70;
    cases.push_back({p, fna::DType::kBFloat16, false, 3, "3-D + 70 additional KV, no lse"});
  }
  {  // causal: the last item's chunks of one tile each, the last one past the first rows'
     // windows (lse -inf in that chunk: weight 0)
    fna::Problem p = make(1, {1024}, {400});
    p.causal = {true, false, false};
    p.heads_q = p.heads_kv = 1;
    p.head_dim = p.head_dim_v = 64;
    cases.push_back({p, fna::DType::kBFloat16, true, 1, "1-D causal, D 64 bf16"});
  }
  {  // small window, 3 additional-KV tiles: chunks made only of additional tiles
    fna::Problem p = make(1, {700}, {3});
    p.heads_q = p.heads_kv = 3;
    p.head_dim = p.head_dim_v = 128;
    p.additional_kv = 300;
    cases.push_back({p, fna::DType::kFloat16, true, 1, "window 3 + 300 additional KV, fp16"});
  }
  {  // blocked (stride = window, tile aligned): unmasked items, MQA
    fna::Problem p = make(1, {4096}, {512});
    p.stride = {512, 1, 1};
    p.heads_q = 3;
    p.heads_kv = 1;
    p.head_dim = p.head_dim_v = 128;
    cases.push_back({p, fna::DType::kBFloat16, true, 0, "1-D blocked MQA, D 128 bf16"});
  }
  {  // the H100's own grid (no override): 8 boxes x 17 heads = 136 items = 132 + 4, the last
     // ones of 4 tiles
    fna::Problem p = make(1, {1024}, {511});
    p.heads_q = p.heads_kv = 17;
    p.head_dim = p.head_dim_v = 64;
    cases.push_back({p, fna::DType::kBFloat16, true, kH100Grid, "136 items on 132 SMs, D 64"});
  }
  return cases;
}

}  // namespace fna_test
