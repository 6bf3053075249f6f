// Device copies of the tests' host Buffers (tests/cpp/mirror.h), byte for byte: a view keeps its
// strides and offsets, and the poison around it travels too, so an unwritten element or a stray
// write shows after download().
#pragma once

#include <cstddef>
#include <map>

#include "mirror.h"

namespace fna_test {

class CudaMirror : public Mirror {
 public:
  CudaMirror() = default;
  CudaMirror(const CudaMirror&) = delete;
  CudaMirror& operator=(const CudaMirror&) = delete;
  ~CudaMirror() override;
  // Uploads the Buffer's whole storage on first use (keyed by storage: interleaved views share it).
  fna::TensorView view(const Buffer& b) override;
  // A storage never viewed (e.g. d_rpb without rpb) is left as it is.
  void download(const Buffer& b) override;
  // cudaDeviceSynchronize; throws std::runtime_error on an asynchronous error.
  void sync() override;

 private:
  std::map<const std::byte*, void*> storages_;  // host storage -> device copy
};

}  // namespace fna_test
