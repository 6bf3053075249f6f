// The unfused ops (include/fna/unfused.h) on CPU: na_qk (with and without a relative positional
// bias), na_av and both backward ops against the float64 oracle of unfused_case.h (whose
// gradients are checked against finite differences here), one test per validation rule, and the
// composition
// softmax(na_qk(scale * q, k)) -> na_av == fna::forward.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "unfused_case.h"

namespace fna_test {
namespace {

using fna::DType;

TEST(UnfusedOracle, WindowsHoldKSlotsAndTheQueryItself) {
  // The oracle's windows: non-causal windows have exactly K keys and contain the query (so the
  // bias index stays in [0, 2K-2]); causal windows end at the query.
  for (const fna::Problem& p : unfused_problems())
    for (int64_t t = 0; t < p.tokens(); ++t) {
      int64_t x[3] = {0, 0, 0}, rest = t;
      for (int r = p.rank - 1; r >= 0; --r) {
        x[r] = rest % p.extent[r];
        rest /= p.extent[r];
      }
      const OracleWindow w = oracle_window(p, x);
      for (int r = 0; r < p.rank; ++r) {
        EXPECT_LE(w.start[r], w.index[r]) << p.to_string();
        EXPECT_GT(w.end[r], w.index[r]) << p.to_string();
        if (p.causal[r])
          EXPECT_EQ(w.end[r], w.index[r] + 1) << p.to_string();
        else
          EXPECT_EQ(w.end[r] - w.start[r], p.window[r]) << p.to_string();
      }
    }
}

// The analytic oracle gradients used by run_unfused_case equal central finite differences of the
// oracle forward (float64, every problem, with a bias where allowed).
TEST(UnfusedOracle, GradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(base_seed() + 5);
  for (fna::Problem p : unfused_problems()) {
    p.batch = 1;  // finite differences cost O(n^2): keep n small
    const int64_t T = p.tokens(), W = oracle_slots(p);
    const auto q = random_values(T * p.heads_q * p.head_dim, 2.0, rng);
    const auto k = random_values(T * p.heads_kv * p.head_dim, 2.0, rng);
    const auto v = random_values(T * p.heads_kv * p.head_dim_v, 1.0, rng);
    const auto rpb = random_values(p.heads_q * oracle_bias_elems(p), 1.0, rng);
    const auto attn = random_values(T * p.heads_q * W, 1.0, rng);
    const auto g = random_values(T * p.heads_q * W, 1.0, rng);
    const auto g_out = random_values(T * p.heads_q * p.head_dim_v, 1.0, rng);
    const std::vector<double>* bias = any_causal(p) ? nullptr : &rpb;
    const OracleQkGrads qk = oracle_qk_backward(p, q, k, g);
    auto of_q = [&](const std::vector<double>& x) { return oracle_qk(p, x, k, bias); };
    auto of_k = [&](const std::vector<double>& x) { return oracle_qk(p, q, x, bias); };
    auto of_rpb = [&](const std::vector<double>& x) { return oracle_qk(p, q, k, &x); };
    EXPECT_LE(relative_error(qk.dq, finite_difference(q, of_q, g)), 1e-12) << p.to_string();
    EXPECT_LE(relative_error(qk.dk, finite_difference(k, of_k, g)), 1e-12) << p.to_string();
    if (bias) {
      EXPECT_LE(relative_error(qk.d_rpb, finite_difference(rpb, of_rpb, g)), 1e-12)
          << p.to_string();
    }
    // Slots past a causal end: the weights there do not reach out, so their gradient is 0.
    const OracleAvGrads av = oracle_av_backward(p, attn, v, g_out);
    auto of_attn = [&](const std::vector<double>& x) { return oracle_av(p, x, v); };
    auto of_v = [&](const std::vector<double>& x) { return oracle_av(p, attn, x); };
    EXPECT_LE(relative_error(av.d_attn, finite_difference(attn, of_attn, g_out)), 1e-12)
        << p.to_string();
    EXPECT_LE(relative_error(av.dv, finite_difference(v, of_v, g_out)), 1e-12) << p.to_string();
  }
}

struct Combo {
  DType dtype, weights;
  bool strided;
};

TEST(UnfusedOps, MatchOracleEveryProblemDtypeAndLayout) {
  const Combo combos[] = {
      {DType::kFloat32, DType::kFloat32, false},  {DType::kFloat32, DType::kFloat32, true},
      {DType::kFloat16, DType::kFloat32, true},   {DType::kFloat16, DType::kFloat16, false},
      {DType::kBFloat16, DType::kFloat32, false}, {DType::kBFloat16, DType::kBFloat16, true}};
  HostMirror host;
  uint64_t seed = base_seed();
  for (const fna::Problem& p : unfused_problems())
    for (const Combo& c : combos)
      for (bool rpb : {false, true}) {
        if (rpb && any_causal(p)) continue;
        UnfusedSpec spec{p, c.dtype, c.weights, c.strided, rpb, seed++};
        EXPECT_EQ(run_unfused_case(spec, host), "") << spec.describe();
      }
}

TEST(UnfusedOps, ReferenceAndCpuBackendOptionsRunOnCpu) {
  HostMirror host;
  for (fna::Backend b : {fna::Backend::kReference, fna::Backend::kCpu}) {
    fna::Options o;
    o.backend = b;
    UnfusedSpec spec{unfused_problems()[1], DType::kFloat32, DType::kFloat32, false, true, 7};
    EXPECT_EQ(run_unfused_case(spec, host, o), "") << fna::backend_name(b);
  }
}

TEST(UnfusedOps, ShapeHelpers) {
  const fna::Problem p = unfused_problem(2, {5, 7}, {3, 4});
  EXPECT_EQ(fna::attn_shape(p), (std::vector<int64_t>{2, 5, 7, 2, 12}));
  EXPECT_EQ(fna::rpb_shape(p), (std::vector<int64_t>{2, 5, 7}));
}

// softmax(na_qk(scale * q, k)) -> na_av equals fna::forward (reference backend), and the chained
// backward (na_av_backward -> softmax backward -> na_qk_backward) equals fna::backward.
TEST(UnfusedOps, ComposeToNeighborhoodAttention) {
  for (fna::Problem p : unfused_problems()) {
    p.head_dim_v = p.head_dim;  // keep the composition simple
    std::mt19937_64 rng(base_seed() + 99);
    const DenseInputs in = random_inputs(p, rng);
    const double scale = p.effective_scale();
    const std::vector<double> dout =
        random_values(p.batch * p.tokens() * p.heads_q * p.head_dim_v, 1.0, rng);
    auto buf = [&](const std::vector<int64_t>& shape, const std::vector<double>* values) {
      Buffer b = Buffer::make(shape, DType::kFloat32, false, rng);
      if (values) b.from_dense(*values);
      return b;
    };
    std::vector<double> qs = in.q;
    for (double& x : qs) x *= scale;
    fna::Problem pu = p;
    pu.scale.reset();
    const std::vector<int64_t> as = fna::attn_shape(p);
    std::vector<int64_t> qshape{p.batch}, kshape{p.batch};
    for (int r = 0; r < p.rank; ++r) qshape.push_back(p.extent[r]), kshape.push_back(p.extent[r]);
    qshape.insert(qshape.end(), {p.heads_q, p.head_dim});
    kshape.insert(kshape.end(), {p.heads_kv, p.head_dim});
    std::vector<int64_t> vshape = kshape;
    vshape.back() = p.head_dim_v;
    std::vector<int64_t> oshape = qshape;
    oshape.back() = p.head_dim_v;
    Buffer q = buf(qshape, &qs), k = buf(kshape, &in.k), v = buf(vshape, &in.v),
           attn = buf(as, nullptr);
    // The fused definition (reference backend, float64 inside) on the same inputs.
    Buffer q_ref = buf(qshape, &in.q), out_ref = buf(oshape, nullptr), d_out = buf(oshape, &dout);
    Buffer lse = buf(std::vector<int64_t>(qshape.begin(), qshape.end() - 1), nullptr);
    Buffer dq_ref = buf(qshape, nullptr), dk_ref = buf(kshape, nullptr),
           dv_ref = buf(vshape, nullptr);
    fna::Options ref_options;
    ref_options.backend = fna::Backend::kReference;
    fna::ForwardArgs fa{q_ref.view(), k.view(), v.view(), out_ref.view(), lse.view(), {}, {}};
    fna::forward(p, fa, ref_options);
    fna::BackwardArgs ba{q_ref.view(),
                         k.view(),
                         v.view(),
                         out_ref.view(),
                         lse.view(),
                         d_out.view(),
                         dq_ref.view(),
                         dk_ref.view(),
                         dv_ref.view(),
                         {},
                         {},
                         {},
                         {}};
    fna::backward(p, ba, ref_options);
    Buffer out = buf(oshape, nullptr);
    fna::na_qk(pu, {q.view(), k.view(), attn.view(), std::nullopt});
    // Softmax over each row of W slots (-inf slots give 0).
    std::vector<double> a = attn.to_dense();
    const int64_t W = as.back();
    for (size_t row = 0; row < a.size() / W; ++row) {
      double m = -INFINITY, l = 0;
      for (int64_t s = 0; s < W; ++s) m = std::max(m, a[row * W + s]);
      for (int64_t s = 0; s < W; ++s) l += std::exp(a[row * W + s] - m);
      for (int64_t s = 0; s < W; ++s) a[row * W + s] = std::exp(a[row * W + s] - m) / l;
    }
    Buffer prob = buf(as, &a);
    fna::na_av(pu, {prob.view(), v.view(), out.view()});
    EXPECT_LE(relative_error(out.to_dense(), out_ref.to_dense()), 2e-5) << p.to_string();

    // Backward chain.
    Buffer d_prob = buf(as, nullptr), dv = buf(vshape, nullptr);
    fna::na_av_backward(pu, {prob.view(), v.view(), d_out.view(), d_prob.view(), dv.view()});
    std::vector<double> dp = d_prob.to_dense(), ds(dp.size());
    for (size_t row = 0; row < a.size() / W; ++row) {
      double delta = 0;
      for (int64_t s = 0; s < W; ++s) delta += a[row * W + s] * dp[row * W + s];
      for (int64_t s = 0; s < W; ++s) ds[row * W + s] = a[row * W + s] * (dp[row * W + s] - delta);
    }
    Buffer d_logits = buf(as, &ds), dq = buf(qshape, nullptr), dk = buf(kshape, nullptr);
    fna::na_qk_backward(pu,
                        {q.view(), k.view(), d_logits.view(), dq.view(), dk.view(), std::nullopt});
    std::vector<double> dqs = dq.to_dense();
    for (double& x : dqs) x *= scale;  // d/dq of (scale * q)
    EXPECT_LE(relative_error(dqs, dq_ref.to_dense()), 1e-4) << p.to_string();
    EXPECT_LE(relative_error(dk.to_dense(), dk_ref.to_dense()), 1e-4) << p.to_string();
    EXPECT_LE(relative_error(dv.to_dense(), dv_ref.to_dense()), 1e-4) << p.to_string();
  }
}

// ---- validation: one test per rule; the message names the argument / value / rule and nothing
// is written.

class UnfusedValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    p = unfused_problem(2, {5, 6}, {3, 3}, {1, 2}, {1, 2});
    p.heads_q = 4;
    p.heads_kv = 2;
    p.head_dim = 4;
    p.head_dim_v = 3;
    std::mt19937_64 rng(base_seed());
    auto mk = [&](std::vector<int64_t> s, DType dt = DType::kFloat32) {
      return Buffer::make(s, dt, false, rng);
    };
    q = mk({2, 5, 6, 4, 4}), k = mk({2, 5, 6, 2, 4}), v = mk({2, 5, 6, 2, 3});
    attn = mk({2, 5, 6, 4, 9}), out = mk({2, 5, 6, 4, 3}), rpb = mk({4, 5, 5});
    weights = mk({2, 5, 6, 4, 9}), d_out = mk({2, 5, 6, 4, 3});
    dq = mk({2, 5, 6, 4, 4}), dk = mk({2, 5, 6, 2, 4}), dv = mk({2, 5, 6, 2, 3});
    d_rpb = mk({4, 5, 5}), d_attn = mk({2, 5, 6, 4, 9});
    for (Buffer* b : {&q, &k, &v, &rpb, &weights, &d_out}) b->fill_random(rng, 1.0);
  }

  fna::QkArgs qk() { return {q.view(), k.view(), attn.view(), rpb.view()}; }
  fna::QkBackwardArgs qkb() {
    return {q.view(), k.view(), weights.view(), dq.view(), dk.view(), d_rpb.view()};
  }
  fna::AvArgs av() { return {weights.view(), v.view(), out.view()}; }
  fna::AvBackwardArgs avb() {
    return {weights.view(), v.view(), d_out.view(), d_attn.view(), dv.view()};
  }

  std::vector<std::vector<std::byte>> snapshot() const {
    std::vector<std::vector<std::byte>> s;
    for (const Buffer* b :
         {&q, &k, &v, &attn, &out, &rpb, &weights, &d_out, &dq, &dk, &dv, &d_rpb, &d_attn})
      s.push_back(b->storage_bytes());
    return s;
  }

  // `call` must throw fna::Error of `kind` whose message contains every string of `needles`.
  void expect_error(const std::function<void()>& call, fna::ErrorKind kind,
                    std::vector<std::string> needles) {
    const auto before = snapshot();
    try {
      call();
      ADD_FAILURE() << "no error; expected one mentioning '" << needles[0] << "'";
    } catch (const fna::Error& e) {
      EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
      for (const std::string& n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
            << "message '" << e.what() << "' lacks '" << n << "'";
    }
    EXPECT_TRUE(snapshot() == before) << "a buffer was written before the error";
  }

  fna::Problem p;
  Buffer q, k, v, attn, out, rpb, weights, d_out, dq, dk, dv, d_rpb, d_attn;
};

using fna::ErrorKind;

TEST_F(UnfusedValidation, ValidArgumentsRun) {
  EXPECT_NO_THROW(fna::na_qk(p, qk()));
  EXPECT_NO_THROW(fna::na_qk_backward(p, qkb()));
  EXPECT_NO_THROW(fna::na_av(p, av()));
  EXPECT_NO_THROW(fna::na_av_backward(p, avb()));
}

TEST_F(UnfusedValidation, ProblemRulesApply) {
  p.window[0] = 6;  // 6 * dilation 1 > extent 5
  expect_error([&] { fna::na_qk(p, qk()); }, ErrorKind::kInvalidArgument,
               {"problem.window[0]", "extent[0] = 5"});
}

TEST_F(UnfusedValidation, ScaleMustBeUnset) {
  p.scale = 0.5;
  expect_error([&] { fna::na_qk(p, qk()); }, ErrorKind::kInvalidArgument,
               {"problem.scale = 0.5", "do not scale"});
  expect_error([&] { fna::na_av(p, av()); }, ErrorKind::kInvalidArgument, {"problem.scale"});
}

TEST_F(UnfusedValidation, AdditionalKvUnsupported) {
  p.additional_kv = 2;
  expect_error([&] { fna::na_qk(p, qk()); }, ErrorKind::kInvalidArgument,
               {"problem.additional_kv = 2", "do not support additional KV"});
  expect_error([&] { fna::na_av_backward(p, avb()); }, ErrorKind::kInvalidArgument,
               {"problem.additional_kv = 2"});
}

TEST_F(UnfusedValidation, RpbWithCausalAxisIsAnError) {
  p.causal[1] = true;
  expect_error([&] { fna::na_qk(p, qk()); }, ErrorKind::kInvalidArgument,
               {"'rpb'", "problem.causal[1] = true", "non-causal"});
  expect_error([&] { fna::na_qk_backward(p, qkb()); }, ErrorKind::kInvalidArgument,
               {"'d_rpb'", "problem.causal[1] = true"});
  // Without a bias, causal is fine.
  fna::QkArgs a = qk();
  a.rpb.reset();
  EXPECT_NO_THROW(fna::na_qk(p, a));
}

TEST_F(UnfusedValidation, ShapesAreChecked) {
  fna::QkArgs a = qk();
  a.attn.shape.back() = 8;
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kInvalidArgument,
               {"'attn'", "[2, 5, 6, 4, 8]", "[2, 5, 6, 4, 9]"});
  a = qk();
  a.rpb->shape = {4, 5, 4};
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kInvalidArgument,
               {"'rpb'", "[4, 5, 4]", "[4, 5, 5]"});
  fna::AvArgs b = av();
  b.out.shape[4] = 4;
  expect_error([&] { fna::na_av(p, b); }, ErrorKind::kInvalidArgument,
               {"'out'", "[2, 5, 6, 4, 4]"});
  fna::QkBackwardArgs c = qkb();
  c.dk.shape[3] = 4;
  expect_error([&] { fna::na_qk_backward(p, c); }, ErrorKind::kInvalidArgument, {"'dk'"});
  fna::AvBackwardArgs d = avb();
  d.d_attn.shape.pop_back();
  expect_error([&] { fna::na_av_backward(p, d); }, ErrorKind::kInvalidArgument,
               {"'d_attn'", "rank 4"});
}

TEST_F(UnfusedValidation, LastDimMustBeUnitStride) {
  fna::QkArgs a = qk();
  a.attn.strides.back() = 2;
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kInvalidArgument, {"'attn'", "unit-stride"});
}

TEST_F(UnfusedValidation, DtypesAreChecked) {
  std::mt19937_64 rng(3);
  Buffer k16 = Buffer::make({2, 5, 6, 2, 4}, DType::kFloat16, false, rng);
  fna::QkArgs a = qk();
  a.k = k16.view();
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kTypeError, {"'k'", "fp16", "fp32"});
  // attn may be fp32 or q's dtype, nothing else.
  Buffer q16 = Buffer::make({2, 5, 6, 4, 4}, DType::kFloat16, false, rng);
  Buffer attn_bf = Buffer::make({2, 5, 6, 4, 9}, DType::kBFloat16, false, rng);
  a = qk();
  a.q = q16.view();
  a.k = k16.view();
  a.attn = attn_bf.view();
  a.rpb.reset();
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kTypeError,
               {"'attn'", "bf16", "must be fp32 or q's dtype fp16"});
  Buffer rpb_bf = Buffer::make({4, 5, 5}, DType::kBFloat16, false, rng);
  fna::QkArgs c = qk();
  c.rpb = rpb_bf.view();
  expect_error([&] { fna::na_qk(p, c); }, ErrorKind::kTypeError, {"'rpb'", "bf16"});
  fna::AvBackwardArgs b = avb();
  Buffer dattn_bf = Buffer::make({2, 5, 6, 4, 9}, DType::kBFloat16, false, rng);
  b.d_attn = dattn_bf.view();
  expect_error([&] { fna::na_av_backward(p, b); }, ErrorKind::kTypeError,
               {"'d_attn'", "must be fp32 or v's dtype fp32"});
}

TEST_F(UnfusedValidation, DevicesMustMatch) {
  fna::QkArgs a = qk();
  a.attn.device = fna::Device{fna::DeviceType::kCUDA, 0};
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kInvalidArgument,
               {"'attn'", "device cuda:0", "q's device cpu"});
  fna::AvArgs b = av();
  b.attn.device = fna::Device{fna::DeviceType::kCUDA, 0};
  expect_error([&] { fna::na_av(p, b); }, ErrorKind::kInvalidArgument, {"'attn'", "v's device"});
}

TEST_F(UnfusedValidation, OutputsMustNotOverlap) {
  fna::QkArgs a = qk();
  a.attn.data = q.view().data;  // attn over q's memory
  a.attn.dtype = DType::kFloat32;
  expect_error([&] { fna::na_qk(p, a); }, ErrorKind::kInvalidArgument,
               {"'attn' overlaps input 'q'"});
  fna::AvBackwardArgs b = avb();
  b.dv.data = b.d_attn.data;
  expect_error([&] { fna::na_av_backward(p, b); }, ErrorKind::kInvalidArgument,
               {"'dv' overlaps output 'd_attn'"});
  fna::QkBackwardArgs c = qkb();
  c.dq.strides[3] = 0;
  expect_error([&] { fna::na_qk_backward(p, c); }, ErrorKind::kInvalidArgument,
               {"'dq'", "overlap themselves"});
}

TEST_F(UnfusedValidation, BackendMustMatchDevice) {
  fna::Options o;
  o.backend = fna::Backend::kCudaNaive;
  expect_error([&] { fna::na_qk(p, qk(), o); }, ErrorKind::kNotAvailable,
               {"'backend' = 'cuda-naive'", "cpu tensors", "tensors' device"});
}

}  // namespace
}  // namespace fna_test
