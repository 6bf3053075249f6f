// run_forward of backend `cuda-fused`: turns the API arguments into FwdParams, plans the tiles and
// dispatches to the generated (storage type, head dim) instance.
#include <string>
#include <type_traits>

#include "common/problem_util.h"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/common/host_views.h"
#include "cuda/fused/common/small_window.h"
#include "cuda/fused/common/tile_plan.h"
#include "cuda/fused/fused_config.h"
#include "cuda/fused/fused_launch.h"
#include "cuda/fused/sm80/launch_fwd.h"
#include "fna/error.h"

namespace fna::cuda::fused {
namespace {

template <class Element, int kHeadDim>
void launch(FwdParams& p, const Options& options, cudaStream_t stream) {
  if constexpr (head_dim_built(kHeadDim)) {
    using Shape = FwdBlockShape<Element, kHeadDim>;
    // Small 2-D windows take the small-window kernel unless tiles are overridden (the override
    // names the general kernel's boxes).
    if (!options.tiles && small_window_runs(p.nb, kHeadDim, !std::is_same_v<Element, float>,
                                            p.aligned, p.additional_kv, p.scale_log2)) {
      p.small_window = true;
      const int64_t boxes = ceil_div(p.nb.axis[0].extent, SmallWindow::kBoxRows) *
                            ceil_div(p.nb.axis[1].extent, SmallWindow::kBoxCols);
      if (boxes > 0x7fffffff)
        throw Error(ErrorKind::kInvalidArgument,
                    "fna: cuda-fused: the grid has " + std::to_string(boxes) +
                        " query tiles, more than a CUDA grid holds (2^31 - 1)");
      launch_fwd_sm80<Element, kHeadDim>(
          p,
          dim3(static_cast<unsigned>(boxes), static_cast<unsigned>(p.heads_q),
               static_cast<unsigned>(p.batch)),
          stream);
      return;
    }
    if (options.tiles) {
      const std::string why =
          tile_override_error(p.nb, *options.tiles, Shape::kBlockM, Shape::kBlockN);
      if (!why.empty())
        throw Error(ErrorKind::kInvalidArgument, "fna: option " + why + " (backend cuda-fused)");
      p.tile = shape_from_boxes(p.nb, *options.tiles);
    } else {
      p.tile = cached_plan<TileShape>(p.nb, {Shape::kBlockM, Shape::kBlockN}, [&] {
        return plan_tiles(p.nb, Shape::kBlockM, Shape::kBlockN).shape;
      });
    }
    int64_t boxes = 1;
    for (int r = 0; r < 3; ++r) boxes *= p.nb.axis[r].dilation * p.tile.q_tiles[r];
    if (boxes > 0x7fffffff)
      throw Error(ErrorKind::kInvalidArgument,
                  "fna: cuda-fused: the grid has " + std::to_string(boxes) +
                      " query tiles, more than a CUDA grid holds (2^31 - 1)");
    const dim3 grid(static_cast<unsigned>(boxes), static_cast<unsigned>(p.heads_q),
                    static_cast<unsigned>(p.batch));
    launch_fwd_sm80<Element, kHeadDim>(p, grid, stream);
  } else {
    throw Error(ErrorKind::kNotAvailable,
                "fna: cuda-fused: head_dim " + std::to_string(kHeadDim) +
                    " is not compiled: enable with FNA_HEAD_DIMS=" + std::to_string(kHeadDim));
  }
}

template <class Element>
void dispatch_head_dim(FwdParams& p, int head_dim, const Options& options, cudaStream_t stream) {
  switch (head_dim) {
    case 32:
      return launch<Element, 32>(p, options, stream);
    case 64:
      return launch<Element, 64>(p, options, stream);
    case 128:
      return launch<Element, 128>(p, options, stream);
    case 256:
      return launch<Element, 256>(p, options, stream);
    default:
      throw Error(ErrorKind::kNotAvailable, "fna: cuda-fused: head_dim " +
                                                std::to_string(head_dim) +
                                                " is not supported (supported: 32, 64, 128, 256)");
  }
}

}  // namespace

void run_forward(const Problem& pr, const ForwardArgs& args, const Options& options) {
  FwdParams p = forward_params(pr, args);  // the tile shape is set per instance (launch)
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  switch (args.q.dtype) {
    case DType::kFloat32:
      return dispatch_head_dim<float>(p, static_cast<int>(pr.head_dim), options, stream);
#if defined(FNA_BUILT_FP16)
    case DType::kFloat16:
      return dispatch_head_dim<cutlass::half_t>(p, static_cast<int>(pr.head_dim), options, stream);
#endif
#if defined(FNA_BUILT_BF16)
    case DType::kBFloat16:
      return dispatch_head_dim<cutlass::bfloat16_t>(p, static_cast<int>(pr.head_dim), options,
                                                    stream);
#endif
    default:
      throw Error(ErrorKind::kNotAvailable,
                  std::string("fna: cuda-fused: dtype ") + dtype_name(args.q.dtype) +
                      " is not compiled: enable with FNA_DTYPES=" + dtype_name(args.q.dtype));
  }
}

}  // namespace fna::cuda::fused
