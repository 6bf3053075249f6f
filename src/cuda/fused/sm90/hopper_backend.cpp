// Backend `cuda-hopper`: the sm_90a forward (TMA + wgmma, warp-specialized). This file holds the
// BackendImpl entry (what the backend can run), the host side of the forward (plan, tensor maps,
// launch) and the backward, which is the cuda-fused one (the forward's out and lse are all it
// needs).
#include <cuda_runtime_api.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cuda/cuda_check.h"
#include "cuda/device_info.h"
#include "cuda/fused/common/host_views.h"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/fused_config.h"
#include "cuda/fused/fused_launch.h"
#include "cuda/fused/sm90/launch_fwd_sm90.h"
#include "cuda/fused/sm90/plan_sm90.h"
#include "cuda/fused/sm90/split_fwd_sm90.h"
#include "cuda/fused/sm90/tma_maps_sm90.h"

namespace fna::cuda::fused {
namespace {

constexpr const char* kName = "cuda-hopper";

// Most tensor maps one call may encode (3 per batch and dilation group): host encoding costs
// ~1 us per map, and above kInlineMaps the array is copied to the device per call.
constexpr int64_t kMaxMaps = int64_t{1} << 16;

#if defined(FNA_BUILT_SM90A)
// The planner's box shapes (plan_sm90.h) for this problem's items on this device's grid, or
// Options::tiles when given (same rules as cuda-fused: powers of two whose volumes are this
// kernel's 128 x 128 block).
TileShape tile_shape(const Problem& pr, const Neighborhood& nb, int device,
                     const Options& options) {
  const int head_dim = static_cast<int>(pr.head_dim);
  if (!options.tiles) {
    const HopperWork work = hopper_work(pr, sm_count(device));
    return cached_plan<TileShape>(nb, {head_dim, work.heads, work.sms, work.extra_tiles},
                                  [&] { return plan_tiles_sm90(nb, head_dim, work).shape; });
  }
  const std::string why = tile_override_error(nb, *options.tiles, FwdBlockShapeSm90::kBlockM,
                                              FwdBlockShapeSm90::kBlockN);
  if (!why.empty())
    throw Error(ErrorKind::kInvalidArgument, "fna: option " + why + " (backend cuda-hopper)");
  return shape_from_boxes(nb, *options.tiles);
}

FwdParams make_params(const Problem& pr, const ForwardArgs& args, const Options& options) {
  FwdParams p = forward_params(pr, args);
  p.tile = tile_shape(pr, p.nb, args.q.device.index, options);
  p.aligned = true;  // TMA reads the tensors (alignment is an `unavailable` rule); unused here
  return p;
}

// Test and A/B hooks (tests/gpu/hopper_gpu_test.cpp, .notes/s7_tail_run.sh, s7_dyn_run.sh), read
// per call: FNA_HOPPER_GRID=n runs the persistent kernel on n blocks instead of one per SM (the
// tail split follows the grid: tests choose where it engages), FNA_HOPPER_SPLIT=0 turns the tail
// split off, FNA_HOPPER_SCHED=static runs the static round-robin schedule instead of the dynamic
// one (scheduler_fwd_sm90.cuh).
int64_t persistent_grid(int device) {
  const char* grid = std::getenv("FNA_HOPPER_GRID");
  const int64_t n = grid ? std::atoll(grid) : 0;
  return n > 0 ? n : sm_count(device);
}

bool tail_split_enabled() {
  const char* split = std::getenv("FNA_HOPPER_SPLIT");
  return !(split && std::string(split) == "0");
}

bool dynamic_schedule_enabled() {
  const char* sched = std::getenv("FNA_HOPPER_SCHED");
  return !(sched && std::string(sched) == "static");
}

// Stream-ordered workspace of the schedule: with a tail split (split_fwd_sm90.cuh) per split
// unit the O partial (128 x D fp32) and kSplitLsePerUnit lse values and per split item
// kSplitWarps counters; with `dynamic` the dynamic schedule's unit counter
// (FwdParamsSm90::next_unit). The counters are zeroed here on the stream. The kernel could leave
// them at zero for the next call instead, but a buffer kept across calls would be shared by calls
// running at once on other streams; this allocation lives exactly as long as the kernel (the
// pool hands the same bytes back call after call, so the cost is one memset of < 5 KiB).
// Allocation, memset and free are stream-ordered, so CUDA graph capture records them and each
// graph launch zeroes the counters again (tests/gpu/hopper_gpu_test.cpp,
// DynamicScheduleIsBitwiseStatic). Null when neither is on.
void* schedule_workspace(FwdParamsSm90& p, int head_dim, bool dynamic, cudaStream_t stream) {
  if (p.chunks == 1 && !dynamic) return nullptr;
  const int64_t split_items = p.chunks == 1 ? 0 : p.items - p.main_items;
  const int64_t units = split_items * p.chunks;
  const size_t o_bytes = size_t(units) * FwdBlockShapeSm90::kBlockM * head_dim * sizeof(float);
  const size_t lse_bytes = size_t(units) * kSplitLsePerUnit * sizeof(float);
  // The unit counter first: o_bytes and lse_bytes are multiples of 8, so it is 8-byte aligned.
  const size_t next_bytes = dynamic ? sizeof(unsigned long long) : 0;
  const size_t done_bytes = size_t(split_items) * kSplitWarps * sizeof(int);
  void* ws = nullptr;
  FNA_CUDA_CHECK(cudaMallocAsync(&ws, o_bytes + lse_bytes + next_bytes + done_bytes, stream));
  char* base = static_cast<char*>(ws);
  char* counters = base + o_bytes + lse_bytes;
  if (split_items > 0) {
    p.split_o = reinterpret_cast<float*>(base);  // 256-byte aligned: float4 stores
    p.split_lse = reinterpret_cast<float*>(base + o_bytes);
    p.split_done = reinterpret_cast<int*>(counters + next_bytes);
  }
  if (dynamic) p.next_unit = reinterpret_cast<unsigned long long*>(counters);
  const cudaError_t e = cudaMemsetAsync(counters, 0, next_bytes + done_bytes, stream);
  if (e != cudaSuccess) {
    cudaFreeAsync(ws, stream);
    FNA_CUDA_CHECK(e);
  }
  return ws;
}

template <class Element>
void launch(const FwdParamsSm90& p, int head_dim, dim3 grid, cudaStream_t stream) {
  switch (head_dim) {
#if defined(FNA_BUILT_HDIM_64)
    case 64:
      return launch_fwd_sm90<Element, 64>(p, grid, stream);
#endif
#if defined(FNA_BUILT_HDIM_128)
    case 128:
      return launch_fwd_sm90<Element, 128>(p, grid, stream);
#endif
    default:
      throw Error(ErrorKind::kNotAvailable, std::string("fna: cuda-hopper: head_dim ") +
                                                std::to_string(head_dim) + " is not compiled");
  }
}
#endif

}  // namespace

std::string hopper_unavailable(const Problem& p, DType dtype, const Device& device) {
#if !defined(FNA_BUILT_SM90A)
  (void)p, (void)dtype, (void)device;
  return "not compiled: enable with FNA_CUDA_ARCHS containing 90a";
#else
  if (device.type != DeviceType::kCUDA)
    return "tensors are on " + device_name(device) + ": cuda-hopper needs CUDA tensors";
  std::string why;
  const int cc = compute_capability(device.index, &why);
  if (cc < 0) return why;
  if (cc != 90)
    return "device " + device_name(device) + " has compute capability " + std::to_string(cc / 10) +
           "." + std::to_string(cc % 10) + ": cuda-hopper needs sm_90 (H100/H200)";
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16)
    return std::string("dtype ") + dtype_name(dtype) + ": cuda-hopper runs fp16 and bf16";
  if (!dtype_built(dtype))
    return std::string("dtype ") + dtype_name(dtype) +
           " is not compiled: enable with FNA_DTYPES=\"fp16;bf16\" (must list " +
           dtype_name(dtype) + ")";
  if (p.head_dim != p.head_dim_v)
    return "head_dim_v = " + std::to_string(p.head_dim_v) +
           " differs from head_dim = " + std::to_string(p.head_dim) + ": cuda-hopper needs Dv == D";
  const int d = static_cast<int>(p.head_dim);
  if (d != 64 && d != 128)
    return "head_dim " + std::to_string(p.head_dim) + " is not supported by cuda-hopper (64, 128)";
  if (!head_dim_built(d))
    return "head_dim " + std::to_string(d) + " is not compiled: enable with FNA_HEAD_DIMS=\"" +
           built_head_dims_text() + ";" + std::to_string(d) + "\"";
  if (p.additional_kv > (int64_t{1} << 30))
    return "additional_kv = " + std::to_string(p.additional_kv) + " exceeds 2^30";
  int64_t groups = 1;
  for (int r = 0; r < p.rank; ++r) {
    if (p.extent[r] > (int64_t{1} << 30))
      return "extent[" + std::to_string(r) + "] = " + std::to_string(p.extent[r]) +
             " exceeds 2^30 (TMA coordinates are 32-bit)";
    groups *= p.dilation[r];
  }
  if (p.batch * groups * kMapsPerGroup > kMaxMaps)
    return "batch x dilation groups = " + std::to_string(p.batch * groups) + " needs more than " +
           std::to_string(kMaxMaps) + " TMA tensor maps";
  return {};
#endif
}

void hopper_forward(const Problem& pr, const ForwardArgs& args, const Options& options);

#if defined(FNA_BUILT_SM90A)
// Options::autotune: the fastest of candidate_tiles_sm90's shapes on these tensors, measured once
// per (problem, dtype, device) and cached. Each candidate runs once to warm up, then twice timed
// with events on the caller's stream.
TileBoxes autotuned_tiles(const Problem& pr, const ForwardArgs& args, const Options& options,
                          cudaStream_t stream) {
  const std::string key = pr.to_string() + " add=" + std::to_string(pr.additional_kv) + " " +
                          dtype_name(args.q.dtype) + " dev=" + std::to_string(args.q.device.index);
  static std::mutex mutex;
  static std::map<std::string, TileBoxes> cache;
  std::lock_guard<std::mutex> lock(mutex);  // one tuning at a time; the others wait for it
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  // Three per model variant: the sweeps of runs S6-F1 and S7 measured every case's fastest shape
  // (or one within 1% of it) among the fitted model's best three.
  const Neighborhood nb = make_neighborhood(pr);
  const std::vector<TileShape> shapes = candidate_tiles_sm90(
      nb, static_cast<int>(pr.head_dim), hopper_work(pr, sm_count(args.q.device.index)), 3);
  cudaEvent_t start, stop;
  FNA_CUDA_CHECK(cudaEventCreate(&start));
  FNA_CUDA_CHECK(cudaEventCreate(&stop));
  TileBoxes best{};
  float best_ms = std::numeric_limits<float>::infinity();
  try {
    for (const TileShape& shape : shapes) {
      Options o = options;
      o.autotune = false;
      o.tiles = boxes_of(shape);
      hopper_forward(pr, args, o);
      FNA_CUDA_CHECK(cudaEventRecord(start, stream));
      for (int i = 0; i < 2; ++i) hopper_forward(pr, args, o);
      FNA_CUDA_CHECK(cudaEventRecord(stop, stream));
      FNA_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      FNA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (ms < best_ms) {
        best_ms = ms;
        best = *o.tiles;
      }
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  FNA_CUDA_CHECK(cudaEventDestroy(start));
  FNA_CUDA_CHECK(cudaEventDestroy(stop));
  if (cache.size() > 4096) cache.clear();  // bound the memory of long-running processes
  cache.emplace(key, best);
  return best;
}
#endif

void hopper_forward(const Problem& pr, const ForwardArgs& args, const Options& options) {
  const std::string misaligned = tma_unsupported(pr, args);
  if (!misaligned.empty()) {
    // `auto` picked this backend from the problem alone; the tensors decide here.
    if (options.backend == Backend::kAuto) return run_forward(pr, args, options);
    throw Error(ErrorKind::kNotAvailable,
                std::string("fna: option 'backend' = '") + kName + "' cannot run: " + misaligned);
  }
#if defined(FNA_BUILT_SM90A)
  if (options.autotune && !options.tiles) {
    cudaStream_t s = static_cast<cudaStream_t>(options.stream);
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    FNA_CUDA_CHECK(cudaStreamIsCapturing(s, &capture));
    if (capture == cudaStreamCaptureStatusNone) {
      Options o = options;
      o.autotune = false;
      o.tiles = autotuned_tiles(pr, args, options, s);
      return hopper_forward(pr, args, o);
    }
  }
  FwdParamsSm90 p;
  p.base = make_params(pr, args, options);
  int64_t boxes = 1;
  for (int r = 0; r < 3; ++r) boxes *= p.base.nb.axis[r].dilation * p.base.tile.q_tiles[r];
  if (boxes > 0x7fffffff)
    throw Error(ErrorKind::kInvalidArgument, "fna: cuda-hopper: the grid has " +
                                                 std::to_string(boxes) +
                                                 " query tiles per head, more than 2^31 - 1");
  p.groups = static_cast<int>(pr.dilation[0] * (pr.rank > 1 ? pr.dilation[1] : 1) *
                              (pr.rank > 2 ? pr.dilation[2] : 1));
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  const int64_t map_count =
      pr.batch * (p.groups * kMapsPerGroup + (pr.additional_kv > 0 ? kMapsPerBatchExtra : 0));
  if (map_count > kInlineMaps) {
    // Too many maps for the kernel parameters: they are uploaded from pageable memory, which a
    // stream under CUDA graph capture does not allow.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    FNA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) {
      if (options.backend == Backend::kAuto) return run_forward(pr, args, options);
      throw Error(ErrorKind::kNotAvailable,
                  std::string("fna: option 'backend' = '") + kName + "' cannot run: batch x " +
                      "dilation groups needs " + std::to_string(map_count) +
                      " TMA tensor maps, more than the " + std::to_string(kInlineMaps) +
                      " a CUDA graph capture can take (use cuda-fused or backend auto)");
    }
  }
  const std::vector<CUtensorMap> maps =
      encode_forward_maps(pr, args, p.base.tile, FwdBlockShapeSm90::kBlockN);
  void* dmaps = nullptr;
  if (maps.size() <= static_cast<size_t>(kInlineMaps)) {
    std::copy(maps.begin(), maps.end(), p.inline_maps);
  } else {
    // Stream-ordered: the array lives exactly as long as the kernel that reads it. The copy
    // from pageable memory has read `maps` when it returns.
    const size_t bytes = maps.size() * sizeof(CUtensorMap);
    FNA_CUDA_CHECK(cudaMallocAsync(&dmaps, bytes, stream));
    FNA_CUDA_CHECK(cudaMemcpyAsync(dmaps, maps.data(), bytes, cudaMemcpyHostToDevice, stream));
    p.maps = dmaps;
    p.map_count = static_cast<int>(maps.size());
  }
  p.boxes = static_cast<int>(boxes);
  p.items = boxes * pr.heads_q * pr.batch;
  // Persistent: one block per SM (a block takes 232000 B of shared memory at D = 128: 3 KV
  // stages and the mask table, FwdTraitsSm90::kSmemBytes), the last wave's items split over
  // the idle SMs when that pays (split_fwd_sm90.h).
  const int64_t blocks = persistent_grid(args.q.device.index);
  const TailSplit split =
      tail_split_enabled()
          ? plan_tail_split(p.base.nb, p.base.tile, boxes, pr.heads_q * pr.batch,
                            p.base.additional_kv, blocks, FwdBlockShapeSm90::kBlockN)
          : TailSplit{p.items, 1, p.items};
  p.main_items = split.main_items;
  p.chunks = split.chunks;
  p.units = split.units;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(p.units, blocks)));
  // Dynamic unless every block takes one unit. The tail split's rule (plan_tail_split) counts
  // round-robin waves of equal items; with equal items the dynamic schedule is the round-robin
  // one, and with unequal ones its last wave is ragged instead of short, so the split units
  // (last in the order) still go to the SMs that free first.
  const bool dynamic = dynamic_schedule_enabled() && p.units > int64_t{grid.x};
  const int d = static_cast<int>(pr.head_dim);
  void* ws = nullptr;
  try {
    ws = schedule_workspace(p, d, dynamic, stream);
    if (args.q.dtype == DType::kBFloat16) {
#if defined(FNA_BUILT_BF16)
      launch<cutlass::bfloat16_t>(p, d, grid, stream);
#endif
    } else {
#if defined(FNA_BUILT_FP16)
      launch<cutlass::half_t>(p, d, grid, stream);
#endif
    }
  } catch (...) {
    if (ws) cudaFreeAsync(ws, stream);
    if (dmaps) cudaFreeAsync(dmaps, stream);
    throw;
  }
  if (ws) FNA_CUDA_CHECK(cudaFreeAsync(ws, stream));
  if (dmaps) FNA_CUDA_CHECK(cudaFreeAsync(dmaps, stream));
#else
  (void)options;
  throw Error(ErrorKind::kNotAvailable, "fna: cuda-hopper is not compiled into this build");
#endif
}

const detail::BackendImpl& hopper_backend_impl() {
  static const detail::BackendImpl impl{Backend::kCudaHopper, &hopper_unavailable, &hopper_forward,
                                        &run_backward};
  return impl;
}

}  // namespace fna::cuda::fused
