// CPU implementation of the unfused ops (include/fna/unfused.h): OpenMP over queries for the
// per-query outputs (attn, out, dq, d_attn); the key-side gradients (dk, dv) and d_rpb are
// scattered inside one (batch, kv head) unit / one head per thread, so no two threads touch one
// accumulator and the result is deterministic. Accumulation is fp32.
#include "cpu/unfused_ops.h"

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "common/problem_util.h"
#include "common/unfused_slots.h"
#include "cpu/strided.h"

namespace fna::cpu {
namespace {

// Attention weights and biases are fp32 or the token dtype: loaded / stored by runtime dtype.
float load_weight(const TensorView& t, int64_t off) {
  return dispatch_dtype(
      t.dtype, [&](auto tag) { return to_float(static_cast<const decltype(tag)*>(t.data)[off]); });
}
void store_weight(const TensorView& t, int64_t off, float x) {
  dispatch_dtype(t.dtype, [&](auto tag) {
    using W = decltype(tag);
    static_cast<W*>(t.data)[off] = from_float<W>(x);
  });
}

// Offset of rpb[h, rel_0, ...] in a view of shape [Hq, 2K0-1, ...].
int64_t bias_offset(const TensorView& t, int64_t h, const int64_t* rel, int rank) {
  int64_t o = h * t.strides[0];
  for (int r = 0; r < rank; ++r) o += rel[r] * t.strides[1 + r];
  return o;
}

int64_t slots_of(const Problem& p) {
  int64_t w = 1;
  for (int r = 0; r < p.rank; ++r) w *= p.window[r];
  return w;
}

// One query (b, token t, head h) of the problem, with its coordinates and window.
struct Query {
  int64_t b, h, hk, x[3];
  QueryWindow w;
};
Query query_at(const Problem& p, const Neighborhood& nb, int64_t n) {
  Query q;
  q.h = n % p.heads_q;
  const int64_t t = (n / p.heads_q) % p.tokens();
  q.b = n / (p.heads_q * p.tokens());
  q.hk = q.h / (p.heads_q / p.heads_kv);
  q.x[1] = q.x[2] = 0;
  nb.coords(t, q.x);
  q.w = query_window(nb, q.x);
  return q;
}

float dot(const auto* a, const auto* b, int64_t n) {
  float s = 0.f;
  for (int64_t d = 0; d < n; ++d) s += to_float(a[d]) * to_float(b[d]);
  return s;
}

// Per query and slot: dst[b, x, h, s] = row(b, x, h) . key_row(b, key(x, s), hk), plus
// bias[h, rel(x, s)] when given; slots outside a causal window get `invalid`. (Logits of na_qk;
// d_attn of na_av's backward.)
template <typename T>
void dot_with_keys(const Problem& p, const TensorView& rows, const TensorView& keys,
                   const TensorView& dst, int64_t dim, const std::optional<TensorView>& bias,
                   float invalid) {
  const Neighborhood nb = make_neighborhood(p);
  const TokenLayout lr(rows, p.rank), lk(keys, p.rank), ld(dst, p.rank);
  const T* rp = static_cast<const T*>(rows.data);
  const T* kp = static_cast<const T*>(keys.data);
  const int64_t slots = slots_of(p), n = p.batch * p.tokens() * p.heads_q;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const Query qu = query_at(p, nb, i);
    const T* row = rp + lr.offset(qu.b, qu.x, qu.h);
    const int64_t drow = ld.offset(qu.b, qu.x, qu.h);
    for (int64_t s = 0; s < slots; ++s) {
      int64_t y[3], rel[3];
      float value = invalid;
      if (window_slot(qu.w, s, y, rel)) {
        value = dot(row, kp + lk.offset(qu.b, y, qu.hk), dim);
        if (bias) value += load_weight(*bias, bias_offset(*bias, qu.h, rel, p.rank));
      }
      store_weight(dst, drow + s, value);
    }
  }
}

// Per query: dst[b, x, h, :] = sum over valid slots s of weight(b, x, h, s) *
// key_row(b, key(x, s), hk, :). (Output of na_av; dq of na_qk's backward.)
template <typename T>
void gather_from_keys(const Problem& p, const TensorView& weights, const TensorView& keys,
                      const TensorView& dst, int64_t dim) {
  const Neighborhood nb = make_neighborhood(p);
  const TokenLayout lk(keys, p.rank), lw(weights, p.rank), ld(dst, p.rank);
  const T* kp = static_cast<const T*>(keys.data);
  T* dp = static_cast<T*>(dst.data);
  const int64_t slots = slots_of(p), n = p.batch * p.tokens() * p.heads_q;
#pragma omp parallel
  {
    std::vector<float> acc(dim);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const Query qu = query_at(p, nb, i);
      const int64_t wrow = lw.offset(qu.b, qu.x, qu.h);
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t s = 0; s < slots; ++s) {
        int64_t y[3], rel[3];
        if (!window_slot(qu.w, s, y, rel)) continue;
        const float wgt = load_weight(weights, wrow + s);
        const T* krow = kp + lk.offset(qu.b, y, qu.hk);
        for (int64_t d = 0; d < dim; ++d) acc[d] += wgt * to_float(krow[d]);
      }
      T* out = dp + ld.offset(qu.b, qu.x, qu.h);
      for (int64_t d = 0; d < dim; ++d) out[d] = from_float<T>(acc[d]);
    }
  }
}

// Key-side gradient: g[b, key, hk, :] = sum over queries (b, x, h in hk's group) and their valid
// slots s of weight(b, x, h, s) * row(b, x, h, :). One (b, hk) unit per thread (no races).
template <typename T>
void scatter_to_keys(const Problem& p, const TensorView& weights, const TensorView& rows,
                     const TensorView& grad, int64_t dim) {
  const Neighborhood nb = make_neighborhood(p);
  const TokenLayout lw(weights, p.rank), lr(rows, p.rank), lg(grad, p.rank);
  const T* rp = static_cast<const T*>(rows.data);
  T* gp = static_cast<T*>(grad.data);
  const int64_t slots = slots_of(p), tokens = p.tokens(), group = p.heads_q / p.heads_kv;
  const int64_t units = p.batch * p.heads_kv;
#pragma omp parallel
  {
    std::vector<float> acc(tokens * dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t b = u / p.heads_kv, hk = u % p.heads_kv;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t gh = 0; gh < group; ++gh)
        for (int64_t t = 0; t < tokens; ++t) {
          const int64_t h = hk * group + gh;
          int64_t x[3] = {0, 0, 0};
          nb.coords(t, x);
          const QueryWindow w = query_window(nb, x);
          const int64_t wrow = lw.offset(b, x, h);
          const T* row = rp + lr.offset(b, x, h);
          for (int64_t s = 0; s < slots; ++s) {
            int64_t y[3] = {0, 0, 0}, rel[3];
            if (!window_slot(w, s, y, rel)) continue;
            const float wgt = load_weight(weights, wrow + s);
            float* dst = acc.data() + nb.token(y) * dim;
            for (int64_t d = 0; d < dim; ++d) dst[d] += wgt * to_float(row[d]);
          }
        }
      for (int64_t t = 0; t < tokens; ++t) {
        T* dst = gp + lg.offset(b, t, p.extent.data(), hk);
        for (int64_t d = 0; d < dim; ++d) dst[d] = from_float<T>(acc[t * dim + d]);
      }
    }
  }
}

template <typename T>
void qk_backward_typed(const Problem& p, const QkBackwardArgs& a) {
  gather_from_keys<T>(p, a.d_attn, a.k, a.dq, p.head_dim);
  scatter_to_keys<T>(p, a.d_attn, a.q, a.dk, p.head_dim);
  if (!a.d_rpb) return;
  const Neighborhood nb = make_neighborhood(p);
  const TokenLayout la(a.d_attn, p.rank);
  const int64_t slots = slots_of(p);
  // d_rpb[h, rel] = sum over b, queries and slots with that bias index of d_attn: one head per
  // thread.
  const TensorView& g = *a.d_rpb;
  int64_t bias_elems = 1;
  for (int r = 0; r < p.rank; ++r) bias_elems *= 2 * p.window[r] - 1;
#pragma omp parallel
  {
    std::vector<float> acc(bias_elems);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < p.heads_q; ++h) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t b = 0; b < p.batch; ++b)
        for (int64_t t = 0; t < p.tokens(); ++t) {
          int64_t x[3] = {0, 0, 0};
          nb.coords(t, x);
          const QueryWindow w = query_window(nb, x);
          const int64_t arow = la.offset(b, x, h);
          for (int64_t s = 0; s < slots; ++s) {
            int64_t y[3], rel[3] = {0, 0, 0};
            if (!window_slot(w, s, y, rel)) continue;
            int64_t e = 0;
            for (int r = 0; r < p.rank; ++r) e = e * (2 * p.window[r] - 1) + rel[r];
            acc[e] += load_weight(a.d_attn, arow + s);
          }
        }
      for (int64_t e = 0; e < bias_elems; ++e) {
        int64_t rel[3], rest = e;
        for (int r = p.rank - 1; r >= 0; --r) {
          rel[r] = rest % (2 * p.window[r] - 1);
          rest /= 2 * p.window[r] - 1;
        }
        store_weight(g, bias_offset(g, h, rel, p.rank), acc[e]);
      }
    }
  }
}

template <typename T>
void av_backward_typed(const Problem& p, const AvBackwardArgs& a) {
  dot_with_keys<T>(p, a.d_out, a.v, a.d_attn, p.head_dim_v, std::nullopt, 0.f);
  scatter_to_keys<T>(p, a.attn, a.d_out, a.dv, p.head_dim_v);
}

}  // namespace

void unfused_qk(const Problem& p, const QkArgs& a) {
  dispatch_dtype(a.q.dtype, [&](auto tag) {
    dot_with_keys<decltype(tag)>(p, a.q, a.k, a.attn, p.head_dim, a.rpb,
                                 -std::numeric_limits<float>::infinity());
  });
}
void unfused_qk_backward(const Problem& p, const QkBackwardArgs& a) {
  dispatch_dtype(a.q.dtype, [&](auto tag) { qk_backward_typed<decltype(tag)>(p, a); });
}
void unfused_av(const Problem& p, const AvArgs& a) {
  dispatch_dtype(a.v.dtype, [&](auto tag) {
    gather_from_keys<decltype(tag)>(p, a.attn, a.v, a.out, p.head_dim_v);
  });
}
void unfused_av_backward(const Problem& p, const AvBackwardArgs& a) {
  dispatch_dtype(a.v.dtype, [&](auto tag) { av_backward_typed<decltype(tag)>(p, a); });
}

}  // namespace fna::cpu
