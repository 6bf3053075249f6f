// The test oracle (see oracle.h). Written from DESIGN.md section 2's text, independently of
// src/common/neighborhood.h.
#include "oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fna_test {

bool oracle_axis_attends(int64_t L, int64_t K, int64_t s, int64_t d, bool c, int64_t x, int64_t y) {
  // "Dilation splits the axis into d interleaved groups": a key in another group is never seen.
  if (x % d != y % d) return false;
  const int64_t g = x % d;
  const int64_t i = x / d;                 // the query's index inside its group
  const int64_t j = y / d;                 // the key's index inside the same group
  const int64_t lg = (L - g + d - 1) / d;  // ceil((L - g) / d), L - g >= 1
  int64_t start = 0, end = 0;
  if (!c) {
    const int64_t left = K / 2;
    const int64_t right = K - 1 - left;
    const int64_t lead = std::min((i / s) * s + s / 2, lg - 1);
    start = std::max<int64_t>(lead - left, 0);
    if (lead + right >= lg) start = lg - K;
    end = start + K;
  } else {
    const int64_t lead = std::min((i / s) * s + s - 1, lg - 1);
    start = std::max<int64_t>(lead - K + 1, 0);
    end = std::min(i + 1, lg);  // the window ends at the query itself, not at the leader
  }
  return start <= j && j < end;
}

bool oracle_attends(const fna::Problem& p, int64_t tq, int64_t tk) {
  // Peel coordinates off the row-major token index, last axis fastest.
  for (int r = p.rank - 1; r >= 0; --r) {
    const int64_t L = p.extent[r];
    if (!oracle_axis_attends(L, p.window[r], p.stride[r], p.dilation[r], p.causal[r], tq % L,
                             tk % L))
      return false;
    tq /= L;
    tk /= L;
  }
  return true;
}

std::vector<uint8_t> oracle_mask(const fna::Problem& p) {
  const int64_t t = p.tokens();
  std::vector<uint8_t> mask(t * t);
  for (int64_t a = 0; a < t; ++a)
    for (int64_t b = 0; b < t; ++b) mask[a * t + b] = oracle_attends(p, a, b) ? 1 : 0;
  return mask;
}

namespace {

double scale_of(const fna::Problem& p) {
  return p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
}

// Pointers to the key / value rows one query attends, in one list: spatial keys then additional.
struct Row {
  const double* k;
  const double* v;
  int64_t spatial;  // key token, or -1 for an additional token
  int64_t add;      // additional token index, or -1
};

std::vector<Row> attended_rows(const fna::Problem& p, const DenseInputs& in,
                               const std::vector<uint8_t>& mask, int64_t b, int64_t t, int64_t hk) {
  const int64_t T = p.tokens(), N = p.additional_kv, Hkv = p.heads_kv;
  const int64_t D = p.head_dim, Dv = p.head_dim_v;
  std::vector<Row> rows;
  for (int64_t u = 0; u < T; ++u) {
    if (!mask[t * T + u]) continue;
    const int64_t kv = (b * T + u) * Hkv + hk;
    rows.push_back({&in.k[kv * D], &in.v[kv * Dv], u, -1});
  }
  for (int64_t n = 0; n < N; ++n) {
    const int64_t kv = (b * N + n) * Hkv + hk;
    rows.push_back({&in.ak[kv * D], &in.av[kv * Dv], -1, n});
  }
  return rows;
}

// Softmax of the scaled logits of q against `rows`; returns the log-sum-exp.
double softmax(const double* q, const std::vector<Row>& rows, int64_t D, double scale,
               std::vector<double>* prob) {
  prob->resize(rows.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < rows.size(); ++j) {
    double dot = 0;
    for (int64_t e = 0; e < D; ++e) dot += q[e] * rows[j].k[e];
    (*prob)[j] = dot * scale;
    mx = std::max(mx, (*prob)[j]);
  }
  double sum = 0;
  for (double& x : *prob) sum += (x = std::exp(x - mx));
  for (double& x : *prob) x /= sum;
  return mx + std::log(sum);
}

}  // namespace

DenseForward oracle_forward(const fna::Problem& p, const DenseInputs& in,
                            const std::vector<uint8_t>& mask_override) {
  const std::vector<uint8_t> mask = mask_override.empty() ? oracle_mask(p) : mask_override;
  const int64_t B = p.batch, T = p.tokens(), Hq = p.heads_q, D = p.head_dim, Dv = p.head_dim_v;
  const int64_t group = Hq / p.heads_kv;
  DenseForward f;
  f.out.assign(B * T * Hq * Dv, 0.0);
  f.lse.assign(B * T * Hq, 0.0);
  std::vector<double> prob;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const std::vector<Row> rows = attended_rows(p, in, mask, b, t, h / group);
        const int64_t row = (b * T + t) * Hq + h;
        f.lse[row] = softmax(&in.q[row * D], rows, D, scale_of(p), &prob);
        for (size_t j = 0; j < rows.size(); ++j)
          for (int64_t e = 0; e < Dv; ++e) f.out[row * Dv + e] += prob[j] * rows[j].v[e];
      }
  return f;
}

DenseGrads oracle_backward(const fna::Problem& p, const DenseInputs& in,
                           const std::vector<double>& dout,
                           const std::vector<uint8_t>& mask_override) {
  const std::vector<uint8_t> mask = mask_override.empty() ? oracle_mask(p) : mask_override;
  const int64_t B = p.batch, T = p.tokens(), Hq = p.heads_q, Hkv = p.heads_kv;
  const int64_t D = p.head_dim, Dv = p.head_dim_v, N = p.additional_kv;
  const int64_t group = Hq / Hkv;
  const double scale = scale_of(p);
  DenseGrads g;
  g.dq.assign(in.q.size(), 0.0);
  g.dk.assign(in.k.size(), 0.0);
  g.dv.assign(in.v.size(), 0.0);
  g.dak.assign(in.ak.size(), 0.0);
  g.dav.assign(in.av.size(), 0.0);
  std::vector<double> prob, dprob;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t hk = h / group;
        const std::vector<Row> rows = attended_rows(p, in, mask, b, t, hk);
        const int64_t row = (b * T + t) * Hq + h;
        const double* q = &in.q[row * D];
        const double* go = &dout[row * Dv];
        softmax(q, rows, D, scale, &prob);
        // out = sum_j P_j v_j, so dL/dP_j = dout . v_j; through the softmax,
        // dL/dlogit_j = P_j (dL/dP_j - sum_i P_i dL/dP_i).
        dprob.assign(rows.size(), 0.0);
        double weighted = 0;
        for (size_t j = 0; j < rows.size(); ++j) {
          for (int64_t e = 0; e < Dv; ++e) dprob[j] += go[e] * rows[j].v[e];
          weighted += prob[j] * dprob[j];
        }
        for (size_t j = 0; j < rows.size(); ++j) {
          const double dlogit = prob[j] * (dprob[j] - weighted) * scale;
          double* dk = rows[j].spatial >= 0 ? &g.dk[((b * T + rows[j].spatial) * Hkv + hk) * D]
                                            : &g.dak[((b * N + rows[j].add) * Hkv + hk) * D];
          double* dv = rows[j].spatial >= 0 ? &g.dv[((b * T + rows[j].spatial) * Hkv + hk) * Dv]
                                            : &g.dav[((b * N + rows[j].add) * Hkv + hk) * Dv];
          for (int64_t e = 0; e < D; ++e) {
            g.dq[row * D + e] += dlogit * rows[j].k[e];
            dk[e] += dlogit * q[e];
          }
          for (int64_t e = 0; e < Dv; ++e) dv[e] += prob[j] * go[e];
        }
      }
  return g;
}

}  // namespace fna_test
