// Backend `reference`: direct and obviously correct. For every query it enumerates the keys of its
// window (from neighborhood.h) and the additional KV tokens, and computes softmax attention in
// float64. The backward recomputes the probabilities itself (it does not trust out / lse).
#include <cmath>
#include <limits>
#include <vector>

#include "api/backend.h"
#include "common/problem_util.h"
#include "cpu/cpu_backend_impl.h"
#include "cpu/strided.h"

namespace fna::cpu {
namespace {

// The keys one query attends: spatial key tokens (as coordinates) and additional tokens.
struct KeyList {
  std::vector<int64_t> coords;  // rank coordinates per key, flattened
  int64_t count = 0;
};

void window_keys(const Neighborhood& nb, const int64_t* q, KeyList* out) {
  out->coords.clear();
  out->count = 0;
  AxisRange range[3];
  for (int r = 0; r < nb.rank; ++r) range[r] = axis_window(nb.axis[r], q[r]);
  for (int r = nb.rank; r < 3; ++r) range[r] = AxisRange{0, 1, 0};
  for (int64_t i = range[0].start; i < range[0].end; ++i)
    for (int64_t j = range[1].start; j < range[1].end; ++j)
      for (int64_t k = range[2].start; k < range[2].end; ++k) {
        const int64_t idx[3] = {i, j, k};
        for (int r = 0; r < nb.rank; ++r)
          out->coords.push_back(idx[r] * nb.axis[r].dilation + range[r].group);
        ++out->count;
      }
}

// Per query: scaled logits (double) of each attended key, spatial then additional.
template <typename T>
struct Inputs {
  const Problem& p;
  Neighborhood nb;
  TokenLayout lq, lk, lv, lak, lav;
  const T *q, *k, *v, *ak, *av;

  Inputs(const Problem& prob, const TensorView& tq, const TensorView& tk, const TensorView& tv,
         const std::optional<TensorView>& tak, const std::optional<TensorView>& tav)
      : p(prob),
        nb(make_neighborhood(prob)),
        lq(tq, prob.rank),
        lk(tk, prob.rank),
        lv(tv, prob.rank),
        q(static_cast<const T*>(tq.data)),
        k(static_cast<const T*>(tk.data)),
        v(static_cast<const T*>(tv.data)),
        ak(nullptr),
        av(nullptr) {
    if (tak) {
      lak = TokenLayout(*tak, 1);
      lav = TokenLayout(*tav, 1);
      ak = static_cast<const T*>(tak->data);
      av = static_cast<const T*>(tav->data);
    }
  }
  int64_t k_offset(int64_t b, const KeyList& keys, int64_t j, int64_t hk) const {
    if (j < keys.count) return lk.offset(b, &keys.coords[j * p.rank], hk);
    const int64_t n = j - keys.count;
    return lak.offset(b, &n, hk);
  }
  int64_t v_offset(int64_t b, const KeyList& keys, int64_t j, int64_t hk) const {
    if (j < keys.count) return lv.offset(b, &keys.coords[j * p.rank], hk);
    const int64_t n = j - keys.count;
    return lav.offset(b, &n, hk);
  }
  const T* kptr(int64_t j, const KeyList& keys) const { return j < keys.count ? k : ak; }
  const T* vptr(int64_t j, const KeyList& keys) const { return j < keys.count ? v : av; }

  // Softmax probabilities (double) of one query; returns the log-sum-exp.
  double probs(int64_t b, const int64_t* x, int64_t h, const KeyList& keys,
               std::vector<double>* prob) const {
    const int64_t hk = h / (p.heads_q / p.heads_kv);
    const int64_t n = keys.count + p.additional_kv;
    const double scale = p.effective_scale();
    const T* qrow = q + lq.offset(b, x, h);
    prob->assign(n, 0.0);
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      const T* krow = kptr(j, keys) + k_offset(b, keys, j, hk);
      double s = 0;
      for (int64_t d = 0; d < p.head_dim; ++d)
        s += static_cast<double>(to_float(qrow[d])) * static_cast<double>(to_float(krow[d]));
      (*prob)[j] = s * scale;
      m = std::max(m, (*prob)[j]);
    }
    double l = 0;
    for (int64_t j = 0; j < n; ++j) l += ((*prob)[j] = std::exp((*prob)[j] - m));
    for (int64_t j = 0; j < n; ++j) (*prob)[j] /= l;
    return m + std::log(l);
  }
};

template <typename T>
void forward_typed(const Problem& p, const ForwardArgs& a) {
  Inputs<T> in(p, a.q, a.k, a.v, a.additional_k, a.additional_v);
  const TokenLayout lo(a.out, p.rank);
  TokenLayout ll;
  if (a.lse) ll = TokenLayout(*a.lse, p.rank);
  T* out = static_cast<T*>(a.out.data);
  float* lse = a.lse ? static_cast<float*>(a.lse->data) : nullptr;
  const int64_t tokens = p.tokens();
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < tokens; ++t) {
      KeyList keys;
      std::vector<double> prob, acc(p.head_dim_v);
      int64_t x[3];
      in.nb.coords(t, x);
      window_keys(in.nb, x, &keys);
      for (int64_t h = 0; h < p.heads_q; ++h) {
        const int64_t hk = h / (p.heads_q / p.heads_kv);
        const double l = in.probs(b, x, h, keys, &prob);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < static_cast<int64_t>(prob.size()); ++j) {
          const T* vrow = in.vptr(j, keys) + in.v_offset(b, keys, j, hk);
          for (int64_t d = 0; d < p.head_dim_v; ++d)
            acc[d] += prob[j] * static_cast<double>(to_float(vrow[d]));
        }
        T* orow = out + lo.offset(b, x, h);
        for (int64_t d = 0; d < p.head_dim_v; ++d)
          orow[d] = from_float<T>(static_cast<float>(acc[d]));
        if (lse) lse[ll.offset(b, x, h)] = static_cast<float>(l);
      }
    }
}

template <typename T>
void backward_typed(const Problem& p, const BackwardArgs& a) {
  Inputs<T> in(p, a.q, a.k, a.v, a.additional_k, a.additional_v);
  const TokenLayout ldo(a.dout, p.rank), ldq(a.dq, p.rank), ldk(a.dk, p.rank), ldv(a.dv, p.rank);
  const T* dout = static_cast<const T*>(a.dout.data);
  const int64_t tokens = p.tokens(), D = p.head_dim, Dv = p.head_dim_v, nadd = p.additional_kv;
  const double scale = p.effective_scale();
  // dK / dV accumulate over queries in float64, indexed [b][token or add][hkv][d].
  const int64_t nk = tokens + nadd;
  std::vector<double> dk(p.batch * nk * p.heads_kv * D, 0.0),
      dv(p.batch * nk * p.heads_kv * Dv, 0.0);
  auto kv_index = [&](int64_t b, const KeyList& keys, int64_t j, int64_t hk) {
    const int64_t tok =
        j < keys.count ? in.nb.token(&keys.coords[j * p.rank]) : tokens + (j - keys.count);
    return (b * nk + tok) * p.heads_kv + hk;
  };
  // Serial over everything that writes dk / dv; the work is small on the problems it checks.
  KeyList keys;
  std::vector<double> prob, dprob, dqrow(D);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < tokens; ++t) {
      int64_t x[3];
      in.nb.coords(t, x);
      window_keys(in.nb, x, &keys);
      for (int64_t h = 0; h < p.heads_q; ++h) {
        const int64_t hk = h / (p.heads_q / p.heads_kv);
        in.probs(b, x, h, keys, &prob);
        const int64_t n = static_cast<int64_t>(prob.size());
        const T* dorow = dout + ldo.offset(b, x, h);
        const T* qrow = in.q + in.lq.offset(b, x, h);
        dprob.assign(n, 0.0);
        double delta = 0;  // sum_j P_j dP_j
        for (int64_t j = 0; j < n; ++j) {
          const T* vrow = in.vptr(j, keys) + in.v_offset(b, keys, j, hk);
          double s = 0;
          for (int64_t d = 0; d < Dv; ++d)
            s += static_cast<double>(to_float(dorow[d])) * static_cast<double>(to_float(vrow[d]));
          dprob[j] = s;
          delta += prob[j] * s;
        }
        std::fill(dqrow.begin(), dqrow.end(), 0.0);
        for (int64_t j = 0; j < n; ++j) {
          const double ds = prob[j] * (dprob[j] - delta) * scale;  // d loss / d (q.k)
          const T* krow = in.kptr(j, keys) + in.k_offset(b, keys, j, hk);
          const int64_t kv = kv_index(b, keys, j, hk);
          for (int64_t d = 0; d < D; ++d) {
            dqrow[d] += ds * static_cast<double>(to_float(krow[d]));
            dk[kv * D + d] += ds * static_cast<double>(to_float(qrow[d]));
          }
          for (int64_t d = 0; d < Dv; ++d)
            dv[kv * Dv + d] += prob[j] * static_cast<double>(to_float(dorow[d]));
        }
        T* dq = static_cast<T*>(a.dq.data) + ldq.offset(b, x, h);
        for (int64_t d = 0; d < D; ++d) dq[d] = from_float<T>(static_cast<float>(dqrow[d]));
      }
    }
  TokenLayout ldak, ldav;
  if (nadd) {
    ldak = TokenLayout(*a.d_additional_k, 1);
    ldav = TokenLayout(*a.d_additional_v, 1);
  }
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < nk; ++t)
      for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
        const int64_t kv = (b * nk + t) * p.heads_kv + hk;
        T *dkrow, *dvrow;
        if (t < tokens) {
          dkrow = static_cast<T*>(a.dk.data) + ldk.offset(b, t, p.extent.data(), hk);
          dvrow = static_cast<T*>(a.dv.data) + ldv.offset(b, t, p.extent.data(), hk);
        } else {
          const int64_t n = t - tokens;
          dkrow = static_cast<T*>(a.d_additional_k->data) + ldak.offset(b, &n, hk);
          dvrow = static_cast<T*>(a.d_additional_v->data) + ldav.offset(b, &n, hk);
        }
        for (int64_t d = 0; d < D; ++d)
          dkrow[d] = from_float<T>(static_cast<float>(dk[kv * D + d]));
        for (int64_t d = 0; d < Dv; ++d)
          dvrow[d] = from_float<T>(static_cast<float>(dv[kv * Dv + d]));
      }
}

}  // namespace
}  // namespace fna::cpu

namespace fna::detail {
const BackendImpl& reference_backend() {
  static const BackendImpl impl = cpu::cpu_backend_impl(
      Backend::kReference,
      [](auto t, const Problem& p, const ForwardArgs& a) { cpu::forward_typed<decltype(t)>(p, a); },
      [](auto t, const Problem& p, const BackwardArgs& a) {
        cpu::backward_typed<decltype(t)>(p, a);
      });
  return impl;
}
}  // namespace fna::detail
