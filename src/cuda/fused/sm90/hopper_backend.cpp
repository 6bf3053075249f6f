// Backend `cuda-hopper`: the sm_90a forward (TMA + wgmma, warp-specialized). This file holds the
// BackendImpl entry (what the backend can run), the host side of the forward (plan, tensor maps,
// launch) and the backward, which is the cuda-fused one (the forward's out and lse are all it
// needs).
#include <cuda_runtime_api.h>
#include <cutlass/numeric_types.h>

#include <algorithm>
#include <array>
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
  // stages and the mask table, FwdTraitsSm90::kSmemBytes).
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(p.items, sm_count(args.q.device.index))));
  const int d = static_cast<int>(pr.head_dim);
  try {
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
    if (dmaps) cudaFreeAsync(dmaps, stream);
    throw;
  }
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
