// Problem helpers and the effective FLOP count (DESIGN.md section 6).
#include "fna/problem.h"

#include <cmath>
#include <sstream>

#include "common/problem_util.h"

namespace fna {

double Problem::effective_scale() const {
  return scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

int64_t Problem::tokens() const {
  int64_t n = 1;
  for (int r = 0; r < rank && r < kMaxRank; ++r) n *= extent[r];
  return n;
}

namespace {
template <typename T>
void join(std::ostringstream& os, const std::array<T, kMaxRank>& a, int rank) {
  for (int r = 0; r < rank; ++r) os << (r ? "x" : "") << a[r];
}
}  // namespace

std::string Problem::to_string() const {
  std::ostringstream os;
  const int n = rank >= 1 && rank <= kMaxRank ? rank : kMaxRank;
  os << "extent=";
  join(os, extent, n);
  os << " window=";
  join(os, window, n);
  os << " stride=";
  join(os, stride, n);
  os << " dilation=";
  join(os, dilation, n);
  os << " causal=";
  join(os, causal, n);
  os << " B=" << batch << " Hq=" << heads_q << " Hkv=" << heads_kv << " D=" << head_dim
     << " Dv=" << head_dim_v;
  if (additional_kv) os << " add_kv=" << additional_kv;
  if (scale) os << " scale=" << *scale;
  return os.str();
}

Problem Problem::make(std::initializer_list<int64_t> ext, std::initializer_list<int64_t> win,
                      int64_t batch, int64_t heads, int64_t head_dim) {
  Problem p;
  p.rank = static_cast<int>(ext.size());
  int r = 0;
  for (int64_t e : ext) p.extent[r++ % kMaxRank] = e;
  r = 0;
  for (int64_t w : win) p.window[r++ % kMaxRank] = w;
  p.batch = batch;
  p.heads_q = p.heads_kv = heads;
  p.head_dim = p.head_dim_v = head_dim;
  return p;
}

double attended_pairs(const Problem& p) {
  const Neighborhood n = make_neighborhood(p);
  double pairs = 1.0;
  for (int r = 0; r < p.rank; ++r) pairs *= static_cast<double>(axis_attended_pairs(n.axis[r]));
  return pairs;
}

double forward_flops(const Problem& p) {
  const double pairs =
      attended_pairs(p) + static_cast<double>(p.tokens()) * static_cast<double>(p.additional_kv);
  return 2.0 * static_cast<double>(p.batch) * static_cast<double>(p.heads_q) * pairs *
         static_cast<double>(p.head_dim + p.head_dim_v);
}

double backward_flops(const Problem& p) { return 2.5 * forward_flops(p); }

double density(const Problem& p) {
  const double t = static_cast<double>(p.tokens());
  const double kv = t + static_cast<double>(p.additional_kv);
  return (attended_pairs(p) + t * static_cast<double>(p.additional_kv)) / (t * kv);
}

}  // namespace fna
