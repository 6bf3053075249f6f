// The unfused ops (include/fna/unfused.h): validation and dispatch to the CPU or CUDA
// implementation of the tensors' device.
#include "fna/unfused.h"

#include <string>
#include <vector>

#include "api/validate_util.h"
#include "common/problem_util.h"
#include "cpu/unfused_ops.h"
#include "fna/fna.h"
#if defined(FNA_WITH_CUDA)
#include "cuda/naive/unfused_launch.h"
#endif

namespace fna {
namespace {

using detail::check_no_overlap;
using detail::check_same;
using detail::check_view;
using detail::fail;
using detail::Named;

constexpr const char* kTokensQ = "[B, *extent, heads_q, head_dim]";
constexpr const char* kTokensK = "[B, *extent, heads_kv, head_dim]";
constexpr const char* kTokensV = "[B, *extent, heads_kv, head_dim_v]";
constexpr const char* kTokensOut = "[B, *extent, heads_q, head_dim_v]";
constexpr const char* kAttn = "[B, *extent, heads_q, prod(window)]";
constexpr const char* kRpb = "[heads_q, 2*window[0]-1, ...] (one dim per spatial axis)";

// Rules every unfused op shares; `bias_name` names the rpb argument when one is given.
void check_unfused_problem(const Problem& p, const char* bias_name) {
  validate_problem(p);
  if (p.scale)
    fail("problem.scale = " + std::to_string(*p.scale) +
         ": the unfused ops do not scale (multiply q by the scale before na_qk); leave "
         "problem.scale unset");
  if (p.additional_kv != 0)
    fail("problem.additional_kv = " + std::to_string(p.additional_kv) +
         ": the unfused ops do not support additional KV tokens (compute their logits with a "
         "dense product and concatenate them to attn); set additional_kv to 0");
  if (bias_name)
    for (int r = 0; r < p.rank; ++r)
      if (p.causal[r])
        fail(std::string("argument '") + bias_name + "' was given but problem.causal[" +
             std::to_string(r) +
             "] = true: a relative positional bias is defined for non-causal windows only "
             "(rpb with a causal axis is not supported)");
}

// attn, d_attn, rpb and d_rpb: fp32 or the storage dtype of the token tensors.
void check_weight_dtype(const char* name, const TensorView& t, DType base, const char* base_name) {
  if (t.dtype != DType::kFloat32 && t.dtype != base)
    fail(std::string("argument '") + name + "': dtype " + dtype_name(t.dtype) +
             ": must be fp32 or " + base_name + "'s dtype " + dtype_name(base),
         ErrorKind::kTypeError);
}

enum class Where { kCpu, kCuda };

// The implementation that runs: the tensors' device decides; options.backend must agree.
Where select(const char* op, const Options& o, const Device& device) {
  const Backend b = o.backend;
  const bool cpu_backend = b == Backend::kReference || b == Backend::kCpu;
  if (device.type == DeviceType::kCPU) {
    if (b != Backend::kAuto && !cpu_backend)
      fail(std::string("option 'backend' = '") + backend_name(b) + "' cannot run " + op +
               " on cpu tensors: the unfused ops run on the tensors' device (use auto, "
               "reference or cpu)",
           ErrorKind::kNotAvailable);
    return Where::kCpu;
  }
  if (cpu_backend)
    fail(std::string("option 'backend' = '") + backend_name(b) + "' cannot run " + op + " on " +
             device_name(device) +
             " tensors: the unfused ops run on the tensors' device (use auto or a cuda backend)",
         ErrorKind::kNotAvailable);
#if !defined(FNA_WITH_CUDA)
  fail(std::string(op) + " on " + device_name(device) +
           ": CUDA is not compiled into this build: build with CUDA (nvcc on PATH, "
           "FNA_ENABLE_CUDA=ON)",
       ErrorKind::kNotAvailable);
#endif
  return Where::kCuda;
}

}  // namespace

std::vector<int64_t> attn_shape(const Problem& p) {
  int64_t w = 1;
  for (int r = 0; r < p.rank; ++r) w *= p.window[r];
  return token_shape(p, p.heads_q, w);
}

std::vector<int64_t> rpb_shape(const Problem& p) {
  std::vector<int64_t> s{p.heads_q};
  for (int r = 0; r < p.rank; ++r) s.push_back(2 * p.window[r] - 1);
  return s;
}

void validate_na_qk(const Problem& p, const QkArgs& a) {
  check_unfused_problem(p, a.rpb ? "rpb" : nullptr);
  check_view("q", a.q, q_shape(p), kTokensQ);
  check_view("k", a.k, k_shape(p), kTokensK);
  check_view("attn", a.attn, attn_shape(p), kAttn);
  if (a.rpb) check_view("rpb", *a.rpb, rpb_shape(p), kRpb);
  check_same("q and k share one dtype", {{"k", &a.k}}, a.q.dtype, a.q.device, "q's");
  check_weight_dtype("attn", a.attn, a.q.dtype, "q");
  std::vector<Named> inputs{{"q", &a.q}, {"k", &a.k}};
  if (a.rpb) {
    check_weight_dtype("rpb", *a.rpb, a.q.dtype, "q");
    inputs.push_back({"rpb", &*a.rpb});
  }
  check_same("attn is on q's device", {{"attn", &a.attn}}, a.attn.dtype, a.q.device, "its own");
  if (a.rpb)
    check_same("rpb is on q's device", {{"rpb", &*a.rpb}}, a.rpb->dtype, a.q.device, "its own");
  check_no_overlap({{"attn", &a.attn}}, inputs);
}

void validate_na_qk_backward(const Problem& p, const QkBackwardArgs& a) {
  check_unfused_problem(p, a.d_rpb ? "d_rpb" : nullptr);
  check_view("q", a.q, q_shape(p), kTokensQ);
  check_view("k", a.k, k_shape(p), kTokensK);
  check_view("d_attn", a.d_attn, attn_shape(p), kAttn);
  check_view("dq", a.dq, q_shape(p), kTokensQ);
  check_view("dk", a.dk, k_shape(p), kTokensK);
  if (a.d_rpb) check_view("d_rpb", *a.d_rpb, rpb_shape(p), kRpb);
  check_same("q, k, dq and dk share one dtype", {{"k", &a.k}, {"dq", &a.dq}, {"dk", &a.dk}},
             a.q.dtype, a.q.device, "q's");
  check_weight_dtype("d_attn", a.d_attn, a.q.dtype, "q");
  check_same("d_attn is on q's device", {{"d_attn", &a.d_attn}}, a.d_attn.dtype, a.q.device,
             "its own");
  std::vector<Named> outputs{{"dq", &a.dq}, {"dk", &a.dk}};
  if (a.d_rpb) {
    check_weight_dtype("d_rpb", *a.d_rpb, a.q.dtype, "q");
    check_same("d_rpb is on q's device", {{"d_rpb", &*a.d_rpb}}, a.d_rpb->dtype, a.q.device,
               "its own");
    outputs.push_back({"d_rpb", &*a.d_rpb});
  }
  check_no_overlap(outputs, {{"q", &a.q}, {"k", &a.k}, {"d_attn", &a.d_attn}});
}

void validate_na_av(const Problem& p, const AvArgs& a) {
  check_unfused_problem(p, nullptr);
  check_view("attn", a.attn, attn_shape(p), kAttn);
  check_view("v", a.v, v_shape(p), kTokensV);
  check_view("out", a.out, out_shape(p), kTokensOut);
  check_same("v and out share one dtype", {{"out", &a.out}}, a.v.dtype, a.v.device, "v's", "v");
  check_weight_dtype("attn", a.attn, a.v.dtype, "v");
  check_same("attn is on v's device", {{"attn", &a.attn}}, a.attn.dtype, a.v.device, "its own",
             "v");
  check_no_overlap({{"out", &a.out}}, {{"attn", &a.attn}, {"v", &a.v}});
}

void validate_na_av_backward(const Problem& p, const AvBackwardArgs& a) {
  check_unfused_problem(p, nullptr);
  check_view("attn", a.attn, attn_shape(p), kAttn);
  check_view("v", a.v, v_shape(p), kTokensV);
  check_view("d_out", a.d_out, out_shape(p), kTokensOut);
  check_view("d_attn", a.d_attn, attn_shape(p), kAttn);
  check_view("dv", a.dv, v_shape(p), kTokensV);
  check_same("v, d_out and dv share one dtype", {{"d_out", &a.d_out}, {"dv", &a.dv}}, a.v.dtype,
             a.v.device, "v's", "v");
  check_weight_dtype("attn", a.attn, a.v.dtype, "v");
  check_weight_dtype("d_attn", a.d_attn, a.v.dtype, "v");
  check_same("attn and d_attn are on v's device", {{"attn", &a.attn}}, a.attn.dtype, a.v.device,
             "its own", "v");
  check_same("attn and d_attn are on v's device", {{"d_attn", &a.d_attn}}, a.d_attn.dtype,
             a.v.device, "its own", "v");
  check_no_overlap({{"d_attn", &a.d_attn}, {"dv", &a.dv}},
                   {{"attn", &a.attn}, {"v", &a.v}, {"d_out", &a.d_out}});
}

void na_qk(const Problem& p, const QkArgs& a, const Options& o) {
  validate_na_qk(p, a);
  if (select("na_qk", o, a.q.device) == Where::kCpu) return cpu::unfused_qk(p, a);
#if defined(FNA_WITH_CUDA)
  cuda::naive::unfused_qk(p, a, o);
#endif
}

void na_qk_backward(const Problem& p, const QkBackwardArgs& a, const Options& o) {
  validate_na_qk_backward(p, a);
  if (select("na_qk_backward", o, a.q.device) == Where::kCpu) return cpu::unfused_qk_backward(p, a);
#if defined(FNA_WITH_CUDA)
  cuda::naive::unfused_qk_backward(p, a, o);
#endif
}

void na_av(const Problem& p, const AvArgs& a, const Options& o) {
  validate_na_av(p, a);
  if (select("na_av", o, a.v.device) == Where::kCpu) return cpu::unfused_av(p, a);
#if defined(FNA_WITH_CUDA)
  cuda::naive::unfused_av(p, a, o);
#endif
}

void na_av_backward(const Problem& p, const AvBackwardArgs& a, const Options& o) {
  validate_na_av_backward(p, a);
  if (select("na_av_backward", o, a.v.device) == Where::kCpu) return cpu::unfused_av_backward(p, a);
#if defined(FNA_WITH_CUDA)
  cuda::naive::unfused_av_backward(p, a, o);
#endif
}

}  // namespace fna
