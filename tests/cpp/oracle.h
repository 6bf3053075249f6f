// The test oracle: neighborhood attention as dense float64 attention under a brute-force mask.
//
// Written from the text of DESIGN.md section 2 only. It deliberately does NOT include
// src/common/neighborhood.h (or any other fna internal header): the mask here is a predicate
// evaluated for every (query, key) pair, so a mistake in the library's one definition cannot hide
// behind the same mistake here. Only the public problem description is shared.
#pragma once

#include <cstdint>
#include <vector>

#include "fna/problem.h"

namespace fna_test {

// Whether, on one axis of extent L with window K, stride s, dilation d and causal flag c, the query
// at coordinate x attends the key at coordinate y.
bool oracle_axis_attends(int64_t L, int64_t K, int64_t s, int64_t d, bool c, int64_t x, int64_t y);

// Whether query token tq attends key token tk (row-major token indices over the problem's extents).
bool oracle_attends(const fna::Problem& p, int64_t tq, int64_t tk);

// The dense spatial mask, row-major [query token][key token], 1 = attended.
std::vector<uint8_t> oracle_mask(const fna::Problem& p);

// Inputs in canonical contiguous float64 layout ("heads last", tokens flattened row-major):
// q [B, T, Hq, D], k [B, T, Hkv, D], v [B, T, Hkv, Dv], ak [B, N, Hkv, D], av [B, N, Hkv, Dv].
struct DenseInputs {
  std::vector<double> q, k, v, ak, av;
};

struct DenseForward {
  std::vector<double> out;  // [B, T, Hq, Dv]
  std::vector<double> lse;  // [B, T, Hq], natural log of the sum of exp(scaled logits)
};

struct DenseGrads {
  std::vector<double> dq, dk, dv, dak, dav;  // shapes as the inputs
};

// `mask` overrides the neighborhood mask (e.g. all ones for plain self attention); empty = use
// oracle_mask(p). Additional KV tokens are always attended.
DenseForward oracle_forward(const fna::Problem& p, const DenseInputs& in,
                            const std::vector<uint8_t>& mask = {});

// Gradients of sum(out * dout) with respect to every input. Recomputes the probabilities.
DenseGrads oracle_backward(const fna::Problem& p, const DenseInputs& in,
                           const std::vector<double>& dout, const std::vector<uint8_t>& mask = {});

}  // namespace fna_test
