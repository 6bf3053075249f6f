// float64 finite-difference gradient checks on tiny problems: central differences of the oracle's
// loss sum(out * dout) with respect to q, k, v and the additional KV, against the oracle's own
// analytic backward and against every backend's backward.
#include <gtest/gtest.h>

#include "harness.h"

namespace fna_test {
namespace {

// Tiny problems (every feature, <= 24 tokens, D, Dv <= 3) so that differencing every input is
// cheap.
fna::Problem tiny_problem(std::mt19937_64& rng) {
  for (;;) {
    fna::Problem p = random_problem(rng);
    if (p.tokens() > 24) continue;
    p.batch = 1 + static_cast<int64_t>(rng() % 2);
    p.head_dim = 1 + p.head_dim % 3;
    p.head_dim_v = 1 + p.head_dim_v % 3;
    p.additional_kv = std::min<int64_t>(p.additional_kv, 2);
    return p;
  }
}

double loss(const fna::Problem& p, const DenseInputs& in, const std::vector<double>& dout) {
  const DenseForward f = oracle_forward(p, in);
  double l = 0;
  for (size_t i = 0; i < f.out.size(); ++i) l += f.out[i] * dout[i];
  return l;
}

// Central differences of the loss with respect to every element of the input `which`.
std::vector<double> numeric_grad(const fna::Problem& p, DenseInputs in,
                                 const std::vector<double>& dout,
                                 std::vector<double> DenseInputs::*which) {
  // Step: the loss is smooth (softmax of bounded logits); truncation ~h^2 and rounding
  // ~1e-16/h are both far below the 1e-7 the check asks for.
  constexpr double kStep = 1e-5;
  std::vector<double>& x = in.*which;
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + kStep;
    const double up = loss(p, in, dout);
    x[i] = keep - kStep;
    const double down = loss(p, in, dout);
    x[i] = keep;
    g[i] = (up - down) / (2 * kStep);
  }
  return g;
}

class GradCheck : public ::testing::TestWithParam<std::string> {
 protected:
  fna::Backend backend() const { return fna::parse_backend(GetParam()); }
};

TEST_P(GradCheck, FiniteDifferencesFloat64) {
  // The oracle's own backward agrees with the differences to this (it is exact in float64).
  constexpr double kOracleTolerance = 1e-7;
  const double backend_tolerance = gradient_tolerance(fna::DType::kFloat32);
  for (int i = 0; i < sweep_count(40); ++i) {
    const uint64_t seed = base_seed() + 8000009 + i;
    std::mt19937_64 rng(seed);
    const fna::Problem p = tiny_problem(rng);
    // Inputs representable in fp32, so the backend sees exactly the point being differenced.
    const DenseInputs in = random_inputs(p, rng);
    const std::vector<double> dout =
        random_values(p.batch * p.tokens() * p.heads_q * p.head_dim_v, 1.0, rng);
    const DenseGrads analytic = oracle_backward(p, in, dout);
    BackendRun run;
    bool ran = true;
    try {
      run = run_backend(p, in, dout, backend());
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << " {" << p.to_string() << "}: " << e.what();
      ran = false;
    }
    struct Item {
      const char* name;
      std::vector<double> DenseInputs::*input;
      const std::vector<double>* oracle;
      const std::vector<double>* backend;
    };
    const Item items[] = {{"dq", &DenseInputs::q, &analytic.dq, &run.grads.dq},
                          {"dk", &DenseInputs::k, &analytic.dk, &run.grads.dk},
                          {"dv", &DenseInputs::v, &analytic.dv, &run.grads.dv},
                          {"d_additional_k", &DenseInputs::ak, &analytic.dak, &run.grads.dak},
                          {"d_additional_v", &DenseInputs::av, &analytic.dav, &run.grads.dav}};
    for (const Item& it : items) {
      const std::vector<double> numeric = numeric_grad(p, in, dout, it.input);
      const std::string where =
          std::string(it.name) + ", seed " + std::to_string(seed) + " {" + p.to_string() + "}";
      EXPECT_LE(relative_error(*it.oracle, numeric), kOracleTolerance) << "oracle " << where;
      if (ran) {
        EXPECT_LE(relative_error(*it.backend, numeric), backend_tolerance)
            << fna::backend_name(backend()) << " " << where;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, GradCheck, ::testing::Values("reference", "cpu"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace fna_test
