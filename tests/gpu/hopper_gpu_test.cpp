// GPU tests of backend `cuda-hopper` (sm_90a forward: TMA + wgmma): forward against the float64
// oracle on a shape grid sized for its 128 x 128 tiles (several Q boxes, masked and unmasked KV
// tiles, boxes cut by group ends, 1-3 additional-KV tiles) and on the seeded random sweep, bf16
// and fp16, head dims 64 and 128. Outputs start poisoned. Layouts: contiguous and interleaved
// (q, k, v = qkv.unbind(-3)) run on cuda-hopper itself; the padded/offset layout, which TMA
// cannot read, runs through `auto` (the fallback to cuda-fused). Skipped (GTEST_SKIP, reported)
// on devices other than sm_90 or builds without the sm_90a instances.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "buffer.h"
#include "device_case.h"
#include "device_sweeps.h"
#include "harness.h"
#include "index64_case.h"
#include "pattern_fill.h"
#include "shape_grid.h"

namespace {

using fna::Backend;
using fna::DType;
using fna::Problem;
using fna_test::CaseSpec;
using fna_test::Layout;

constexpr Backend kBackend = Backend::kCudaHopper;
const int kHeadDims[] = {64, 128};
const fna::Device kCuda0{fna::DeviceType::kCUDA, 0};

std::string unavailable(const Problem& p, DType dt) {
  try {
    fna::validate_problem(p);
  } catch (const fna::Error& e) {
    return e.what();
  }
  return fna::backend_unavailable_reason(kBackend, p, dt, kCuda0);
}

// Largest |a[i] - b[i]| of two bf16 buffers copied from the device.
double max_abs_diff_bf16(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(
        worst, std::fabs(fna_test::load_element(reinterpret_cast<const std::byte*>(&a[i]),
                                                DType::kBFloat16) -
                         fna_test::load_element(reinterpret_cast<const std::byte*>(&b[i]),
                                                DType::kBFloat16)));
  return worst;
}

// Skips the test unless cuda-hopper can run a bf16 / D = 128 (or 64) problem on this device.
#define SKIP_WITHOUT_HOPPER()                                                               \
  do {                                                                                      \
    Problem probe = fna_test::grid_problem(1, {16}, {3}, {}, {}, {}, 128);                  \
    std::string why = unavailable(probe, DType::kBFloat16);                                 \
    probe.head_dim = probe.head_dim_v = 64;                                                 \
    if (!why.empty() && !unavailable(probe, DType::kBFloat16).empty()) GTEST_SKIP() << why; \
  } while (0)

// Contiguous and interleaved run on cuda-hopper; the padded/offset layout through `auto`.
fna_gpu_test::DeviceCaseResult run(const CaseSpec& spec) {
  const bool tma_layout = spec.layout != Layout::kStrided;
  return fna_gpu_test::run_device_case(spec, tma_layout ? kBackend : Backend::kAuto);
}

const fna_gpu_test::SweepSuite kSuite{
    kBackend,
    {64, 128},
    {DType::kBFloat16, DType::kFloat16},
    77,
    // oracle time: large grid problems at bf16 / D = 128 only
    [](const Problem& p, DType dt) {
      return p.tokens() <= 800 || (p.head_dim == 128 && dt == DType::kBFloat16);
    },
    [](const Problem& p, DType dt, bool) { return unavailable(p, dt).empty(); },
    run};

TEST(CudaHopperForward, ShapeGrid) {
  SKIP_WITHOUT_HOPPER();
  const std::string f = fna_gpu_test::run_shape_grid(kSuite, false);
  EXPECT_TRUE(f.empty()) << f;
}

TEST(CudaHopperForward, RandomSweep) {
  SKIP_WITHOUT_HOPPER();
  // the backward is cuda-fused's: a few checks that it is wired
  const std::string f =
      fna_gpu_test::run_random_sweep(kSuite, 200, 2000003, [](int i) { return i % 10 == 0; });
  EXPECT_TRUE(f.empty()) << f;
}

// A view TMA cannot read: naming cuda-hopper gives a clear error, `auto` falls back.
TEST(CudaHopperForward, MisalignedViews) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(1, {64}, {7});
  for (int d : kHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (unavailable(p, DType::kBFloat16).empty()) break;
  }
  const int64_t n = p.extent[0] * p.head_dim;
  void* mem = nullptr;
  ASSERT_EQ(cudaMalloc(&mem, 4 * (n + 8) * 2), cudaSuccess);
  char* base = static_cast<char*>(mem);
  ASSERT_EQ(cudaMemset(mem, 0, 4 * (n + 8) * 2), cudaSuccess);
  const std::vector<int64_t> shape{1, p.extent[0], 1, p.head_dim};
  auto view = [&](int i, int64_t shift) {
    return fna::TensorView::contiguous(base + (i * (n + 8) + shift) * 2, DType::kBFloat16, shape,
                                       kCuda0);
  };
  fna::ForwardArgs a{view(0, 1),   view(1, 0),   view(2, 0),  view(3, 0),
                     std::nullopt, std::nullopt, std::nullopt};
  fna::Options options;
  options.backend = kBackend;
  try {
    fna::forward(p, a, options);
    ADD_FAILURE() << "cuda-hopper accepted a q that is not 16-byte aligned";
  } catch (const fna::Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte"), std::string::npos) << e.what();
  }
  options.backend = Backend::kAuto;
  EXPECT_NO_THROW(fna::forward(p, a, options));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(mem);
}

// 64-bit indexing: q, k, v, out of 2.46e9 bf16 elements each (one batch: the tensor maps' base
// is the batch start, TMA coordinates stay 32-bit per dim, out offsets are 64-bit). Inputs are
// filled on the device from a hash of the element index; outputs around element 2^31 and at the
// end are checked against float64 from the same hash.
TEST(CudaHopperForward, Index64) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(1, {300007}, {5}, {}, {}, {}, 128);
  p.heads_q = p.heads_kv = 64;
  if (!unavailable(p, DType::kBFloat16).empty()) GTEST_SKIP() << "bf16 / head dim 128 not compiled";
  const auto r = fna_gpu_test::run_index64_forward(kBackend, p);
  if (!r.skip.empty()) GTEST_SKIP() << r.skip;
  ASSERT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_LE(r.worst, fna_gpu_test::forward_tolerance(DType::kBFloat16, kBackend));
}

// Uploaded tensor maps (more than the kernel parameters hold) land at the same device address call
// after call (stream-ordered allocation); each call's maps describe other tensors here (three
// input sets, used in turn), so a descriptor the TMA unit kept from an earlier call would load
// the wrong tensors. Every call must match cuda-fused on the same inputs.
TEST(CudaHopperForward, UploadedMapsFollowEachCall) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(1, {64}, {7});
  p.batch = 12;  // 12 x 3 = 36 maps > 32: uploaded
  for (int d : kHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (unavailable(p, DType::kBFloat16).empty()) break;
  }
  const int64_t n = p.batch * p.extent[0] * p.head_dim;
  constexpr int kSets = 3;
  void* mem = nullptr;
  ASSERT_EQ(cudaMalloc(&mem, (3 * kSets + 2) * n * 2), cudaSuccess);
  char* base = static_cast<char*>(mem);
  for (int t = 0; t < 3 * kSets; ++t)
    fna_gpu_test::fill_pattern(base + t * n * 2, DType::kBFloat16, n, 1000 + t);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<int64_t> shape{p.batch, p.extent[0], 1, p.head_dim};
  auto view = [&](int i) {
    return fna::TensorView::contiguous(base + i * n * 2, DType::kBFloat16, shape, kCuda0);
  };
  std::vector<uint16_t> a(n), b(n);
  for (int call = 0; call < 4 * kSets; ++call) {
    const int s = call % kSets;
    fna::ForwardArgs args{view(3 * s),  view(3 * s + 1), view(3 * s + 2), view(3 * kSets),
                          std::nullopt, std::nullopt,    std::nullopt};
    fna::Options options;
    options.backend = kBackend;
    fna::forward(p, args, options);
    args.out = view(3 * kSets + 1);
    options.backend = Backend::kCudaFused;
    fna::forward(p, args, options);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(a.data(), base + 3 * kSets * n * 2, n * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(b.data(), base + (3 * kSets + 1) * n * 2, n * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_LE(max_abs_diff_bf16(a, b), 3e-2) << "call " << call << " (input set " << s << ")";
  }
  cudaFree(mem);
}

// Options::autotune runs the fastest of several tile shapes: its output matches the planner's
// shape's within bf16 rounding, a second call takes the cached shape (the same bits), and under
// graph capture it runs the planner's shape (nothing to time there).
TEST(CudaHopperForward, AutotuneMatchesThePlanner) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(3, {12, 20, 40}, {5, 7, 9});  // masked tiles on every axis
  p.heads_q = p.heads_kv = 2;
  for (int d : kHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (unavailable(p, DType::kBFloat16).empty()) break;
  }
  const fna::Plan plan = fna::plan(p, DType::kBFloat16, [] {
    fna::Options o;
    o.backend = kBackend;
    return o;
  }());
  const int64_t n = p.batch * p.tokens() * p.heads_q * p.head_dim;
  void* mem = nullptr;
  ASSERT_EQ(cudaMalloc(&mem, 6 * n * 2), cudaSuccess);
  char* base = static_cast<char*>(mem);
  for (int t = 0; t < 3; ++t) fna_gpu_test::fill_pattern(base + t * n * 2, DType::kBFloat16, n, 77 + t);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto view = [&](int i) {  // the shape of p as it is now (the capture below changes the heads)
    const std::vector<int64_t> shape{p.batch,   p.extent[0], p.extent[1],
                                     p.extent[2], p.heads_q,   p.head_dim};
    return fna::TensorView::contiguous(base + i * n * 2, DType::kBFloat16, shape, kCuda0);
  };
  auto run = [&](int out, bool autotune, cudaStream_t stream) {
    fna::ForwardArgs a{view(0), view(1), view(2), view(out), std::nullopt, std::nullopt,
                       std::nullopt};
    fna::Options o;
    o.backend = kBackend;
    o.autotune = autotune;
    o.stream = stream;
    fna::forward(p, a, o);
  };
  run(3, false, nullptr);  // the planner's shape
  run(4, true, nullptr);   // tunes, then runs the fastest shape
  run(5, true, nullptr);   // the cached shape
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> planned(n), tuned(n), cached(n);
  ASSERT_EQ(cudaMemcpy(planned.data(), base + 3 * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(tuned.data(), base + 4 * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(cached.data(), base + 5 * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(tuned, cached);
  EXPECT_LE(max_abs_diff_bf16(planned, tuned), 3e-2) << "planner's Q box " << plan.tiles.q[0] << "x" << plan.tiles.q[1] << "x"
                         << plan.tiles.q[2];
  // Under capture: the planner's shape, no timing (events on a capturing stream would fail).
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  p.heads_q = p.heads_kv = 1;  // a problem not in the cache
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_NO_THROW(run(4, true, stream));
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(mem);
}

// More tensor maps than the kernel parameters hold need an upload, which graph capture forbids:
// under capture `auto` runs cuda-fused instead and naming cuda-hopper says why.
TEST(CudaHopperForward, GraphCaptureWithManyMaps) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(1, {64}, {7});
  p.batch = 12;  // 12 x 3 = 36 maps > 32
  for (int d : kHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (unavailable(p, DType::kBFloat16).empty()) break;
  }
  const int64_t n = p.batch * p.extent[0] * p.head_dim;
  std::vector<uint16_t> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<uint16_t>(0x3c00 + (i * 37) % 512);
  void* mem = nullptr;
  ASSERT_EQ(cudaMalloc(&mem, 5 * n * 2), cudaSuccess);
  char* base = static_cast<char*>(mem);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(cudaMemcpy(base + i * n * 2, host.data(), n * 2, cudaMemcpyHostToDevice),
              cudaSuccess);
  const std::vector<int64_t> shape{p.batch, p.extent[0], 1, p.head_dim};
  auto view = [&](int i) {
    return fna::TensorView::contiguous(base + i * n * 2, DType::kBFloat16, shape, kCuda0);
  };
  fna::ForwardArgs eager{view(0),      view(1),      view(2),     view(3),
                         std::nullopt, std::nullopt, std::nullopt};
  fna::ForwardArgs captured = eager;
  captured.out = view(4);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  fna::Options options;
  options.stream = stream;
  fna::forward(p, eager, options);  // outside capture: cuda-hopper with an uploaded map array
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  options.backend = kBackend;
  std::string refused;
  try {
    fna::forward(p, captured, options);
  } catch (const fna::Error& e) {
    refused = e.what();
  }
  options.backend = Backend::kAuto;
  fna::forward(p, captured, options);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_NE(refused.find("graph capture"), std::string::npos) << refused;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<uint16_t> a(n), b(n);
  ASSERT_EQ(cudaMemcpy(a.data(), base + 3 * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b.data(), base + 4 * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_LE(max_abs_diff_bf16(a, b), 3e-2);  // cuda-hopper (eager) vs cuda-fused (captured), bf16
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(mem);
}

TEST(CudaHopper, AutoPicksHopper) {
  SKIP_WITHOUT_HOPPER();
  Problem p = fna_test::grid_problem(2, {16, 16}, {5, 5});
  for (int d : kHeadDims) {
    p.head_dim = p.head_dim_v = d;
    if (unavailable(p, DType::kBFloat16).empty()) break;
  }
  EXPECT_EQ(fna::resolve_backend(p, DType::kBFloat16, kCuda0), kBackend);
  p.head_dim_v = p.head_dim / 2;  // Dv != D: not this backend
  EXPECT_NE(unavailable(p, DType::kBFloat16), "");
  EXPECT_NE(unavailable(fna_test::grid_problem(1, {16}, {3}), DType::kFloat32), "");  // no fp32
}

}  // namespace
