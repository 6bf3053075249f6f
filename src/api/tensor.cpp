// Tensor view helpers and dtype / backend names.
#include "fna/tensor.h"

#include "fna/error.h"
#include "fna/options.h"

namespace fna {

int dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "fp32";
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "float") return DType::kFloat32;
  if (name == "fp16" || name == "float16" || name == "half") return DType::kFloat16;
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  throw Error(ErrorKind::kTypeError,
              "fna: dtype '" + name + "' is not supported: must be fp32, fp16 or bf16");
}

std::string device_name(const Device& device) {
  return device.type == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(device.index);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<int64_t> TensorView::contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

TensorView TensorView::contiguous(void* data, DType dtype, std::vector<int64_t> shape,
                                  Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.strides = contiguous_strides(shape);
  t.shape = std::move(shape);
  return t;
}

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kReference:
      return "reference";
    case Backend::kCpu:
      return "cpu";
    case Backend::kCudaNaive:
      return "cuda-naive";
    case Backend::kCudaGemm:
      return "cuda-gemm";
    case Backend::kCudaFused:
      return "cuda-fused";
    case Backend::kCudaHopper:
      return "cuda-hopper";
  }
  return "?";
}

std::vector<Backend> all_backends() {
  return {Backend::kReference, Backend::kCpu,       Backend::kCudaNaive,
          Backend::kCudaGemm,  Backend::kCudaFused, Backend::kCudaHopper};
}

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  std::string valid = "auto";
  for (Backend b : all_backends()) {
    if (name == backend_name(b)) return b;
    valid += std::string(", ") + backend_name(b);
  }
  throw Error(ErrorKind::kInvalidArgument,
              "fna: backend '" + name + "' is unknown: must be one of " + valid);
}

}  // namespace fna
