// fna._C: the nanobind extension. Tensors arrive as DLPack arrays (nb::ndarray) from any producer
// (PyTorch, NumPy, JAX, ...), become fna::TensorView (pointer, dtype, device, shape and strides in
// elements) and go to the C++ API. No framework library is linked. Outputs are allocated by the
// Python side (on the input's device, by the input's framework) and passed in.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dlpack_view.h"
#include "fna/fna.h"

namespace nb = nanobind;

namespace {

using fna_py::fail;
using fna_py::InArray;
using fna_py::OutArray;
using fna_py::to_view;

// The problem a call describes: sizes from the tensors (layout [B, *extent, heads, dim]), the
// window parameters from the caller. The C++ validation then checks every tensor against it.
fna::Problem make_problem(const fna::TensorView& q, const fna::TensorView& k,
                          const fna::TensorView& v, const std::optional<fna::TensorView>& ak,
                          const std::vector<int64_t>& window, const std::vector<int64_t>& stride,
                          const std::vector<int64_t>& dilation, const std::vector<bool>& causal,
                          std::optional<double> scale) {
  const int rank = q.rank() - 3;
  if (rank < 1 || rank > fna::kMaxRank)
    fail(fna::ErrorKind::kInvalidArgument,
         "argument 'q': rank " + std::to_string(q.rank()) +
             ": q must be [B, *extent, heads, head_dim] with 1 to 3 spatial axes (rank 4 to 6)");
  const struct {
    const char* name;
    size_t size;
  } per_axis[] = {{"kernel_size", window.size()},
                  {"stride", stride.size()},
                  {"dilation", dilation.size()},
                  {"is_causal", causal.size()}};
  for (const auto& a : per_axis)
    if (a.size != static_cast<size_t>(rank))
      fail(fna::ErrorKind::kInvalidArgument,
           std::string("argument '") + a.name + "': " + std::to_string(a.size) +
               " values for a rank-" + std::to_string(rank) + " problem: need one per axis");
  if (k.rank() != q.rank() || v.rank() != q.rank())
    fail(fna::ErrorKind::kInvalidArgument,
         "arguments 'k' / 'v': ranks " + std::to_string(k.rank()) + " / " +
             std::to_string(v.rank()) + " differ from q's rank " + std::to_string(q.rank()) +
             ": q, k and v must all be [B, *extent, heads, dim]");
  fna::Problem p;
  p.rank = rank;
  p.batch = q.shape[0];
  for (int r = 0; r < rank; ++r) {
    p.extent[r] = q.shape[1 + r];
    p.window[r] = window[r];
    p.stride[r] = stride[r];
    p.dilation[r] = dilation[r];
    p.causal[r] = causal[r];
  }
  p.heads_q = q.shape[rank + 1];
  p.head_dim = q.shape[rank + 2];
  p.heads_kv = k.shape[rank + 1];
  p.head_dim_v = v.shape[rank + 2];
  p.scale = scale;
  if (ak) {
    if (ak->rank() != 4)
      fail(fna::ErrorKind::kInvalidArgument,
           "argument 'additional_k': rank " + std::to_string(ak->rank()) +
               ": additional keys must be [B, n_additional, heads_kv, head_dim] (rank 4)");
    p.additional_kv = ak->shape[1];
  }
  return p;
}

// fna.set_autotune (fna::Options::autotune on every call): process-wide, as
// torch.backends.cudnn.benchmark is, so the torch ops' schemas stay as they are and compiled
// graphs need no retrace when it changes.
std::atomic<bool> g_autotune{false};

fna::Options make_options(const std::string& backend, uintptr_t stream, bool deterministic) {
  fna::Options o;
  o.backend = fna::parse_backend(backend);
  o.stream = reinterpret_cast<void*>(stream);
  o.deterministic = deterministic;
  o.autotune = g_autotune.load();
  return o;
}

void forward(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
             const std::optional<OutArray>& lse, const std::optional<InArray>& additional_k,
             const std::optional<InArray>& additional_v, const std::vector<int64_t>& kernel_size,
             const std::vector<int64_t>& stride, const std::vector<int64_t>& dilation,
             const std::vector<bool>& is_causal, std::optional<double> scale,
             const std::string& backend, uintptr_t stream) {
  fna::ForwardArgs a;
  a.q = to_view("q", q);
  a.k = to_view("k", k);
  a.v = to_view("v", v);
  a.out = to_view("out", out);
  a.lse = to_view("lse", lse);
  a.additional_k = to_view("additional_k", additional_k);
  a.additional_v = to_view("additional_v", additional_v);
  const fna::Problem p =
      make_problem(a.q, a.k, a.v, a.additional_k, kernel_size, stride, dilation, is_causal, scale);
  const fna::Options o = make_options(backend, stream, false);
  nb::gil_scoped_release release;
  fna::forward(p, a, o);
}

void backward(const InArray& q, const InArray& k, const InArray& v, const InArray& out,
              const InArray& lse, const InArray& dout, const OutArray& dq, const OutArray& dk,
              const OutArray& dv, const std::optional<InArray>& additional_k,
              const std::optional<InArray>& additional_v,
              const std::optional<OutArray>& d_additional_k,
              const std::optional<OutArray>& d_additional_v,
              const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& stride,
              const std::vector<int64_t>& dilation, const std::vector<bool>& is_causal,
              std::optional<double> scale, const std::string& backend, uintptr_t stream,
              bool deterministic) {
  fna::BackwardArgs a;
  a.q = to_view("q", q);
  a.k = to_view("k", k);
  a.v = to_view("v", v);
  a.out = to_view("out", out);
  a.lse = to_view("lse", lse);
  a.dout = to_view("dout", dout);
  a.dq = to_view("dq", dq);
  a.dk = to_view("dk", dk);
  a.dv = to_view("dv", dv);
  a.additional_k = to_view("additional_k", additional_k);
  a.additional_v = to_view("additional_v", additional_v);
  a.d_additional_k = to_view("d_additional_k", d_additional_k);
  a.d_additional_v = to_view("d_additional_v", d_additional_v);
  const fna::Problem p =
      make_problem(a.q, a.k, a.v, a.additional_k, kernel_size, stride, dilation, is_causal, scale);
  const fna::Options o = make_options(backend, stream, deterministic);
  nb::gil_scoped_release release;
  fna::backward(p, a, o);
}

// Empty when `backend` can run a problem of this rank and head dim in `dtype` on the device;
// otherwise the reason. A small problem stands in for the sizes that do not matter here.
std::string backend_unavailable_reason(const std::string& backend, const std::string& dtype,
                                       const std::string& device_type, int device_index, int rank,
                                       int64_t head_dim) {
  fna::Problem p;
  p.rank = rank;
  p.head_dim = p.head_dim_v = head_dim;
  fna::Device device;
  if (device_type == "cuda")
    device = {fna::DeviceType::kCUDA, device_index};
  else if (device_type != "cpu")
    fail(fna::ErrorKind::kInvalidArgument,
         "argument 'device': '" + device_type + "' is not supported: use 'cpu' or 'cuda'");
  return fna::backend_unavailable_reason(fna::parse_backend(backend), p, fna::parse_dtype(dtype),
                                         device);
}

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names;
  for (fna::Backend b : fna::compiled_backends()) names.emplace_back(fna::backend_name(b));
  return names;
}

std::vector<std::string> all_backends() {
  std::vector<std::string> names;
  for (fna::Backend b : fna::all_backends()) names.emplace_back(fna::backend_name(b));
  return names;
}

}  // namespace

namespace fna_py {
void register_unfused(nb::module_& m);  // unfused.cpp
}  // namespace fna_py

NB_MODULE(_C, m) {
  m.doc() = "fna native extension: neighborhood attention over DLPack arrays";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const fna::Error& e) {
      // Bad values -> ValueError, bad dtypes -> TypeError, failures while running (e.g. a CUDA
      // error) -> RuntimeError. The message is the C++ one, unchanged.
      PyObject* type = PyExc_ValueError;
      if (e.kind() == fna::ErrorKind::kTypeError) type = PyExc_TypeError;
      if (e.kind() == fna::ErrorKind::kRuntime) type = PyExc_RuntimeError;
      PyErr_SetString(type, e.what());
    }
  });

  m.def("forward", &forward, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("lse").none(), nb::arg("additional_k").none(), nb::arg("additional_v").none(),
        nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"),
        nb::arg("scale").none(), nb::arg("backend") = "auto", nb::arg("stream") = 0,
        "Writes out (and lse when given). Shapes, strides (in elements), dtype and device come "
        "from the arrays; stream is a cudaStream_t as an integer (0: the legacy default).");
  m.def("backward", &backward, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("lse"), nb::arg("dout"), nb::arg("dq"), nb::arg("dk"), nb::arg("dv"),
        nb::arg("additional_k").none(), nb::arg("additional_v").none(),
        nb::arg("d_additional_k").none(), nb::arg("d_additional_v").none(), nb::arg("kernel_size"),
        nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"), nb::arg("scale").none(),
        nb::arg("backend") = "auto", nb::arg("stream") = 0, nb::arg("deterministic") = false,
        "Writes dq, dk, dv (and the additional KV gradients).");
  m.def("backend_unavailable_reason", &backend_unavailable_reason, nb::arg("backend"),
        nb::arg("dtype"), nb::arg("device_type"), nb::arg("device_index"), nb::arg("rank"),
        nb::arg("head_dim"));
  fna_py::register_unfused(m);
  m.def("set_autotune", [](bool enabled) { g_autotune.store(enabled); }, nb::arg("enabled"));
  m.def("autotune_enabled", [] { return g_autotune.load(); });
  m.def("compiled_backends", &compiled_backends);
  m.def("all_backends", &all_backends);
  m.def("version", [] { return std::string(fna::version()); });
}
