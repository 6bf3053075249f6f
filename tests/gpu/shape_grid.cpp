#include "shape_grid.h"

#include <algorithm>

namespace fna_test {

fna::Problem grid_problem(int rank, std::vector<int64_t> extent, std::vector<int64_t> window,
                          std::vector<int64_t> stride, std::vector<int64_t> dilation,
                          std::vector<int> causal, int64_t head_dim) {
  fna::Problem p;
  p.rank = rank;
  for (int r = 0; r < rank; ++r) {
    p.extent[r] = extent[r];
    p.window[r] = window[r];
    p.stride[r] = stride.empty() ? 1 : stride[r];
    p.dilation[r] = dilation.empty() ? 1 : dilation[r];
    p.causal[r] = causal.empty() ? false : causal[r] != 0;
  }
  p.batch = 1;
  p.heads_q = p.heads_kv = 1;
  p.head_dim = p.head_dim_v = head_dim;
  return p;
}

bool runnable_on_gpu(fna::Backend backend, const fna::Problem& p, fna::DType dtype) {
  try {
    fna::validate_problem(p);
  } catch (const fna::Error&) {
    return false;
  }
  return fna::backend_unavailable_reason(backend, p, dtype, fna::Device{fna::DeviceType::kCUDA, 0})
      .empty();
}

std::vector<fna::Problem> shape_grid() {
  auto make = [](int rank, std::vector<int64_t> e, std::vector<int64_t> w,
                 std::vector<int64_t> s = {}, std::vector<int64_t> d = {},
                 std::vector<int> c = {}) { return grid_problem(rank, e, w, s, d, c); };
  std::vector<fna::Problem> g;
  for (int64_t L : {1, 3, 13, 37, 113, 300}) {
    std::vector<int64_t> windows = {1, 2, 3, 7, 8, 33};
    if (std::find(windows.begin(), windows.end(), L) == windows.end()) windows.push_back(L);
    for (int64_t K : windows) {
      if (K > L) continue;
      g.push_back(make(1, {L}, {K}));
      if (K > 1) g.push_back(make(1, {L}, {K}, {K}));            // blocked
      if (2 * K <= L) g.push_back(make(1, {L}, {K}, {1}, {2}));  // dilation
      g.push_back(make(1, {L}, {K}, {1}, {1}, {1}));             // causal
    }
  }
  g.push_back(make(1, {513}, {37}, {5}, {3}, {0}));
  g.push_back(make(1, {700}, {127}, {1}, {2}, {1}));  // several KV tiles per box, causal
  g.push_back(make(1, {700}, {300}, {1}, {2}));       // many KV tiles, unmasked interior ones
  g.push_back(make(1, {1000}, {128}, {128}));         // blocked, tile-aligned: no masks
  for (int c0 : {0, 1})
    for (int c1 : {0, 1}) g.push_back(make(2, {13, 37}, {5, 8}, {1, 3}, {2, 1}, {c0, c1}));
  for (int c = 0; c < 8; ++c)
    g.push_back(make(3, {5, 7, 9}, {3, 4, 5}, {1, 2, 1}, {1, 1, 2}, {c & 1, (c >> 1) & 1, c >> 2}));
  g.push_back(make(2, {37, 13}, {37, 13}));                // window = extent: self attention
  g.push_back(make(2, {28, 28}, {7, 7}));                  // NAT
  g.push_back(make(2, {28, 21}, {7, 5}, {1, 1}, {4, 3}));  // DiNAT
  g.push_back(make(2, {40, 48}, {13, 13}));
  g.push_back(make(2, {33, 47}, {8, 12}, {4, 4}));
  g.push_back(make(2, {32, 40}, {17, 31}, {1, 1}, {1, 1}, {1, 0}));
  g.push_back(make(3, {9, 16, 20}, {5, 7, 9}));
  g.push_back(make(3, {8, 16, 16}, {8, 8, 8}, {8, 8, 8}));  // perfectly block-sparse
  g.push_back(make(3, {7, 12, 15}, {4, 5, 6}, {2, 3, 1}, {1, 2, 2}, {1, 0, 1}));
  g.push_back(make(3, {10, 12, 14}, {6, 8, 8}));
  fna::Problem gqa = make(2, {13, 37}, {7, 9});
  gqa.heads_q = 6;
  gqa.heads_kv = 2;
  gqa.batch = 2;
  g.push_back(gqa);
  fna::Problem mqa = make(1, {113}, {17}, {1}, {2}, {1});
  mqa.heads_q = 4;
  mqa.heads_kv = 1;
  mqa.additional_kv = 3;
  g.push_back(mqa);
  for (int64_t n : {77, 300}) {  // two / three additional tiles, the last partial
    fna::Problem add = make(3, {5, 8, 9}, {3, 5, 5});
    add.additional_kv = n;
    add.heads_q = 4;
    add.heads_kv = 2;
    add.batch = n == 300 ? 2 : 1;
    g.push_back(add);
  }
  fna::Problem many = make(2, {20, 21}, {5, 7}, {1, 2}, {3, 2});
  many.batch = 3;  // 3 x 6 groups x 3 = 54 tensor maps: cuda-hopper's device-array path
  g.push_back(many);
  fna::Problem scaled = make(2, {20, 30}, {9, 9}, {2, 1});
  scaled.scale = 1.3;
  g.push_back(scaled);
  return g;
}

}  // namespace fna_test
