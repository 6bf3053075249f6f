// Bindings of the unfused ops (include/fna/unfused.h): na_qk / na_av and their backward over
// DLPack arrays. Outputs are allocated by the Python side (python/fna/unfused.py) and passed in.
#include "fna/unfused.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dlpack_view.h"

namespace fna_py {
namespace {

// The problem of an unfused call: batch, extents and heads from `tokens` ([B, *extent, H, dim]),
// the window parameters from the caller. `kv` gives heads_kv; `dim` / `dim_v` the head dims.
fna::Problem unfused_problem(const char* name, const fna::TensorView& tokens, int64_t heads_kv,
                             int64_t dim, int64_t dim_v, const std::vector<int64_t>& window,
                             const std::vector<int64_t>& stride,
                             const std::vector<int64_t>& dilation,
                             const std::vector<bool>& causal) {
  const int rank = tokens.rank() - 3;
  if (rank < 1 || rank > fna::kMaxRank)
    fail(fna::ErrorKind::kInvalidArgument,
         std::string("argument '") + name + "': rank " + std::to_string(tokens.rank()) + ": " +
             name + " must be [B, *extent, heads, dim] with 1 to 3 spatial axes (rank 4 to 6)");
  for (size_t n : {window.size(), stride.size(), dilation.size(), causal.size()})
    if (n != static_cast<size_t>(rank))
      fail(fna::ErrorKind::kInvalidArgument,
           "arguments 'kernel_size' / 'stride' / 'dilation' / 'is_causal': need one value per "
           "spatial axis (" +
               std::to_string(rank) + ")");
  fna::Problem p;
  p.rank = rank;
  p.batch = tokens.shape[0];
  for (int r = 0; r < rank; ++r) {
    p.extent[r] = tokens.shape[1 + r];
    p.window[r] = window[r];
    p.stride[r] = stride[r];
    p.dilation[r] = dilation[r];
    p.causal[r] = causal[r];
  }
  p.heads_q = tokens.shape[rank + 1];
  p.heads_kv = heads_kv;
  p.head_dim = dim;
  p.head_dim_v = dim_v;
  return p;
}

// heads (dim -2) of a token tensor whose rank matches `like`; the C++ validation reports shapes.
int64_t heads_of(const fna::TensorView& t, const fna::TensorView& like) {
  return t.rank() == like.rank() && t.rank() >= 2 ? t.shape[t.rank() - 2] : 1;
}
int64_t dim_of(const fna::TensorView& t) { return t.rank() ? t.shape.back() : 1; }

fna::Options options(uintptr_t stream) {
  fna::Options o;
  o.stream = reinterpret_cast<void*>(stream);
  return o;
}

void qk(const InArray& q, const InArray& k, const OutArray& attn, const std::optional<InArray>& rpb,
        const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
        const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal,
        uintptr_t stream) {
  fna::QkArgs a{to_view("q", q), to_view("k", k), to_view("attn", attn), to_view("rpb", rpb)};
  const fna::Problem p = unfused_problem("q", a.q, heads_of(a.k, a.q), dim_of(a.q), dim_of(a.q),
                                         kernel_size, stride, dilation, is_causal);
  nb::gil_scoped_release release;
  fna::na_qk(p, a, options(stream));
}

void qk_backward(const InArray& q, const InArray& k, const InArray& d_attn, const OutArray& dq,
                 const OutArray& dk, const std::optional<OutArray>& d_rpb,
                 const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
                 const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal,
                 uintptr_t stream) {
  fna::QkBackwardArgs a{to_view("q", q),   to_view("k", k),   to_view("d_attn", d_attn),
                        to_view("dq", dq), to_view("dk", dk), to_view("d_rpb", d_rpb)};
  const fna::Problem p = unfused_problem("q", a.q, heads_of(a.k, a.q), dim_of(a.q), dim_of(a.q),
                                         kernel_size, stride, dilation, is_causal);
  nb::gil_scoped_release release;
  fna::na_qk_backward(p, a, options(stream));
}

void av(const InArray& attn, const InArray& v, const OutArray& out,
        const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
        const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal,
        uintptr_t stream) {
  fna::AvArgs a{to_view("attn", attn), to_view("v", v), to_view("out", out)};
  const fna::Problem p = unfused_problem("attn", a.attn, heads_of(a.v, a.attn), dim_of(a.v),
                                         dim_of(a.v), kernel_size, stride, dilation, is_causal);
  nb::gil_scoped_release release;
  fna::na_av(p, a, options(stream));
}

void av_backward(const InArray& attn, const InArray& v, const InArray& d_out,
                 const OutArray& d_attn, const OutArray& dv,
                 const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
                 const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal,
                 uintptr_t stream) {
  fna::AvBackwardArgs a{to_view("attn", attn), to_view("v", v), to_view("d_out", d_out),
                        to_view("d_attn", d_attn), to_view("dv", dv)};
  const fna::Problem p = unfused_problem("attn", a.attn, heads_of(a.v, a.attn), dim_of(a.v),
                                         dim_of(a.v), kernel_size, stride, dilation, is_causal);
  nb::gil_scoped_release release;
  fna::na_av_backward(p, a, options(stream));
}

}  // namespace

void register_unfused(nb::module_& m) {
  m.def("na_qk", &qk, nb::arg("q"), nb::arg("k"), nb::arg("attn"), nb::arg("rpb").none(),
        nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"),
        nb::arg("stream") = 0,
        "Writes attn [B, *extent, heads, prod(kernel_size)] = q . k (+ rpb).");
  m.def("na_qk_backward", &qk_backward, nb::arg("q"), nb::arg("k"), nb::arg("d_attn"),
        nb::arg("dq"), nb::arg("dk"), nb::arg("d_rpb").none(), nb::arg("kernel_size"),
        nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"), nb::arg("stream") = 0,
        "Writes dq, dk (and d_rpb when given).");
  m.def("na_av", &av, nb::arg("attn"), nb::arg("v"), nb::arg("out"), nb::arg("kernel_size"),
        nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"), nb::arg("stream") = 0,
        "Writes out [B, *extent, heads, head_dim_v] = sum over window slots of attn * v.");
  m.def("na_av_backward", &av_backward, nb::arg("attn"), nb::arg("v"), nb::arg("d_out"),
        nb::arg("d_attn"), nb::arg("dv"), nb::arg("kernel_size"), nb::arg("stride"),
        nb::arg("dilation"), nb::arg("is_causal"), nb::arg("stream") = 0, "Writes d_attn and dv.");
}

}  // namespace fna_py
