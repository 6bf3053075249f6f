// Shared test harness (see harness.h).
#include "harness.h"

#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>

namespace fna_test {
namespace {

int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
bool coin(std::mt19937_64& rng, double p) {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < p;
}
template <typename T>
T pick(std::mt19937_64& rng, const std::vector<T>& v) {
  return v[uniform_int(rng, 0, static_cast<int64_t>(v.size()) - 1)];
}

// Expected shapes, written here rather than taken from the library's helpers.
std::vector<int64_t> token_shape(const fna::Problem& p, int64_t heads, int64_t dim) {
  std::vector<int64_t> s{p.batch};
  for (int r = 0; r < p.rank; ++r) s.push_back(p.extent[r]);
  s.push_back(heads);
  if (dim > 0) s.push_back(dim);
  return s;
}

std::string fmt(double x) {
  std::ostringstream os;
  os.precision(3);
  os << x;
  return os.str();
}

}  // namespace

bool long_tests() {
  const char* v = std::getenv("FNA_LONG_TESTS");
  return v != nullptr && std::string(v) != "" && std::string(v) != "0";
}

bool verbose_tests() {
  const char* v = std::getenv("FNA_TEST_VERBOSE");
  return v != nullptr && std::string(v) != "" && std::string(v) != "0";
}

uint64_t base_seed() {
  const char* v = std::getenv("FNA_TEST_SEED");
  return v != nullptr ? std::strtoull(v, nullptr, 10) : 20261124ull;
}

int sweep_count(int quick) {
  const char* v = std::getenv("FNA_TEST_COUNT");
  if (v != nullptr) return std::atoi(v);
  return long_tests() ? 10 * quick : quick;
}

double forward_tolerance(fna::DType dtype) {
  switch (dtype) {
    case fna::DType::kFloat32:
      return 2e-4;
    case fna::DType::kFloat16:
      return 5e-3;
    case fna::DType::kBFloat16:
      return 3e-2;
  }
  return 0;
}

namespace {

// Per-axis window, stride, dilation and causal flag for the extents already in `p`.
void random_axes(std::mt19937_64& rng, fna::Problem* p, double dilation_probability) {
  for (int r = 0; r < p->rank; ++r) {
    const int64_t L = p->extent[r];
    const int64_t d = L >= 2 && coin(rng, dilation_probability)
                          ? uniform_int(rng, 2, std::min<int64_t>(L, 5))
                          : 1;
    const int64_t max_window = L / d;
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const int64_t K = u < 0.15 ? 1 : u < 0.35 ? max_window : uniform_int(rng, 1, max_window);
    const int64_t s = coin(rng, 0.5) ? 1 : coin(rng, 0.3) ? K : uniform_int(rng, 1, K);
    p->dilation[r] = d;
    p->window[r] = K;
    p->stride[r] = s;
    p->causal[r] = coin(rng, 0.35);
  }
}

// A larger problem for the paths small ones never reach in a tiled backend: long rows (windows of
// more than 192 keys on the last axis, several online-softmax chunks in `cpu`), head dims past
// 64 (several conversion blocks), many work units along the last axis.
fna::Problem large_problem(std::mt19937_64& rng) {
  fna::Problem p;
  if (coin(rng, 0.6)) {
    p.rank = 1;
    p.extent[0] = pick(rng, std::vector<int64_t>{193, 255, 300, 331});
  } else {
    p.rank = 2;
    p.extent[0] = pick(rng, std::vector<int64_t>{2, 3, 5});
    p.extent[1] = pick(rng, std::vector<int64_t>{61, 97, 129});
  }
  random_axes(rng, &p, 0.15);
  p.heads_kv = 1;
  p.heads_q = uniform_int(rng, 1, 2);
  p.head_dim = pick(rng, std::vector<int64_t>{24, 64, 65, 96});
  p.head_dim_v = coin(rng, 0.3) ? pick(rng, std::vector<int64_t>{32, 72}) : p.head_dim;
  p.additional_kv = coin(rng, 0.3) ? uniform_int(rng, 1, 9) : 0;
  if (coin(rng, 0.3)) p.scale = std::uniform_real_distribution<double>(0.02, 0.3)(rng);
  return p;
}

}  // namespace

fna::Problem random_problem(std::mt19937_64& rng) {
  // One problem in 16 is large; the rest are small (the dense oracle is O(tokens^2)).
  if (coin(rng, 1.0 / 16)) return large_problem(rng);
  // Odd extents dominate (1, 3, 13, 37, 113, ...); at most 256 tokens.
  static const std::vector<int64_t> kExtents[3] = {{1, 2, 3, 5, 8, 13, 16, 21, 37, 64, 113},
                                                   {1, 2, 3, 4, 5, 7, 9, 12, 13, 16, 37},
                                                   {1, 2, 3, 4, 5, 7, 9, 13}};
  constexpr int64_t kMaxTokens = 256;
  fna::Problem p;
  p.rank = static_cast<int>(uniform_int(rng, 1, 3));
  do {
    for (int r = 0; r < p.rank; ++r) p.extent[r] = pick(rng, kExtents[p.rank - 1]);
  } while (p.tokens() > kMaxTokens);
  random_axes(rng, &p, 0.35);
  p.batch = uniform_int(rng, 1, 2);
  if (coin(rng, 0.15)) {  // MQA
    p.heads_kv = 1;
    p.heads_q = uniform_int(rng, 2, 4);
  } else {
    p.heads_kv = uniform_int(rng, 1, 2);
    p.heads_q = p.heads_kv * (coin(rng, 0.3) ? uniform_int(rng, 2, 3) : 1);
  }
  static const std::vector<int64_t> kDims{1, 2, 3, 4, 5, 8, 16, 32};
  p.head_dim = pick(rng, kDims);
  p.head_dim_v = coin(rng, 0.3) ? pick(rng, kDims) : p.head_dim;
  p.additional_kv = coin(rng, 0.35) ? uniform_int(rng, 1, 5) : 0;
  if (coin(rng, 0.3)) p.scale = std::uniform_real_distribution<double>(0.05, 1.5)(rng);
  return p;
}

Layout random_layout(std::mt19937_64& rng, const fna::Problem& p) {
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  if (u < 0.4) return Layout::kContiguous;
  if (u < 0.8 || p.head_dim != p.head_dim_v) return Layout::kStrided;
  return Layout::kInterleaved;
}

std::string CaseSpec::describe() const {
  std::ostringstream os;
  os << "{" << problem.to_string() << "} dtype=" << fna::dtype_name(dtype)
     << " layout=" << layout_name(layout) << " lse=" << with_lse << " backward=" << backward
     << " data_seed=" << seed;
  return os.str();
}

CaseResult run_case(const CaseSpec& spec, fna::Backend backend) {
  HostMirror host;
  return run_case(spec, backend, host, forward_tolerance(spec.dtype));
}

CaseResult run_case(const CaseSpec& spec, fna::Backend backend, Mirror& mirror,
                    double forward_tol) {
  const fna::Problem& p = spec.problem;
  const fna::DType dt = spec.dtype;
  const bool strided = spec.layout == Layout::kStrided;
  const bool interleaved = spec.layout == Layout::kInterleaved;
  std::mt19937_64 rng(spec.seed * 0x9e3779b97f4a7c15ull + 0x51ed);
  fna::Options options;
  options.backend = backend;
  CaseResult result;
  auto check = [&](const char* what, double err, double tol) {
    if (!(err <= tol))
      result.failure += std::string(what) + " error " + fmt(err) + " > " + fmt(tol) + "; ";
  };
  auto untouched = [&](const char* what, std::vector<const Buffer*> views) {
    for (const Buffer* b : views) mirror.download(*b);
    const std::string s = Buffer::check_outside_untouched(views);
    if (!s.empty()) result.failure += std::string(what) + ": " + s + "; ";
  };

  const auto qs = token_shape(p, p.heads_q, p.head_dim),
             ks = token_shape(p, p.heads_kv, p.head_dim);
  const auto vs = token_shape(p, p.heads_kv, p.head_dim_v);
  const auto os = token_shape(p, p.heads_q, p.head_dim_v), ls = token_shape(p, p.heads_q, 0);
  const std::vector<int64_t> aks{p.batch, p.additional_kv, p.heads_kv, p.head_dim};
  const std::vector<int64_t> avs{p.batch, p.additional_kv, p.heads_kv, p.head_dim_v};
  auto make = [&](const std::vector<int64_t>& s, fna::DType d) {
    return Buffer::make(s, d, strided, rng);
  };

  Buffer q, k, v, ak, av;
  if (interleaved) {
    std::vector<Buffer> qkv = Buffer::make_interleaved(qs, {p.heads_q, p.heads_kv, p.heads_kv}, dt);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = make(qs, dt), k = make(ks, dt), v = make(vs, dt);
  }
  DenseInputs in;
  // q and k span [-2, 2] so that softmaxes range from flat to peaked.
  in.q = q.fill_random(rng, 2.0);
  in.k = k.fill_random(rng, 2.0);
  in.v = v.fill_random(rng, 1.0);
  const bool has_add = p.additional_kv > 0;
  if (has_add) {
    ak = make(aks, dt), av = make(avs, dt);
    in.ak = ak.fill_random(rng, 2.0);
    in.av = av.fill_random(rng, 1.0);
  }
  const DenseForward ref = oracle_forward(p, in);
  // Inputs are read-only: their storages (padding included) must come back byte-identical.
  auto snapshot = [](std::vector<const Buffer*> inputs) {
    std::vector<std::vector<std::byte>> s;
    for (const Buffer* b : inputs) s.push_back(b->storage_bytes());
    return s;
  };
  auto inputs_unchanged = [&](const char* what, std::vector<const Buffer*> inputs,
                              const std::vector<std::vector<std::byte>>& before) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      mirror.download(*inputs[i]);
      if (inputs[i]->storage_bytes() != before[i])
        result.failure += std::string(what) + " wrote into one of its inputs; ";
    }
  };
  // Runs one library call (forward or backward); false (with the failure noted) if it threw.
  auto call = [&](const char* what, auto&& fn) {
    try {
      fn();
      mirror.sync();
      return true;
    } catch (const std::exception& e) {
      result.failure += std::string(what) + " threw: " + e.what();
      return false;
    }
  };
  std::vector<const Buffer*> fwd_inputs{&q, &k, &v};
  if (has_add) fwd_inputs.insert(fwd_inputs.end(), {&ak, &av});
  const auto fwd_before = snapshot(fwd_inputs);

  // ---- forward
  Buffer out = make(os, dt), lse = make(ls, fna::DType::kFloat32);
  fna::ForwardArgs fa{mirror.view(q), mirror.view(k), mirror.view(v), mirror.view(out),
                      std::nullopt,   std::nullopt,   std::nullopt};
  if (spec.with_lse) fa.lse = mirror.view(lse);
  if (has_add) fa.additional_k = mirror.view(ak), fa.additional_v = mirror.view(av);
  if (!call("forward", [&] { fna::forward(p, fa, options); })) return result;
  inputs_unchanged("forward", fwd_inputs, fwd_before);
  untouched("out", {&out});
  result.forward_error = relative_error(out.to_dense(), ref.out);
  check("out", result.forward_error, forward_tol);
  if (spec.with_lse) {
    untouched("lse", {&lse});
    result.lse_error = relative_error(lse.to_dense(), ref.lse);
    check("lse", result.lse_error, forward_tol);
  }
  if (!spec.backward) return result;

  // ---- backward, from the oracle's (rounded) out and lse
  Buffer dout = make(os, dt), out_in = make(os, dt), lse_in = make(ls, fna::DType::kFloat32);
  const std::vector<double> dout_values = dout.fill_random(rng, 1.0);
  out_in.from_dense(ref.out);
  lse_in.from_dense(ref.lse);
  Buffer dq, dk, dv, dak, dav;
  if (interleaved) {
    std::vector<Buffer> d = Buffer::make_interleaved(qs, {p.heads_q, p.heads_kv, p.heads_kv}, dt);
    dq = d[0], dk = d[1], dv = d[2];
  } else {
    dq = make(qs, dt), dk = make(ks, dt), dv = make(vs, dt);
  }
  fna::BackwardArgs ba{mirror.view(q),      mirror.view(k),    mirror.view(v),  mirror.view(out_in),
                       mirror.view(lse_in), mirror.view(dout), mirror.view(dq), mirror.view(dk),
                       mirror.view(dv),     std::nullopt,      std::nullopt,    std::nullopt,
                       std::nullopt};
  if (has_add) {
    dak = make(aks, dt), dav = make(avs, dt);
    ba.additional_k = mirror.view(ak), ba.additional_v = mirror.view(av);
    ba.d_additional_k = mirror.view(dak), ba.d_additional_v = mirror.view(dav);
  }
  const DenseGrads g = oracle_backward(p, in, dout_values);
  std::vector<const Buffer*> bwd_inputs = fwd_inputs;
  bwd_inputs.insert(bwd_inputs.end(), {&dout, &out_in, &lse_in});
  const auto bwd_before = snapshot(bwd_inputs);
  if (!call("backward", [&] { fna::backward(p, ba, options); })) return result;
  inputs_unchanged("backward", bwd_inputs, bwd_before);
  const double tol = 3 * forward_tol;  // DESIGN.md section 7: gradients get 3x
  auto grad = [&](const char* what, const Buffer& b, const std::vector<double>& r) {
    mirror.download(b);
    const double e = relative_error(b.to_dense(), r);
    result.grad_error = std::max(result.grad_error, e);
    check(what, e, tol);
  };
  grad("dq", dq, g.dq);
  grad("dk", dk, g.dk);
  grad("dv", dv, g.dv);
  if (interleaved) {
    untouched("dqkv", {&dq, &dk, &dv});
  } else {
    untouched("dq", {&dq});
    untouched("dk", {&dk});
    untouched("dv", {&dv});
  }
  if (has_add) {
    grad("d_additional_k", dak, g.dak);
    grad("d_additional_v", dav, g.dav);
    untouched("d_additional_k", {&dak});
    untouched("d_additional_v", {&dav});
  }
  return result;
}

std::vector<double> random_values(int64_t n, double amplitude, std::mt19937_64& rng,
                                  fna::DType dtype) {
  std::uniform_real_distribution<double> dist(-amplitude, amplitude);
  std::vector<double> v(n);
  for (double& x : v) x = round_to(dtype, dist(rng));
  return v;
}

DenseInputs random_inputs(const fna::Problem& p, std::mt19937_64& rng, fna::DType dtype) {
  const int64_t tok = p.batch * p.tokens(), add = p.batch * p.additional_kv;
  DenseInputs in;
  in.q = random_values(tok * p.heads_q * p.head_dim, 2.0, rng, dtype);
  in.k = random_values(tok * p.heads_kv * p.head_dim, 2.0, rng, dtype);
  in.v = random_values(tok * p.heads_kv * p.head_dim_v, 1.0, rng, dtype);
  in.ak = random_values(add * p.heads_kv * p.head_dim, 2.0, rng, dtype);
  in.av = random_values(add * p.heads_kv * p.head_dim_v, 1.0, rng, dtype);
  return in;
}

BackendRun run_backend(const fna::Problem& p, const DenseInputs& in,
                       const std::vector<double>& dout, fna::Backend backend, fna::DType dt,
                       bool deterministic) {
  std::mt19937_64 unused_rng(0);  // contiguous buffers draw nothing
  auto make = [&](const std::vector<int64_t>& s, fna::DType d, const std::vector<double>* values) {
    Buffer b = Buffer::make(s, d, false, unused_rng);
    if (values) b.from_dense(*values);
    return b;
  };
  const auto qs = token_shape(p, p.heads_q, p.head_dim),
             ks = token_shape(p, p.heads_kv, p.head_dim);
  const auto vs = token_shape(p, p.heads_kv, p.head_dim_v);
  const auto os = token_shape(p, p.heads_q, p.head_dim_v), ls = token_shape(p, p.heads_q, 0);
  const std::vector<int64_t> aks{p.batch, p.additional_kv, p.heads_kv, p.head_dim};
  const std::vector<int64_t> avs{p.batch, p.additional_kv, p.heads_kv, p.head_dim_v};
  const bool has_add = p.additional_kv > 0;
  Buffer q = make(qs, dt, &in.q), k = make(ks, dt, &in.k), v = make(vs, dt, &in.v);
  Buffer ak, av, dak, dav;
  Buffer out = make(os, dt, nullptr), lse = make(ls, fna::DType::kFloat32, nullptr);
  fna::Options options;
  options.backend = backend;
  options.deterministic = deterministic;
  fna::ForwardArgs fa{q.view(),   k.view(),     v.view(),    out.view(),
                      lse.view(), std::nullopt, std::nullopt};
  if (has_add) {
    ak = make(aks, dt, &in.ak), av = make(avs, dt, &in.av);
    fa.additional_k = ak.view(), fa.additional_v = av.view();
  }
  fna::forward(p, fa, options);
  BackendRun r;
  r.out = out.to_dense();
  r.lse = lse.to_dense();
  Buffer go = make(os, dt, &dout);
  Buffer dq = make(qs, dt, nullptr), dk = make(ks, dt, nullptr), dv = make(vs, dt, nullptr);
  fna::BackwardArgs ba{q.view(),     k.view(),     v.view(),    out.view(), lse.view(),
                       go.view(),    dq.view(),    dk.view(),   dv.view(),  std::nullopt,
                       std::nullopt, std::nullopt, std::nullopt};
  if (has_add) {
    dak = make(aks, dt, nullptr), dav = make(avs, dt, nullptr);
    ba.additional_k = ak.view(), ba.additional_v = av.view();
    ba.d_additional_k = dak.view(), ba.d_additional_v = dav.view();
  }
  fna::backward(p, ba, options);
  r.grads.dq = dq.to_dense();
  r.grads.dk = dk.to_dense();
  r.grads.dv = dv.to_dense();
  if (has_add) {
    r.grads.dak = dak.to_dense();
    r.grads.dav = dav.to_dense();
  }
  return r;
}

std::vector<std::string> problem_features(const fna::Problem& p, Layout layout) {
  std::vector<std::string> f;
  f.push_back("rank" + std::to_string(p.rank));
  bool stride = false, dilation = false, causal = false, noncausal = false;
  for (int r = 0; r < p.rank; ++r) {
    const int64_t L = p.extent[r], K = p.window[r], s = p.stride[r], d = p.dilation[r];
    const bool c = p.causal[r];
    if (L == 1) f.push_back("extent=1");
    if (L % 2 == 1 && L > 1) f.push_back("odd_extent");
    if (K % 2 == 0) f.push_back("even_window");
    if (K % 2 == 1 && K > 1) f.push_back("odd_window>1");
    if (K == L && L > 1) f.push_back("window=extent");
    if (K * d == L && d > 1) f.push_back("window*dilation=extent");
    if (s == K && K > 1) f.push_back("stride=window");
    if (s > 1) f.push_back(c ? "axis:stride+causal" : "axis:stride+noncausal");
    if (d > 1) f.push_back(c ? "axis:dilation+causal" : "axis:dilation+noncausal");
    if (s > 1 && d > 1) f.push_back("axis:stride+dilation");
    if (K % 2 == 0 && c) f.push_back("axis:even_window+causal");
    stride |= s > 1;
    dilation |= d > 1;
    causal |= c;
    noncausal |= !c;
  }
  std::string pattern = "causal_pattern:";
  for (int r = 0; r < p.rank; ++r) pattern += p.causal[r] ? "1" : "0";
  f.push_back(pattern);
  if (causal && noncausal) f.push_back("mixed_causal");
  if (causal && !noncausal) f.push_back("all_causal");
  if (p.batch > 1) f.push_back("batch>1");
  if (p.head_dim > 64 || p.head_dim_v > 64) f.push_back("head_dim>64");
  if (p.window[p.rank - 1] > 192) f.push_back("last_axis_window>192");
  if (p.heads_kv == 1 && p.heads_q > 1) f.push_back("mqa");
  if (p.heads_q != p.heads_kv && p.heads_kv > 1) f.push_back("gqa");
  if (p.scale) f.push_back("custom_scale");
  f.push_back(std::string("layout:") + layout_name(layout));
  if (layout == Layout::kInterleaved && p.heads_q != p.heads_kv) f.push_back("interleaved_gqa");
  // Pairwise combinations of the problem-level features.
  const std::pair<const char*, bool> flags[] = {{"stride", stride},
                                                {"dilation", dilation},
                                                {"causal", causal},
                                                {"add_kv", p.additional_kv > 0},
                                                {"gqa_or_mqa", p.heads_q != p.heads_kv},
                                                {"dv!=d", p.head_dim != p.head_dim_v},
                                                {"noncontiguous", layout != Layout::kContiguous}};
  const int n = static_cast<int>(std::size(flags));
  for (int i = 0; i < n; ++i) {
    if (flags[i].second) f.push_back(flags[i].first);
    for (int j = i + 1; j < n; ++j)
      if (flags[i].second && flags[j].second)
        f.push_back(std::string(flags[i].first) + "+" + flags[j].first);
  }
  return f;
}

}  // namespace fna_test
