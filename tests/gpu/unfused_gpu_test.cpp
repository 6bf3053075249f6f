// The unfused ops (include/fna/unfused.h) on CUDA: every case of the CPU test (tests/cpp/
// unfused_ops_test.cpp) through a device mirror of the host Buffers (outputs start poisoned, so
// an unwritten element or a stray write fails), NAT-sized problems, bitwise determinism of the
// gathered gradients, a non-default stream, and the device/backend rules.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "cuda_mirror.h"
#include "unfused_case.h"

namespace fna_test {
namespace {

using fna::DType;

struct Combo {
  DType dtype, weights;
  bool strided;
};
constexpr Combo kCombos[] = {
    {DType::kFloat32, DType::kFloat32, false},  {DType::kFloat32, DType::kFloat32, true},
    {DType::kFloat16, DType::kFloat32, true},   {DType::kFloat16, DType::kFloat16, false},
    {DType::kBFloat16, DType::kFloat32, false}, {DType::kBFloat16, DType::kBFloat16, true}};

TEST(UnfusedGpu, MatchOracleEveryProblemDtypeAndLayout) {
  uint64_t seed = base_seed();
  for (const fna::Problem& p : unfused_problems())
    for (const Combo& c : kCombos)
      for (bool rpb : {false, true}) {
        if (rpb && any_causal(p)) continue;
        CudaMirror dev;
        UnfusedSpec spec{p, c.dtype, c.weights, c.strided, rpb, seed++};
        EXPECT_EQ(run_unfused_case(spec, dev), "") << spec.describe();
      }
}

// NAT/DiNAT-sized problems (more threads than one block, windows past 32 slots, GQA, dilation).
TEST(UnfusedGpu, NatSizedProblems) {
  std::vector<fna::Problem> ps;
  fna::Problem nat = unfused_problem(2, {14, 14}, {7, 7});
  nat.heads_q = nat.heads_kv = 4;
  nat.head_dim = nat.head_dim_v = 32;
  ps.push_back(nat);
  fna::Problem dinat = unfused_problem(2, {28, 21}, {7, 5}, {1, 1}, {4, 3});
  dinat.heads_q = 4;
  dinat.heads_kv = 2;
  dinat.head_dim = dinat.head_dim_v = 32;
  ps.push_back(dinat);
  fna::Problem seq = unfused_problem(1, {700}, {63}, {4}, {2});
  seq.head_dim = 64;
  seq.head_dim_v = 32;
  ps.push_back(seq);
  fna::Problem vid = unfused_problem(3, {6, 8, 10}, {3, 5, 5}, {1, 2, 1}, {2, 1, 1});
  vid.head_dim = vid.head_dim_v = 16;
  ps.push_back(vid);
  uint64_t seed = base_seed() + 1000;
  for (const fna::Problem& p : ps)
    for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
      CudaMirror dev;
      UnfusedSpec spec{p, dt, DType::kFloat32, dt == DType::kBFloat16, true, seed++};
      EXPECT_EQ(run_unfused_case(spec, dev), "") << spec.describe();
    }
}

// The gathered dk / dv and the block-reduced d_rpb are bitwise reproducible, and the ops run on
// options.stream.
TEST(UnfusedGpu, DeterministicOnAStream) {
  fna::Problem p = unfused_problem(2, {14, 14}, {7, 7});
  p.heads_q = p.heads_kv = 4;
  p.head_dim = p.head_dim_v = 32;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  fna::Options o;
  o.stream = stream;
  std::mt19937_64 rng(base_seed() + 2000);
  auto tok = [&](int64_t h, int64_t d) {
    return std::vector<int64_t>{p.batch, p.extent[0], p.extent[1], h, d};
  };
  Buffer q = Buffer::make(tok(4, 32), DType::kFloat32, false, rng);
  Buffer k = Buffer::make(tok(4, 32), DType::kFloat32, false, rng);
  Buffer g = Buffer::make(fna::attn_shape(p), DType::kFloat32, false, rng);
  q.fill_random(rng, 2.0);
  k.fill_random(rng, 2.0);
  g.fill_random(rng, 1.0);
  std::vector<std::vector<std::byte>> runs[2];
  for (auto& run : runs) {
    Buffer dq = Buffer::make(tok(4, 32), DType::kFloat32, false, rng);
    Buffer dk = Buffer::make(tok(4, 32), DType::kFloat32, false, rng);
    Buffer d_rpb = Buffer::make(fna::rpb_shape(p), DType::kFloat32, false, rng);
    CudaMirror dev;
    fna::na_qk_backward(
        p, {dev.view(q), dev.view(k), dev.view(g), dev.view(dq), dev.view(dk), dev.view(d_rpb)}, o);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    for (const Buffer* b : {&dq, &dk, &d_rpb}) {
      dev.download(*b);
      run.push_back(b->storage_bytes());
    }
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "two runs of na_qk_backward differ bitwise";
  cudaStreamDestroy(stream);
}

TEST(UnfusedGpu, CpuBackendOptionOnCudaTensorsIsAnError) {
  const fna::Problem p = unfused_problem(1, {9}, {3});
  std::mt19937_64 rng(1);
  Buffer q = Buffer::make({2, 9, 2, 3}, DType::kFloat32, false, rng);
  Buffer k = Buffer::make({2, 9, 2, 3}, DType::kFloat32, false, rng);
  Buffer attn = Buffer::make({2, 9, 2, 3}, DType::kFloat32, false, rng);
  CudaMirror dev;
  fna::Options o;
  o.backend = fna::Backend::kCpu;
  try {
    fna::na_qk(p, {dev.view(q), dev.view(k), dev.view(attn), std::nullopt}, o);
    ADD_FAILURE() << "no error";
  } catch (const fna::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'backend' = 'cpu' cannot run na_qk on cuda:0"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace fna_test
