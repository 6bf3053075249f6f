// The library's one definition of the neighborhood (src/common/neighborhood.h) against the test
// oracle's independent brute-force mask, and the FLOP counter against a brute-force pair count.
// This is the only test file that includes the library's internal headers: that is the point.
#include "common/neighborhood.h"

#include <gtest/gtest.h>

#include "common/problem_util.h"
#include "harness.h"

namespace fna_test {
namespace {

// Every axis configuration with extent <= this is checked exhaustively (all x, y).
int64_t exhaustive_extent() { return long_tests() ? 96 : 40; }

TEST(Neighborhood, AxisAttendsMatchesOracleExhaustively) {
  int64_t configs = 0;
  int failures = 0;
  for (int64_t L = 1; L <= exhaustive_extent(); ++L)
    for (int64_t d = 1; d <= L; ++d)
      for (int64_t K = 1; K * d <= L; ++K)
        for (int64_t s = 1; s <= K; ++s)
          for (bool c : {false, true}) {
            ++configs;
            const fna::Axis axis{L, K, s, d, c};
            for (int64_t x = 0; x < L; ++x) {
              const fna::AxisRange range = fna::axis_window(axis, x);
              int64_t count = 0;
              for (int64_t y = 0; y < L; ++y) {
                const bool want = oracle_axis_attends(L, K, s, d, c, x, y);
                count += want;
                // The range form must describe the same set: y = j * d + group, j in [start, end).
                const bool in_range =
                    y % d == range.group && y / d >= range.start && y / d < range.end;
                if ((fna::axis_attends(axis, x, y) != want || in_range != want) && ++failures <= 10)
                  ADD_FAILURE() << "L=" << L << " K=" << K << " s=" << s << " d=" << d
                                << " causal=" << c << " x=" << x << " y=" << y << ": oracle says "
                                << want << ", axis_attends says " << fna::axis_attends(axis, x, y)
                                << ", axis_window = [" << range.start << ", " << range.end
                                << ") group " << range.group;
              }
              if (fna::axis_window_size(axis, x) != count && ++failures <= 10)
                ADD_FAILURE() << "L=" << L << " K=" << K << " s=" << s << " d=" << d
                              << " causal=" << c << " x=" << x << ": axis_window_size "
                              << fna::axis_window_size(axis, x) << " != oracle count " << count;
              // Non-causal windows hold exactly K keys (DESIGN.md section 2: clamped, not cut).
              if (!c && count != K && ++failures <= 10)
                ADD_FAILURE() << "L=" << L << " K=" << K << " s=" << s << " d=" << d << " x=" << x
                              << ": a non-causal window of " << count << " keys";
            }
          }
  EXPECT_EQ(failures, 0);
  EXPECT_GT(configs, 1000);
}

TEST(Neighborhood, AttendsMatchesOracleMaskOnRandomProblems) {
  const int count = sweep_count(400);
  int failures = 0;
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base_seed() + 3000017 + i;
    std::mt19937_64 rng(seed);
    const fna::Problem p = random_problem(rng);
    const fna::Neighborhood nb = fna::make_neighborhood(p);
    const std::vector<uint8_t> mask = oracle_mask(p);
    const int64_t T = p.tokens();
    ASSERT_EQ(nb.tokens(), T);
    for (int64_t tq = 0; tq < T && failures < 10; ++tq) {
      int64_t xq[3] = {0, 0, 0}, xk[3] = {0, 0, 0};
      nb.coords(tq, xq);
      ASSERT_EQ(nb.token(xq), tq);
      int64_t row = 0;
      for (int64_t tk = 0; tk < T; ++tk) {
        nb.coords(tk, xk);
        row += mask[tq * T + tk];
        if (nb.attends(xq, xk) != (mask[tq * T + tk] != 0) && ++failures <= 10)
          ADD_FAILURE() << "seed " << seed << " {" << p.to_string() << "} query token " << tq
                        << " key token " << tk << ": oracle " << int(mask[tq * T + tk])
                        << ", Neighborhood::attends " << nb.attends(xq, xk);
      }
      if (nb.window_size(xq) != row && ++failures <= 10)
        ADD_FAILURE() << "seed " << seed << " {" << p.to_string() << "} query token " << tq
                      << ": window_size " << nb.window_size(xq) << " != oracle row count " << row;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(FlopCounter, MatchesBruteForcePairCount) {
  const int count = sweep_count(300);
  for (int i = 0; i < count; ++i) {
    const uint64_t seed = base_seed() + 4000037 + i;
    std::mt19937_64 rng(seed);
    const fna::Problem p = random_problem(rng);
    const std::vector<uint8_t> mask = oracle_mask(p);
    double pairs = 0;
    for (uint8_t m : mask) pairs += m;
    const double T = static_cast<double>(p.tokens()), N = static_cast<double>(p.additional_kv);
    const double B = static_cast<double>(p.batch), H = static_cast<double>(p.heads_q);
    const double D = static_cast<double>(p.head_dim), Dv = static_cast<double>(p.head_dim_v);
    // DESIGN.md section 6: 4 * B * Hq * sum_q |window(q)| * D, with D for QK and Dv for PV;
    // additional KV tokens are attended by every query.
    const double flops = 2.0 * B * H * (pairs + T * N) * (D + Dv);
    ASSERT_EQ(fna::attended_pairs(p), pairs) << "seed " << seed << " {" << p.to_string() << "}";
    ASSERT_DOUBLE_EQ(fna::forward_flops(p), flops)
        << "seed " << seed << " {" << p.to_string() << "}";
    ASSERT_DOUBLE_EQ(fna::backward_flops(p), 2.5 * flops) << "seed " << seed;
    ASSERT_DOUBLE_EQ(fna::density(p), (pairs + T * N) / (T * (T + N))) << "seed " << seed;
  }
}

}  // namespace
}  // namespace fna_test
