// DLPack arrays (nb::ndarray) -> fna::TensorView, shared by the bindings of module.cpp and
// unfused.cpp. Pointer, dtype, device, shape and strides (in elements) come from the array.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>

#include "fna/error.h"
#include "fna/tensor.h"

namespace fna_py {

namespace nb = nanobind;

// Inputs are read-only so that read-only producers (e.g. JAX, NumPy views) are accepted; outputs
// must be writable.
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

[[noreturn]] inline void fail(fna::ErrorKind kind, const std::string& msg) {
  throw fna::Error(kind, "fna: " + msg);
}

inline fna::DType to_dtype(const char* name, nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  if (dt.lanes == 1 && dt.bits == 32 && dt.code == static_cast<uint8_t>(Code::Float))
    return fna::DType::kFloat32;
  if (dt.lanes == 1 && dt.bits == 16 && dt.code == static_cast<uint8_t>(Code::Float))
    return fna::DType::kFloat16;
  if (dt.lanes == 1 && dt.bits == 16 && dt.code == static_cast<uint8_t>(Code::Bfloat))
    return fna::DType::kBFloat16;
  const char* kind = dt.code == static_cast<uint8_t>(Code::Float)    ? "float"
                     : dt.code == static_cast<uint8_t>(Code::Bfloat) ? "bfloat"
                     : dt.code == static_cast<uint8_t>(Code::Int)    ? "int"
                     : dt.code == static_cast<uint8_t>(Code::UInt)   ? "uint"
                     : dt.code == static_cast<uint8_t>(Code::Bool)   ? "bool"
                                                                     : "dlpack-code-";
  fail(fna::ErrorKind::kTypeError, std::string("argument '") + name + "': dtype " + kind +
                                       std::to_string(dt.bits) +
                                       (dt.lanes != 1 ? "x" + std::to_string(dt.lanes) : "") +
                                       " is not supported: fna takes float32, float16 or bfloat16");
}

inline fna::Device to_device(const char* name, int type, int id) {
  if (type == nb::device::cpu::value) return {fna::DeviceType::kCPU, 0};
  if (type == nb::device::cuda::value) return {fna::DeviceType::kCUDA, id};
  fail(fna::ErrorKind::kInvalidArgument,
       std::string("argument '") + name + "': DLPack device type " + std::to_string(type) +
           " is not supported: tensors must be on the CPU or a CUDA device");
}

template <typename Array>
fna::TensorView to_view(const char* name, const Array& a) {
  fna::TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = to_dtype(name, a.dtype());
  t.device = to_device(name, a.device_type(), a.device_id());
  t.shape.assign(a.shape_ptr(), a.shape_ptr() + a.ndim());
  if (a.stride_ptr())
    t.strides.assign(a.stride_ptr(), a.stride_ptr() + a.ndim());
  else
    t.strides = fna::TensorView::contiguous_strides(t.shape);
  return t;
}

template <typename Array>
std::optional<fna::TensorView> to_view(const char* name, const std::optional<Array>& a) {
  if (!a) return std::nullopt;
  return to_view(name, *a);
}

}  // namespace fna_py
