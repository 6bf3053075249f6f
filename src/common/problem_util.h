// Host helpers that turn a Problem into the neighborhood definition and tensor shapes.
#pragma once

#include <vector>

#include "common/neighborhood.h"
#include "fna/problem.h"

namespace fna {

inline Neighborhood make_neighborhood(const Problem& p) {
  Neighborhood n;
  n.rank = p.rank;
  for (int r = 0; r < 3; ++r) {
    const bool used = r < p.rank;
    n.axis[r] = Axis{used ? p.extent[r] : 1, used ? p.window[r] : 1, used ? p.stride[r] : 1,
                     used ? p.dilation[r] : 1, used ? p.causal[r] : false};
  }
  return n;
}

// Expected shapes (DESIGN.md section 3).
inline std::vector<int64_t> token_shape(const Problem& p, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{p.batch};
  for (int r = 0; r < p.rank; ++r) s.push_back(p.extent[r]);
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}
inline std::vector<int64_t> q_shape(const Problem& p) {
  return token_shape(p, p.heads_q, p.head_dim);
}
inline std::vector<int64_t> k_shape(const Problem& p) {
  return token_shape(p, p.heads_kv, p.head_dim);
}
inline std::vector<int64_t> v_shape(const Problem& p) {
  return token_shape(p, p.heads_kv, p.head_dim_v);
}
inline std::vector<int64_t> out_shape(const Problem& p) {
  return token_shape(p, p.heads_q, p.head_dim_v);
}
inline std::vector<int64_t> lse_shape(const Problem& p) { return token_shape(p, p.heads_q, 0); }
inline std::vector<int64_t> additional_shape(const Problem& p, int64_t dim) {
  return {p.batch, p.additional_kv, p.heads_kv, dim};
}

}  // namespace fna
