// The fused CPU passes (forward, backward dQ, backward dK/dV) over planes, written once and
// compiled per ISA: a translation unit defines FNA_FUSED_ISA (its namespace), optionally
// FNA_FUSED_WIDE (16 vector registers of 8 lanes), and includes this file. See fused_plan.h for the
// scheme.
//
// Per lane vector (8 queries, or 8 keys in the dK/dV pass) the rows it attends are walked in
// order and cut into chunks of at most kChunkSlots slots per line; a chunk is scored (dot), turned
// into probabilities (online softmax in the forward, exp(S - lse) in the backward), and
// accumulated (acc). The lines of a unit that share rows run together (R = 2 or 3 register rows:
// the backward's units have two lines, the forward's KernelTable::forward_lines), so each key load
// feeds R FMAs. Nothing outside one chunk of scores is ever stored.
#include <cstdint>
#include <type_traits>

#include "cpu/fused_plan.h"

#if !defined(FNA_FUSED_ISA)
#error "define FNA_FUSED_ISA (the namespace of this instantiation) before including this file"
#endif

namespace fna::cpu::fused::FNA_FUSED_ISA {
namespace {

#include "cpu/fused_microkernels.h"

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

enum : uint8_t {
  kRowLanes = 0,       // a spatial row, addressed the lane vector's way (shifted or masked)
  kRowFull = 1,        // a spatial row every lane attends entirely (broadcast, no mask)
  kRowAdditional = 2,  // the additional KV tokens (broadcast, no mask)
};

// A run of consecutive slots of one row: row = absolute plane line (group * lines + line),
// pos0 = the row position of its first slot for lane 0.
struct Piece {
  int64_t row;
  int64_t pos0;
  int32_t slot;
  int32_t cnt;
  uint8_t mask;  // bit r: line r of the unit attends this row (the set bits are contiguous)
  uint8_t kind;
};
static_assert(sizeof(Piece) <= kPieceBytes, "Scratch::pieces is sized with kPieceBytes");

struct Chunk {
  Piece* pieces;
  int np;
  int64_t slots;
};

// The lanes of one vector along the last axis and their ranges on that axis.
struct Lanes {
  int64_t n0;
  int valid;
  bool shifted;   // slot o of lane l is position start + o + l; else start + o for every lane
  int64_t start;  // first position (lane 0)
  int64_t count;  // slots per row
  v8i lo, hi;     // per-lane range (masked rows); empty for lanes past the end
};

Lanes make_lanes(const int32_t* lo, const int32_t* hi, int64_t n0, int64_t n_end) {
  Lanes ln;
  ln.n0 = n0;
  ln.valid = static_cast<int>(imin(kLanes, n_end - n0));
  int32_t lov[kLanes] = {}, hiv[kLanes] = {};
  const int64_t l0 = lo[n0], k0 = hi[n0] - lo[n0];
  ln.shifted = true;
  for (int l = 0; l < ln.valid; ++l) {
    lov[l] = lo[n0 + l];
    hiv[l] = hi[n0 + l];
    if (lov[l] != l0 + l || hiv[l] - lov[l] != k0) ln.shifted = false;
  }
  __builtin_memcpy(&ln.lo, lov, sizeof ln.lo);
  __builtin_memcpy(&ln.hi, hiv, sizeof ln.hi);
  ln.start = l0;
  // lo and hi are non-decreasing, so the union of the lanes' ranges is [lo of lane 0, hi of last).
  ln.count = ln.shifted ? k0 : imax(0, hiv[ln.valid - 1] - l0);
  return ln;
}

template <typename F>
void chunk_add(Chunk& c, int64_t row, int64_t pos0, int64_t cnt, uint8_t mask, uint8_t kind,
               F& flush) {
  if (c.slots > 0 && c.slots + cnt > kChunkSlots) {
    flush(c);
    c.np = 0;
    c.slots = 0;
  }
  while (cnt > 0) {
    if (c.slots == kChunkSlots) {
      flush(c);
      c.np = 0;
      c.slots = 0;
    }
    const int64_t take = imin(cnt, kChunkSlots - c.slots);
    c.pieces[c.np++] =
        Piece{row, pos0, static_cast<int32_t>(c.slots), static_cast<int32_t>(take), mask, kind};
    c.slots += take;
    pos0 += take;
    cnt -= take;
  }
}

// Per-axis range tables of one dilation group: window (forward, dQ) or inverse (dK/dV).
struct Tables {
  const int32_t* lo[3];
  const int32_t* hi[3];
};

Tables group_tables(const KernelGeometry& g, const Unit& u, bool inverse) {
  Tables t;
  for (int a = 0; a < 3; ++a) {
    const int64_t off = u.gc[a] * g.lmax[a];
    t.lo[a] = (inverse ? g.ilo[a] : g.lo[a]) + off;
    t.hi[a] = (inverse ? g.ihi[a] : g.hi[a]) + off;
  }
  return t;
}

// Walks the rows the unit's lines attend for one lane vector (then the additional tokens) and
// hands chunks to flush.
template <typename F>
void walk_rows(const KernelGeometry& g, const Unit& u, const Tables& t, const Lanes& ln,
               int64_t nadd, Piece* pieces, F&& flush) {
  Chunk c{pieces, 0, 0};
  const int nl = g.rank - 1;  // non-last axes
  const int64_t base = u.group * g.lines;
  const uint8_t all = static_cast<uint8_t>((1 << u.nlines) - 1);
  if (ln.count > 0) {
    int64_t rlo[kMaxUnitLines][2] = {}, rhi[kMaxUnitLines][2] = {}, ulo[2] = {0, 0},
            uhi[2] = {1, 1};
    for (int a = 0; a < nl; ++a) {
      ulo[a] = INT64_MAX;
      uhi[a] = INT64_MIN;
      for (int r = 0; r < u.nlines; ++r) {
        rlo[r][a] = t.lo[a][u.line_i[r][a]];
        rhi[r][a] = t.hi[a][u.line_i[r][a]];
        ulo[a] = imin(ulo[a], rlo[r][a]);
        uhi[a] = imax(uhi[a], rhi[r][a]);
      }
    }
    const int64_t stride1 = nl == 2 ? g.lmax[1] : 0;
    for (int64_t j0 = ulo[0]; j0 < uhi[0]; ++j0)
      for (int64_t j1 = ulo[1]; j1 < uhi[1]; ++j1) {
        const int64_t j[2] = {j0, j1};
        uint8_t mask = 0;
        for (int r = 0; r < u.nlines; ++r) {
          bool in = true;
          for (int a = 0; a < nl; ++a) in = in && j[a] >= rlo[r][a] && j[a] < rhi[r][a];
          if (in) mask |= static_cast<uint8_t>(1 << r);
        }
        if (!mask) continue;
        const int64_t row = nl == 0 ? 0 : nl == 1 ? j0 : j0 * stride1 + j1;
        chunk_add(c, base + row, ln.start, ln.count, mask, kRowLanes, flush);
      }
  }
  if (nadd > 0) chunk_add(c, 0, 0, nadd, all, kRowAdditional, flush);
  if (c.np > 0) flush(c);
}

// The lines of a piece's mask: first line and count (windows are monotone in the line index, so
// the lines attending a row are consecutive).
inline int mask_first(uint8_t mask) { return __builtin_ctz(mask); }
inline int mask_count(uint8_t mask) { return __builtin_popcount(mask); }

// dot over one piece for the n lines from `first`, one register pass (n <= kMaxPassLines: the
// forward's units have at most that many lines, the backward's two); mx: nullptr or the lines'
// running maxima. a, out and mx are indexed by the unit's line.
template <bool Shift>
void dot_lines(int first, int n, const float* const* a, int64_t lda, const float* b, int64_t ldb,
               int64_t dim, int64_t cnt, float* const* out, v8f* mx) {
  v8f* m = mx ? mx + first : nullptr;
  if (n == 1) return dot<Shift, 1>(a + first, lda, b, ldb, dim, cnt, out + first, m);
  if constexpr (kMaxPassLines >= 3)
    if (n == 3) return dot<Shift, 3>(a + first, lda, b, ldb, dim, cnt, out + first, m);
  dot<Shift, 2>(a + first, lda, b, ldb, dim, cnt, out + first, m);
}

// Scores of one piece into buf[r] at the piece's slots; `scores` marks logits, whose slots outside
// a lane's window become -inf (dP products are left unmasked: P = 0 there already). With mx (the
// lines' running maxima; logits only) the maxima also take in the piece's scores. a, buf and mx
// are indexed by the unit's line.
inline void dot_piece(const Piece& pc, const Lanes& ln, const float* const* a, int64_t lda,
                      const float* b, int64_t ldb, int64_t dim, float* const* buf, bool scores,
                      v8f* mx = nullptr) {
  const int first = mask_first(pc.mask), n = mask_count(pc.mask);
  float* out[kMaxUnitLines];
  for (int r = first; r < first + n; ++r) out[r] = buf[r] + pc.slot * 8;
  const bool masked = scores && pc.kind == kRowLanes && !ln.shifted;
  if (pc.kind == kRowLanes && ln.shifted)
    dot_lines<true>(first, n, a, lda, b, ldb, dim, pc.cnt, out, mx);
  else
    dot_lines<false>(first, n, a, lda, b, ldb, dim, pc.cnt, out, masked ? nullptr : mx);
  if (masked)
    for (int r = first; r < first + n; ++r)
      apply_mask(out[r], pc.cnt, pc.pos0, ln.lo, ln.hi, mx ? mx + r : nullptr);
}

// acc over the chunk: pieces grouped by (addressing, line mask), each group one register pass.
// row_ptr(piece) gives the piece's first slot at dim 0; spatial rows use ld, additional ld_add.
// p and cacc are indexed by the unit's line.
template <typename RowPtr>
void acc_chunk(const Chunk& c, const Lanes& ln, const float* const* p, RowPtr row_ptr, int64_t ld,
               int64_t ld_add, int64_t dim, float* const* cacc, Seg* segs) {
  for (int cls = 0; cls < 3; ++cls) {  // 0 shifted spatial, 1 broadcast spatial, 2 additional
    for (uint8_t mask = 1; mask < (1 << kMaxUnitLines); ++mask) {
      int n = 0;
      for (int i = 0; i < c.np; ++i) {
        const Piece& pc = c.pieces[i];
        const int pcls = pc.kind == kRowAdditional              ? 2
                         : (pc.kind == kRowLanes && ln.shifted) ? 0
                                                                : 1;
        if (pcls == cls && pc.mask == mask) segs[n++] = Seg{row_ptr(pc), pc.slot, pc.cnt};
      }
      if (n == 0) continue;
      const int64_t ldb = cls == 2 ? ld_add : ld;
      const int first = mask_first(mask), lines = mask_count(mask);
      const float* const* pf = p + first;
      float* const* cf = cacc + first;
      // One register pass over `lines` lines; spatial rows (cls 0) shift per lane.
      auto pass = [&](auto lines_c) {
        constexpr int kLines = decltype(lines_c)::value;
        if (cls == 0)
          acc<true, kLines>(segs, n, pf, ldb, dim, cf);
        else
          acc<false, kLines>(segs, n, pf, ldb, dim, cf);
      };
      if (lines == 1) {
        pass(std::integral_constant<int, 1>{});
        continue;
      }
      if constexpr (kMaxPassLines >= 3)
        if (lines == 3) {
          pass(std::integral_constant<int, 3>{});
          continue;
        }
      pass(std::integral_constant<int, 2>{});
    }
  }
}

inline void zero(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = 0.0f;
}

// ---- forward -----------------------------------------------------------------------------------
void forward_unit(const KernelGeometry& g, const Planes& P, const Unit& u, Scratch& sc) {
  const int64_t D = P.head_dim, Dv = P.head_dim_v, ldn = g.ldn;
  const int last = g.rank - 1;
  const Tables t = group_tables(g, u, false);
  constexpr int L = kMaxUnitLines;
  float* S[L];
  float* O[L];
  float* Q[L];
  float* acc_base = sc.buf + 4 * kChunkSlots * 8;
  for (int r = 0; r < L; ++r) {
    S[r] = sc.buf + r * kChunkSlots * 8;
    O[r] = acc_base + r * Dv * 8;
    Q[r] = acc_base + L * Dv * 8 + r * D * 8;
  }
  Seg segs[kMaxPieces];
  Piece* pieces = static_cast<Piece*>(sc.pieces);

  for (int64_t n0 = u.n_begin; n0 < u.n_end; n0 += kLanes) {
    const Lanes ln = make_lanes(t.lo[last], t.hi[last], n0, u.n_end);
    for (int r = 0; r < u.nlines; ++r)
      P.load_q(P.io, u.head, u.group, u.line[r], n0, ln.valid, Q[r]);
    const float* qa[L];
    v8f m[L], l[L];
    for (int r = 0; r < L; ++r) {
      qa[r] = Q[r];
      m[r] = vsplat(kNegInf);
      l[r] = v8f{};
    }
    for (int r = 0; r < u.nlines; ++r) zero(O[r], Dv * 8);
    bool prefetched = false, first = true;

    auto flush = [&](const Chunk& c) {
      v8f mxs[L];  // the chunk's new running maxima, taken in by the dot
      for (int r = 0; r < L; ++r) mxs[r] = m[r];
      for (int i = 0; i < c.np; ++i) {
        const Piece& pc = c.pieces[i];
        if (pc.kind == kRowAdditional)
          dot_piece(pc, ln, qa, kLanes, P.ak + pc.pos0, P.ld_add, D, S, true, mxs);
        else
          dot_piece(pc, ln, qa, kLanes, P.k + (pc.row & P.row_mask) * D * ldn + pc.pos0, ldn, D, S,
                    true, mxs);
      }
      if (!prefetched) {
        prefetched = true;
        const int64_t next = n0 + kLanes;
        if (next < u.n_end)
          for (int r = 0; r < u.nlines; ++r)
            P.prefetch_io(P.io, u.head, u.group, u.line[r], next,
                          static_cast<int>(imin(kLanes, u.n_end - next)));
      }
      // Online softmax: rescale the sums and accumulators to the new max, probabilities in S.
      // e^(s - m) = 2^((s - m) log2(e)), subtracted first so that a slot whose score is the max
      // gets exactly 1 and lse = m + ln(l) matches the backward's logits (the fused form
      // s log2(e) - m log2(e) left m log2(e)'s rounding error in x: P = 1 - 3e-7 at window 1).
      for (int r = 0; r < u.nlines; ++r) {
        const v8f mx = mxs[r];
        const v8f muse = mx == vsplat(kNegInf) ? v8f{} : mx;
        const v8f alpha = vexp2_nonpos((m[r] - muse) * kLog2e);
        v8f sum = l[r] * alpha;
        for (int i = 0; i < c.np; ++i) {
          const Piece& pc = c.pieces[i];
          if (!(pc.mask & (1 << r))) continue;
          float* s = S[r] + pc.slot * 8;
          const int64_t cnt = pc.cnt;  // a local: the stores to s could alias pc for the compiler
          for (int64_t o = 0; o < cnt; ++o) {
            const v8f e = vexp2_nonpos((vload(s + o * 8) - muse) * kLog2e);
            vstore(s + o * 8, e);
            sum += e;
          }
        }
        l[r] = sum;
        // O is still zero after the first chunk (the only one of a 13x13 window).
        float al[kLanes];
        vstore(al, alpha);
        bool unit = true;
        for (int k = 0; k < kLanes; ++k) unit = unit && al[k] == 1.0f;
        if (!first && !unit)
          for (int64_t d = 0; d < Dv; ++d) vstore(O[r] + d * 8, vload(O[r] + d * 8) * alpha);
        m[r] = mx;
      }
      first = false;
      const float* p[L];
      for (int r = 0; r < L; ++r) p[r] = S[r];
      acc_chunk(
          c, ln, p,
          [&](const Piece& pc) {
            return pc.kind == kRowAdditional ? P.av + pc.pos0
                                             : P.v + (pc.row & P.row_mask) * Dv * ldn + pc.pos0;
          },
          ldn, P.ld_add, Dv, O, segs);
    };
    walk_rows(g, u, t, ln, P.nadd, pieces, flush);

    for (int r = 0; r < u.nlines; ++r) {
      const v8f inv = 1.0f / l[r];
      for (int64_t d = 0; d < Dv; ++d) vstore(O[r] + d * 8, vload(O[r] + d * 8) * inv);
      float lse[kLanes];
      vstore(lse, m[r] + vlog(l[r]));
      P.store_out(P.io, u.head, u.group, u.line[r], n0, ln.valid, O[r], lse);
    }
  }
}

// ---- backward: dQ (queries as lanes)
// -------------------------------------------------------------
void backward_dq_unit(const KernelGeometry& g, const Planes& P, const Unit& u, Scratch& sc) {
  const int64_t D = P.head_dim, Dv = P.head_dim_v, ldn = g.ldn;
  const int last = g.rank - 1;
  const Tables t = group_tables(g, u, false);
  float* S[2] = {sc.buf, sc.buf + kChunkSlots * 8};
  float* DP[2] = {sc.buf + 2 * kChunkSlots * 8, sc.buf + 3 * kChunkSlots * 8};
  float* A[2] = {sc.buf + 4 * kChunkSlots * 8, sc.buf + 4 * kChunkSlots * 8 + D * 8};
  Seg segs[kMaxPieces];
  Piece* pieces = static_cast<Piece*>(sc.pieces);
  const float *q = P.q[u.head], *dout = P.dout[u.head];
  int64_t row[2];
  for (int r = 0; r < 2; ++r) row[r] = u.group * g.lines + u.line[r < u.nlines ? r : 0];

  for (int64_t n0 = u.n_begin; n0 < u.n_end; n0 += kLanes) {
    const Lanes ln = make_lanes(t.lo[last], t.hi[last], n0, u.n_end);
    const float* qa[2] = {q + row[0] * D * ldn + n0, q + row[1] * D * ldn + n0};
    const float* da[2] = {dout + row[0] * Dv * ldn + n0, dout + row[1] * Dv * ldn + n0};
    v8f lse[2], delta[2];
    for (int r = 0; r < 2; ++r) {
      lse[r] = vload(P.lse[u.head] + row[r] * ldn + n0);
      delta[r] = vload(P.delta[u.head] + row[r] * ldn + n0);
    }
    for (int r = 0; r < u.nlines; ++r) zero(A[r], D * 8);

    auto flush = [&](const Chunk& c) {
      for (int i = 0; i < c.np; ++i) {
        const Piece& pc = c.pieces[i];
        const bool add = pc.kind == kRowAdditional;
        const float* kb = add ? P.ak + pc.pos0 : P.k + pc.row * D * ldn + pc.pos0;
        const float* vb = add ? P.av + pc.pos0 : P.v + pc.row * Dv * ldn + pc.pos0;
        const int64_t ldb = add ? P.ld_add : ldn;
        dot_piece(pc, ln, qa, ldn, kb, ldb, D, S, true);
        dot_piece(pc, ln, da, ldn, vb, ldb, Dv, DP, false);
      }
      // dS = P * (dP - delta) with P = exp(S - lse); masked slots have S = -inf, so dS = 0.
      for (int r = 0; r < u.nlines; ++r)
        for (int i = 0; i < c.np; ++i) {
          const Piece& pc = c.pieces[i];
          if (!(pc.mask & (1 << r))) continue;
          float* s = S[r] + pc.slot * 8;
          const float* dp = DP[r] + pc.slot * 8;
          for (int64_t o = 0; o < pc.cnt; ++o)
            vstore(s + o * 8, vexp(vload(s + o * 8) - lse[r]) * (vload(dp + o * 8) - delta[r]));
        }
      const float* p[2] = {S[0], S[1]};
      acc_chunk(
          c, ln, p,
          [&](const Piece& pc) {
            return pc.kind == kRowAdditional ? P.ak + pc.pos0 : P.k + pc.row * D * ldn + pc.pos0;
          },
          ldn, P.ld_add, D, A, segs);
    };
    walk_rows(g, u, t, ln, P.nadd, pieces, flush);

    for (int r = 0; r < u.nlines; ++r) {
      float* dq = P.dq[u.head] + row[r] * D * ldn + n0;
      for (int64_t d = 0; d < D; ++d) vstore(dq + d * ldn, vload(A[r] + d * 8) * P.scale);
    }
  }
}

// ---- backward: dK, dV (keys as lanes)
// ------------------------------------------------------------ The rows are query lines; lse and
// delta come per (slot, lane) from the query planes.
struct KeyLanePass {
  const KernelGeometry& g;
  const Planes& P;
  float* S[2];
  float* DP[2];
  float* dK[2];
  float* dV[2];
  Seg* segs;

  template <typename Walk>
  void run(const float* const* ka, const float* const* va, int64_t lda, const Lanes& ln,
           int64_t heads, Walk&& walk) {
    const int64_t D = P.head_dim, Dv = P.head_dim_v, ldn = g.ldn;
    for (int64_t h = 0; h < heads; ++h) {
      const float *q = P.q[h], *dout = P.dout[h], *lse = P.lse[h], *delta = P.delta[h];
      auto flush = [&](const Chunk& c) {
        for (int i = 0; i < c.np; ++i) {
          const Piece& pc = c.pieces[i];
          dot_piece(pc, ln, ka, lda, q + pc.row * D * ldn + pc.pos0, ldn, D, S, true);
          dot_piece(pc, ln, va, lda, dout + pc.row * Dv * ldn + pc.pos0, ldn, Dv, DP, false);
        }
        for (int r = 0; r < 2; ++r)
          for (int i = 0; i < c.np; ++i) {
            const Piece& pc = c.pieces[i];
            if (!(pc.mask & (1 << r))) continue;
            float* s = S[r] + pc.slot * 8;
            float* dp = DP[r] + pc.slot * 8;
            const float* lr = lse + pc.row * ldn + pc.pos0;
            const float* dr = delta + pc.row * ldn + pc.pos0;
            const bool shift = pc.kind == kRowLanes && ln.shifted;
            for (int64_t o = 0; o < pc.cnt; ++o) {
              const v8f lv = shift ? vload(lr + o) : vsplat(lr[o]);
              const v8f dv = shift ? vload(dr + o) : vsplat(dr[o]);
              const v8f pr = vexp(vload(s + o * 8) - lv);
              vstore(dp + o * 8, pr * (vload(dp + o * 8) - dv));
              vstore(s + o * 8, pr);
            }
          }
        const float* p[2] = {S[0], S[1]};
        const float* ds[2] = {DP[0], DP[1]};
        acc_chunk(
            c, ln, p, [&](const Piece& pc) { return dout + pc.row * Dv * ldn + pc.pos0; }, ldn, ldn,
            Dv, dV, segs);
        acc_chunk(
            c, ln, ds, [&](const Piece& pc) { return q + pc.row * D * ldn + pc.pos0; }, ldn, ldn, D,
            dK, segs);
      };
      walk(flush);
    }
  }
};

KeyLanePass key_pass(const KernelGeometry& g, const Planes& P, Scratch& sc, Seg* segs) {
  const int64_t D = P.head_dim, Dv = P.head_dim_v;
  float* acc = sc.buf + 4 * kChunkSlots * 8;
  return KeyLanePass{g,
                     P,
                     {sc.buf, sc.buf + kChunkSlots * 8},
                     {sc.buf + 2 * kChunkSlots * 8, sc.buf + 3 * kChunkSlots * 8},
                     {acc, acc + D * 8},
                     {acc + 2 * D * 8, acc + 2 * D * 8 + Dv * 8},
                     segs};
}

void backward_dkv_unit(const KernelGeometry& g, const Planes& P, const Unit& u, int64_t heads,
                       Scratch& sc) {
  const int64_t D = P.head_dim, Dv = P.head_dim_v, ldn = g.ldn;
  const int last = g.rank - 1;
  const Tables t = group_tables(g, u, true);
  Seg segs[kMaxPieces];
  KeyLanePass pass = key_pass(g, P, sc, segs);
  Piece* pieces = static_cast<Piece*>(sc.pieces);
  int64_t row[2];
  for (int r = 0; r < 2; ++r) row[r] = u.group * g.lines + u.line[r < u.nlines ? r : 0];

  for (int64_t n0 = u.n_begin; n0 < u.n_end; n0 += kLanes) {
    const Lanes ln = make_lanes(t.lo[last], t.hi[last], n0, u.n_end);
    const float* ka[2] = {P.k + row[0] * D * ldn + n0, P.k + row[1] * D * ldn + n0};
    const float* va[2] = {P.v + row[0] * Dv * ldn + n0, P.v + row[1] * Dv * ldn + n0};
    for (int r = 0; r < u.nlines; ++r) {
      zero(pass.dK[r], D * 8);
      zero(pass.dV[r], Dv * 8);
    }
    pass.run(ka, va, ldn, ln, heads,
             [&](auto& flush) { walk_rows(g, u, t, ln, 0, pieces, flush); });
    for (int r = 0; r < u.nlines; ++r) {
      float* dk = P.dk + row[r] * D * ldn + n0;
      float* dv = P.dv + row[r] * Dv * ldn + n0;
      for (int64_t d = 0; d < D; ++d) vstore(dk + d * ldn, vload(pass.dK[r] + d * 8));
      for (int64_t d = 0; d < Dv; ++d) vstore(dv + d * ldn, vload(pass.dV[r] + d * 8));
    }
  }
}

void backward_dkv_additional(const KernelGeometry& g, const Planes& P, int64_t n_begin,
                             int64_t n_end, int64_t heads, Scratch& sc) {
  const int64_t D = P.head_dim, Dv = P.head_dim_v, last = g.rank - 1;
  Seg segs[kMaxPieces];
  KeyLanePass pass = key_pass(g, P, sc, segs);
  Piece* pieces = static_cast<Piece*>(sc.pieces);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kLanes) {
    Lanes ln{};
    ln.n0 = n0;
    ln.valid = static_cast<int>(imin(kLanes, n_end - n0));
    ln.shifted = false;
    const float* ka[2] = {P.ak + n0, P.ak + n0};
    const float* va[2] = {P.av + n0, P.av + n0};
    zero(pass.dK[0], D * 8);
    zero(pass.dV[0], Dv * 8);
    // Every query line of every dilation group, each row entirely.
    auto walk = [&](auto& flush) {
      Chunk c{pieces, 0, 0};
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        int64_t gc[3], rem = grp;
        for (int a = 2; a >= 0; --a) {
          gc[a] = rem % g.dil[a];
          rem /= g.dil[a];
        }
        const int64_t n = g.glen[last][gc[last]];
        const int64_t len0 = last > 0 ? g.glen[0][gc[0]] : 1;
        const int64_t len1 = last > 1 ? g.glen[1][gc[1]] : 1;
        for (int64_t i0 = 0; i0 < len0; ++i0)
          for (int64_t i1 = 0; i1 < len1; ++i1) {
            const int64_t line = last == 2 ? i0 * g.lmax[1] + i1 : i0;
            chunk_add(c, grp * g.lines + line, 0, n, 1, kRowFull, flush);
          }
      }
      if (c.np > 0) flush(c);
    };
    pass.run(ka, va, P.ld_add, ln, heads, walk);
    float* dk = P.dak + n0;
    float* dv = P.dav + n0;
    for (int64_t d = 0; d < D; ++d) vstore(dk + d * P.ld_add, vload(pass.dK[0] + d * 8));
    for (int64_t d = 0; d < Dv; ++d) vstore(dv + d * P.ld_add, vload(pass.dV[0] + d * 8));
  }
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{FNA_FUSED_ISA_NAME, kMaxPassLines,      &forward_unit,
                             &backward_dq_unit,  &backward_dkv_unit, &backward_dkv_additional};
  return t;
}

}  // namespace fna::cpu::fused::FNA_FUSED_ISA
