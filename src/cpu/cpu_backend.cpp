// Backend `cpu`: fused, tiled neighborhood attention on the CPU (fp32 accumulation, OpenMP).
//
// This file is the driver: it builds the per-axis window tables from neighborhood.h, converts the
// user's strided tensors (fp32 / fp16 / bf16) into fp32 planes per (batch, kv head), runs the
// kernel passes over work units in parallel, and converts the output planes back. The kernels
// (fused_kernels_impl.h) are compiled twice, for AVX2+FMA and for the portable baseline, and the
// first is chosen at run time when the CPU has it (FNA_CPU_ISA=generic forces the baseline).
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "api/backend.h"
#include "common/problem_util.h"
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

// 64-byte aligned fp32 storage (planes are read with unaligned loads, but aligned rows keep a
// vector of lanes inside one cache line pair).
struct FloatBuffer {
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<float[], Free> ptr;
  explicit FloatBuffer(int64_t n = 0)
      : ptr(n > 0 ? static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(64)))
                  : nullptr) {}
  float* get() const { return ptr.get(); }
};

// Window tables of every axis and dilation group, the plane layout and the work-unit grid.
struct Geometry {
  KernelGeometry kg{};
  int last = 0;
  std::vector<int64_t> glen[3];
  std::vector<int32_t> lo[3], hi[3], ilo[3], ihi[3];
  int64_t pairs = 1, outer = 1, chunks = 1;  // unit grid per (head, group)

  explicit Geometry(const Problem& p) {
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
    if (last >= 1) pairs = (kg.lmax[last - 1] + 1) / 2;
    if (last == 2) outer = kg.lmax[0];
    const int64_t vectors = (kg.lmax[last] + kLanes - 1) / kLanes;
    chunks = (vectors + fused::kUnitVectors - 1) / fused::kUnitVectors;
  }

  int64_t plane_floats(int64_t dim) const { return kg.groups * kg.lines * dim * kg.ldn; }
  int64_t units_per_head() const { return kg.groups * outer * pairs * chunks; }

  void group_coords(int64_t group, int64_t* gc) const {
    for (int a = 2; a >= 0; --a) {
      gc[a] = group % kg.dil[a];
      group /= kg.dil[a];
    }
  }

  // Unit `idx` of units_per_head(); false when it lies past the end of its (shorter) group.
  bool unit(int64_t idx, int64_t head, Unit* u) const {
    const int64_t chunk = idx % chunks;
    idx /= chunks;
    const int64_t pair = idx % pairs;
    idx /= pairs;
    const int64_t o = idx % outer;
    u->group = idx / outer;
    u->head = head;
    group_coords(u->group, u->gc);
    const int64_t nlen = glen[last][u->gc[last]];
    u->n_begin = chunk * fused::kUnitVectors * kLanes;
    if (u->n_begin >= nlen) return false;
    u->n_end = std::min(nlen, u->n_begin + fused::kUnitVectors * kLanes);
    u->nlines = 1;
    for (int r = 0; r < 2; ++r)
      for (int a = 0; a < 3; ++a) u->line_i[r][a] = 0;
    u->line[0] = u->line[1] = 0;
    if (last == 0) return true;
    const int inner = last - 1;
    if (last == 2 && o >= glen[0][u->gc[0]]) return false;
    const int64_t ilen = glen[inner][u->gc[inner]];
    if (2 * pair >= ilen) return false;
    u->nlines = 2 * pair + 1 < ilen ? 2 : 1;
    for (int r = 0; r < 2; ++r) {
      if (last == 2) u->line_i[r][0] = o;
      u->line_i[r][inner] = 2 * pair + r;
      u->line[r] = last == 2 ? o * kg.lmax[1] + 2 * pair + r : 2 * pair + r;
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

// Plane line (group, line) of a [B, ..., H, dim] tensor's (b, head) slice, times `scale`; the
// padding and lines past the group's end are zero.
template <typename T>
void fill_line(const Geometry& geo, const T* src, const TokenLayout& lay, int64_t b, int64_t head,
               int64_t group, int64_t line, int64_t dim, float scale, float* plane) {
  const int64_t ldn = geo.kg.ldn, last = geo.last;
  float* dst = plane + (group * geo.kg.lines + line) * dim * ldn;
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) {
    std::memset(dst, 0, sizeof(float) * dim * ldn);
    return;
  }
  // Eight tokens at a time so each dim row of the plane is written eight floats at once.
  for (int64_t n0 = 0; n0 < n_len; n0 += kLanes) {
    const T* rows[kLanes];
    const int cnt = static_cast<int>(std::min<int64_t>(kLanes, n_len - n0));
    for (int l = 0; l < cnt; ++l) {
      x[last] = (n0 + l) * geo.kg.dil[last] + gc[last];
      rows[l] = src + lay.offset(b, x, head);
    }
    for (int64_t d = 0; d < dim; ++d) {
      float* out = dst + d * ldn + n0;
      for (int l = 0; l < cnt; ++l) out[l] = to_float(rows[l][d]) * scale;
    }
  }
  for (int64_t d = 0; d < dim; ++d)
    std::fill(dst + d * ldn + n_len, dst + (d + 1) * ldn, 0.0f);
}

// delta = rowsum(dO * O) of each query of the line (the FA2 backward's correction term).
template <typename T>
void fill_delta_line(const Geometry& geo, const T* dout, const TokenLayout& ldo, const T* out,
                     const TokenLayout& lo, int64_t b, int64_t head, int64_t dv, int64_t group,
                     int64_t line, float* plane) {
  const int64_t ldn = geo.kg.ldn, last = geo.last;
  float* dst = plane + (group * geo.kg.lines + line) * ldn;
  std::fill(dst, dst + ldn, 0.0f);
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) return;
  for (int64_t n = 0; n < n_len; ++n) {
    x[last] = n * geo.kg.dil[last] + gc[last];
    const T* a = dout + ldo.offset(b, x, head);
    const T* c = out + lo.offset(b, x, head);
    float s = 0;
    for (int64_t d = 0; d < dv; ++d) s += to_float(a[d]) * to_float(c[d]);
    dst[n] = s;
  }
}

// Plane line -> tensor (valid positions only).
template <typename T>
void store_line(const Geometry& geo, const float* plane, int64_t group, int64_t line, int64_t dim,
                T* dstt, const TokenLayout& lay, int64_t b, int64_t head) {
  const int64_t ldn = geo.kg.ldn, last = geo.last;
  const float* src = plane + (group * geo.kg.lines + line) * dim * ldn;
  int64_t x[3] = {0, 0, 0}, gc[3], n_len = 0;
  if (!geo.line_coords(group, line, x, &n_len, gc)) return;
  for (int64_t n = 0; n < n_len; ++n) {
    x[last] = n * geo.kg.dil[last] + gc[last];
    T* row = dstt + lay.offset(b, x, head);
    for (int64_t d = 0; d < dim; ++d) row[d] = from_float<T>(src[d * ldn + n]);
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

// Per-head plane storage: one buffer, a pointer per head.
struct HeadPlanes {
  FloatBuffer buf;
  std::vector<float*> ptr;
  HeadPlanes(int64_t heads, int64_t floats) : buf(heads * floats), ptr(heads) {
    for (int64_t h = 0; h < heads; ++h) ptr[h] = buf.get() + h * floats;
  }
};

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

// ---- forward -----------------------------------------------------------------------------------
template <typename T>
void forward_typed(const Problem& p, const ForwardArgs& a) {
  const KernelTable& kt = select_kernels();
  const Geometry geo(p);
  const int64_t D = p.head_dim, Dv = p.head_dim_v, hpg = p.heads_q / p.heads_kv;
  const int64_t nadd = p.additional_kv, ld_add = (nadd + kLanes - 1) / kLanes * kLanes + kLanes;
  const int64_t rows = geo.kg.groups * geo.kg.lines;
  const float scale = static_cast<float>(p.effective_scale());

  FloatBuffer k(geo.plane_floats(D)), v(geo.plane_floats(Dv)), ak(D * ld_add), av(Dv * ld_add);
  HeadPlanes q(hpg, geo.plane_floats(D)), o(hpg, geo.plane_floats(Dv)), lse(hpg, geo.plane_floats(1));
  Planes pl{};
  pl.head_dim = D;
  pl.head_dim_v = Dv;
  pl.k = k.get();
  pl.v = v.get();
  pl.q = q.ptr.data();
  pl.o = o.ptr.data();
  pl.lse = lse.ptr.data();
  pl.nadd = nadd;
  pl.ld_add = ld_add;
  pl.ak = ak.get();
  pl.av = av.get();
  pl.scale = scale;

  const TokenLayout lq(a.q, p.rank), lk(a.k, p.rank), lv(a.v, p.rank), lo(a.out, p.rank);
  TokenLayout ll, lak, lav;
  if (a.lse) ll = TokenLayout(*a.lse, p.rank);
  if (nadd) {
    lak = TokenLayout(*a.additional_k, 1);
    lav = TokenLayout(*a.additional_v, 1);
  }
  const T *qs = static_cast<const T*>(a.q.data), *ks = static_cast<const T*>(a.k.data),
          *vs = static_cast<const T*>(a.v.data);
  T* out = static_cast<T*>(a.out.data);
  float* lse_out = a.lse ? static_cast<float*>(a.lse->data) : nullptr;
  const int64_t fills = (2 + hpg) * rows + (nadd ? 2 : 0), units = hpg * geo.units_per_head();

#pragma omp parallel
  {
    ThreadScratch ts(D, Dv);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < fills; ++t) {
          const int64_t kind = t / rows, r = t % rows, g = r / geo.kg.lines, line = r % geo.kg.lines;
          if (kind == 0) fill_line(geo, ks, lk, b, hk, g, line, D, 1.0f, pl.k);
          else if (kind == 1) fill_line(geo, vs, lv, b, hk, g, line, Dv, 1.0f, pl.v);
          else if (t < (2 + hpg) * rows)
            fill_line(geo, qs, lq, b, hk * hpg + kind - 2, g, line, D, scale, q.ptr[kind - 2]);
          else if (t == (2 + hpg) * rows)
            fill_additional(static_cast<const T*>(a.additional_k->data), lak, b, hk, nadd, D, ld_add, pl.ak);
          else
            fill_additional(static_cast<const T*>(a.additional_v->data), lav, b, hk, nadd, Dv, ld_add, pl.av);
        }
#pragma omp for schedule(dynamic)
        for (int64_t i = 0; i < units; ++i) {
          Unit u;
          if (geo.unit(i % geo.units_per_head(), i / geo.units_per_head(), &u))
            kt.forward(geo.kg, pl, u, ts.sc);
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < hpg * rows; ++t) {
          const int64_t h = t / rows, r = t % rows, g = r / geo.kg.lines, line = r % geo.kg.lines;
          store_line(geo, o.ptr[h], g, line, Dv, out, lo, b, hk * hpg + h);
          if (lse_out) store_line(geo, lse.ptr[h], g, line, 1, lse_out, ll, b, hk * hpg + h);
        }
      }
  }
}

// ---- backward ----------------------------------------------------------------------------------
template <typename T>
void backward_typed(const Problem& p, const BackwardArgs& a) {
  const KernelTable& kt = select_kernels();
  const Geometry geo(p);
  const int64_t D = p.head_dim, Dv = p.head_dim_v, hpg = p.heads_q / p.heads_kv;
  const int64_t nadd = p.additional_kv, ld_add = (nadd + kLanes - 1) / kLanes * kLanes + kLanes;
  const int64_t rows = geo.kg.groups * geo.kg.lines;
  const float scale = static_cast<float>(p.effective_scale());

  FloatBuffer k(geo.plane_floats(D)), v(geo.plane_floats(Dv)), dk(geo.plane_floats(D)),
      dv(geo.plane_floats(Dv)), ak(D * ld_add), av(Dv * ld_add), dak(D * ld_add),
      dav(Dv * ld_add);
  HeadPlanes q(hpg, geo.plane_floats(D)), dout(hpg, geo.plane_floats(Dv)),
      lse(hpg, geo.plane_floats(1)), delta(hpg, geo.plane_floats(1)), dq(hpg, geo.plane_floats(D));
  Planes pl{};
  pl.head_dim = D;
  pl.head_dim_v = Dv;
  pl.k = k.get();
  pl.v = v.get();
  pl.q = q.ptr.data();
  pl.lse = lse.ptr.data();
  pl.dout = dout.ptr.data();
  pl.delta = delta.ptr.data();
  pl.dq = dq.ptr.data();
  pl.dk = dk.get();
  pl.dv = dv.get();
  pl.nadd = nadd;
  pl.ld_add = ld_add;
  pl.ak = ak.get();
  pl.av = av.get();
  pl.dak = dak.get();
  pl.dav = dav.get();
  pl.scale = scale;

  const int R = p.rank;
  const TokenLayout lq(a.q, R), lk(a.k, R), lv(a.v, R), lo(a.out, R), ll(a.lse, R),
      ldo(a.dout, R), ldq(a.dq, R), ldk(a.dk, R), ldv(a.dv, R);
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
  // Fill tasks: K, V, then per head Q, dO, lse, delta; then the two additional planes.
  const int64_t fills = (2 + 4 * hpg) * rows + (nadd ? 2 : 0);
  const int64_t per_head = geo.units_per_head(), add_units = (nadd + kLanes - 1) / kLanes;
  // Compute tasks: additional-key units first (the longest), then dK/dV units, then dQ units.
  const int64_t tasks = add_units + per_head + hpg * per_head;
  const int64_t stores = (2 + hpg) * rows + (nadd ? 1 : 0);

#pragma omp parallel
  {
    ThreadScratch ts(D, Dv);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < fills; ++t) {
          const int64_t kind = t / rows, r = t % rows, g = r / geo.kg.lines, line = r % geo.kg.lines;
          const int64_t h = kind >= 2 ? (kind - 2) % hpg : 0, hq = hk * hpg + h;
          const int64_t which = t >= (2 + 4 * hpg) * rows ? 4 : kind >= 2 ? (kind - 2) / hpg : -1;
          if (kind == 0) fill_line(geo, ks, lk, b, hk, g, line, D, 1.0f, pl.k);
          else if (kind == 1) fill_line(geo, vs, lv, b, hk, g, line, Dv, 1.0f, pl.v);
          else if (which == 0) fill_line(geo, qs, lq, b, hq, g, line, D, scale, q.ptr[h]);
          else if (which == 1) fill_line(geo, dos, ldo, b, hq, g, line, Dv, 1.0f, dout.ptr[h]);
          else if (which == 2) fill_line(geo, lses, ll, b, hq, g, line, 1, 1.0f, lse.ptr[h]);
          else if (which == 3) fill_delta_line(geo, dos, ldo, os, lo, b, hq, Dv, g, line, delta.ptr[h]);
          else if (t == (2 + 4 * hpg) * rows)
            fill_additional(static_cast<const T*>(a.additional_k->data), lak, b, hk, nadd, D, ld_add, pl.ak);
          else
            fill_additional(static_cast<const T*>(a.additional_v->data), lav, b, hk, nadd, Dv, ld_add, pl.av);
        }
#pragma omp for schedule(dynamic)
        for (int64_t i = 0; i < tasks; ++i) {
          Unit u;
          if (i < add_units) {
            kt.backward_dkv_additional(geo.kg, pl, i * kLanes, std::min(nadd, (i + 1) * kLanes),
                                       hpg, ts.sc);
          } else if (i < add_units + per_head) {
            if (geo.unit(i - add_units, 0, &u)) kt.backward_dkv(geo.kg, pl, u, hpg, ts.sc);
          } else {
            const int64_t j = i - add_units - per_head;
            if (geo.unit(j % per_head, j / per_head, &u)) kt.backward_dq(geo.kg, pl, u, hpg, ts.sc);
          }
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < stores; ++t) {
          const int64_t kind = t / rows, r = t % rows, g = r / geo.kg.lines, line = r % geo.kg.lines;
          if (kind == 0) {
            store_line(geo, pl.dk, g, line, D, static_cast<T*>(a.dk.data), ldk, b, hk);
          } else if (kind == 1) {
            store_line(geo, pl.dv, g, line, Dv, static_cast<T*>(a.dv.data), ldv, b, hk);
          } else if (t < (2 + hpg) * rows) {
            const int64_t h = kind - 2;
            store_line(geo, dq.ptr[h], g, line, D, static_cast<T*>(a.dq.data), ldq, b, hk * hpg + h);
          } else {
            store_additional(pl.dak, nadd, D, ld_add, static_cast<T*>(a.d_additional_k->data), ldak, b, hk);
            store_additional(pl.dav, nadd, Dv, ld_add, static_cast<T*>(a.d_additional_v->data), ldav, b, hk);
          }
        }
      }
  }
}

std::string unavailable(const Problem&, DType, const Device& device) {
  if (device.type != DeviceType::kCPU)
    return "it runs on CPU tensors only (got " + device_name(device) + ")";
  return "";
}

void forward(const Problem& p, const ForwardArgs& a, const Options&) {
  dispatch_dtype(a.q.dtype, [&](auto tag) { forward_typed<decltype(tag)>(p, a); });
}

void backward(const Problem& p, const BackwardArgs& a, const Options&) {
  dispatch_dtype(a.q.dtype, [&](auto tag) { backward_typed<decltype(tag)>(p, a); });
}

}  // namespace
}  // namespace fna::cpu

namespace fna::detail {
const BackendImpl& cpu_backend() {
  static const BackendImpl impl{Backend::kCpu, &cpu::unavailable, &cpu::forward, &cpu::backward};
  return impl;
}
}  // namespace fna::detail
