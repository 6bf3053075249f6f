// Backend rules that only a GPU build can exercise: a CUDA backend asked to run a dtype it does not
// support (or that this build did not compile) raises fna::Error of kind kNotAvailable naming the
// option, the backend and the dtype, and writes nothing (output buffers poisoned beforehand are
// byte-identical afterwards). The CPU backends take every dtype, so tests/cpp cannot cover this.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fna/fna.h"

namespace {

void check(cudaError_t e, const char* what) {
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

int64_t dtype_bytes(fna::DType t) { return t == fna::DType::kFloat32 ? 4 : 2; }

// A dense [1, L, H, D] device tensor filled with a fixed byte pattern.
struct DeviceBuffer {
  std::vector<int64_t> shape;
  fna::DType dtype;
  int64_t bytes = 0;
  void* ptr = nullptr;
  DeviceBuffer(std::vector<int64_t> s, fna::DType t, unsigned char pattern)
      : shape(std::move(s)), dtype(t) {
    int64_t n = 1;
    for (int64_t e : shape) n *= e;
    bytes = n * (shape.size() == 3 ? 4 : dtype_bytes(t));  // lse [1, L, H] is fp32
    check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    check(cudaMemset(ptr, pattern, bytes), "cudaMemset");
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  fna::TensorView view() const {
    std::vector<int64_t> strides(shape.size(), 1);
    for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i)
      strides[i] = strides[i + 1] * shape[i + 1];
    return fna::TensorView{ptr, shape.size() == 3 ? fna::DType::kFloat32 : dtype,
                           fna::Device{fna::DeviceType::kCUDA, 0}, shape, strides};
  }
  std::vector<unsigned char> download() const {
    std::vector<unsigned char> h(bytes);
    check(cudaMemcpy(h.data(), ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    return h;
  }
};

TEST(BackendRules, UnsupportedDtypeIsRefusedAndNothingIsWritten) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  const fna::Device gpu{fna::DeviceType::kCUDA, 0};
  int checked = 0;
  for (fna::Backend b : fna::compiled_backends()) {
    for (fna::DType t : {fna::DType::kFloat32, fna::DType::kFloat16, fna::DType::kBFloat16}) {
      for (int64_t d : {32, 64, 128}) {
        fna::Problem p;
        p.rank = 1;
        p.extent[0] = 24;
        p.window[0] = 5;
        p.heads_q = p.heads_kv = 2;
        p.head_dim = p.head_dim_v = d;
        const std::string why = fna::backend_unavailable_reason(b, p, t, gpu);
        if (why.find("dtype") == std::string::npos) continue;  // runs, or refused for another rule
        SCOPED_TRACE(std::string(fna::backend_name(b)) + " " + fna::dtype_name(t) +
                     " D=" + std::to_string(d));
        DeviceBuffer q({1, 24, 2, d}, t, 0x3c), k({1, 24, 2, d}, t, 0x3c),
            v({1, 24, 2, d}, t, 0x3c);
        DeviceBuffer out({1, 24, 2, d}, t, 0xa5), lse({1, 24, 2}, t, 0x5a);
        const std::vector<unsigned char> out0 = out.download(), lse0 = lse.download();
        fna::ForwardArgs args;
        args.q = q.view();
        args.k = k.view();
        args.v = v.view();
        args.out = out.view();
        args.lse = lse.view();
        fna::Options o;
        o.backend = b;
        try {
          fna::forward(p, args, o);
          ADD_FAILURE() << "forward ran although the backend refuses the dtype: " << why;
        } catch (const fna::Error& e) {
          const std::string msg = e.what();
          EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(fna::ErrorKind::kNotAvailable));
          for (std::string needle :
               {std::string("'backend'"), std::string("'") + fna::backend_name(b) + "'",
                std::string("dtype ") + fna::dtype_name(t)})
            EXPECT_NE(msg.find(needle), std::string::npos)
                << "missing '" << needle << "' in: " << msg;
        }
        check(cudaDeviceSynchronize(), "sync");
        EXPECT_EQ(out.download(), out0) << "out was written";
        EXPECT_EQ(lse.download(), lse0) << "lse was written";
        ++checked;
        break;  // one head dim per (backend, dtype) is enough
      }
    }
  }
  if (checked == 0)
    GTEST_SKIP() << "every compiled CUDA backend takes every dtype in this build (build with "
                    "FNA_DTYPES=\"fp16;bf16\" to exercise the rule on cuda-fused)";
}

}  // namespace
