// Validation of problems and tensor arguments. Every failure throws fna::Error whose message
// names the argument, its value and the rule. Nothing is written before validation passes.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "api/validate_util.h"
#include "common/problem_util.h"
#include "fna/fna.h"

namespace fna {
namespace detail {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

[[noreturn]] void fail(const std::string& msg, ErrorKind kind) { throw Error(kind, "fna: " + msg); }

void check_positive(const char* name, int64_t v) {
  if (v < 1) fail(std::string("problem.") + name + " = " + std::to_string(v) + ": must be >= 1");
}

// Byte span [lo, hi) touched by a view.
struct Span {
  uintptr_t lo, hi;
};
Span span_of(const TensorView& t) {
  const int64_t es = dtype_size(t.dtype);
  int64_t reach = 0;
  for (int i = 0; i < t.rank(); ++i) reach += (t.shape[i] - 1) * t.strides[i];
  const uintptr_t lo = reinterpret_cast<uintptr_t>(t.data);
  return {lo, lo + static_cast<uintptr_t>((reach + 1) * es)};
}

// One dim of two views that share its stride: k = (index in a) - (index in b) lies in [lo, hi].
struct DiffDim {
  int64_t stride, lo, hi;
};

// Whether delta = sum k_i * stride_i has a solution with lo_i <= k_i <= hi_i. Dims are sorted by
// stride, largest first; the dims after i can add between min_rest[i + 1] and max_rest[i + 1], so
// only the k_i that leave a remainder inside that range are explored (exact integer floor_div /
// ceil_div from common/neighborhood.h).
bool reachable(const std::vector<DiffDim>& dims, size_t i, int64_t delta,
               const std::vector<int64_t>& min_rest, const std::vector<int64_t>& max_rest) {
  if (i == dims.size()) return delta == 0;
  const DiffDim& d = dims[i];
  if (d.stride == 0) return reachable(dims, i + 1, delta, min_rest, max_rest);
  const int64_t lo = std::max(d.lo, ceil_div(delta - max_rest[i + 1], d.stride));
  const int64_t hi = std::min(d.hi, floor_div(delta - min_rest[i + 1], d.stride));
  for (int64_t k = lo; k <= hi; ++k)
    if (reachable(dims, i + 1, delta - k * d.stride, min_rest, max_rest)) return true;
  return false;
}

// Whether two views share a byte. Exact for views with the same dtype and strides, whatever their
// shapes (e.g. dq, dk, dv = dqkv.unbind(-3), or disjoint head ranges of one fused GQA gradient);
// otherwise conservative (byte spans intersect).
bool overlaps(const TensorView& a, const TensorView& b) {
  const Span sa = span_of(a), sb = span_of(b);
  if (sa.hi <= sb.lo || sb.hi <= sa.lo) return false;
  if (a.dtype != b.dtype || a.strides != b.strides) return true;
  const int64_t es = dtype_size(a.dtype);
  const int64_t bytes = static_cast<int64_t>(sb.lo) - static_cast<int64_t>(sa.lo);
  if (bytes % es != 0) return true;
  // a[ia] and b[ib] coincide iff sum (ia_i - ib_i) * stride_i = (b.data - a.data) / es.
  std::vector<DiffDim> dims;
  for (int i = 0; i < a.rank(); ++i) dims.push_back({a.strides[i], 1 - b.shape[i], a.shape[i] - 1});
  std::sort(dims.begin(), dims.end(), [](auto x, auto y) { return x.stride > y.stride; });
  std::vector<int64_t> min_rest(dims.size() + 1, 0), max_rest(dims.size() + 1, 0);
  for (size_t i = dims.size(); i-- > 0;) {
    min_rest[i] = min_rest[i + 1] + dims[i].lo * dims[i].stride;
    max_rest[i] = max_rest[i + 1] + dims[i].hi * dims[i].stride;
  }
  return reachable(dims, 0, bytes / es, min_rest, max_rest);
}

// Whether distinct indices of the view map to distinct elements (sufficient condition: sorted by
// stride, each stride exceeds the reach of all smaller ones).
bool self_overlapping(const TensorView& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int i = 0; i < t.rank(); ++i)
    if (t.shape[i] > 1) dims.push_back({t.strides[i], t.shape[i]});
  std::sort(dims.begin(), dims.end());
  int64_t reach = 0;
  for (auto [stride, n] : dims) {
    if (stride <= reach) return true;
    reach += (n - 1) * stride;
  }
  return false;
}

void check_view(const char* name, const TensorView& t, const std::vector<int64_t>& expected,
                const char* layout) {
  if (t.rank() != static_cast<int>(expected.size()))
    fail(std::string("argument '") + name + "': rank " + std::to_string(t.rank()) + " (shape " +
         shape_str(t.shape) + ") does not match the expected rank " +
         std::to_string(expected.size()) + " (" + name + " must be " + layout + " = " +
         shape_str(expected) + ")");
  if (t.shape != expected)
    fail(std::string("argument '") + name + "': shape " + shape_str(t.shape) +
         " does not match the expected " + shape_str(expected) + " (" + name + " must be " +
         layout + ")");
  if (t.strides.size() != t.shape.size())
    fail(std::string("argument '") + name + "': " + std::to_string(t.strides.size()) +
         " strides for a rank-" + std::to_string(t.rank()) + " shape: need one stride per dim");
  for (int i = 0; i < t.rank(); ++i)
    if (t.strides[i] < 0)
      fail(std::string("argument '") + name + "': stride " + std::to_string(t.strides[i]) +
           " of dim " + std::to_string(i) + " is negative: strides must be >= 0");
  if (t.strides.back() != 1 && t.shape.back() != 1)
    fail(std::string("argument '") + name + "': last-dim stride is " +
         std::to_string(t.strides.back()) + ": the last dimension must be unit-stride (stride 1)");
  if (t.data == nullptr) fail(std::string("argument '") + name + "': data pointer is null");
}

void check_same(const char* what, const std::vector<Named>& views, DType dtype,
                const Device& device, const char* dtype_ref, const char* device_ref) {
  for (const Named& n : views) {
    if (n.view->dtype != dtype)
      fail(std::string("argument '") + n.name + "': dtype " + dtype_name(n.view->dtype) +
               " does not match " + dtype_ref + " dtype " + dtype_name(dtype) + " (" + what + ")",
           ErrorKind::kTypeError);
    if (n.view->device != device)
      fail(std::string("argument '") + n.name + "': device " + device_name(n.view->device) +
           " does not match " + device_ref + "'s device " + device_name(device) +
           " (all tensors must be on one device)");
  }
}

void check_no_overlap(const std::vector<Named>& outputs, const std::vector<Named>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (self_overlapping(*outputs[i].view))
      fail(std::string("argument '") + outputs[i].name +
           "': its strides map several elements to one address: outputs must not overlap "
           "themselves");
    for (const Named& in : inputs)
      if (overlaps(*outputs[i].view, *in.view))
        fail(std::string("argument '") + outputs[i].name + "' overlaps input '" + in.name +
             "' in memory: outputs must not alias inputs");
    for (size_t j = 0; j < i; ++j)
      if (overlaps(*outputs[i].view, *outputs[j].view))
        fail(std::string("argument '") + outputs[i].name + "' overlaps output '" + outputs[j].name +
             "' in memory: outputs must be disjoint");
  }
}

void check_additional(const Problem& p, const std::optional<TensorView>& ak,
                      const std::optional<TensorView>& av, const char* kname, const char* vname) {
  if (p.additional_kv > 0) {
    if (!ak)
      fail(std::string("argument '") + kname + "' is missing: problem.additional_kv = " +
           std::to_string(p.additional_kv) + " needs it");
    if (!av)
      fail(std::string("argument '") + vname + "' is missing: problem.additional_kv = " +
           std::to_string(p.additional_kv) + " needs it");
  } else {
    if (ak)
      fail(std::string("argument '") + kname +
           "' was given but problem.additional_kv = 0: set additional_kv to its token count");
    if (av)
      fail(std::string("argument '") + vname +
           "' was given but problem.additional_kv = 0: set additional_kv to its token count");
  }
}

}  // namespace detail

using namespace detail;

void validate_problem(const Problem& p) {
  if (p.rank < 1 || p.rank > kMaxRank)
    fail("problem.rank = " + std::to_string(p.rank) + ": must be 1, 2 or 3");
  check_positive("batch", p.batch);
  check_positive("heads_q", p.heads_q);
  check_positive("heads_kv", p.heads_kv);
  check_positive("head_dim", p.head_dim);
  check_positive("head_dim_v", p.head_dim_v);
  if (p.heads_q % p.heads_kv != 0)
    fail("problem.heads_q = " + std::to_string(p.heads_q) + " is not a multiple of heads_kv = " +
         std::to_string(p.heads_kv) + ": GQA/MQA needs heads_q % heads_kv == 0");
  if (p.additional_kv < 0)
    fail("problem.additional_kv = " + std::to_string(p.additional_kv) + ": must be >= 0");
  if (p.scale && !std::isfinite(*p.scale))
    fail("problem.scale = " + std::to_string(*p.scale) + ": must be finite");
  for (int r = 0; r < p.rank; ++r) {
    const std::string ax = "[" + std::to_string(r) + "]";
    const int64_t L = p.extent[r], K = p.window[r], s = p.stride[r], d = p.dilation[r];
    if (L < 1) fail("problem.extent" + ax + " = " + std::to_string(L) + ": must be >= 1");
    if (K < 1) fail("problem.window" + ax + " = " + std::to_string(K) + ": must be >= 1");
    if (s < 1) fail("problem.stride" + ax + " = " + std::to_string(s) + ": must be >= 1");
    if (d < 1) fail("problem.dilation" + ax + " = " + std::to_string(d) + ": must be >= 1");
    if (s > K)
      fail("problem.stride" + ax + " = " + std::to_string(s) + " exceeds window" + ax + " = " +
           std::to_string(K) + ": stride must be <= window");
    if (K > L / d || K * d > L)
      fail("problem.window" + ax + " * dilation" + ax + " = " + std::to_string(K) + " * " +
           std::to_string(d) + " exceeds extent" + ax + " = " + std::to_string(L) +
           ": window * dilation must be <= extent");
  }
}

void validate_forward(const Problem& p, const ForwardArgs& a) {
  validate_problem(p);
  check_view("q", a.q, q_shape(p), "[B, *extent, heads_q, head_dim]");
  check_view("k", a.k, k_shape(p), "[B, *extent, heads_kv, head_dim]");
  check_view("v", a.v, v_shape(p), "[B, *extent, heads_kv, head_dim_v]");
  check_view("out", a.out, out_shape(p), "[B, *extent, heads_q, head_dim_v]");
  if (a.lse) check_view("lse", *a.lse, lse_shape(p), "[B, *extent, heads_q]");
  check_additional(p, a.additional_k, a.additional_v, "additional_k", "additional_v");
  if (a.additional_k) {
    check_view("additional_k", *a.additional_k, additional_shape(p, p.head_dim),
               "[B, additional_kv, heads_kv, head_dim]");
    check_view("additional_v", *a.additional_v, additional_shape(p, p.head_dim_v),
               "[B, additional_kv, heads_kv, head_dim_v]");
  }
  std::vector<Named> inputs{{"q", &a.q}, {"k", &a.k}, {"v", &a.v}};
  if (a.additional_k) {
    inputs.push_back({"additional_k", &*a.additional_k});
    inputs.push_back({"additional_v", &*a.additional_v});
  }
  std::vector<Named> same = inputs;
  same.push_back({"out", &a.out});
  check_same("q, k, v, out and additional KV share one dtype", same, a.q.dtype, a.q.device, "q's");
  std::vector<Named> outputs{{"out", &a.out}};
  if (a.lse) {
    if (a.lse->dtype != DType::kFloat32)
      fail(std::string("argument 'lse': dtype ") + dtype_name(a.lse->dtype) + ": lse must be fp32",
           ErrorKind::kTypeError);
    check_same("lse is on q's device", {{"lse", &*a.lse}}, DType::kFloat32, a.q.device, "fp32");
    outputs.push_back({"lse", &*a.lse});
  }
  check_no_overlap(outputs, inputs);
}

void validate_backward(const Problem& p, const BackwardArgs& a) {
  validate_problem(p);
  check_view("q", a.q, q_shape(p), "[B, *extent, heads_q, head_dim]");
  check_view("k", a.k, k_shape(p), "[B, *extent, heads_kv, head_dim]");
  check_view("v", a.v, v_shape(p), "[B, *extent, heads_kv, head_dim_v]");
  check_view("out", a.out, out_shape(p), "[B, *extent, heads_q, head_dim_v]");
  check_view("lse", a.lse, lse_shape(p), "[B, *extent, heads_q]");
  check_view("dout", a.dout, out_shape(p), "[B, *extent, heads_q, head_dim_v]");
  check_view("dq", a.dq, q_shape(p), "[B, *extent, heads_q, head_dim]");
  check_view("dk", a.dk, k_shape(p), "[B, *extent, heads_kv, head_dim]");
  check_view("dv", a.dv, v_shape(p), "[B, *extent, heads_kv, head_dim_v]");
  check_additional(p, a.additional_k, a.additional_v, "additional_k", "additional_v");
  check_additional(p, a.d_additional_k, a.d_additional_v, "d_additional_k", "d_additional_v");
  if (p.additional_kv > 0) {
    const char* kl = "[B, additional_kv, heads_kv, head_dim]";
    const char* vl = "[B, additional_kv, heads_kv, head_dim_v]";
    check_view("additional_k", *a.additional_k, additional_shape(p, p.head_dim), kl);
    check_view("additional_v", *a.additional_v, additional_shape(p, p.head_dim_v), vl);
    check_view("d_additional_k", *a.d_additional_k, additional_shape(p, p.head_dim), kl);
    check_view("d_additional_v", *a.d_additional_v, additional_shape(p, p.head_dim_v), vl);
  }
  std::vector<Named> inputs{{"q", &a.q},     {"k", &a.k},     {"v", &a.v},
                            {"out", &a.out}, {"lse", &a.lse}, {"dout", &a.dout}};
  std::vector<Named> outputs{{"dq", &a.dq}, {"dk", &a.dk}, {"dv", &a.dv}};
  if (p.additional_kv > 0) {
    inputs.push_back({"additional_k", &*a.additional_k});
    inputs.push_back({"additional_v", &*a.additional_v});
    outputs.push_back({"d_additional_k", &*a.d_additional_k});
    outputs.push_back({"d_additional_v", &*a.d_additional_v});
  }
  std::vector<Named> same;
  for (const Named& n : inputs)
    if (n.view != &a.lse) same.push_back(n);
  for (const Named& n : outputs) same.push_back(n);
  check_same("q, k, v, out, dout, gradients and additional KV share one dtype", same, a.q.dtype,
             a.q.device, "q's");
  if (a.lse.dtype != DType::kFloat32)
    fail(std::string("argument 'lse': dtype ") + dtype_name(a.lse.dtype) + ": lse must be fp32",
         ErrorKind::kTypeError);
  check_same("lse is on q's device", {{"lse", &a.lse}}, DType::kFloat32, a.q.device, "fp32");
  check_no_overlap(outputs, inputs);
}

}  // namespace fna
