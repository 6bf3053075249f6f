// One test per validation rule (issue 2, item 3): each invalid input raises fna::Error whose
// message names the argument, the value and the rule, and nothing is written (every buffer,
// inputs included, is byte-for-byte unchanged; outputs start poisoned).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "harness.h"

namespace fna_test {
namespace {

using fna::BackwardArgs;
using fna::ForwardArgs;
using fna::TensorView;

// A valid problem exercising every argument: rank 2, stride, dilation, GQA, Dv != D, additional KV.
fna::Problem base_problem() {
  fna::Problem p;
  p.rank = 2;
  p.batch = 2;
  p.heads_q = 4;
  p.heads_kv = 2;
  p.head_dim = 4;
  p.head_dim_v = 3;
  p.extent = {7, 6, 1};
  p.window = {3, 4, 1};
  p.stride = {1, 2, 1};
  p.dilation = {2, 1, 1};
  p.additional_kv = 2;
  return p;
}

class Validation : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(base_seed());
    auto make = [&](std::vector<int64_t> shape, fna::DType dt = fna::DType::kFloat32) {
      return Buffer::make(shape, dt, false, rng);
    };
    q = make({2, 7, 6, 4, 4}), k = make({2, 7, 6, 2, 4}), v = make({2, 7, 6, 2, 3});
    ak = make({2, 2, 2, 4}), av = make({2, 2, 2, 3});
    out = make({2, 7, 6, 4, 3}), lse = make({2, 7, 6, 4}), dout = make({2, 7, 6, 4, 3});
    fwd_out = make({2, 7, 6, 4, 3});  // forward's own output: backward reads `out`
    dq = make({2, 7, 6, 4, 4}), dk = make({2, 7, 6, 2, 4}), dv = make({2, 7, 6, 2, 3});
    dak = make({2, 2, 2, 4}), dav = make({2, 2, 2, 3});
    for (Buffer* b : {&q, &k, &v, &ak, &av, &dout}) b->fill_random(rng, 1.0);
    // Backward inputs: a genuine forward result, so the untouched base case runs cleanly.
    std::vector<double> o(out.numel()), l(lse.numel());
    for (double& x : o) x = 0.25;
    for (double& x : l) x = 1.0;
    out.from_dense(o);
    lse.from_dense(l);
    // Scratch memory for views that point outside the buffers (bad strides): poisoned too.
    scratch.assign(4096, std::numeric_limits<float>::quiet_NaN());
  }

  ForwardArgs fwd() {
    return {q.view(), k.view(), v.view(), fwd_out.view(), lse.view(), ak.view(), av.view()};
  }
  BackwardArgs bwd() {
    return {q.view(),  k.view(),  v.view(),  out.view(), lse.view(), dout.view(), dq.view(),
            dk.view(), dv.view(), ak.view(), av.view(),  dak.view(), dav.view()};
  }

  std::vector<std::vector<std::byte>> snapshot() const {
    std::vector<std::vector<std::byte>> s;
    for (const Buffer* b :
         {&q, &k, &v, &ak, &av, &out, &lse, &dout, &dq, &dk, &dv, &dak, &dav, &fwd_out})
      s.push_back(b->storage_bytes());
    const auto* raw = reinterpret_cast<const std::byte*>(scratch.data());
    s.emplace_back(raw, raw + scratch.size() * sizeof(float));
    return s;
  }

  // Runs `call`, expecting an fna::Error whose message contains every one of `needles` and
  // after which no byte of any buffer has changed.
  void expect_rejected(const std::function<void()>& call, const std::vector<std::string>& needles,
                       std::optional<fna::ErrorKind> kind = std::nullopt) {
    const auto before = snapshot();
    try {
      call();
      ADD_FAILURE() << "no fna::Error was thrown (expected one mentioning '" << needles.front()
                    << "')";
    } catch (const fna::Error& e) {
      const std::string msg = e.what();
      for (const std::string& n : needles)
        EXPECT_NE(msg.find(n), std::string::npos)
            << "the message \"" << msg << "\" lacks \"" << n << "\"";
      if (kind) {
        EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(*kind)) << msg;
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw something other than fna::Error: " << e.what();
    }
    EXPECT_TRUE(snapshot() == before) << "a buffer was written although validation failed";
  }

  // The same problem-level rule through both entry points.
  void expect_problem_rejected(const fna::Problem& p, const std::vector<std::string>& needles) {
    {
      SCOPED_TRACE("forward");
      expect_rejected([&] { fna::forward(p, fwd(), ref()); }, needles);
    }
    {
      SCOPED_TRACE("backward");
      expect_rejected([&] { fna::backward(p, bwd(), ref()); }, needles);
    }
  }

  static fna::Options ref() {
    fna::Options o;
    o.backend = fna::Backend::kReference;
    return o;
  }

  fna::Problem p = base_problem();
  Buffer q, k, v, ak, av, out, lse, dout, dq, dk, dv, dak, dav, fwd_out;
  std::vector<float> scratch;
};

// Named access to the tensor arguments, so that each rule is checked on every argument.
const std::vector<std::string> kForwardNames = {
    "q", "k", "v", "out", "lse", "additional_k", "additional_v"};
const std::vector<std::string> kBackwardNames = {"q",
                                                 "k",
                                                 "v",
                                                 "out",
                                                 "lse",
                                                 "dout",
                                                 "dq",
                                                 "dk",
                                                 "dv",
                                                 "additional_k",
                                                 "additional_v",
                                                 "d_additional_k",
                                                 "d_additional_v"};

TensorView& field(ForwardArgs& a, const std::string& n) {
  if (n == "q") return a.q;
  if (n == "k") return a.k;
  if (n == "v") return a.v;
  if (n == "out") return a.out;
  if (n == "lse") return *a.lse;
  if (n == "additional_k") return *a.additional_k;
  return *a.additional_v;
}
TensorView& field(BackwardArgs& a, const std::string& n) {
  if (n == "q") return a.q;
  if (n == "k") return a.k;
  if (n == "v") return a.v;
  if (n == "out") return a.out;
  if (n == "lse") return a.lse;
  if (n == "dout") return a.dout;
  if (n == "dq") return a.dq;
  if (n == "dk") return a.dk;
  if (n == "dv") return a.dv;
  if (n == "additional_k") return *a.additional_k;
  if (n == "additional_v") return *a.additional_v;
  if (n == "d_additional_k") return *a.d_additional_k;
  return *a.d_additional_v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

TEST_F(Validation, ValidArgumentsRun) {
  EXPECT_NO_THROW(fna::forward(p, fwd(), ref()));
  EXPECT_NO_THROW(fna::backward(p, bwd(), ref()));
  EXPECT_NO_THROW(fna::validate_forward(p, fwd()));
  EXPECT_NO_THROW(fna::validate_backward(p, bwd()));
}

TEST_F(Validation, WrongRank) {
  for (int rank : {0, 4, -1}) {
    p.rank = rank;
    expect_problem_rejected(p, {"problem.rank = " + std::to_string(rank), "1, 2 or 3"});
  }
}

TEST_F(Validation, NonPositiveSizes) {
  const std::pair<int64_t fna::Problem::*, const char*> sizes[] = {
      {&fna::Problem::batch, "batch"},
      {&fna::Problem::heads_q, "heads_q"},
      {&fna::Problem::heads_kv, "heads_kv"},
      {&fna::Problem::head_dim, "head_dim"},
      {&fna::Problem::head_dim_v, "head_dim_v"}};
  for (const auto& [member, name] : sizes)
    for (int64_t bad : {0, -3}) {
      SCOPED_TRACE(name);
      fna::Problem bp = p;
      bp.*member = bad;
      expect_problem_rejected(
          bp, {std::string("problem.") + name + " = " + std::to_string(bad), ">= 1"});
    }
  fna::Problem bp = p;
  bp.extent[1] = 0;
  expect_problem_rejected(bp, {"problem.extent[1] = 0", ">= 1"});
  bp = p;
  bp.additional_kv = -1;
  expect_problem_rejected(bp, {"problem.additional_kv = -1", ">= 0"});
}

TEST_F(Validation, WindowTimesDilationExceedsExtent) {
  fna::Problem bp = p;
  bp.window[0] = 4;  // 4 * 2 = 8 > 7
  expect_problem_rejected(bp, {"window[0] * dilation[0] = 4 * 2", "extent[0] = 7",
                               "window * dilation must be <= extent"});
  bp = p;
  bp.window[1] = 7;  // 7 * 1 > 6
  bp.stride[1] = 1;
  expect_problem_rejected(bp, {"window[1] * dilation[1] = 7 * 1", "extent[1] = 6"});
  bp = p;  // overflow must not wrap into "fits"
  bp.window[0] = int64_t{1} << 40;
  bp.dilation[0] = int64_t{1} << 40;
  expect_problem_rejected(bp, {"window[0] * dilation[0]", "extent[0] = 7"});
}

TEST_F(Validation, StrideExceedsWindow) {
  fna::Problem bp = p;
  bp.stride[0] = 4;
  expect_problem_rejected(bp,
                          {"problem.stride[0] = 4", "window[0] = 3", "stride must be <= window"});
}

TEST_F(Validation, WindowStrideDilationBelowOne) {
  const std::pair<std::array<int64_t, fna::kMaxRank> fna::Problem::*, const char*> knobs[] = {
      {&fna::Problem::window, "window"},
      {&fna::Problem::stride, "stride"},
      {&fna::Problem::dilation, "dilation"}};
  for (const auto& [member, name] : knobs)
    for (int64_t bad : {0, -1}) {
      SCOPED_TRACE(name);
      fna::Problem bp = p;
      (bp.*member)[1] = bad;
      expect_problem_rejected(
          bp, {std::string("problem.") + name + "[1] = " + std::to_string(bad), ">= 1"});
    }
}

TEST_F(Validation, HeadsNotMultiple) {
  fna::Problem bp = p;
  bp.heads_q = 3;
  expect_problem_rejected(bp, {"heads_q = 3", "heads_kv = 2", "multiple"});
}

TEST_F(Validation, NonFiniteScale) {
  fna::Problem bp = p;
  bp.scale = std::numeric_limits<double>::quiet_NaN();
  expect_problem_rejected(bp, {"problem.scale", "finite"});
}

TEST_F(Validation, ShapeMismatchForEveryArgument) {
  for (const std::string& name : kForwardNames)
    for (int dim : {0, -1}) {  // batch dim and last dim
      SCOPED_TRACE("forward " + name);
      ForwardArgs a = fwd();
      TensorView& t = field(a, name);
      const size_t i = dim < 0 ? t.shape.size() - 1 : 0;
      t.shape[i] += 1;
      expect_rejected([&] { fna::forward(p, a, ref()); },
                      {"'" + name + "'", "shape " + shape_str(t.shape), "expected"});
    }
  for (const std::string& name : kBackwardNames)
    for (int dim : {0, -1}) {
      SCOPED_TRACE("backward " + name);
      BackwardArgs a = bwd();
      TensorView& t = field(a, name);
      const size_t i = dim < 0 ? t.shape.size() - 1 : 1;
      t.shape[i] += 1;
      expect_rejected([&] { fna::backward(p, a, ref()); },
                      {"'" + name + "'", "shape " + shape_str(t.shape), "expected"});
    }
}

TEST_F(Validation, TensorRankMismatchForEveryArgument) {
  for (const std::string& name : kBackwardNames) {
    SCOPED_TRACE(name);
    BackwardArgs a = bwd();
    TensorView& t = field(a, name);
    t.shape.pop_back();
    t.strides.pop_back();
    expect_rejected([&] { fna::backward(p, a, ref()); },
                    {"'" + name + "'", "rank " + std::to_string(t.shape.size()), "expected rank"});
  }
  ForwardArgs a = fwd();
  a.q.shape.push_back(1);
  a.q.strides.push_back(1);
  expect_rejected([&] { fna::forward(p, a, ref()); }, {"'q'", "rank 6", "expected rank 5"});
}

TEST_F(Validation, StridesCountMismatch) {
  ForwardArgs a = fwd();
  a.k.strides.pop_back();
  expect_rejected([&] { fna::forward(p, a, ref()); }, {"'k'", "4 strides", "rank-5"});
}

TEST_F(Validation, DtypeMismatchForEveryArgument) {
  for (const std::string& name : kForwardNames) {
    if (name == "q" || name == "lse") continue;  // q sets the dtype; lse has its own rule
    SCOPED_TRACE(name);
    ForwardArgs a = fwd();
    field(a, name).dtype = fna::DType::kBFloat16;
    expect_rejected([&] { fna::forward(p, a, ref()); },
                    {"'" + name + "'", "dtype bf16", "q's dtype fp32"}, fna::ErrorKind::kTypeError);
  }
  for (const std::string& name : kBackwardNames) {
    if (name == "q" || name == "lse") continue;
    SCOPED_TRACE(name);
    BackwardArgs a = bwd();
    field(a, name).dtype = fna::DType::kFloat16;
    expect_rejected([&] { fna::backward(p, a, ref()); },
                    {"'" + name + "'", "dtype fp16", "q's dtype fp32"}, fna::ErrorKind::kTypeError);
  }
}

TEST_F(Validation, DeviceMismatchForEveryArgument) {
  const fna::Device gpu{fna::DeviceType::kCUDA, 1};
  for (const std::string& name : kForwardNames) {
    if (name == "q") continue;
    SCOPED_TRACE(name);
    ForwardArgs a = fwd();
    field(a, name).device = gpu;
    expect_rejected([&] { fna::forward(p, a, ref()); },
                    {"'" + name + "'", "device cuda:1", "q's device cpu"});
  }
  for (const std::string& name : kBackwardNames) {
    if (name == "q") continue;
    SCOPED_TRACE(name);
    BackwardArgs a = bwd();
    field(a, name).device = gpu;
    expect_rejected([&] { fna::backward(p, a, ref()); },
                    {"'" + name + "'", "device cuda:1", "q's device cpu"});
  }
}

TEST_F(Validation, LseNotFp32) {
  for (fna::DType dt : {fna::DType::kFloat16, fna::DType::kBFloat16}) {
    ForwardArgs a = fwd();
    a.lse->dtype = dt;
    expect_rejected([&] { fna::forward(p, a, ref()); },
                    {"'lse'", fna::dtype_name(dt), "must be fp32"}, fna::ErrorKind::kTypeError);
    BackwardArgs b = bwd();
    b.lse.dtype = dt;
    expect_rejected([&] { fna::backward(p, b, ref()); },
                    {"'lse'", fna::dtype_name(dt), "must be fp32"}, fna::ErrorKind::kTypeError);
  }
}

TEST_F(Validation, NullPointerForEveryArgument) {
  for (const std::string& name : kForwardNames) {
    SCOPED_TRACE(name);
    ForwardArgs a = fwd();
    field(a, name).data = nullptr;
    expect_rejected([&] { fna::forward(p, a, ref()); }, {"'" + name + "'", "null"});
  }
  for (const std::string& name : kBackwardNames) {
    SCOPED_TRACE(name);
    BackwardArgs a = bwd();
    field(a, name).data = nullptr;
    expect_rejected([&] { fna::backward(p, a, ref()); }, {"'" + name + "'", "null"});
  }
}

TEST_F(Validation, OutputOverlapsInput) {
  // Every aliasing view below stays inside the input's storage, so a missed check cannot write
  // outside the test's buffers.
  const std::pair<const char*, const char*> fwd_pairs[] = {{"out", "q"}, {"lse", "k"}};
  for (const auto& [output, input] : fwd_pairs) {
    SCOPED_TRACE(std::string(output) + " over " + input);
    ForwardArgs a = fwd();
    field(a, output).data = field(a, input).data;
    expect_rejected(
        [&] { fna::forward(p, a, ref()); },
        {std::string("'") + output + "'", std::string("overlaps input '") + input + "'"});
  }
  {
    ForwardArgs a = fwd();
    a.out.data = static_cast<float*>(a.q.data) + 1;  // a partial overlap
    expect_rejected([&] { fna::forward(p, a, ref()); }, {"'out'", "overlaps input 'q'"});
  }
  const std::pair<const char*, const char*> pairs[] = {{"dq", "q"},
                                                       {"dk", "k"},
                                                       {"dv", "dout"},
                                                       {"dv", "out"},
                                                       {"d_additional_k", "lse"},
                                                       {"d_additional_k", "additional_k"},
                                                       {"d_additional_v", "additional_v"}};
  for (const auto& [output, input] : pairs) {
    SCOPED_TRACE(std::string(output) + " over " + input);
    BackwardArgs a = bwd();
    field(a, output).data = field(a, input).data;
    expect_rejected(
        [&] { fna::backward(p, a, ref()); },
        {std::string("'") + output + "'", std::string("overlaps input '") + input + "'"});
  }
  BackwardArgs a = bwd();
  a.d_additional_v->data = static_cast<float*>(a.additional_k->data) + 1;
  expect_rejected([&] { fna::backward(p, a, ref()); },
                  {"'d_additional_v'", "overlaps input 'additional_k'"});
}

TEST_F(Validation, OutputsOverlapEachOther) {
  ForwardArgs a = fwd();
  a.lse->data = a.out.data;
  expect_rejected([&] { fna::forward(p, a, ref()); }, {"'lse'", "overlaps output 'out'"});
  BackwardArgs b = bwd();
  b.dk.data = b.dq.data;
  expect_rejected([&] { fna::backward(p, b, ref()); }, {"'dk'", "overlaps output 'dq'"});
  b = bwd();
  b.d_additional_v->data = static_cast<float*>(b.dv.data) + 5;
  expect_rejected([&] { fna::backward(p, b, ref()); },
                  {"'d_additional_v'", "overlaps output 'dv'"});
}

TEST_F(Validation, OutputOverlapsItself) {
  ForwardArgs a = fwd();
  a.out.strides[3] = 0;  // every head writes the same row
  expect_rejected([&] { fna::forward(p, a, ref()); }, {"'out'", "overlap themselves"});
  BackwardArgs b = bwd();
  b.dk.strides[1] = 1;  // rows of consecutive x interleave with the head dim
  expect_rejected([&] { fna::backward(p, b, ref()); }, {"'dk'", "overlap themselves"});
}

// q, k, v = qkv.unbind(-3) and dq, dk, dv = dqkv.unbind(-3): views that interleave in one buffer
// without sharing an element must be accepted, and the results must be right.
TEST_F(Validation, InterleavedViewsOfOneBufferAreAllowed) {
  fna::Problem ip = base_problem();
  ip.heads_kv = ip.heads_q;
  ip.head_dim_v = ip.head_dim;
  for (fna::Backend backend : {fna::Backend::kReference, fna::Backend::kCpu}) {
    SCOPED_TRACE(fna::backend_name(backend));
    CaseSpec spec;
    spec.problem = ip;
    spec.layout = Layout::kInterleaved;
    spec.seed = base_seed();
    const CaseResult r = run_case(spec, backend);
    EXPECT_EQ(r.failure, "") << spec.describe();
  }
}

TEST_F(Validation, LastDimNotUnitStride) {
  ForwardArgs a = fwd();
  a.q.data = scratch.data();
  a.q.strides = {1008, 144, 24, 6, 2};  // stays inside the scratch
  expect_rejected([&] { fna::forward(p, a, ref()); },
                  {"'q'", "last-dim stride is 2", "unit-stride"});
  BackwardArgs b = bwd();
  b.dv.data = scratch.data();
  b.dv.strides = {1008, 144, 24, 12, 4};
  expect_rejected([&] { fna::backward(p, b, ref()); },
                  {"'dv'", "last-dim stride is 4", "unit-stride"});
}

TEST_F(Validation, NegativeStride) {
  ForwardArgs a = fwd();
  a.k.strides[1] = -a.k.strides[1];
  expect_rejected([&] { fna::forward(p, a, ref()); }, {"'k'", "stride -", "dim 1", ">= 0"});
}

TEST_F(Validation, UnknownBackendOrDtypeName) {
  try {
    fna::parse_backend("cuda-fastest");
    ADD_FAILURE() << "parse_backend accepted an unknown name";
  } catch (const fna::Error& e) {
    const std::string msg = e.what();
    for (const char* n : {"'cuda-fastest'", "unknown", "reference", "cpu", "cuda-hopper"})
      EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
  for (fna::Backend b : fna::all_backends()) EXPECT_EQ(fna::parse_backend(fna::backend_name(b)), b);
  try {
    fna::parse_dtype("fp8");
    ADD_FAILURE() << "parse_dtype accepted fp8";
  } catch (const fna::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'fp8'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fp32, fp16 or bf16"), std::string::npos) << msg;
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(fna::ErrorKind::kTypeError));
  }
}

TEST_F(Validation, BackendNotCompiled) {
  const std::vector<fna::Backend> compiled = fna::compiled_backends();
  int checked = 0;
  for (fna::Backend b : fna::all_backends()) {
    if (std::find(compiled.begin(), compiled.end(), b) != compiled.end()) continue;
    SCOPED_TRACE(fna::backend_name(b));
    fna::Options o;
    o.backend = b;
    const std::string name = std::string("'") + fna::backend_name(b) + "'";
    expect_rejected([&] { fna::forward(p, fwd(), o); }, {name, "not compiled"},
                    fna::ErrorKind::kNotAvailable);
    expect_rejected([&] { fna::backward(p, bwd(), o); }, {name, "not compiled"},
                    fna::ErrorKind::kNotAvailable);
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "every backend is compiled into this build";
}

TEST_F(Validation, BackendNotUsableOnDevice) {
  // Views that claim to live on a CUDA device: the CPU backends must refuse them (nothing is
  // dereferenced, so host memory is fine here).
  const fna::Device gpu{fna::DeviceType::kCUDA, 0};
  ForwardArgs a = fwd();
  for (TensorView* t : {&a.q, &a.k, &a.v, &a.out, &*a.lse, &*a.additional_k, &*a.additional_v})
    t->device = gpu;
  BackwardArgs b = bwd();
  for (const std::string& n : kBackwardNames) field(b, n).device = gpu;
  for (fna::Backend backend : {fna::Backend::kReference, fna::Backend::kCpu}) {
    SCOPED_TRACE(fna::backend_name(backend));
    fna::Options o;
    o.backend = backend;
    const std::string name = std::string("'") + fna::backend_name(backend) + "'";
    expect_rejected([&] { fna::forward(p, a, o); }, {name, "cannot run", "cuda:0"},
                    fna::ErrorKind::kNotAvailable);
    expect_rejected([&] { fna::backward(p, b, o); }, {name, "cannot run", "cuda:0"},
                    fna::ErrorKind::kNotAvailable);
  }
  if (fna::compiled_backends().size() == 2) {  // a CPU-only build: `auto` has nothing to pick
    expect_rejected([&] { fna::forward(p, a, fna::Options{}); }, {"no backend", "cuda:0"},
                    fna::ErrorKind::kNotAvailable);
  }
}

TEST_F(Validation, AdditionalKvMissing) {
  const char* names[] = {"additional_k", "additional_v"};
  for (const char* n : names) {
    SCOPED_TRACE(n);
    ForwardArgs a = fwd();
    (std::string(n) == "additional_k" ? a.additional_k : a.additional_v).reset();
    expect_rejected([&] { fna::forward(p, a, ref()); },
                    {std::string("'") + n + "' is missing", "additional_kv = 2"});
  }
  const char* bnames[] = {"additional_k", "additional_v", "d_additional_k", "d_additional_v"};
  for (const char* n : bnames) {
    SCOPED_TRACE(n);
    BackwardArgs b = bwd();
    const std::string s = n;
    (s == "additional_k"     ? b.additional_k
     : s == "additional_v"   ? b.additional_v
     : s == "d_additional_k" ? b.d_additional_k
                             : b.d_additional_v)
        .reset();
    expect_rejected([&] { fna::backward(p, b, ref()); },
                    {"'" + s + "' is missing", "additional_kv = 2"});
  }
}

TEST_F(Validation, AdditionalKvUnexpected) {
  fna::Problem np = p;
  np.additional_kv = 0;
  expect_rejected([&] { fna::forward(np, fwd(), ref()); },
                  {"'additional_k' was given", "additional_kv = 0"});
  BackwardArgs b = bwd();
  b.additional_k.reset();
  b.additional_v.reset();
  expect_rejected([&] { fna::backward(np, b, ref()); },
                  {"'d_additional_k' was given", "additional_kv = 0"});
}

// The overlap check is exact for views sharing strides, whatever their shapes: dq, dk, dv placed
// at random offsets in one buffer with the strides of a fused [B, X, H_total, D] gradient are
// rejected iff two of them share an element (checked by brute force), in both directions.
TEST(OverlapCheck, ExactForViewsSharingStrides) {
  int rejected = 0, accepted = 0;
  for (int i = 0; i < sweep_count(400); ++i) {
    const uint64_t seed = base_seed() + 9400033 + i;
    std::mt19937_64 rng(seed);
    auto uni = [&](int64_t lo, int64_t hi) {
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    fna::Problem p = fna::Problem::make({uni(1, 5)}, {1}, uni(1, 2), 1, uni(1, 3));
    p.heads_kv = uni(1, 3);
    p.heads_q = p.heads_kv * uni(1, 2);
    const int64_t D = p.head_dim, B = p.batch, L = p.extent[0];
    const int64_t sh = D + uni(0, 1), heads_total = uni(p.heads_q, p.heads_q + 2 * p.heads_kv + 1);
    const int64_t sl = heads_total * sh, sb = L * sl + uni(0, 2);
    const std::vector<int64_t> strides{sb, sl, sh, 1};
    const int64_t span = (B - 1) * sb + (L - 1) * sl + (heads_total - 1) * sh + D;
    std::vector<float> dqkv(3 * span + 8, 0.0f);
    const int64_t off[3] = {0, uni(0, span), uni(0, 2 * span)};
    const int64_t heads[3] = {p.heads_q, p.heads_kv, p.heads_kv};
    std::vector<TensorView> views(3);
    std::vector<std::set<int64_t>> elements(3);
    for (int t = 0; t < 3; ++t) {
      views[t] =
          TensorView::contiguous(dqkv.data() + off[t], fna::DType::kFloat32, {B, L, heads[t], D});
      views[t].strides = strides;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t x = 0; x < L; ++x)
          for (int64_t h = 0; h < heads[t]; ++h)
            for (int64_t d = 0; d < D; ++d)
              elements[t].insert(off[t] + b * sb + x * sl + h * sh + d);
    }
    bool overlap = false;
    for (int s = 0; s < 3; ++s)
      for (int t = s + 1; t < 3; ++t)
        for (int64_t e : elements[s]) overlap |= elements[t].count(e) > 0;
    // Valid inputs in their own memory.
    std::vector<float> q(B * L * p.heads_q * D, 1.0f), kv(B * L * p.heads_kv * D, 1.0f);
    std::vector<float> o(q), go(q), l(B * L * p.heads_q, 0.0f), v(kv);
    auto view = [&](std::vector<float>& m, int64_t h) {
      return TensorView::contiguous(m.data(), fna::DType::kFloat32, {B, L, h, D});
    };
    BackwardArgs a{view(q, p.heads_q),
                   view(kv, p.heads_kv),
                   view(v, p.heads_kv),
                   view(o, p.heads_q),
                   TensorView::contiguous(l.data(), fna::DType::kFloat32, {B, L, p.heads_q}),
                   view(go, p.heads_q),
                   views[0],
                   views[1],
                   views[2],
                   std::nullopt,
                   std::nullopt,
                   std::nullopt,
                   std::nullopt};
    const std::string where = "seed " + std::to_string(seed) + " {" + p.to_string() +
                              "} heads_total=" + std::to_string(heads_total) + " offsets " +
                              std::to_string(off[1]) + ", " + std::to_string(off[2]);
    try {
      fna::validate_backward(p, a);
      EXPECT_FALSE(overlap) << "overlapping gradients were accepted: " << where;
      ++accepted;
    } catch (const fna::Error& e) {
      EXPECT_TRUE(overlap) << "disjoint gradients were rejected (" << e.what() << "): " << where;
      EXPECT_NE(std::string(e.what()).find("overlaps output"), std::string::npos) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 20);
  EXPECT_GT(accepted, 20);
}

// The case that motivated the exact check: a fused GQA projection's gradient buffer
// [B, X, Y, Hq + 2 Hkv, D] split into dq, dk, dv head ranges runs and gives the same gradients
// as separate buffers.
TEST(OverlapCheck, FusedGqaGradientBufferRuns) {
  fna::Problem p = base_problem();
  p.head_dim_v = p.head_dim;
  std::mt19937_64 rng(base_seed());
  const DenseInputs in = random_inputs(p, rng);
  const int64_t B = p.batch, X = p.extent[0], Y = p.extent[1], D = p.head_dim;
  const int64_t hq = p.heads_q, hkv = p.heads_kv, ht = hq + 2 * hkv;
  const std::vector<double> dout = random_values(B * X * Y * hq * D, 1.0, rng);
  for (const char* backend : {"reference", "cpu"}) {
    SCOPED_TRACE(backend);
    BackendRun separate;
    try {
      separate = run_backend(p, in, dout, fna::parse_backend(backend));
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    auto buffer = [&](const std::vector<double>& values, std::vector<int64_t> shape) {
      Buffer b = Buffer::make(shape, fna::DType::kFloat32, false, rng);
      b.from_dense(values);
      return b;
    };
    Buffer q = buffer(in.q, {B, X, Y, hq, D}), k = buffer(in.k, {B, X, Y, hkv, D});
    Buffer v = buffer(in.v, {B, X, Y, hkv, D}), o = buffer(separate.out, {B, X, Y, hq, D});
    Buffer l = buffer(separate.lse, {B, X, Y, hq}), go = buffer(dout, {B, X, Y, hq, D});
    Buffer ak = buffer(in.ak, {B, 2, hkv, D}), av = buffer(in.av, {B, 2, hkv, D});
    Buffer dak = buffer(in.ak, {B, 2, hkv, D}), dav = buffer(in.av, {B, 2, hkv, D});
    std::vector<float> dqkv(B * X * Y * ht * D, std::numeric_limits<float>::quiet_NaN());
    const std::vector<int64_t> strides{X * Y * ht * D, Y * ht * D, ht * D, D, 1};
    auto part = [&](int64_t first_head, int64_t heads) {
      TensorView t = TensorView::contiguous(dqkv.data() + first_head * D, fna::DType::kFloat32,
                                            {B, X, Y, heads, D});
      t.strides = strides;
      return t;
    };
    BackwardArgs a{q.view(),    k.view(),      v.view(),
                   o.view(),    l.view(),      go.view(),
                   part(0, hq), part(hq, hkv), part(hq + hkv, hkv),
                   ak.view(),   av.view(),     dak.view(),
                   dav.view()};
    fna::Options opt;
    opt.backend = fna::parse_backend(backend);
    ASSERT_NO_THROW(fna::backward(p, a, opt));
    // Read the three head ranges back in canonical order.
    std::vector<double> got[3];
    const int64_t first[3] = {0, hq, hq + hkv}, count[3] = {hq, hkv, hkv};
    for (int t = 0; t < 3; ++t)
      for (int64_t row = 0; row < B * X * Y; ++row)
        for (int64_t h = 0; h < count[t]; ++h)
          for (int64_t d = 0; d < D; ++d) got[t].push_back(dqkv[(row * ht + first[t] + h) * D + d]);
    EXPECT_LE(relative_error(got[0], separate.grads.dq), 1e-6);
    EXPECT_LE(relative_error(got[1], separate.grads.dk), 1e-6);
    EXPECT_LE(relative_error(got[2], separate.grads.dv), 1e-6);
    // Shifting dk by one head into dq's range is an overlap.
    a.dk = part(hq - 1, hkv);
    EXPECT_THROW(fna::backward(p, a, opt), fna::Error);
  }
}

}  // namespace
}  // namespace fna_test
