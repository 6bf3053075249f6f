// Tensor views: a non-owning description of memory fna reads or writes.
// Host-only header: no CUDA includes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fna {

enum class DType { kFloat32, kFloat16, kBFloat16 };

enum class DeviceType { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;  // CUDA ordinal; 0 for CPU

  friend bool operator==(const Device& a, const Device& b) {
    return a.type == b.type && (a.type == DeviceType::kCPU || a.index == b.index);
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// Element size in bytes.
int dtype_size(DType dtype);
// "fp32", "fp16", "bf16".
const char* dtype_name(DType dtype);
// Parses "fp32|float32|fp16|float16|half|bf16|bfloat16"; throws fna::Error otherwise.
DType parse_dtype(const std::string& name);
std::string device_name(const Device& device);

// A strided view. Shape and strides are in elements (not bytes) and 64-bit. The last dimension
// must be unit-stride; the other strides are arbitrary (non-negative).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device{};
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  int rank() const { return static_cast<int>(shape.size()); }
  int64_t numel() const;
  // Row-major contiguous strides for `shape`.
  static std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);
  // A contiguous view of `shape` at `data`.
  static TensorView contiguous(void* data, DType dtype, std::vector<int64_t> shape,
                               Device device = {});
};

}  // namespace fna
