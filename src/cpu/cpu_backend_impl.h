// The BackendImpl of a CPU backend family (reference, cpu): CPU tensors only, every storage type
// through dispatch_dtype to the family's typed entry points.
#pragma once

#include <string>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cpu/strided.h"

namespace fna::cpu {

inline std::string unavailable_off_cpu(const Problem&, DType, const Device& device) {
  if (device.type != DeviceType::kCPU)
    return "it runs on CPU tensors only (got " + device_name(device) + ")";
  return "";
}

// A family's BackendImpl from two captureless generic lambdas, fwd(T{}, problem, ForwardArgs)
// and bwd(T{}, problem, BackwardArgs), called with T the storage type (strided.h) of the call.
template <class Fwd, class Bwd>
detail::BackendImpl cpu_backend_impl(Backend id, Fwd, Bwd) {
  return {id, &unavailable_off_cpu,
          [](const Problem& p, const ForwardArgs& a, const Options&) {
            dispatch_dtype(a.q.dtype, [&](auto t) { Fwd{}(t, p, a); });
          },
          [](const Problem& p, const BackwardArgs& a, const Options&) {
            dispatch_dtype(a.q.dtype, [&](auto t) { Bwd{}(t, p, a); });
          }};
}

}  // namespace fna::cpu
