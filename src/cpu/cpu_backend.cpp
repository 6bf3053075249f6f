// Backend `cpu`: placeholder entry until the fused CPU kernels land.
#include "api/backend.h"

namespace fna::detail {
namespace {
std::string unavailable(const Problem&, DType, const Device&) { return "not implemented yet"; }
void forward(const Problem&, const ForwardArgs&, const Options&) {}
void backward(const Problem&, const BackwardArgs&, const Options&) {}
}  // namespace
const BackendImpl& cpu_backend() {
  static const BackendImpl impl{Backend::kCpu, &unavailable, &forward, &backward};
  return impl;
}
}  // namespace fna::detail
