// Test support for the unfused ops (include/fna/unfused.h), shared by the CPU test
// (unfused_ops_test.cpp) and the GPU test (tests/gpu/unfused_gpu_test.cpp): an independent float64
// oracle of na_qk / na_av (windows found from the brute-force oracle mask of oracle.h, not from
// src/common/neighborhood.h), its analytic gradients (checked against central finite differences
// of the oracle forward by the CPU test), and one case runner that checks all four ops on a device
// through a small mirror interface.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "buffer.h"
#include "fna/unfused.h"
#include "harness.h"
#include "oracle.h"

namespace fna_test {

// One query's window on every axis, found by scanning the oracle mask: keys j (group coordinates)
// in [start, end) of group g; i = the query's own index in its group.
struct OracleWindow {
  int64_t start[3], end[3], group[3], index[3];
};

inline OracleWindow oracle_window(const fna::Problem& p, const int64_t* x) {
  OracleWindow w;
  for (int r = 0; r < 3; ++r) {
    w.start[r] = 0, w.end[r] = 1, w.group[r] = 0, w.index[r] = 0;
    if (r >= p.rank) continue;
    const int64_t L = p.extent[r], d = p.dilation[r];
    w.group[r] = x[r] % d;
    w.index[r] = x[r] / d;
    int64_t lo = -1, hi = -1;
    for (int64_t y = w.group[r]; y < L; y += d)
      if (oracle_axis_attends(L, p.window[r], p.stride[r], d, p.causal[r], x[r], y)) {
        if (lo < 0) lo = y / d;
        hi = y / d + 1;
      }
    w.start[r] = lo;
    w.end[r] = hi;
  }
  return w;
}

inline int64_t oracle_slots(const fna::Problem& p) {
  int64_t w = 1;
  for (int r = 0; r < p.rank; ++r) w *= p.window[r];
  return w;
}
inline int64_t oracle_bias_elems(const fna::Problem& p) {
  int64_t n = 1;
  for (int r = 0; r < p.rank; ++r) n *= 2 * p.window[r] - 1;
  return n;
}

// Slot s of a query: per-axis offsets row-major (last axis fastest) from the window start. Sets the
// key token (row-major) and the flat bias index; false past a causal end.
inline bool oracle_slot(const fna::Problem& p, const OracleWindow& w, int64_t s, int64_t* key,
                        int64_t* bias) {
  int64_t off[3] = {0, 0, 0};
  for (int r = p.rank - 1; r >= 0; --r) {
    off[r] = s % p.window[r];
    s /= p.window[r];
  }
  *key = 0;
  *bias = 0;
  for (int r = 0; r < p.rank; ++r) {
    const int64_t j = w.start[r] + off[r];
    if (j >= w.end[r]) return false;
    *key = *key * p.extent[r] + j * p.dilation[r] + w.group[r];
    *bias = *bias * (2 * p.window[r] - 1) + (j - w.index[r] + p.window[r] - 1);
  }
  return true;
}

// Calls f(b, token, h, slot, key token, bias index, valid) for every attn element, canonical order
// [B, T, Hq, W].
inline void for_each_slot(
    const fna::Problem& p,
    const std::function<void(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool)>& f) {
  const int64_t T = p.tokens(), W = oracle_slots(p);
  for (int64_t t = 0; t < T; ++t) {
    int64_t x[3] = {0, 0, 0}, rest = t;
    for (int r = p.rank - 1; r >= 0; --r) {
      x[r] = rest % p.extent[r];
      rest /= p.extent[r];
    }
    const OracleWindow w = oracle_window(p, x);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.heads_q; ++h)
        for (int64_t s = 0; s < W; ++s) {
          int64_t key = 0, bias = 0;
          const bool valid = oracle_slot(p, w, s, &key, &bias);
          f(b, t, h, s, key, bias, valid);
        }
  }
}

// Canonical dense layouts: q [B, T, Hq, D], k [B, T, Hkv, D], attn [B, T, Hq, W], rpb [Hq, E].
inline std::vector<double> oracle_qk(const fna::Problem& p, const std::vector<double>& q,
                                     const std::vector<double>& k, const std::vector<double>* rpb) {
  const int64_t T = p.tokens(), W = oracle_slots(p), D = p.head_dim, E = oracle_bias_elems(p);
  const int64_t group = p.heads_q / p.heads_kv;
  std::vector<double> attn(p.batch * T * p.heads_q * W);
  for_each_slot(
      p, [&](int64_t b, int64_t t, int64_t h, int64_t s, int64_t key, int64_t e, bool valid) {
        double v = -std::numeric_limits<double>::infinity();
        if (valid) {
          v = 0;
          for (int64_t d = 0; d < D; ++d)
            v += q[((b * T + t) * p.heads_q + h) * D + d] *
                 k[((b * T + key) * p.heads_kv + h / group) * D + d];
          if (rpb) v += (*rpb)[h * E + e];
        }
        attn[((b * T + t) * p.heads_q + h) * W + s] = v;
      });
  return attn;
}

// out [B, T, Hq, Dv] = sum over valid slots attn * v; invalid slots ignored (even if NaN).
inline std::vector<double> oracle_av(const fna::Problem& p, const std::vector<double>& attn,
                                     const std::vector<double>& v) {
  const int64_t T = p.tokens(), W = oracle_slots(p), Dv = p.head_dim_v;
  const int64_t group = p.heads_q / p.heads_kv;
  std::vector<double> out(p.batch * T * p.heads_q * Dv, 0.0);
  for_each_slot(p,
                [&](int64_t b, int64_t t, int64_t h, int64_t s, int64_t key, int64_t, bool valid) {
                  if (!valid) return;
                  const double a = attn[((b * T + t) * p.heads_q + h) * W + s];
                  for (int64_t d = 0; d < Dv; ++d)
                    out[((b * T + t) * p.heads_q + h) * Dv + d] +=
                        a * v[((b * T + key) * p.heads_kv + h / group) * Dv + d];
                });
  return out;
}

// Analytic gradients of sum(oracle_qk(q, k, rpb) * g) (valid slots only) and of
// sum(oracle_av(attn, v) * g); checked against finite_difference below in unfused_ops_test.cpp.
struct OracleQkGrads {
  std::vector<double> dq, dk, d_rpb;
};
inline OracleQkGrads oracle_qk_backward(const fna::Problem& p, const std::vector<double>& q,
                                        const std::vector<double>& k,
                                        const std::vector<double>& g) {
  const int64_t T = p.tokens(), W = oracle_slots(p), D = p.head_dim, E = oracle_bias_elems(p);
  const int64_t group = p.heads_q / p.heads_kv;
  OracleQkGrads r{std::vector<double>(q.size()), std::vector<double>(k.size()),
                  std::vector<double>(p.heads_q * E)};
  for_each_slot(
      p, [&](int64_t b, int64_t t, int64_t h, int64_t s, int64_t key, int64_t e, bool valid) {
        if (!valid) return;
        const double gs = g[((b * T + t) * p.heads_q + h) * W + s];
        const int64_t qo = ((b * T + t) * p.heads_q + h) * D;
        const int64_t ko = ((b * T + key) * p.heads_kv + h / group) * D;
        for (int64_t d = 0; d < D; ++d) {
          r.dq[qo + d] += gs * k[ko + d];
          r.dk[ko + d] += gs * q[qo + d];
        }
        r.d_rpb[h * E + e] += gs;
      });
  return r;
}

struct OracleAvGrads {
  std::vector<double> d_attn, dv;
};
inline OracleAvGrads oracle_av_backward(const fna::Problem& p, const std::vector<double>& attn,
                                        const std::vector<double>& v,
                                        const std::vector<double>& g) {
  const int64_t T = p.tokens(), W = oracle_slots(p), Dv = p.head_dim_v;
  const int64_t group = p.heads_q / p.heads_kv;
  OracleAvGrads r{std::vector<double>(attn.size()), std::vector<double>(v.size())};
  for_each_slot(p,
                [&](int64_t b, int64_t t, int64_t h, int64_t s, int64_t key, int64_t, bool valid) {
                  if (!valid) return;
                  const int64_t ai = ((b * T + t) * p.heads_q + h) * W + s;
                  const int64_t go = ((b * T + t) * p.heads_q + h) * Dv;
                  const int64_t vo = ((b * T + key) * p.heads_kv + h / group) * Dv;
                  for (int64_t d = 0; d < Dv; ++d) {
                    r.d_attn[ai] += g[go + d] * v[vo + d];
                    r.dv[vo + d] += g[go + d] * attn[ai];
                  }
                });
  return r;
}

// sum(f(x) * g) over the elements where f(x) is finite (the -inf slots are constants).
inline double masked_dot(const std::vector<double>& fx, const std::vector<double>& g) {
  double s = 0;
  for (size_t i = 0; i < fx.size(); ++i)
    if (std::isfinite(fx[i])) s += fx[i] * g[i];
  return s;
}

// Gradient of sum(f(x) * g) with respect to x by central differences (exact up to rounding for
// the ops here, which are linear in each argument).
inline std::vector<double> finite_difference(
    std::vector<double> x, const std::function<std::vector<double>(const std::vector<double>&)>& f,
    const std::vector<double>& g) {
  constexpr double kStep = 0.5;  // any step is exact for a linear function; 0.5 is exact in binary
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + kStep;
    const double up = masked_dot(f(x), g);
    x[i] = x0 - kStep;
    const double down = masked_dot(f(x), g);
    x[i] = x0;
    grad[i] = (up - down) / (2 * kStep);
  }
  return grad;
}

inline fna::Problem unfused_problem(int rank, std::vector<int64_t> extent,
                                    std::vector<int64_t> window, std::vector<int64_t> stride = {},
                                    std::vector<int64_t> dilation = {},
                                    std::vector<bool> causal = {}) {
  fna::Problem p;
  p.rank = rank;
  p.batch = 2;
  p.heads_q = 2;
  p.heads_kv = 2;
  p.head_dim = 3;
  p.head_dim_v = 3;
  for (int r = 0; r < rank; ++r) {
    p.extent[r] = extent[r];
    p.window[r] = window[r];
    if (!stride.empty()) p.stride[r] = stride[r];
    if (!dilation.empty()) p.dilation[r] = dilation[r];
    if (!causal.empty()) p.causal[r] = causal[r];
  }
  return p;
}

// Tiny problems covering every parameter: odd/even windows, window = extent, stride, dilation,
// causal per axis (no rpb there), GQA, Dv != D, rank 1..3.
inline std::vector<fna::Problem> unfused_problems() {
  std::vector<fna::Problem> ps;
  ps.push_back(unfused_problem(1, {13}, {5}));
  ps.push_back(unfused_problem(1, {13}, {4}, {2}, {2}));
  ps.push_back(unfused_problem(1, {9}, {9}));
  ps.push_back(unfused_problem(1, {11}, {4}, {3}, {1}, {true}));
  ps.push_back(unfused_problem(2, {5, 7}, {3, 4}, {1, 2}));
  ps.push_back(unfused_problem(2, {7, 6}, {3, 2}, {3, 1}, {2, 3}));
  ps.push_back(unfused_problem(2, {6, 5}, {3, 3}, {2, 1}, {1, 1}, {true, false}));
  ps.push_back(unfused_problem(3, {3, 4, 5}, {2, 3, 3}, {1, 2, 3}, {1, 1, 1}));
  ps.push_back(unfused_problem(3, {4, 3, 6}, {2, 3, 2}, {2, 1, 1}, {2, 1, 2}, {false, true, true}));
  fna::Problem gqa = unfused_problem(2, {5, 6}, {3, 5}, {1, 1}, {1, 1});
  gqa.heads_q = 4;
  gqa.heads_kv = 2;
  gqa.head_dim = 4;
  gqa.head_dim_v = 2;
  ps.push_back(gqa);
  fna::Problem mqa = unfused_problem(1, {10}, {3}, {1}, {3});
  mqa.heads_q = 3;
  mqa.heads_kv = 1;
  mqa.head_dim_v = 5;
  ps.push_back(mqa);
  return ps;
}

inline bool any_causal(const fna::Problem& p) {
  for (int r = 0; r < p.rank; ++r)
    if (p.causal[r]) return true;
  return false;
}

struct UnfusedSpec {
  fna::Problem problem;
  fna::DType dtype = fna::DType::kFloat32;         // q, k, v, out and their gradients
  fna::DType weight_dtype = fna::DType::kFloat32;  // attn, d_attn, rpb, d_rpb
  bool strided = false;
  bool rpb = false;
  uint64_t seed = 1;

  std::string describe() const {
    return problem.to_string() + " dtype=" + fna::dtype_name(dtype) +
           " weights=" + fna::dtype_name(weight_dtype) + (strided ? " strided" : " contiguous") +
           (rpb ? " rpb" : "") + " seed=" + std::to_string(seed);
  }
};

// Masked slots must be -inf in both; the rest compared with relative_error.
inline double logits_error(const std::vector<double>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  std::vector<double> g = got, r = ref;
  for (size_t i = 0; i < r.size(); ++i) {
    if (std::isinf(r[i])) {
      if (!(std::isinf(g[i]) && g[i] < 0)) return INFINITY;
      g[i] = r[i] = 0;
    }
  }
  return relative_error(g, r);
}

// Runs na_qk, na_av and both backward ops on random inputs through `mirror` and checks every
// output against the oracle (and that nothing outside the output views was written). Returns ""
// on success, else every failed check.
inline std::string run_unfused_case(const UnfusedSpec& spec, Mirror& mirror,
                                    const fna::Options& options = {}) {
  const fna::Problem& p = spec.problem;
  std::mt19937_64 rng(spec.seed * 0x9e3779b97f4a7c15ull + 0x51);
  const fna::DType dt = spec.dtype, wt = spec.weight_dtype;
  const int64_t T = p.tokens();
  auto tok = [&](int64_t h, int64_t d) {
    std::vector<int64_t> s{p.batch};
    for (int r = 0; r < p.rank; ++r) s.push_back(p.extent[r]);
    s.push_back(h);
    s.push_back(d);
    return s;
  };
  auto make = [&](const std::vector<int64_t>& s, fna::DType d) {
    return Buffer::make(s, d, spec.strided, rng);
  };
  const std::vector<int64_t> attn_s = tok(p.heads_q, oracle_slots(p));
  const std::vector<int64_t> rpb_s = fna::rpb_shape(p);
  Buffer q = make(tok(p.heads_q, p.head_dim), dt), k = make(tok(p.heads_kv, p.head_dim), dt);
  Buffer v = make(tok(p.heads_kv, p.head_dim_v), dt);
  Buffer weights_in = make(attn_s, wt), d_attn_in = make(attn_s, wt);
  Buffer d_out = make(tok(p.heads_q, p.head_dim_v), dt);
  Buffer rpb = make(rpb_s, wt);
  Buffer attn = make(attn_s, wt), out = make(tok(p.heads_q, p.head_dim_v), dt);
  Buffer dq = make(tok(p.heads_q, p.head_dim), dt), dk = make(tok(p.heads_kv, p.head_dim), dt);
  Buffer d_rpb = make(rpb_s, wt), d_attn = make(attn_s, wt);
  Buffer dv = make(tok(p.heads_kv, p.head_dim_v), dt);

  const std::vector<double> qd = q.fill_random(rng, 2.0), kd = k.fill_random(rng, 2.0);
  const std::vector<double> vd = v.fill_random(rng, 1.0), dod = d_out.fill_random(rng, 1.0);
  const std::vector<double> rd = rpb.fill_random(rng, 1.0);
  // Weights for na_av and d_attn for na_qk_backward: NaN in slots past a causal end, which the
  // ops must ignore.
  std::vector<double> wd = weights_in.fill_random(rng, 1.0), gd = d_attn_in.fill_random(rng, 1.0);
  std::vector<double> masked_nan = wd;
  for_each_slot(p, [&](int64_t b, int64_t t, int64_t h, int64_t s, int64_t, int64_t, bool valid) {
    const int64_t i = ((b * T + t) * p.heads_q + h) * oracle_slots(p) + s;
    masked_nan[i] = valid ? 0.0 : std::numeric_limits<double>::quiet_NaN();
  });
  for (size_t i = 0; i < wd.size(); ++i)
    if (std::isnan(masked_nan[i])) wd[i] = gd[i] = masked_nan[i];
  weights_in.from_dense(wd);
  d_attn_in.from_dense(gd);
  auto clean = [](std::vector<double> x) {  // NaN (masked) -> 0 for the oracle
    for (double& e : x)
      if (std::isnan(e)) e = 0;
    return x;
  };
  const std::vector<double> wclean = clean(wd), gclean = clean(gd);

  std::string failure;
  auto fmt = [](double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3g", x);
    return std::string(b);
  };
  const double ftol = std::max(forward_tolerance(dt), forward_tolerance(wt));
  const double gtol = 3 * ftol;
  auto check = [&](const char* what, double err, double tol) {
    if (!(err <= tol))
      failure += std::string(what) + " error " + fmt(err) + " > " + fmt(tol) + "; ";
  };
  auto untouched = [&](const char* what, const Buffer& b) {
    const std::string s = Buffer::check_outside_untouched({&b});
    if (!s.empty()) failure += std::string(what) + ": " + s + "; ";
  };
  try {
    // na_qk
    fna::QkArgs qa{mirror.view(q), mirror.view(k), mirror.view(attn), std::nullopt};
    if (spec.rpb) qa.rpb = mirror.view(rpb);
    fna::na_qk(p, qa, options);
    // na_av
    fna::na_av(p, {mirror.view(weights_in), mirror.view(v), mirror.view(out)}, options);
    // na_qk_backward
    fna::QkBackwardArgs qb{mirror.view(q),  mirror.view(k),  mirror.view(d_attn_in),
                           mirror.view(dq), mirror.view(dk), std::nullopt};
    if (spec.rpb) qb.d_rpb = mirror.view(d_rpb);
    fna::na_qk_backward(p, qb, options);
    // na_av_backward
    fna::na_av_backward(p,
                        {mirror.view(weights_in), mirror.view(v), mirror.view(d_out),
                         mirror.view(d_attn), mirror.view(dv)},
                        options);
    mirror.sync();
    for (const Buffer* b : {&attn, &out, &dq, &dk, &d_rpb, &d_attn, &dv}) mirror.download(*b);
  } catch (const std::exception& e) {
    return std::string("threw: ") + e.what();
  }

  const std::vector<double>* rpb_ptr = spec.rpb ? &rd : nullptr;
  check("attn", logits_error(attn.to_dense(), oracle_qk(p, qd, kd, rpb_ptr)), ftol);
  check("out", relative_error(out.to_dense(), oracle_av(p, wclean, vd)), ftol);
  const OracleQkGrads qk_ref = oracle_qk_backward(p, qd, kd, gclean);
  check("dq", relative_error(dq.to_dense(), qk_ref.dq), gtol);
  check("dk", relative_error(dk.to_dense(), qk_ref.dk), gtol);
  if (spec.rpb) check("d_rpb", relative_error(d_rpb.to_dense(), qk_ref.d_rpb), gtol);
  const OracleAvGrads av_ref = oracle_av_backward(p, wclean, vd, dod);
  check("d_attn", relative_error(d_attn.to_dense(), av_ref.d_attn), gtol);
  check("dv", relative_error(dv.to_dense(), av_ref.dv), gtol);
  for (auto [name, b] : {std::pair<const char*, const Buffer*>{"attn", &attn},
                         {"out", &out},
                         {"dq", &dq},
                         {"dk", &dk},
                         {"d_attn", &d_attn},
                         {"dv", &dv}})
    untouched(name, *b);
  if (spec.rpb) untouched("d_rpb", d_rpb);
  return failure;
}

}  // namespace fna_test
