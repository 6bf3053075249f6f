// Invariants of DESIGN.md section 7, checked on every backend under test:
//   K = L (non-causal, s = 1, d = 1)  =>  plain self attention;
//   K = 1                             =>  out equals v at the query's own position;
//   dilation d                        =>  NA on d interleaved sub-grids, independently.
#include <gtest/gtest.h>

#include <cmath>

#include "harness.h"

namespace fna_test {
namespace {

constexpr fna::DType kF32 = fna::DType::kFloat32;

class Invariants : public ::testing::TestWithParam<std::string> {
 protected:
  fna::Backend backend() const { return fna::parse_backend(GetParam()); }
};

// Runs `backend`, turning an fna::Error into a test failure that names the problem.
bool run(const fna::Problem& p, const DenseInputs& in, const std::vector<double>& dout,
         fna::Backend backend, BackendRun* r) {
  try {
    *r = run_backend(p, in, dout, backend);
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "{" << p.to_string() << "}: " << e.what();
    return false;
  }
}

TEST_P(Invariants, FullWindowIsSelfAttention) {
  for (int i = 0; i < sweep_count(60); ++i) {
    const uint64_t seed = base_seed() + 5000011 + i;
    std::mt19937_64 rng(seed);
    fna::Problem p = random_problem(rng);
    for (int r = 0; r < p.rank; ++r) {
      p.window[r] = p.extent[r];
      p.stride[r] = p.dilation[r] = 1;
      p.causal[r] = false;
    }
    const DenseInputs in = random_inputs(p, rng);
    const std::vector<double> dout =
        random_values(p.batch * p.tokens() * p.heads_q * p.head_dim_v, 1.0, rng);
    // Plain self attention: every query sees every key (no neighborhood logic at all).
    const std::vector<uint8_t> all(p.tokens() * p.tokens(), 1);
    ASSERT_EQ(oracle_mask(p), all) << "seed " << seed << " {" << p.to_string() << "}";
    const DenseForward ref = oracle_forward(p, in, all);
    const DenseGrads g = oracle_backward(p, in, dout, all);
    BackendRun r;
    if (!run(p, in, dout, backend(), &r)) continue;
    const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() + "}";
    EXPECT_LE(relative_error(r.out, ref.out), forward_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.lse, ref.lse), forward_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.grads.dq, g.dq), gradient_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.grads.dk, g.dk), gradient_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.grads.dv, g.dv), gradient_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.grads.dak, g.dak), gradient_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(r.grads.dav, g.dav), gradient_tolerance(kF32)) << where;
  }
}

TEST_P(Invariants, WindowOneIsValueAtSelf) {
  for (int i = 0; i < sweep_count(60); ++i) {
    const uint64_t seed = base_seed() + 6000011 + i;
    std::mt19937_64 rng(seed);
    fna::Problem p = random_problem(rng);
    for (int r = 0; r < p.rank; ++r) p.window[r] = p.stride[r] = 1;  // dilation, causal kept
    p.additional_kv = 0;
    const DenseInputs in = random_inputs(p, rng);
    const int64_t rows = p.batch * p.tokens(), Hq = p.heads_q, Hkv = p.heads_kv;
    const int64_t D = p.head_dim, Dv = p.head_dim_v, group = Hq / Hkv;
    const std::vector<double> dout = random_values(rows * Hq * Dv, 1.0, rng);
    BackendRun r;
    if (!run(p, in, dout, backend(), &r)) continue;
    const double scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(D));
    // Expected: out = v at self, lse = the one scaled logit, dq = dk = 0,
    // dv = sum of dout over the query heads sharing the KV head.
    std::vector<double> out(rows * Hq * Dv), lse(rows * Hq), dv(rows * Hkv * Dv, 0.0);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t hk = h / group;
        double logit = 0;
        for (int64_t e = 0; e < D; ++e)
          logit += in.q[(t * Hq + h) * D + e] * in.k[(t * Hkv + hk) * D + e];
        lse[t * Hq + h] = logit * scale;
        for (int64_t e = 0; e < Dv; ++e) {
          out[(t * Hq + h) * Dv + e] = in.v[(t * Hkv + hk) * Dv + e];
          dv[(t * Hkv + hk) * Dv + e] += dout[(t * Hq + h) * Dv + e];
        }
      }
    const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() + "}";
    EXPECT_LE(relative_error(r.out, out), 1e-6) << where;
    EXPECT_LE(relative_error(r.lse, lse), forward_tolerance(kF32)) << where;
    // out and dv are exact up to one rounding (P = 1); dq and dk are P * (dP - rowsum(dO * O))
    // = 0 only up to fp32 cancellation in dP - delta, so they get the DESIGN.md gradient bound.
    const double gt = gradient_tolerance(kF32);
    EXPECT_LE(relative_error(r.grads.dq, std::vector<double>(in.q.size(), 0.0)), gt) << where;
    EXPECT_LE(relative_error(r.grads.dk, std::vector<double>(in.k.size(), 0.0)), gt) << where;
    EXPECT_LE(relative_error(r.grads.dv, dv), 1e-6) << where;
  }
}

// Token indices of one dilation sub-grid: sub-grid token -> full token, and its extents.
std::vector<int64_t> subgrid(const fna::Problem& p, const int64_t* group, fna::Problem* sub) {
  *sub = p;
  for (int r = 0; r < p.rank; ++r) {
    const int64_t d = p.dilation[r];
    sub->extent[r] = (p.extent[r] - group[r] + d - 1) / d;
    sub->dilation[r] = 1;
  }
  std::vector<int64_t> map;
  for (int64_t ts = 0; ts < sub->tokens(); ++ts) {
    int64_t rest = ts, tf = 0, mul = 1;
    for (int r = p.rank - 1; r >= 0; --r) {
      const int64_t i = rest % sub->extent[r];
      rest /= sub->extent[r];
      tf += (i * p.dilation[r] + group[r]) * mul;
      mul *= p.extent[r];
    }
    map.push_back(tf);
  }
  return map;
}

// Rows of `full` ([B, T, row]) at the tokens `map`, as [B, map.size(), row].
std::vector<double> gather(const std::vector<double>& full, int64_t batch, int64_t tokens,
                           int64_t row, const std::vector<int64_t>& map) {
  std::vector<double> out;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t tf : map)
      out.insert(out.end(), full.begin() + (b * tokens + tf) * row,
                 full.begin() + (b * tokens + tf + 1) * row);
  return out;
}

TEST_P(Invariants, DilationIsIndependentSubgrids) {
  int checked = 0;
  for (int i = 0; checked < sweep_count(40); ++i) {
    const uint64_t seed = base_seed() + 7000003 + i;
    std::mt19937_64 rng(seed);
    const fna::Problem p = random_problem(rng);
    bool dilated = false;
    for (int r = 0; r < p.rank; ++r) dilated |= p.dilation[r] > 1;
    if (!dilated) continue;
    ++checked;
    const DenseInputs in = random_inputs(p, rng);
    const int64_t B = p.batch, T = p.tokens(), Hq = p.heads_q, Hkv = p.heads_kv;
    const int64_t D = p.head_dim, Dv = p.head_dim_v;
    const std::vector<double> dout = random_values(B * T * Hq * Dv, 1.0, rng);
    BackendRun full;
    if (!run(p, in, dout, backend(), &full)) continue;
    std::vector<double> dak_sum(in.ak.size(), 0.0), dav_sum(in.av.size(), 0.0);
    int64_t group[3] = {0, 0, 0};
    const int64_t d1 = p.rank > 1 ? p.dilation[1] : 1, d2 = p.rank > 2 ? p.dilation[2] : 1;
    for (group[0] = 0; group[0] < p.dilation[0]; ++group[0])
      for (group[1] = 0; group[1] < d1; ++group[1])
        for (group[2] = 0; group[2] < d2; ++group[2]) {
          fna::Problem sp;
          const std::vector<int64_t> map = subgrid(p, group, &sp);
          DenseInputs sin = in;
          sin.q = gather(in.q, B, T, Hq * D, map);
          sin.k = gather(in.k, B, T, Hkv * D, map);
          sin.v = gather(in.v, B, T, Hkv * Dv, map);
          BackendRun sub;
          if (!run(sp, sin, gather(dout, B, T, Hq * Dv, map), backend(), &sub)) continue;
          const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() +
                                    "} sub-grid {" + sp.to_string() + "}";
          const double ft = forward_tolerance(kF32), gt = gradient_tolerance(kF32);
          EXPECT_LE(relative_error(gather(full.out, B, T, Hq * Dv, map), sub.out), ft) << where;
          EXPECT_LE(relative_error(gather(full.lse, B, T, Hq, map), sub.lse), ft) << where;
          EXPECT_LE(relative_error(gather(full.grads.dq, B, T, Hq * D, map), sub.grads.dq), gt)
              << where;
          EXPECT_LE(relative_error(gather(full.grads.dk, B, T, Hkv * D, map), sub.grads.dk), gt)
              << where;
          EXPECT_LE(relative_error(gather(full.grads.dv, B, T, Hkv * Dv, map), sub.grads.dv), gt)
              << where;
          for (size_t j = 0; j < sub.grads.dak.size(); ++j) dak_sum[j] += sub.grads.dak[j];
          for (size_t j = 0; j < sub.grads.dav.size(); ++j) dav_sum[j] += sub.grads.dav[j];
        }
    // Every sub-grid attends the same additional KV: their gradients add up.
    const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() + "}";
    EXPECT_LE(relative_error(full.grads.dak, dak_sum), gradient_tolerance(kF32)) << where;
    EXPECT_LE(relative_error(full.grads.dav, dav_sum), gradient_tolerance(kF32)) << where;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Invariants, ::testing::Values("reference", "cpu"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace fna_test
