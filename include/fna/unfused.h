// fna unfused ops: neighborhood attention with materialized attention weights, as NAT/DiNAT use
// them (logits -> user softmax / dropout / anything -> weighted sum), with an optional relative
// positional bias (RPB). Host-only header (no CUDA includes). docs/unfused.md describes them.
//
// Layout (rank R in 1..3, W = prod(window[:R]) window slots per query):
//   q    [B, *extent, Hq, D]       k [B, *extent, Hkv, D]      v [B, *extent, Hkv, Dv]
//   attn [B, *extent, Hq, W]       out [B, *extent, Hq, Dv]
//   rpb  [Hq, 2*K0-1(, 2*K1-1(, 2*K2-1))]
// Slot w of a query enumerates its per-axis window offsets row-major (the last axis fastest),
// each from the window start of src/common/neighborhood.h (DESIGN.md section 2). Slots past a
// causal window's end hold -inf in the logits; na_av and the backward ignore them.
//
// na_qk:  attn[b, x, h, w] = q[b, x, h] . k[b, key(x, w), h / (Hq / Hkv)]
//                            + rpb[h, (j_0 - i_0) + K0 - 1, ...]
//         where i_r / j_r are the query's / key's indices inside their dilation group on axis r.
//         No scaling: multiply q by the softmax scale first (as NATTEN does).
// na_av:  out[b, x, h] = sum_w attn[b, x, h, w] * v[b, key(x, w), h / (Hq / Hkv)]
//
// Rules (each raises fna::Error naming the argument, its value and the rule; nothing is written):
// - problem: every rule of validate_problem; problem.scale must be unset (no scaling inside);
//   problem.additional_kv must be 0 (additional KV tokens are not part of the unfused ops: concat
//   their logits yourself); rpb / d_rpb with any causal axis is an error.
// - dtypes: q, k, v, out, dq, dk, dv, d_out share one dtype (fp32, fp16 or bf16). attn, d_attn,
//   rpb and d_rpb are each fp32 or that same dtype: fp32 keeps the weights exact before the
//   softmax (recommended); the storage dtype matches what NATTEN returns. Accumulation is fp32.
// - devices: all tensors on one device; the op runs there (CPU: OpenMP; CUDA: per-element kernels
//   of the cuda-naive family on options.stream). options.backend must be kAuto or a backend of
//   that device type.
// - every tensor strided with a unit-stride last dimension; outputs disjoint from each other and
//   from the inputs.
// Everything is deterministic (the gradients of k, v and rpb are gathered, not atomically added).
#pragma once

#include <optional>
#include <vector>

#include "fna/error.h"
#include "fna/options.h"
#include "fna/problem.h"
#include "fna/tensor.h"

namespace fna {

struct QkArgs {
  TensorView q, k;
  TensorView attn;                // output logits
  std::optional<TensorView> rpb;  // optional relative positional bias (non-causal only)
};

struct QkBackwardArgs {
  TensorView q, k;
  TensorView d_attn;                // gradient of attn (slots past a causal end are ignored)
  TensorView dq, dk;                // outputs
  std::optional<TensorView> d_rpb;  // output, when the forward used an rpb
};

struct AvArgs {
  TensorView attn, v;
  TensorView out;  // output
};

struct AvBackwardArgs {
  TensorView attn, v;
  TensorView d_out;       // gradient of out
  TensorView d_attn, dv;  // outputs (d_attn is 0 in slots past a causal end)
};

void na_qk(const Problem& problem, const QkArgs& args, const Options& options = {});
void na_qk_backward(const Problem& problem, const QkBackwardArgs& args,
                    const Options& options = {});
void na_av(const Problem& problem, const AvArgs& args, const Options& options = {});
void na_av_backward(const Problem& problem, const AvBackwardArgs& args,
                    const Options& options = {});

// Check everything the op would check, without running. Throw fna::Error.
void validate_na_qk(const Problem& problem, const QkArgs& args);
void validate_na_qk_backward(const Problem& problem, const QkBackwardArgs& args);
void validate_na_av(const Problem& problem, const AvArgs& args);
void validate_na_av_backward(const Problem& problem, const AvBackwardArgs& args);

// Expected shapes: attn [B, *extent, Hq, prod(window)], rpb [Hq, 2*K0-1, ...].
std::vector<int64_t> attn_shape(const Problem& problem);
std::vector<int64_t> rpb_shape(const Problem& problem);

}  // namespace fna
