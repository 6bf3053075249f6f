// run_forward of backend `cuda-fused`: turns the API arguments into FwdParams, plans the tiles and
// dispatches to the generated (storage type, head dim) instance.
#include <string>

#include "common/problem_util.h"
#include "cuda/fused/common/fused_params.h"
#include "cuda/fused/common/host_views.h"
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
  FwdParams p;
  const int rank = pr.rank;
  p.q = args.q.data;
  p.k = args.k.data;
  p.v = args.v.data;
  p.out = args.out.data;
  p.q_stride = token_strides(args.q, rank);
  p.k_stride = token_strides(args.k, rank);
  p.v_stride = token_strides(args.v, rank);
  p.out_stride = token_strides(args.out, rank);
  bool aligned = rows_aligned(args.q) && rows_aligned(args.k) && rows_aligned(args.v) &&
                 rows_aligned(args.out);
  if (args.lse) {
    p.lse = static_cast<float*>(args.lse->data);
    const TensorView& l = *args.lse;
    p.lse_stride.b = l.strides[0];
    for (int r = 0; r < rank; ++r) p.lse_stride.x[r] = l.strides[1 + r];
    p.lse_stride.h = l.strides[1 + rank];
  }
  if (pr.additional_kv > 0) {
    p.add_k = args.additional_k->data;
    p.add_v = args.additional_v->data;
    p.add_k_stride = token_strides(*args.additional_k, 1);
    p.add_v_stride = token_strides(*args.additional_v, 1);
    aligned = aligned && rows_aligned(*args.additional_k) && rows_aligned(*args.additional_v);
  }
  p.nb = make_neighborhood(pr);
  p.batch = pr.batch;
  p.heads_q = static_cast<int>(pr.heads_q);
  p.heads_ratio = static_cast<int>(pr.heads_q / pr.heads_kv);
  p.additional_kv = static_cast<int>(pr.additional_kv);
  p.scale = static_cast<float>(pr.effective_scale());
  p.scale_log2 = static_cast<float>(pr.effective_scale() * 1.4426950408889634);
  p.aligned = aligned;
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
