// Where a test's Buffers live for the library: host memory (HostMirror: the Buffers' own views),
// or device copies (tests/gpu's CudaMirror) with the same strides, offsets and poison around them.
// The case runners (harness.h, unfused_case.h) take a Mirror, so one runner serves both.
#pragma once

#include "buffer.h"

namespace fna_test {

struct Mirror {
  virtual ~Mirror() = default;
  virtual fna::TensorView view(const Buffer& b) = 0;  // the view the library gets for `b`
  virtual void download(const Buffer& b) = 0;         // the library's copy of `b` -> host storage
  virtual void sync() {}  // waits for the library's work; throws on errors
};

struct HostMirror : Mirror {
  fna::TensorView view(const Buffer& b) override { return b.view(); }
  void download(const Buffer&) override {}
};

}  // namespace fna_test
