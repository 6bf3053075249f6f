// Backend `cpu`: fused, tiled neighborhood attention on the CPU (fp32 accumulation, OpenMP).
//
// This file is the driver: it builds the per-axis window tables from neighborhood.h, converts the
// user's strided tensors (fp32 / fp16 / bf16) into fp32 planes per (batch, kv head), runs the
// kernel passes over work units in parallel, and converts the output planes back. The kernels
// (fused_kernels_impl.h) are compiled twice, for AVX2+FMA and for the portable baseline, and the
// first is chosen at run time when the CPU has it (FNA_CPU_ISA=generic forces the baseline).
#include <omp.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cpu/cpu_backend_impl.h"
#include "cpu/fused_plan.h"
#include "cpu/strided.h"

namespace fna::cpu {
namespace {

using fused::KernelGeometry;
using fused::KernelTable;
using fused::kLanes;
using fused::Planes;
using fused::Scratch;
using fused::Unit;

const KernelTable& select_kernels() {
  static const KernelTable* table = [] {
    const char* force = std::getenv("FNA_CPU_ISA");
    if (force && std::string(force) == "generic") return &fused::kernels_generic();
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return &fused::kernels_avx2();
#endif
    return &fused::kernels_generic();
  }();
  return *table;
}

// 64-byte aligned fp32 storage, recycled across calls: fresh pages cost a page fault per 4 KiB,
// which was ~5% of a 64x64 forward. Up to kPoolBytes of released buffers are kept.
class BufferPool {
 public:
  static BufferPool& get() {
    static BufferPool pool;
    return pool;
  }
  // The pooled buffers go with the pool at exit (LeakSanitizer reported them once the free list
  // holding them was destroyed). Buffers are only held inside a call, so none is out at exit.
  ~BufferPool() {
    for (const auto& [capacity, p] : free_) ::operator delete[](p, std::align_val_t(64));
  }
  float* acquire(int64_t n, int64_t* capacity) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      int best = -1;
      for (int i = 0; i < static_cast<int>(free_.size()); ++i)
        if (free_[i].first >= n && (best < 0 || free_[i].first < free_[best].first)) best = i;
      if (best >= 0) {
        *capacity = free_[best].first;
        float* p = free_[best].second;
        pooled_ -= *capacity;
        free_.erase(free_.begin() + best);
        return p;
      }
    }
    *capacity = n;
    return static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(64)));
  }
  void release(float* p, int64_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if ((pooled_ + capacity) * static_cast<int64_t>(sizeof(float)) <= kPoolBytes) {
        free_.emplace_back(capacity, p);
        pooled_ += capacity;
        return;
      }
    }
    ::operator delete[](p, std::align_val_t(64));
  }

 private:
  static constexpr int64_t kPoolBytes = int64_t{256} << 20;
  std::mutex mu_;
  std::vector<std::pair<int64_t, float*>> free_;
  int64_t pooled_ = 0;
};

struct FloatBuffer {
  float* ptr = nullptr;
  int64_t capacity = 0;
  explicit FloatBuffer(int64_t n = 0) {
    if (n > 0) ptr = BufferPool::get().acquire(n, &capacity);
  }
  ~FloatBuffer() {
    if (ptr) BufferPool::get().release(ptr, capacity);
  }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  float* get() const { return ptr; }
};

// Window tables of every axis and dilation group, the plane layout and the work-unit grid.
struct Geometry {
  KernelGeometry kg{};
  int last = 0;
  std::vector<int64_t> glen[3];
  std::vector<int32_t> lo[3], hi[3], ilo[3], ihi[3];
  int lpu = 2;  // lines per unit (adjacent along the innermost non-last axis)
  int64_t tuples = 1, outer = 1, chunks = 1;  // unit grid per (head, group): tuples of lpu lines

  Geometry(const Problem& p, int lines_per_unit) : lpu(lines_per_unit) {
    const Neighborhood nb = make_neighborhood(p);
    kg.rank = p.rank;
    last = p.rank - 1;
    kg.groups = 1;
    for (int a = 0; a < 3; ++a) {
      const Axis& ax = nb.axis[a];
      const int64_t d = ax.dilation, lmax = ceil_div(ax.extent, d);
      kg.dil[a] = d;
      kg.lmax[a] = lmax;
      kg.groups *= d;
      glen[a].resize(d);
      lo[a].assign(d * lmax, 0);
      hi[a].assign(d * lmax, 0);
      ilo[a].assign(d * lmax, 0);
      ihi[a].assign(d * lmax, 0);
      for (int64_t g = 0; g < d; ++g) {
        const int64_t len = group_length(ax, g);
        glen[a][g] = len;
        int32_t* l = &lo[a][g * lmax];
        int32_t* h = &hi[a][g * lmax];
        for (int64_t i = 0; i < len; ++i) {
          int64_t s, e;
          window_in_group(ax, len, i, &s, &e);
          l[i] = static_cast<int32_t>(s);
          h[i] = static_cast<int32_t>(e);
        }
        // Inverse neighborhood: lo and hi are non-decreasing, so the queries attending key j are
        // [first i with hi > j, first i with lo > j).
        int64_t a0 = 0, b0 = 0;
        for (int64_t j = 0; j < len; ++j) {
          while (a0 < len && h[a0] <= j) ++a0;
          while (b0 < len && l[b0] <= j) ++b0;
          ilo[a][g * lmax + j] = static_cast<int32_t>(a0);
          ihi[a][g * lmax + j] = static_cast<int32_t>(std::max(a0, b0));
        }
      }
      kg.glen[a] = glen[a].data();
      kg.lo[a] = lo[a].data();
      kg.hi[a] = hi[a].data();
      kg.ilo[a] = ilo[a].data();
      kg.ihi[a] = ihi[a].data();
    }
    kg.lines = 1;
    for (int a = 0; a < last; ++a) kg.lines *= kg.lmax[a];
    kg.ldn = (kg.lmax[last] + kLanes - 1) / kLanes * kLanes + fused::kPlanePad;
    // Dim rows a multiple of 128 B apart would share L1 sets across a kernel's many row streams.
    while (kg.ldn % 32 == 0) kg.ldn += kLanes;
    if (last >= 1) tuples = (kg.lmax[last - 1] + lpu - 1) / lpu;
    if (last == 2) outer = kg.lmax[0];
    const int64_t vectors = (kg.lmax[last] + kLanes - 1) / kLanes;
    chunks = (vectors + fused::kUnitVectors - 1) / fused::kUnitVectors;
  }

  int64_t plane_floats(int64_t dim) const { return kg.groups * kg.lines * dim * kg.ldn; }
  int64_t units_per_head() const { return kg.groups * outer * tuples * chunks; }

  void group_coords(int64_t group, int64_t* gc) const {
    for (int a = 2; a >= 0; --a) {
      gc[a] = group % kg.dil[a];
      group /= kg.dil[a];
    }
  }

  // Unit `idx` of units_per_head(); false when it lies past the end of its (shorter) group.
  bool unit(int64_t idx, int64_t head, Unit* u) const {
    // Line tuples vary fastest: consecutive units share most of their key rows in cache.
    const int64_t tuple = idx % tuples;
    idx /= tuples;
    const int64_t chunk = idx % chunks;
    idx /= chunks;
    const int64_t o = idx % outer;
    u->group = idx / outer;
    u->head = head;
    group_coords(u->group, u->gc);
    const int64_t nlen = glen[last][u->gc[last]];
    u->n_begin = chunk * fused::kUnitVectors * kLanes;
    if (u->n_begin >= nlen) return false;
    u->n_end = std::min(nlen, u->n_begin + fused::kUnitVectors * kLanes);
    u->nlines = 1;
    for (int r = 0; r < fused::kMaxUnitLines; ++r) {
      for (int a = 0; a < 3; ++a) u->line_i[r][a] = 0;
      u->line[r] = 0;
    }
    if (last == 0) return true;
    const int inner = last - 1;
    if (last == 2 && o >= glen[0][u->gc[0]]) return false;
    const int64_t ilen = glen[inner][u->gc[inner]], i0 = lpu * tuple;
    if (i0 >= ilen) return false;
    u->nlines = static_cast<int>(std::min<int64_t>(lpu, ilen - i0));
    // Lines past the group's end (r >= nlines) are set too: they address zeroed plane lines.
    for (int r = 0; r < lpu; ++r) {
      if (last == 2) u->line_i[r][0] = o;
      u->line_i[r][inner] = i0 + r;
      u->line[r] = last == 2 ? o * kg.lmax[1] + i0 + r : i0 + r;
    }
    return true;
  }

  // Token coordinates of plane line `line` of `group`; false for lines past the group's end.
  bool line_coords(int64_t group, int64_t line, int64_t* x, int64_t* n_len, int64_t* gc) const {
    group_coords(group, gc);
    int64_t i[3] = {0, 0, 0};
    if (last == 1) i[0] = line;
    if (last == 2) {
      i[0] = line / kg.lmax[1];
      i[1] = line % kg.lmax[1];
    }
    for (int a = 0; a < last; ++a) {
      if (i[a] >= glen[a][gc[a]]) return false;
      x[a] = i[a] * kg.dil[a] + gc[a];
    }
    *n_len = glen[last][gc[last]];
    return true;
  }
};

// ---- conversion between tensors and planes ----------------------------------------------------
// A conversion task moves one plane line of a run of consecutive heads, so each token's rows of
// all those heads (contiguous in the usual [..., H, D] layout) stream in one pass; converting one
// head at a time read 256 B out of every 2 KiB and ran at DRAM latency, not bandwidth.
// Tokens move in blocks of kLanes x kDimBlock through an L1 tile.
constexpr int64_t kDimBlock = 64;

// kLanes token rows (rows[l] + d, times scale) <-> plane dims d0.. (dst[d * ldn + lane]): 4x4 SSE
// transposes straight from / to the rows; the scalar loops ran at ~9 cycles per element and cost
// more than a 13x13 window, and an fp32 copy into an L1 tile first compiled to `rep movsq`, ~30%
// of the conversion time at 256 B per token row.
inline void rows_to_plane(const float* const* rows, int64_t nd, float scale, float* dst,
                          int64_t ldn) {
  int64_t d = 0;
#if defined(__SSE2__)
  const __m128 sc = _mm_set1_ps(scale);
  for (; d + 4 <= nd; d += 4)
    for (int l = 0; l < kLanes; l += 4) {
      __m128 r0 = _mm_mul_ps(_mm_loadu_ps(rows[l] + d), sc);
      __m128 r1 = _mm_mul_ps(_mm_loadu_ps(rows[l + 1] + d), sc);
      __m128 r2 = _mm_mul_ps(_mm_loadu_ps(rows[l + 2] + d), sc);
      __m128 r3 = _mm_mul_ps(_mm_loadu_ps(rows[l + 3] + d), sc);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(dst + d * ldn + l, r0);
      _mm_storeu_ps(dst + (d + 1) * ldn + l, r1);
      _mm_storeu_ps(dst + (d + 2) * ldn + l, r2);
      _mm_storeu_ps(dst + (d + 3) * ldn + l, r3);
    }
#endif
  for (; d < nd; ++d)
    for (int l = 0; l < kLanes; ++l) dst[d * ldn + l] = rows[l][d] * scale;
}

inline void plane_to_rows(const float* src, int64_t ldn, int64_t nd, float* const* rows) {
  int64_t d = 0;
#if defined(__SSE2__)
  for (; d + 4 <= nd; d += 4)
    for (int l = 0; l < kLanes; l += 4) {
      __m128 r0 = _mm_loadu_ps(src + d * ldn + l), r1 = _mm_loadu_ps(src + (d + 1) * ldn + l);
      __m128 r2 = _mm_loadu_ps(src + (d + 2) * ldn + l), r3 = _mm_loadu_ps(src + (d + 3) * ldn + l);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(rows[l] + d, r0);
      _mm_storeu_ps(rows[l + 1] + d, r1);
      _mm_storeu_ps(rows[l + 2] + d, r2);
      _mm_storeu_ps(rows[l + 3] + d, r3);
    }
#endif
  for (; d < nd; ++d)
    for (int l = 0; l < kLanes; ++l) rows[l][d] = src[d * ldn + l];
}

// Read-only zeros for the lanes past a line's end (fp32 inputs are transposed in place).
alignas(64) constexpr float kZeroRow[kDimBlock] = {};

// Elements [0, nd) of cnt token rows of any dtype, times scale, into plane dims (lanes >= cnt
// zero). fp32 rows are transposed where they lie; other dtypes are converted into `tile` first.
template <typename T>
void gather_rows(const T* const* rows, int cnt, int64_t nd, float scale, float* dst, int64_t ldn,
                 float (*tile)[kDimBlock]) {
  const float* src[kLanes];
  for (int l = cnt; l < kLanes; ++l) src[l] = kZeroRow;
  if constexpr (std::is_same_v<T, float>) {
    for (int l = 0; l < cnt; ++l) src[l] = rows[l];
    rows_to_plane(src, nd, scale, dst, ldn);
  } else {
    for (int l = 0; l < cnt; ++l) {
      for (int64_t d = 0; d < nd; ++d) tile[l][d] = to_float(rows[l][d]) * scale;
      src[l] = tile[l];
    }
    rows_to_plane(src, nd, 1.0f, dst, ldn);
  }
}

// Plane dims [0, nd) -> elements of cnt token rows of any dtype (lanes >= cnt dropped).
template <typename T>
void scatter_rows(const float* src, int64_t ldn, int64_t nd, T* const* rows, int cnt,
                  float (*tile)[kDimBlock]) {
  float* dst[kLanes];
  for (int l = 0; l < kLanes; ++l) dst[l] = tile[l];
  if constexpr (std::is_same_v<T, float>) {
    for (int l = 0; l < cnt; ++l) dst[l] = rows[l];
    plane_to_rows(src, ldn, nd, dst);
  } else {
    plane_to_rows(src, ldn, nd, dst);
    for (int l = 0; l < cnt; ++l)
      for (int64_t d = 0; d < nd; ++d) rows[l][d] = from_float<T>(tile[l][d]);
  }
}

// Lines (group, line) of heads [head0, head0 + nheads) of a [B, ..., H, dim] tensor into plane
// row `row` of planes[h] (group * lines + line in whole planes, a slot in a ring), times `scale`;
// padding and lines past the group's end are zero.
template <typename T>
void fill_line(const Geometry& geo, const T* src, const TokenLayout& lay, int64_t b, int64_t head0,
               int64_t nheads, int64_t group, int64_t line, int64_t dim, float scale,
               float* const* planes, int64_t row) {
  const int64_t ldn = geo.kg.ldn, last = geo.last, off = row * dim * ldn;
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) {
    for (int64_t h = 0; h < nheads; ++h) std::memset(planes[h] + off, 0, sizeof(float) * dim * ldn);
    return;
  }
  auto row_of = [&](int64_t n) {
    x[last] = n * geo.kg.dil[last] + gc[last];
    return src + lay.offset(b, x, head0);
  };
  const int64_t span = ((nheads - 1) * lay.sh + dim) * static_cast<int64_t>(sizeof(T));
  alignas(64) float tile[kLanes][kDimBlock];
  for (int64_t n0 = 0; n0 < n_len; n0 += kLanes) {
    const T* rows[kLanes];
    const int cnt = static_cast<int>(std::min<int64_t>(kLanes, n_len - n0));
    for (int l = 0; l < cnt; ++l) rows[l] = row_of(n0 + l);
    for (int64_t n = n0 + kLanes; n < std::min(n_len, n0 + 2 * kLanes); ++n) {
      const char* next = reinterpret_cast<const char*>(row_of(n));
      for (int64_t byte = 0; byte < span; byte += 64) __builtin_prefetch(next + byte);
    }
    for (int64_t h = 0; h < nheads; ++h)
      for (int64_t d0 = 0; d0 < dim; d0 += kDimBlock) {
        const T* in[kLanes];
        for (int l = 0; l < cnt; ++l) in[l] = rows[l] + h * lay.sh + d0;
        gather_rows(in, cnt, std::min(kDimBlock, dim - d0), scale, planes[h] + off + d0 * ldn + n0,
                    ldn, tile);
      }
  }
  const int64_t padded = (n_len + kLanes - 1) / kLanes * kLanes;
  for (int64_t h = 0; h < nheads; ++h)
    for (int64_t d = 0; d < dim; ++d)
      std::fill(planes[h] + off + d * ldn + padded, planes[h] + off + (d + 1) * ldn, 0.0f);
}

// delta = rowsum(dO * O) of each query of the line (the FA2 backward's correction term).
template <typename T>
void fill_delta_line(const Geometry& geo, const T* dout, const TokenLayout& ldo, const T* out,
                     const TokenLayout& lo, int64_t b, int64_t head0, int64_t nheads, int64_t dv,
                     int64_t group, int64_t line, float* const* planes) {
  const int64_t ldn = geo.kg.ldn, last = geo.last, off = (group * geo.kg.lines + line) * ldn;
  for (int64_t h = 0; h < nheads; ++h) std::fill(planes[h] + off, planes[h] + off + ldn, 0.0f);
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) return;
  for (int64_t n = 0; n < n_len; ++n) {
    x[last] = n * geo.kg.dil[last] + gc[last];
    for (int64_t h = 0; h < nheads; ++h) {
      const T* a = dout + ldo.offset(b, x, head0 + h);
      const T* c = out + lo.offset(b, x, head0 + h);
      float s[4] = {0, 0, 0, 0};  // four partial sums let the compiler vectorize
      int64_t d = 0;
      for (; d + 4 <= dv; d += 4)
        for (int i = 0; i < 4; ++i) s[i] += to_float(a[d + i]) * to_float(c[d + i]);
      for (; d < dv; ++d) s[0] += to_float(a[d]) * to_float(c[d]);
      planes[h][off + n] = (s[0] + s[1]) + (s[2] + s[3]);
    }
  }
}

// Plane lines of heads [head0, head0 + nheads) -> tensor (valid positions only).
template <typename T>
void store_line(const Geometry& geo, const float* const* planes, int64_t group, int64_t line,
                int64_t dim, T* dstt, const TokenLayout& lay, int64_t b, int64_t head0,
                int64_t nheads) {
  const int64_t ldn = geo.kg.ldn, last = geo.last, off = (group * geo.kg.lines + line) * dim * ldn;
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) return;
  alignas(64) float tile[kLanes][kDimBlock];
  for (int64_t n0 = 0; n0 < n_len; n0 += kLanes) {
    T* rows[kLanes];
    const int cnt = static_cast<int>(std::min<int64_t>(kLanes, n_len - n0));
    for (int l = 0; l < cnt; ++l) {
      x[last] = (n0 + l) * geo.kg.dil[last] + gc[last];
      rows[l] = dstt + lay.offset(b, x, head0);
    }
    for (int64_t h = 0; h < nheads; ++h)
      for (int64_t d0 = 0; d0 < dim; d0 += kDimBlock) {
        T* out[kLanes];
        for (int l = 0; l < cnt; ++l) out[l] = rows[l] + h * lay.sh + d0;
        scatter_rows(planes[h] + off + d0 * ldn + n0, ldn, std::min(kDimBlock, dim - d0), out, cnt,
                     tile);
      }
  }
}

// The additional tokens of (b, kv head) as one [dim][ld] plane line, and back.
template <typename T>
void fill_additional(const T* src, const TokenLayout& lay, int64_t b, int64_t head, int64_t nadd,
                     int64_t dim, int64_t ld, float* plane) {
  std::fill(plane, plane + dim * ld, 0.0f);
  for (int64_t n = 0; n < nadd; ++n) {
    const T* row = src + lay.offset(b, &n, head);
    for (int64_t d = 0; d < dim; ++d) plane[d * ld + n] = to_float(row[d]);
  }
}

template <typename T>
void store_additional(const float* plane, int64_t nadd, int64_t dim, int64_t ld, T* dst,
                      const TokenLayout& lay, int64_t b, int64_t head) {
  for (int64_t n = 0; n < nadd; ++n) {
    T* row = dst + lay.offset(b, &n, head);
    for (int64_t d = 0; d < dim; ++d) row[d] = from_float<T>(plane[d * ld + n]);
  }
}

// Planes of `count` heads in one buffer, a pointer per head.
struct PlaneSet {
  FloatBuffer buf;
  std::vector<float*> ptr;
  PlaneSet(int64_t count, int64_t floats) : buf(count * floats), ptr(count) {
    for (int64_t h = 0; h < count; ++h) ptr[h] = buf.get() + h * floats;
  }
  float* const* at(int64_t i) const { return ptr.data() + i; }
};

// Conversion task `i` of the additional tokens of the slices (batch, kv head) s0, s0 + 1, ...:
// the keys of slice s0 + i / 2 into ak.ptr[i / 2] when i is even, its values into av otherwise.
template <typename T, class Args>
void fill_additional_task(const Problem& p, const Args& a, const TokenLayout& lak,
                          const TokenLayout& lav, int64_t s0, int64_t i, int64_t ld_add,
                          const PlaneSet& ak, const PlaneSet& av) {
  const int64_t j = i / 2, b = (s0 + j) / p.heads_kv, hk = (s0 + j) % p.heads_kv;
  if (i % 2 == 0)
    fill_additional(static_cast<const T*>(a.additional_k->data), lak, b, hk, p.additional_kv,
                    p.head_dim, ld_add, ak.ptr[j]);
  else
    fill_additional(static_cast<const T*>(a.additional_v->data), lav, b, hk, p.additional_kv,
                    p.head_dim_v, ld_add, av.ptr[j]);
}

// Per-thread scratch of the kernels.
struct ThreadScratch {
  FloatBuffer buf, pieces;
  Scratch sc;
  ThreadScratch(int64_t d, int64_t dv)
      : buf(fused::scratch_floats(d, dv)),
        pieces(fused::kMaxPieces * fused::kPieceBytes / sizeof(float)) {
    sc.buf = buf.get();
    sc.pieces = pieces.get();
  }
};

// Work is done per block of consecutive (batch, kv head) slices s = b * heads_kv + hk, in three
// phases (conversion, kernels, conversion back) separated by barriers. A block's planes stay within
// kBlockBytes: every slice of a small problem at once (few barriers), a few heads of a long video.
constexpr int64_t kBlockBytes = int64_t{384} << 20;
// The forward's blocks are smaller: their K/V planes then stay in L3 between the conversion and
// the kernels instead of going to DRAM and back. On the issue-2 problem (before the ring
// below; 2.25 MiB of planes per head) one head per block ran the 2-thread forward ~1 ms faster than
// all eight at once.
constexpr int64_t kForwardBlockBytes = int64_t{4} << 20;

// Below about half a millisecond of work, waking a thread team costs more than it saves (and on
// an oversubscribed machine a barrier can wait a whole scheduler slice for a preempted thread).
constexpr double kParallelMinFlops = 1e7;

bool run_parallel(const Problem& p) {
  return fna::forward_flops(p) +
             4.0 * p.batch * p.tokens() * p.heads_q * (p.head_dim + p.head_dim_v) >=
         kParallelMinFlops;
}

int64_t slices_per_block(const Problem& p, int64_t floats_per_slice, int64_t budget_bytes) {
  const int64_t fit = budget_bytes / std::max<int64_t>(1, floats_per_slice * 4);
  return std::clamp<int64_t>(fit, 1, p.batch * p.heads_kv);
}

// The slices of a block as runs of consecutive kv heads of one batch (j0: first slice in block).
struct SliceRun {
  int64_t b, hk0, nh, j0;
};

std::vector<SliceRun> slice_runs(const Problem& p, int64_t s0, int64_t ns) {
  std::vector<SliceRun> runs;
  for (int64_t s = s0; s < s0 + ns;) {
    const int64_t b = s / p.heads_kv, hk = s % p.heads_kv;
    const int64_t nh = std::min(p.heads_kv - hk, s0 + ns - s);
    runs.push_back({b, hk, nh, s - s0});
    s += nh;
  }
  return runs;
}

// ---- forward -----------------------------------------------------------------------------------
// Queries and outputs of one (batch, kv head) slice, read and written per lane vector by the
// kernels (Planes::load_q / store_out).
template <typename T>
struct ForwardIO {
  const Geometry* geo;
  const T* q;
  T* out;
  float* lse;
  TokenLayout lq, lo, ll;
  int64_t b, hq0, D, Dv;
  float scale;

  // Rows of lanes n0.. of (group, line) for query head hq0 + head; returns the group coordinate
  // on the last axis.
  template <typename P>
  int rows(P* base, const TokenLayout& lay, int64_t head, int64_t group, int64_t line, int64_t n0,
           int valid, P** rows, int64_t* x) const {
    int64_t gc[3], n_len = 0;
    x[0] = x[1] = x[2] = 0;
    geo->line_coords(group, line, x, &n_len, gc);
    const int last = geo->last;
    for (int l = 0; l < valid; ++l) {
      x[last] = (n0 + l) * geo->kg.dil[last] + gc[last];
      rows[l] = base + lay.offset(b, x, hq0 + head);
    }
    return static_cast<int>(gc[last]);
  }

  static void prefetch_io(const void* ctx, int64_t head, int64_t group, int64_t line, int64_t n0,
                          int valid) {
    const ForwardIO& io = *static_cast<const ForwardIO*>(ctx);
    const T* q[kLanes];
    T* out[kLanes];
    int64_t x[3];
    io.rows(io.q, io.lq, head, group, line, n0, valid, q, x);
    io.rows(io.out, io.lo, head, group, line, n0, valid, out, x);
    for (int l = 0; l < valid; ++l) {
      const char* qr = reinterpret_cast<const char*>(q[l]);
      const char* orow = reinterpret_cast<const char*>(out[l]);
      for (int64_t byte = 0; byte < io.D * static_cast<int64_t>(sizeof(T)); byte += 64)
        __builtin_prefetch(qr + byte);
      for (int64_t byte = 0; byte < io.Dv * static_cast<int64_t>(sizeof(T)); byte += 64)
        __builtin_prefetch(orow + byte, 1);
    }
  }

  static void load_q(const void* ctx, int64_t head, int64_t group, int64_t line, int64_t n0,
                     int valid, float* dst) {
    const ForwardIO& io = *static_cast<const ForwardIO*>(ctx);
    const T* rows[kLanes];
    int64_t x[3];
    io.rows(io.q, io.lq, head, group, line, n0, valid, rows, x);
    alignas(64) float tile[kLanes][kDimBlock];
    for (int64_t d0 = 0; d0 < io.D; d0 += kDimBlock) {
      const T* in[kLanes];
      for (int l = 0; l < valid; ++l) in[l] = rows[l] + d0;
      gather_rows(in, valid, std::min(kDimBlock, io.D - d0), io.scale, dst + d0 * kLanes, kLanes,
                  tile);
    }
  }

  static void store_out(const void* ctx, int64_t head, int64_t group, int64_t line, int64_t n0,
                        int valid, const float* o, const float* lse) {
    const ForwardIO& io = *static_cast<const ForwardIO*>(ctx);
    T* rows[kLanes];
    int64_t x[3];
    const int64_t g = io.rows(io.out, io.lo, head, group, line, n0, valid, rows, x);
    alignas(64) float tile[kLanes][kDimBlock];
    for (int64_t d0 = 0; d0 < io.Dv; d0 += kDimBlock) {
      T* out[kLanes];
      for (int l = 0; l < valid; ++l) out[l] = rows[l] + d0;
      scatter_rows(o + d0 * kLanes, kLanes, std::min(kDimBlock, io.Dv - d0), out, valid, tile);
    }
    if (!io.lse) return;
    const int last = io.geo->last;
    for (int l = 0; l < valid; ++l) {
      x[last] = (n0 + l) * io.geo->kg.dil[last] + g;
      io.lse[io.ll.offset(io.b, x, io.hq0 + head)] = lse[l];
    }
  }
};

// ---- forward through per-thread rings (rank 2) ---------------------------------------------
// Instead of converting a whole block of K/V planes between two barriers, each thread walks its
// own runs of line tuples (the lines of one unit) down axis 0 and converts the K/V lines they
// attend into a ring of plane rows just before use (row r in slot r & (ring - 1)). The rows stay in
// cache (L2 / L3) between conversion and kernels, the conversion's strided reads interleave with
// compute instead of saturating memory in a phase of their own, and no barrier waits for a
// preempted thread.

// Ring rows that fit a thread's share of the cache: two threads' rings stay in L2 + L3.
constexpr int64_t kRingBytes = int64_t{2} << 20;
// A work item takes several kv heads of one batch at once when they divide evenly among the
// threads: each token row of K and V is then read as one contiguous run of all those heads
// instead of 256 B out of every 2 KiB (and the pages of q / out are walked once per item, not
// once per head). On the issue-2 problem (8 heads) four heads per item on two threads ran the
// forward faster than one head per item (1-thread CPU time 30.4 vs 33.4-35.2 ms, 2 threads
// 15.2-16.4 vs 16.1-17.0 ms). The rings of one thread's heads stay within kRingHeadsBytes.
constexpr int64_t kRingHeadsBytes = int64_t{6} << 20;

// Kv heads per work item: the most (within kRingHeadsBytes) that split the heads of a batch into
// equal items whose count is a multiple of the thread count; 1 when none does.
int64_t ring_heads(const Problem& p, const Geometry& geo, int64_t ring, int64_t threads) {
  const int64_t bytes = ring * (p.head_dim + p.head_dim_v) * geo.kg.ldn * 4;
  const int64_t hmax = std::min(p.heads_kv, kRingHeadsBytes / bytes);
  for (int64_t h = hmax; h > 1; --h)
    if (p.heads_kv % h == 0 && p.batch * (p.heads_kv / h) * geo.kg.groups % threads == 0) return h;
  return 1;
}

// Ring size for the forward: a power of two >= the most lines (axis 0, group coordinates) that
// one unit's tuple of query lines attends; 0 (whole planes) for ranks 1 and 3 or a ring over
// kRingBytes.
int64_t ring_rows(const Geometry& geo, int64_t dims) {
  if (geo.last != 1) return 0;
  const int64_t lmax = geo.kg.lmax[0];
  int64_t span = 1;
  for (int64_t g = 0; g < geo.kg.dil[0]; ++g) {
    const int64_t len = geo.glen[0][g];
    for (int64_t i = 0; i < len; i += geo.lpu) {
      const int64_t i1 = std::min(i + geo.lpu - 1, len - 1);
      span = std::max<int64_t>(span, geo.hi[0][g * lmax + i1] - geo.lo[0][g * lmax + i]);
    }
  }
  int64_t ring = 1;
  while (ring < span) ring *= 2;
  return ring * dims * geo.kg.ldn * static_cast<int64_t>(sizeof(float)) <= kRingBytes ? ring : 0;
}

template <typename T>
struct RingArgs {
  const T *k, *v;
  TokenLayout lk, lv;
  const T *ak, *av;  // additional tokens (null without)
  TokenLayout lak, lav;
};

// Line tuples shared out between the threads of the ring forward. A thread takes whole items in
// order and walks their tuples down axis 0; when no item is left it takes the far half of the
// largest range another thread is still walking (which then stops at the middle). Static items
// left a thread whose core was taken by another process (steal time, other jobs) holding the
// whole call up; the reference, dynamically scheduled per query, slows only by the lost share.
class TupleScheduler {
 public:
  TupleScheduler(std::vector<int64_t> tuples_per_item, int64_t threads)
      : tuples_(std::move(tuples_per_item)), ranges_(threads) {}

  // The next tuple of `thread` (false when all are taken); *fresh when it starts a new range, so
  // the thread's ring holds none of its lines.
  bool next(int64_t thread, int64_t* item, int64_t* tuple, bool* fresh) {
    std::lock_guard<std::mutex> lock(mu_);
    Range& mine = ranges_[thread];
    *fresh = mine.cur >= mine.end;
    if (*fresh) {
      if (next_item_ < static_cast<int64_t>(tuples_.size())) {
        mine = Range{next_item_, 0, tuples_[next_item_]};
        ++next_item_;
      } else {
        Range* victim = nullptr;
        for (Range& r : ranges_)
          if (r.end - r.cur >= kMinSteal && (!victim || r.end - r.cur > victim->end - victim->cur))
            victim = &r;
        if (!victim) return false;
        const int64_t mid = victim->cur + (victim->end - victim->cur + 1) / 2;
        mine = Range{victim->item, mid, victim->end};
        victim->end = mid;
      }
    }
    *item = mine.item;
    *tuple = mine.cur++;
    return true;
  }

 private:
  // A taken range converts the window - 1 lines above its first tuple again: 12 lines at a 13-row
  // window, the conversion of four tuples (lpu = 3), about half a tuple's time on the issue-2
  // problem. Taking one of three tuples still ends the pair a tuple earlier; fewer stay put.
  static constexpr int64_t kMinSteal = 3;
  struct Range {
    int64_t item = 0, cur = 0, end = 0;  // tuples [cur, end) of item are not taken yet
  };
  std::mutex mu_;
  std::vector<int64_t> tuples_;
  std::vector<Range> ranges_;  // per thread
  int64_t next_item_ = 0;
};

template <typename T>
void forward_ring(const Problem& p, const Geometry& geo, const KernelTable& kt,
                  const std::vector<Planes>& pl, const RingArgs<T>& ra, int64_t ring) {
  const int64_t D = p.head_dim, Dv = p.head_dim_v, hpg = p.heads_q / p.heads_kv;
  const int64_t ldn = geo.kg.ldn, lmax = geo.kg.lmax[0], groups = geo.kg.groups;
  const int64_t ld_add = pl[0].ld_add, nadd = p.additional_kv;
  const int64_t threads = run_parallel(p) ? omp_get_max_threads() : 1;
  // Items: (batch, block of hpt kv heads, dilation group), each a walk over its line tuples.
  const int64_t hpt = ring_heads(p, geo, ring, threads), blocks = p.heads_kv / hpt;
  const int64_t items = p.batch * blocks * groups;
  std::vector<int64_t> tuples(items);
  for (int64_t it = 0; it < items; ++it) {
    int64_t gc[3];
    geo.group_coords(it % groups, gc);
    tuples[it] = (geo.glen[0][gc[0]] + geo.lpu - 1) / geo.lpu;
  }
  TupleScheduler sched(std::move(tuples), threads);
#pragma omp parallel if (threads > 1)
  {
    ThreadScratch ts(D, Dv);
    FloatBuffer kbuf(hpt * ring * D * ldn), vbuf(hpt * ring * Dv * ldn),
        akbuf(nadd ? hpt * D * ld_add : 0), avbuf(nadd ? hpt * Dv * ld_add : 0);
    std::vector<float*> kr(hpt), vr(hpt);
    for (int64_t j = 0; j < hpt; ++j) {
      kr[j] = kbuf.get() + j * ring * D * ldn;
      vr[j] = vbuf.get() + j * ring * Dv * ldn;
    }
    int64_t add_block = -1;  // the (batch, head block) whose additional tokens are in akbuf / avbuf
    int64_t next = 0;        // first line of the current range not yet in the ring
    int64_t it, tup;
    bool fresh;
    while (sched.next(omp_get_thread_num(), &it, &tup, &fresh)) {
      const int64_t bh = it / groups, g = it % groups;
      const int64_t b = bh / blocks, hk0 = bh % blocks * hpt;
      if (nadd && add_block != bh) {
        for (int64_t j = 0; j < hpt; ++j) {
          fill_additional(ra.ak, ra.lak, b, hk0 + j, nadd, D, ld_add, akbuf.get() + j * D * ld_add);
          fill_additional(ra.av, ra.lav, b, hk0 + j, nadd, Dv, ld_add,
                          avbuf.get() + j * Dv * ld_add);
        }
        add_block = bh;
      }
      int64_t gc[3];
      geo.group_coords(g, gc);
      const int64_t len = geo.glen[0][gc[0]];
      const int32_t *lo = &geo.lo[0][gc[0] * lmax], *hi = &geo.hi[0][gc[0] * lmax];
      const int64_t i0 = geo.lpu * tup;
      const int64_t first = lo[i0], end = hi[std::min(i0 + geo.lpu - 1, len - 1)];
      for (next = fresh ? first : std::max(next, first); next < end; ++next) {
        const int64_t slot = (g * geo.kg.lines + next) & (ring - 1);
        fill_line(geo, ra.k, ra.lk, b, hk0, hpt, g, next, D, 1.0f, kr.data(), slot);
        fill_line(geo, ra.v, ra.lv, b, hk0, hpt, g, next, Dv, 1.0f, vr.data(), slot);
      }
      for (int64_t j = 0; j < hpt; ++j) {
        Planes x = pl[b * p.heads_kv + hk0 + j];
        x.k = kr[j];
        x.v = vr[j];
        x.row_mask = ring - 1;
        x.ak = akbuf.get() + j * D * ld_add;
        x.av = avbuf.get() + j * Dv * ld_add;
        for (int64_t h = 0; h < hpg; ++h)
          for (int64_t c = 0; c < geo.chunks; ++c) {
            Unit u;
            if (geo.unit(tup + geo.tuples * (c + geo.chunks * g), h, &u))
              kt.forward(geo.kg, x, u, ts.sc);
          }
      }
    }
  }
}

template <typename T>
void forward_typed(const Problem& p, const ForwardArgs& a) {
  const KernelTable& kt = select_kernels();
  const Geometry geo(p, kt.forward_lines);
  const int64_t D = p.head_dim, Dv = p.head_dim_v, hpg = p.heads_q / p.heads_kv;
  const int64_t nadd = p.additional_kv, ld_add = (nadd + kLanes - 1) / kLanes * kLanes + kLanes;
  const int64_t rows = geo.kg.groups * geo.kg.lines, slices = p.batch * p.heads_kv;
  const float scale = static_cast<float>(p.effective_scale());
  const int64_t ring = ring_rows(geo, D + Dv);
  const int64_t hb =
      ring ? 1
           : slices_per_block(p, geo.plane_floats(D + Dv) + (D + Dv) * ld_add, kForwardBlockBytes);

  // Whole planes per block of slices; with a ring, the threads hold their own K/V rows instead.
  const int64_t whole = ring ? 0 : 1;
  PlaneSet k(hb, whole * geo.plane_floats(D)), v(hb, whole * geo.plane_floats(Dv)),
      ak(hb, whole * D * ld_add), av(hb, whole * Dv * ld_add);
  const TokenLayout lq(a.q, p.rank), lk(a.k, p.rank), lv(a.v, p.rank), lo(a.out, p.rank);
  TokenLayout ll, lak, lav;
  if (a.lse) ll = TokenLayout(*a.lse, p.rank);
  if (nadd) {
    lak = TokenLayout(*a.additional_k, 1);
    lav = TokenLayout(*a.additional_v, 1);
  }
  const T *ks = static_cast<const T*>(a.k.data), *vs = static_cast<const T*>(a.v.data);
  // Per slice: its I/O and its planes (slice s uses plane set s % hb inside its block).
  std::vector<ForwardIO<T>> io(slices);
  std::vector<Planes> pl(slices);
  for (int64_t sl = 0; sl < slices; ++sl) {
    const int64_t j = sl % hb;
    io[sl] = ForwardIO<T>{&geo,
                          static_cast<const T*>(a.q.data),
                          static_cast<T*>(a.out.data),
                          a.lse ? static_cast<float*>(a.lse->data) : nullptr,
                          lq,
                          lo,
                          ll,
                          sl / p.heads_kv,
                          sl % p.heads_kv * hpg,
                          D,
                          Dv,
                          scale};
    Planes& x = pl[sl];
    x.head_dim = D;
    x.head_dim_v = Dv;
    x.k = k.ptr[j];
    x.v = v.ptr[j];
    x.nadd = nadd;
    x.ld_add = ld_add;
    x.ak = ak.ptr[j];
    x.av = av.ptr[j];
    x.scale = scale;
    x.io = &io[sl];
    x.load_q = &ForwardIO<T>::load_q;
    x.store_out = &ForwardIO<T>::store_out;
    x.prefetch_io = &ForwardIO<T>::prefetch_io;
  }
  if (ring) {
    const RingArgs<T> ra{ks,
                         vs,
                         lk,
                         lv,
                         nadd ? static_cast<const T*>(a.additional_k->data) : nullptr,
                         nadd ? static_cast<const T*>(a.additional_v->data) : nullptr,
                         lak,
                         lav};
    forward_ring(p, geo, kt, pl, ra, ring);
    return;
  }
  const int64_t per_head = geo.units_per_head();

#pragma omp parallel if (run_parallel(p))
  {
    ThreadScratch ts(D, Dv);
    for (int64_t s0 = 0; s0 < slices; s0 += hb) {
      const int64_t ns = std::min(hb, slices - s0);
      const std::vector<SliceRun> runs = slice_runs(p, s0, ns);
      const int64_t nr = static_cast<int64_t>(runs.size());
      // Conversion: K and V lines of every run of heads, then the additional tokens per slice.
#pragma omp for schedule(dynamic, 2)
      for (int64_t t = 0; t < nr * 2 * rows + (nadd ? 2 * ns : 0); ++t) {
        if (t < nr * 2 * rows) {
          const SliceRun& rn = runs[t / (2 * rows)];
          const int64_t kind = t % (2 * rows) / rows, r = t % rows;
          const int64_t g = r / geo.kg.lines, line = r % geo.kg.lines;
          if (kind == 0)
            fill_line(geo, ks, lk, rn.b, rn.hk0, rn.nh, g, line, D, 1.0f, k.at(rn.j0), r);
          else
            fill_line(geo, vs, lv, rn.b, rn.hk0, rn.nh, g, line, Dv, 1.0f, v.at(rn.j0), r);
        } else {
          fill_additional_task<T>(p, a, lak, lav, s0, t - nr * 2 * rows, ld_add, ak, av);
        }
      }
#pragma omp for schedule(dynamic)
      for (int64_t i = 0; i < ns * hpg * per_head; ++i) {
        const int64_t hq = i / per_head;
        Unit u;
        if (geo.unit(i % per_head, hq % hpg, &u)) kt.forward(geo.kg, pl[s0 + hq / hpg], u, ts.sc);
      }
    }
  }
}

// ---- backward ----------------------------------------------------------------------------------
template <typename T>
void backward_typed(const Problem& p, const BackwardArgs& a) {
  const KernelTable& kt = select_kernels();
  const Geometry geo(p, 2);
  const int64_t D = p.head_dim, Dv = p.head_dim_v, hpg = p.heads_q / p.heads_kv;
  const int64_t nadd = p.additional_kv, ld_add = (nadd + kLanes - 1) / kLanes * kLanes + kLanes;
  const int64_t rows = geo.kg.groups * geo.kg.lines;
  const float scale = static_cast<float>(p.effective_scale());
  const int64_t hb = slices_per_block(
      p,
      2 * geo.plane_floats(D + Dv) + hpg * geo.plane_floats(2 * D + Dv + 2) + 2 * (D + Dv) * ld_add,
      kBlockBytes);

  PlaneSet k(hb, geo.plane_floats(D)), v(hb, geo.plane_floats(Dv)), dk(hb, geo.plane_floats(D)),
      dv(hb, geo.plane_floats(Dv)), ak(hb, D * ld_add), av(hb, Dv * ld_add), dak(hb, D * ld_add),
      dav(hb, Dv * ld_add), q(hb * hpg, geo.plane_floats(D)), dout(hb * hpg, geo.plane_floats(Dv)),
      lse(hb * hpg, geo.plane_floats(1)), delta(hb * hpg, geo.plane_floats(1)),
      dq(hb * hpg, geo.plane_floats(D));
  std::vector<Planes> pl(hb);
  for (int64_t j = 0; j < hb; ++j) {
    Planes& x = pl[j];
    x.head_dim = D;
    x.head_dim_v = Dv;
    x.k = k.ptr[j];
    x.v = v.ptr[j];
    x.q = q.at(j * hpg);
    x.lse = lse.at(j * hpg);
    x.dout = dout.at(j * hpg);
    x.delta = delta.at(j * hpg);
    x.dq = dq.at(j * hpg);
    x.dk = dk.ptr[j];
    x.dv = dv.ptr[j];
    x.nadd = nadd;
    x.ld_add = ld_add;
    x.ak = ak.ptr[j];
    x.av = av.ptr[j];
    x.dak = dak.ptr[j];
    x.dav = dav.ptr[j];
    x.scale = scale;
  }

  const int R = p.rank;
  const TokenLayout lq(a.q, R), lk(a.k, R), lv(a.v, R), lo(a.out, R), ll(a.lse, R), ldo(a.dout, R),
      ldq(a.dq, R), ldk(a.dk, R), ldv(a.dv, R);
  TokenLayout lak, lav, ldak, ldav;
  if (nadd) {
    lak = TokenLayout(*a.additional_k, 1);
    lav = TokenLayout(*a.additional_v, 1);
    ldak = TokenLayout(*a.d_additional_k, 1);
    ldav = TokenLayout(*a.d_additional_v, 1);
  }
  const T *qs = static_cast<const T*>(a.q.data), *ks = static_cast<const T*>(a.k.data),
          *vs = static_cast<const T*>(a.v.data), *os = static_cast<const T*>(a.out.data),
          *dos = static_cast<const T*>(a.dout.data);
  const float* lses = static_cast<const float*>(a.lse.data);
  const int64_t per_head = geo.units_per_head(), add_units = (nadd + kLanes - 1) / kLanes;

#pragma omp parallel if (run_parallel(p))
  {
    ThreadScratch ts(D, Dv);
    for (int64_t s0 = 0; s0 < p.batch * p.heads_kv; s0 += hb) {
      const int64_t ns = std::min(hb, p.batch * p.heads_kv - s0);
      const std::vector<SliceRun> runs = slice_runs(p, s0, ns);
      const int64_t nr = static_cast<int64_t>(runs.size());
      // Conversion: K, V, Q (scaled), dO, lse, delta lines of every run, then additional tokens.
#pragma omp for schedule(dynamic, 2)
      for (int64_t t = 0; t < nr * 6 * rows + (nadd ? 2 * ns : 0); ++t) {
        if (t < nr * 6 * rows) {
          const SliceRun& rn = runs[t / (6 * rows)];
          const int64_t kind = t % (6 * rows) / rows, r = t % rows;
          const int64_t g = r / geo.kg.lines, line = r % geo.kg.lines, b = rn.b;
          const int64_t hq0 = rn.hk0 * hpg, nq = rn.nh * hpg, jq = rn.j0 * hpg;
          switch (kind) {
            case 0:
              fill_line(geo, ks, lk, b, rn.hk0, rn.nh, g, line, D, 1.0f, k.at(rn.j0), r);
              break;
            case 1:
              fill_line(geo, vs, lv, b, rn.hk0, rn.nh, g, line, Dv, 1.0f, v.at(rn.j0), r);
              break;
            case 2:
              fill_line(geo, qs, lq, b, hq0, nq, g, line, D, scale, q.at(jq), r);
              break;
            case 3:
              fill_line(geo, dos, ldo, b, hq0, nq, g, line, Dv, 1.0f, dout.at(jq), r);
              break;
            case 4:
              fill_line(geo, lses, ll, b, hq0, nq, g, line, 1, 1.0f, lse.at(jq), r);
              break;
            default:
              fill_delta_line(geo, dos, ldo, os, lo, b, hq0, nq, Dv, g, line, delta.at(jq));
          }
        } else {
          fill_additional_task<T>(p, a, lak, lav, s0, t - nr * 6 * rows, ld_add, ak, av);
        }
      }
      // Compute: additional-key units first (the longest), then dK/dV units, then dQ units; the
      // slices are interleaved so long units spread over the threads first.
      const int64_t per_slice = add_units + per_head + hpg * per_head;
#pragma omp for schedule(dynamic)
      for (int64_t i = 0; i < ns * per_slice; ++i) {
        const int64_t kind = i / ns, j = i % ns;
        Unit u;
        if (kind < add_units) {
          kt.backward_dkv_additional(geo.kg, pl[j], kind * kLanes,
                                     std::min(nadd, (kind + 1) * kLanes), hpg, ts.sc);
        } else if (kind < add_units + per_head) {
          if (geo.unit(kind - add_units, 0, &u)) kt.backward_dkv(geo.kg, pl[j], u, hpg, ts.sc);
        } else {
          const int64_t w = kind - add_units - per_head;
          if (geo.unit(w % per_head, w / per_head, &u)) kt.backward_dq(geo.kg, pl[j], u, ts.sc);
        }
      }
#pragma omp for schedule(dynamic, 2)
      for (int64_t t = 0; t < nr * 3 * rows + (nadd ? ns : 0); ++t) {
        if (t < nr * 3 * rows) {
          const SliceRun& rn = runs[t / (3 * rows)];
          const int64_t kind = t % (3 * rows) / rows, r = t % rows;
          const int64_t g = r / geo.kg.lines, line = r % geo.kg.lines, b = rn.b;
          if (kind == 0)
            store_line(geo, dk.at(rn.j0), g, line, D, static_cast<T*>(a.dk.data), ldk, b, rn.hk0,
                       rn.nh);
          else if (kind == 1)
            store_line(geo, dv.at(rn.j0), g, line, Dv, static_cast<T*>(a.dv.data), ldv, b, rn.hk0,
                       rn.nh);
          else
            store_line(geo, dq.at(rn.j0 * hpg), g, line, D, static_cast<T*>(a.dq.data), ldq, b,
                       rn.hk0 * hpg, rn.nh * hpg);
        } else {
          const int64_t j = t - nr * 3 * rows, b = (s0 + j) / p.heads_kv,
                        hk = (s0 + j) % p.heads_kv;
          store_additional(dak.ptr[j], nadd, D, ld_add, static_cast<T*>(a.d_additional_k->data),
                           ldak, b, hk);
          store_additional(dav.ptr[j], nadd, Dv, ld_add, static_cast<T*>(a.d_additional_v->data),
                           ldav, b, hk);
        }
      }
    }
  }
}

}  // namespace
}  // namespace fna::cpu

namespace fna::detail {
const BackendImpl& cpu_backend() {
  static const BackendImpl impl = cpu::cpu_backend_impl(
      Backend::kCpu,
      [](auto t, const Problem& p, const ForwardArgs& a) { cpu::forward_typed<decltype(t)>(p, a); },
      [](auto t, const Problem& p, const BackwardArgs& a) {
        cpu::backward_typed<decltype(t)>(p, a);
      });
  return impl;
}
}  // namespace fna::detail
