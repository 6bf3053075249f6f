// fna: fast neighborhood attention. The public C++ API (host-only; no CUDA or CuTe includes).
//
// Layout ("heads last", DESIGN.md section 3), rank R in 1..3:
//   q   [B, X(, Y(, Z)), Hq,  D ]      k [B, ..., Hkv, D]      v [B, ..., Hkv, Dv]
//   out [B, ..., Hq, Dv]              lse [B, ..., Hq] fp32 (natural log of the scaled logits)
//   additional_k [B, Nadd, Hkv, D]    additional_v [B, Nadd, Hkv, Dv]
// Any element strides, last dimension unit-stride. Invalid input raises fna::Error naming the
// argument, its value and the rule; nothing is written when validation fails.
#pragma once

#include <optional>

#include "fna/error.h"
#include "fna/options.h"
#include "fna/plan.h"
#include "fna/problem.h"
#include "fna/tensor.h"

namespace fna {

struct ForwardArgs {
  TensorView q, k, v;
  TensorView out;
  std::optional<TensorView> lse;           // written when present
  std::optional<TensorView> additional_k;  // required iff problem.additional_kv > 0
  std::optional<TensorView> additional_v;
};

struct BackwardArgs {
  TensorView q, k, v;
  TensorView out;   // the forward output
  TensorView lse;   // the forward log-sum-exp
  TensorView dout;  // gradient of out
  TensorView dq, dk, dv;
  std::optional<TensorView> additional_k, additional_v;
  std::optional<TensorView> d_additional_k, d_additional_v;  // required iff additional_kv > 0
};

// Validates, selects the backend and runs. Throws fna::Error.
void forward(const Problem& problem, const ForwardArgs& args, const Options& options = {});
void backward(const Problem& problem, const BackwardArgs& args, const Options& options = {});

// Checks everything forward() would check without running. Throws fna::Error.
void validate_forward(const Problem& problem, const ForwardArgs& args);
void validate_backward(const Problem& problem, const BackwardArgs& args);
// Checks the problem description alone (rank, sizes, window/stride/dilation rules).
void validate_problem(const Problem& problem);

// The backend `auto` resolves to for this problem, dtype and device.
Backend resolve_backend(const Problem& problem, DType dtype, const Device& device,
                        Backend requested = Backend::kAuto);
// Empty when `backend` can run this problem/dtype/device; otherwise the reason.
std::string backend_unavailable_reason(Backend backend, const Problem& problem, DType dtype,
                                       const Device& device);
// Backends compiled into this build.
std::vector<Backend> compiled_backends();

const char* version();

}  // namespace fna
