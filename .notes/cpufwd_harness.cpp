// Private A/B harness of the cpu forward (session 5, cpufwd): the issue-2 problem through
// fna::forward, median / best process CPU time and wall time of `iters` calls after 2 warm-ups.
// Build: g++ -O2 -std=c++20 -fopenmp -I include harness.cpp BUILD/libfna.a -o h
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "fna/fna.h"

static double now(clockid_t c) {
  timespec t;
  clock_gettime(c, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 12;
  const int64_t H = argc > 2 ? std::atoi(argv[2]) : 8;  // heads (the bar problem: 8)
  fna::Problem p = fna::Problem::make({64, 64}, {13, 13}, 1, H, 64);
  const int64_t n = 64 * 64 * H * 64;
  std::vector<float> q(n), k(n), v(n), o(n), lse(64 * 64 * H);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto* x : {&q, &k, &v})
    for (auto& e : *x) e = nd(rng);
  auto view = [](std::vector<float>& b, std::vector<int64_t> s) {
    return fna::TensorView::contiguous(b.data(), fna::DType::kFloat32, s);
  };
  fna::ForwardArgs a{view(q, {1, 64, 64, H, 64}), view(k, {1, 64, 64, H, 64}),
                     view(v, {1, 64, 64, H, 64}), view(o, {1, 64, 64, H, 64}),
                     view(lse, {1, 64, 64, H})};
  fna::Options opt;
  opt.backend = fna::Backend::kCpu;
  std::vector<double> cpu, wall;
  for (int i = 0; i < iters + 2; ++i) {
    const double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    fna::forward(p, a, opt);
    const double c1 = now(CLOCK_PROCESS_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
    if (i >= 2) {
      cpu.push_back(c1 - c0);
      wall.push_back(w1 - w0);
    }
  }
  std::sort(cpu.begin(), cpu.end());
  std::sort(wall.begin(), wall.end());
  std::printf("cpu med %.2f best %.2f  wall med %.2f best %.2f ms\n", cpu[cpu.size() / 2], cpu[0],
              wall[wall.size() / 2], wall[0]);
  return 0;
}
