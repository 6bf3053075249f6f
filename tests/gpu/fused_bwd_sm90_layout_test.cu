// Host checks of the sm_90a dK/dV kernel's shared-memory views (dkdv_bwd_sm90.cuh), no GPU
// needed: the cp.async loaders, the dS^T stores and the epilogue address tiles through the sm_80
// layouts (swizzle folded into element offsets), the wgmma descriptors through GMMA's 128-byte
// swizzle layouts. Both must name the same byte for every element, and that byte must be the one
// the hardware's 128-byte swizzle puts it at (16-byte chunk bits 4-6 XOR row bits 7-9 of the
// byte offset from a 1024-byte aligned base).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>

#include "cuda/fused/sm90/dkdv_bwd_sm90.cuh"

namespace {

using namespace cute;

// Byte offset of (row, col) of a (rows, cols) tile stored as 64-column chunks of rows x 128 bytes
// of 16-bit elements, with the hardware's 128-byte swizzle.
int hw_sw128(int row, int col, int rows) {
  const int raw = (col / 64) * rows * 128 + row * 128 + (col % 64) * 2;
  return raw ^ (((raw >> 7) & 7) << 4);
}

template <class Element>
struct Buffer {
  Element* base;
  std::unique_ptr<void, void (*)(void*)> hold;
  explicit Buffer(size_t elems)
      : base(static_cast<Element*>(std::aligned_alloc(1024, elems * sizeof(Element)))),
        hold(base, std::free) {}
  int64_t bytes(const Element* p) const {
    return reinterpret_cast<const char*>(p) - reinterpret_cast<const char*>(base);
  }
};

template <class Element>
void check_views() {
  using Traits = fna::cuda::fused::sm90::BwdTraitsSm90<Element, 128>;
  constexpr int kTile = Traits::kTile, kD = Traits::kHeadDim, kCols = Traits::kDqCols;
  Buffer<Element> buf(2 * kTile * kD);
  const typename Traits::SmemLayoutRows rows{};
  const typename Traits::SmemLayoutPair pair{};
  auto g_rows = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaRows{});
  auto g_rows_t = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaRowsT{});
  auto g_stages = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaStages{});
  auto g_stages_t = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaStagesT{});
  auto g_blocks = local_tile(g_rows_t, Shape<Int<kCols>, Int<kTile>>{}, make_coord(_, 0));
  int bad = 0;
  for (int r = 0; r < kTile; ++r)
    for (int c = 0; c < kD; ++c) {
      const int64_t want = hw_sw128(r, c, kTile);
      bad += int64_t(rows(r, c)) * int64_t(sizeof(Element)) != want;
      bad += buf.bytes(&g_rows(r, c)) != want;
      bad += buf.bytes(&g_rows_t(c, r)) != want;
      bad += buf.bytes(&g_blocks(c % kCols, r, c / kCols)) != want;
      for (int s = 0; s < 2; ++s) {
        const int64_t staged = want + s * kTile * kD * int64_t(sizeof(Element));
        bad += buf.bytes(&g_stages(r, c, s)) != staged;
        bad += buf.bytes(&g_stages_t(c, r, s)) != staged;
      }
    }
  EXPECT_EQ(bad, 0) << "row-tile views disagree";

  // dS^T: stored (keys, queries) through SmemLayoutPair, read by wgmma as (queries, keys) through
  // GmmaPairT.
  auto g_pair_t = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaPairT{});
  bad = 0;
  for (int k = 0; k < kTile; ++k)
    for (int q = 0; q < kTile; ++q) {
      const int64_t want = hw_sw128(k, q, kTile);
      bad += int64_t(pair(k, q)) * int64_t(sizeof(Element)) != want;
      bad += buf.bytes(&g_pair_t(q, k)) != want;
    }
  EXPECT_EQ(bad, 0) << "dS^T views disagree";

  // The storage keeps every wgmma operand on a 1024-byte boundary and two CTAs per SM.
  using Smem = fna::cuda::fused::sm90::BwdSmemSm90<Traits>;
  EXPECT_EQ(offsetof(Smem, own_b) % 1024, 0u);
  EXPECT_EQ(offsetof(Smem, stream_a) % 1024, 0u);
  EXPECT_EQ(offsetof(Smem, stream_b) % 1024, 0u);
  EXPECT_EQ(offsetof(Smem, ds) % 1024, 0u);
  EXPECT_LE(2 * (fna::cuda::fused::sm90::kBwdSmemBytesSm90<Traits> + 1024), 228 * 1024);
}

TEST(FusedBackwardSm90Layout, Bf16) { check_views<cutlass::bfloat16_t>(); }
TEST(FusedBackwardSm90Layout, Fp16) { check_views<cutlass::half_t>(); }

}  // namespace
