// Public entry points: validate, resolve the backend, run.
#include "api/backend.h"
#include "fna/fna.h"

namespace fna {
namespace detail {

const BackendImpl* find_backend(Backend id) {
  switch (id) {
    case Backend::kReference:
      return &reference_backend();
    case Backend::kCpu:
      return &cpu_backend();
    case Backend::kAuto:
      return nullptr;
    default:
#if defined(FNA_WITH_CUDA)
      return cuda_backend(id);
#else
      return nullptr;
#endif
  }
}

}  // namespace detail

namespace {

// Preference order of `auto`, fastest first.
constexpr Backend kCudaPreference[] = {Backend::kCudaHopper, Backend::kCudaFused,
                                       Backend::kCudaGemm, Backend::kCudaNaive};
constexpr Backend kCpuPreference[] = {Backend::kCpu, Backend::kReference};

std::string not_compiled_reason(Backend b) {
  const bool cuda = b != Backend::kReference && b != Backend::kCpu;
  return std::string("backend '") + backend_name(b) + "' is not compiled into this build" +
         (cuda ? ": build with CUDA (nvcc on PATH, FNA_ENABLE_CUDA=ON)" : "");
}

const detail::BackendImpl& checked_backend(Backend requested, const Problem& p, DType dtype,
                                           const Device& device) {
  const Backend b = resolve_backend(p, dtype, device, requested);
  return *detail::find_backend(b);
}

}  // namespace

std::vector<Backend> compiled_backends() {
  std::vector<Backend> out;
  for (Backend b : all_backends())
    if (detail::find_backend(b)) out.push_back(b);
  return out;
}

std::string backend_unavailable_reason(Backend backend, const Problem& p, DType dtype,
                                       const Device& device) {
  const detail::BackendImpl* impl = detail::find_backend(backend);
  if (!impl) return not_compiled_reason(backend);
  return impl->unavailable(p, dtype, device);
}

Backend resolve_backend(const Problem& p, DType dtype, const Device& device, Backend requested) {
  if (requested != Backend::kAuto) {
    const std::string why = backend_unavailable_reason(requested, p, dtype, device);
    if (!why.empty())
      throw Error(ErrorKind::kNotAvailable, std::string("fna: option 'backend' = '") +
                                                backend_name(requested) + "' cannot run: " + why);
    return requested;
  }
  std::string reasons;
  auto pick = [&](const auto& order) -> int {
    for (Backend b : order) {
      const std::string why = backend_unavailable_reason(b, p, dtype, device);
      if (why.empty()) return static_cast<int>(b);
      reasons += std::string("\n  ") + backend_name(b) + ": " + why;
    }
    return -1;
  };
  const int b = device.type == DeviceType::kCUDA ? pick(kCudaPreference) : pick(kCpuPreference);
  if (b < 0)
    throw Error(ErrorKind::kNotAvailable, "fna: no backend can run " + p.to_string() + " in " +
                                              dtype_name(dtype) + " on " + device_name(device) +
                                              ":" + reasons);
  return static_cast<Backend>(b);
}

void forward(const Problem& p, const ForwardArgs& args, const Options& options) {
  validate_forward(p, args);
  const detail::BackendImpl& impl =
      checked_backend(options.backend, p, args.q.dtype, args.q.device);
  impl.forward(p, args, options);
}

void backward(const Problem& p, const BackwardArgs& args, const Options& options) {
  validate_backward(p, args);
  const detail::BackendImpl& impl =
      checked_backend(options.backend, p, args.q.dtype, args.q.device);
  impl.backward(p, args, options);
}

const char* version() { return FNA_VERSION; }

}  // namespace fna
