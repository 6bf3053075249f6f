// Tensor maps of the Hopper forward (see tma_maps_sm90.h). cuTensorMapEncodeTiled comes from the
// driver through the runtime's entry-point query, so the library links only the runtime.
#include "cuda/fused/sm90/tma_maps_sm90.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>

#include "common/problem_util.h"
#include "cuda/fused/sm90/params_fwd_sm90.h"
#include "fna/error.h"

namespace fna::cuda::fused {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_tiled() {
  static std::once_flag once;
  static EncodeTiled fn = nullptr;
  std::call_once(once, [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) == cudaSuccess &&
        found == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiled>(f);
    cudaGetLastError();
  });
  if (!fn)
    throw Error(ErrorKind::kRuntime,
                "fna: cuda-hopper: the CUDA driver has no cuTensorMapEncodeTiled (needs CUDA 12+)");
  return fn;
}

// One 5-dim view (D, axis 2, axis 1, axis 0, head) in bytes.
struct View5 {
  char* base = nullptr;
  cuuint64_t dim[5] = {1, 1, 1, 1, 1};
  cuuint64_t stride[4] = {0, 0, 0, 0};  // bytes, dims 1..4
};

CUtensorMap encode(const View5& v, DType dtype, const cuuint32_t (&box)[5]) {
  CUtensorMap map;
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType type = dtype == DType::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                             : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  // 256-byte L2 promotion: a box row is 128 bytes of D, and neighbouring D chunks of the same
  // tokens are fetched right after.
  const CUresult r =
      encode_tiled()(&map, type, 5, v.base, v.dim, v.stride, box, element_strides,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                     CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(ErrorKind::kRuntime, "fna: cuda-hopper: cuTensorMapEncodeTiled failed (CUresult " +
                                         std::to_string(static_cast<int>(r)) + ")");
  return map;
}

// Element stride of a dim, 0 for dims of extent 1 (never stepped, so any value is right and 0
// always meets TMA's 16-byte rule).
int64_t step(const TensorView& t, int dim) { return t.shape[dim] > 1 ? t.strides[dim] : 0; }

// View of batch b, dilation group g[] of a token tensor [B, axes..., H, D].
View5 group_view(const TensorView& t, const Neighborhood& nb, int rank, int64_t b, const int* g) {
  const int64_t es = dtype_size(t.dtype);
  View5 v;
  int64_t offset = b * step(t, 0);
  v.dim[0] = static_cast<cuuint64_t>(t.shape[rank + 2]);
  for (int r = 0; r < rank; ++r) {
    const Axis& a = nb.axis[r];
    offset += g[r] * step(t, 1 + r);
    v.dim[3 - r] = static_cast<cuuint64_t>(group_length(a, g[r]));
    v.stride[2 - r] = static_cast<cuuint64_t>(a.dilation * step(t, 1 + r) * es);
  }
  v.dim[4] = static_cast<cuuint64_t>(t.shape[rank + 1]);
  v.stride[3] = static_cast<cuuint64_t>(step(t, rank + 1) * es);
  v.base = static_cast<char*>(t.data) + offset * es;
  return v;
}

// View of batch b of an additional-KV tensor [B, N, H, D] as (D, N, 1, 1, H).
View5 extra_view(const TensorView& t, int64_t b) {
  const int64_t es = dtype_size(t.dtype);
  View5 v;
  v.dim[0] = static_cast<cuuint64_t>(t.shape[3]);
  v.dim[1] = static_cast<cuuint64_t>(t.shape[1]);
  v.stride[0] = static_cast<cuuint64_t>(step(t, 1) * es);
  v.dim[4] = static_cast<cuuint64_t>(t.shape[2]);
  v.stride[3] = static_cast<cuuint64_t>(step(t, 2) * es);
  v.base = static_cast<char*>(t.data) + b * step(t, 0) * es;
  return v;
}

std::string check_view(const char* name, const TensorView& t) {
  const int64_t es = dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0)
    return std::string(name) + " starts at an address that is not 16-byte aligned";
  for (int i = 0; i + 1 < t.rank(); ++i)
    if ((step(t, i) * es) % 16 != 0)
      return std::string(name) + " has stride " + std::to_string(t.strides[i]) + " in dim " +
             std::to_string(i) + ", not a multiple of 16 bytes";
  return {};
}

}  // namespace

std::string tma_unsupported(const Problem& p, const ForwardArgs& args) {
  std::string why = check_view("q", args.q);
  if (why.empty()) why = check_view("k", args.k);
  if (why.empty()) why = check_view("v", args.v);
  // out is written with 4-byte stores from registers: the same rule keeps every row aligned.
  if (why.empty()) why = check_view("out", args.out);
  if (why.empty() && p.additional_kv > 0) why = check_view("additional_k", *args.additional_k);
  if (why.empty() && p.additional_kv > 0) why = check_view("additional_v", *args.additional_v);
  if (why.empty()) return {};
  return why + ": cuda-hopper loads through TMA, which needs 16-byte aligned addresses and strides";
}

std::vector<CUtensorMap> encode_forward_maps(const Problem& p, const ForwardArgs& args,
                                             const TileShape& tile, int block_n) {
  const Neighborhood nb = make_neighborhood(p);
  const int rank = p.rank;
  const cuuint32_t q_box[5] = {64, cuuint32_t(1) << tile.q_shift[2],
                               cuuint32_t(1) << tile.q_shift[1], cuuint32_t(1) << tile.q_shift[0],
                               1};
  const cuuint32_t kv_box[5] = {64, cuuint32_t(1) << tile.kv_shift[2],
                                cuuint32_t(1) << tile.kv_shift[1],
                                cuuint32_t(1) << tile.kv_shift[0], 1};
  const cuuint32_t extra_box[5] = {64, static_cast<cuuint32_t>(block_n), 1, 1, 1};
  int64_t groups = 1;
  for (int r = 0; r < 3; ++r) groups *= nb.axis[r].dilation;
  std::vector<CUtensorMap> maps;
  maps.reserve(p.batch * (groups * kMapsPerGroup + kMapsPerBatchExtra));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t gi = 0; gi < groups; ++gi) {
      int g[3];
      int64_t rest = gi;
      for (int r = 2; r >= 0; --r) {
        g[r] = static_cast<int>(rest % nb.axis[r].dilation);
        rest /= nb.axis[r].dilation;
      }
      maps.push_back(encode(group_view(args.q, nb, rank, b, g), args.q.dtype, q_box));
      maps.push_back(encode(group_view(args.k, nb, rank, b, g), args.k.dtype, kv_box));
      maps.push_back(encode(group_view(args.v, nb, rank, b, g), args.v.dtype, kv_box));
    }
  if (p.additional_kv > 0)
    for (int64_t b = 0; b < p.batch; ++b) {
      maps.push_back(encode(extra_view(*args.additional_k, b), args.q.dtype, extra_box));
      maps.push_back(encode(extra_view(*args.additional_v, b), args.q.dtype, extra_box));
    }
  return maps;
}

}  // namespace fna::cuda::fused
