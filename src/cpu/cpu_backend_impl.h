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

// Kernels: static templates forward<T>(const Problem&, const ForwardArgs&) and
// backward<T>(const Problem&, const BackwardArgs&), T the storage type (strided.h).
template <class Kernels>
detail::BackendImpl cpu_backend_impl(Backend id) {
  return {id, &unavailable_off_cpu,
          [](const Problem& p, const ForwardArgs& a, const Options&) {
            dispatch_dtype(a.q.dtype,
                           [&](auto t) { Kernels::template forward<decltype(t)>(p, a); });
          },
          [](const Problem& p, const BackwardArgs& a, const Options&) {
            dispatch_dtype(a.q.dtype,
                           [&](auto t) { Kernels::template backward<decltype(t)>(p, a); });
          }};
}

}  // namespace fna::cpu
