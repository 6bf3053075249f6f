// The problem description: one neighborhood-attention call, independent of memory.
// Host-only header. The semantics are DESIGN.md section 2; the definition lives in
// src/common/neighborhood.h.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace fna {

inline constexpr int kMaxRank = 3;

struct Problem {
  int rank = 1;             // spatial rank, 1..3
  int64_t batch = 1;        // B
  int64_t heads_q = 1;      // Hq
  int64_t heads_kv = 1;     // Hkv; Hq must be a multiple (GQA/MQA)
  int64_t head_dim = 64;    // D (q, k)
  int64_t head_dim_v = 64;  // Dv (v, out)
  // Per spatial axis (only the first `rank` entries are used).
  std::array<int64_t, kMaxRank> extent{1, 1, 1};    // L
  std::array<int64_t, kMaxRank> window{1, 1, 1};    // K
  std::array<int64_t, kMaxRank> stride{1, 1, 1};    // s
  std::array<int64_t, kMaxRank> dilation{1, 1, 1};  // d
  std::array<bool, kMaxRank> causal{false, false, false};
  std::optional<double> scale;  // softmax scale; default head_dim ** -0.5
  int64_t additional_kv = 0;    // Nadd tokens attended by every query, unmasked

  double effective_scale() const;
  int64_t tokens() const;  // prod(extent[:rank])
  std::string to_string() const;

  // Convenience constructor for the common case (same head count and dims for q/k/v).
  static Problem make(std::initializer_list<int64_t> extent, std::initializer_list<int64_t> window,
                      int64_t batch, int64_t heads, int64_t head_dim);
};

// Effective FLOPs (DESIGN.md section 6): attended pairs only, including additional KV.
// forward = 2 * B * Hq * pairs * (D + Dv); backward = 2.5 x forward.
double forward_flops(const Problem& p);
double backward_flops(const Problem& p);
// Attended (query, key) pairs per (batch, head), spatial part only (no additional KV).
double attended_pairs(const Problem& p);
// Fraction of the dense (all tokens + additional KV) attention that is attended.
double density(const Problem& p);

}  // namespace fna
