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
#include <vector>

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

// The hardware's reading of a wgmma shared-memory descriptor with the 128-byte swizzle, for 16-bit
// elements, written from the PTX ISA's description (matrix descriptor fields; canonical K-major
// layout ((8, m), (64 elements)) with SBO between 8-row groups; canonical MN-major layout
// ((64 elements, m), (8, k)) with LBO between 64-element blocks along M / N and SBO between
// 8-row groups along K), not from CuTe: the byte an instruction reads for element (mn, k) of its
// operand tile (k < 16), then the swizzle on the address bits.
struct Desc {
  int64_t start, lbo, sbo;
  int swizzle;  // 1: 128-byte swizzle
};
Desc decode(uint64_t d) {
  return {int64_t(d & 0x3fff) << 4, int64_t(d >> 16 & 0x3fff) << 4, int64_t(d >> 32 & 0x3fff) << 4,
          int(d >> 62 & 3)};
}
int64_t hw_read(const Desc& d, bool mn_major, int mn, int k) {
  const int64_t a = mn_major ? d.start + mn % 64 * 2 + mn / 64 * d.lbo + k % 8 * 128 + k / 8 * d.sbo
                             : d.start + mn % 8 * 128 + mn / 8 * d.sbo + k * 2;
  return a ^ ((a >> 7 & 7) << 4);
}

// frag: one operand's descriptors (MMA, MMA_M or MMA_N, MMA_K) as the kernel slices them (on the
// host CuTe's shared-memory address of the tensor is 0, so addresses are relative to its base and
// CuTe prints "cast_smem_ptr_to_uint not supported" once per descriptor tensor); want(mn, k): the
// byte the kernel means by that element of the whole operand. Returns the mismatches.
template <class Frag, class Want>
int check_descriptors(const Frag& frag, int mn_extent, bool mn_major, Want want) {
  const int blocks = size<1>(frag), rows = mn_extent / blocks;
  int bad = 0;
  for (int b = 0; b < blocks; ++b)
    for (int kb = 0; kb < size<2>(frag); ++kb) {
      const Desc d = decode(uint64_t(frag(0, b, kb)));
      bad += d.swizzle != 1;
      for (int mn = 0; mn < rows; ++mn)
        for (int k = 0; k < 16; ++k)
          bad += hw_read(d, mn_major, mn, k) != want(b * rows + mn, kb * 16 + k);
    }
  return bad;
}

// The descriptors of all eight wgmma operands, built as dkdv_kernel_sm90 builds them, read the
// elements the products need: S^T = K Q^T and dP^T = V dO^T (K-major), dV += P^T dO and
// dK += dS^T Q (dO^T, Q^T: MN-major B, N = 128), dQ_share = dS K (dS: MN-major A, K^T: MN-major B
// per 64-column block); both stages.
template <class Element>
void check_gmma_descriptors() {
  using Traits = fna::cuda::fused::sm90::BwdTraitsSm90<Element, 128>;
  constexpr int kTile = Traits::kTile, kD = Traits::kHeadDim, kCols = Traits::kDqCols;
  constexpr int64_t kStage = int64_t(kTile) * kD * sizeof(Element);
  Buffer<Element> buf(2 * kTile * kD);
  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmaKV mma_kv;
  typename Traits::TiledMmaDq mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(0);
  auto thr_kv = mma_kv.get_thread_slice(0);
  auto thr_dq = mma_dq.get_thread_slice(0);
  auto s_rows = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaRows{});  // (rows, D)
  auto s_rows_t = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaRowsT{});  // (D, rows)
  auto s_stages = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaStages{});
  auto s_stages_t = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaStagesT{});
  auto s_kt_blocks = local_tile(s_rows_t, Shape<Int<kCols>, Int<kTile>>{}, make_coord(_, 0));
  auto s_ds = make_tensor(make_smem_ptr(buf.base), typename Traits::GmmaPairT{});  // (q, keys)

  auto row_major = [](int row, int d) { return int64_t(hw_sw128(row, d, kTile)); };
  EXPECT_EQ(check_descriptors(thr_sdp.partition_fragment_A(s_rows), kTile, false, row_major), 0)
      << "K (or V) as A of S^T (dP^T)";
  auto q_frag = thr_sdp.partition_fragment_B(s_stages);  // (MMA, MMA_N, MMA_K, stage)
  auto qt_frag = thr_kv.partition_fragment_B(s_stages_t);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(check_descriptors(q_frag(_, _, _, s), kTile, false,
                                [&](int q, int d) { return s * kStage + row_major(q, d); }),
              0)
        << "Q (or dO) as B of S^T (dP^T), stage " << s;
    EXPECT_EQ(check_descriptors(qt_frag(_, _, _, s), kD, true,
                                [&](int d, int q) { return s * kStage + row_major(q, d); }),
              0)
        << "Q^T (or dO^T) as B of dK (dV), stage " << s;
  }
  EXPECT_EQ(check_descriptors(thr_dq.partition_fragment_A(s_ds), kTile, true,
                              [&](int q, int key) { return row_major(key, q); }),
            0)
      << "dS (stored as dS^T) as A of dQ";
  auto kt_frag = thr_dq.partition_fragment_B(s_kt_blocks);  // (MMA, MMA_N, MMA_K, block)
  for (int part = 0; part < kD / kCols; ++part)
    EXPECT_EQ(check_descriptors(kt_frag(_, _, _, part), kCols, true,
                                [&](int n, int key) { return row_major(key, part * kCols + n); }),
              0)
        << "K^T as B of dQ, column block " << part;
}

// Register mappings, per thread of the warpgroup: P^T / dS^T (the S^T / dP^T accumulators, 16-bit)
// viewed by gmma_acc_as_a_operand must hold the (key, query) elements the RS wgmma of dV / dK
// expects in each A register; the dS^T pair stores take two adjacent queries of one key, the dQ
// reductions four adjacent positions of one query row of ws_dq (ws_dq_gmma_col, a bijection of
// each 64-column block); every dQ element is added once.
template <class Element>
void check_register_mappings() {
  using Traits = fna::cuda::fused::sm90::BwdTraitsSm90<Element, 128>;
  constexpr int kTile = Traits::kTile, kCols = Traits::kDqCols;
  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmaKV mma_kv;
  typename Traits::TiledMmaDq mma_dq;
  const typename Traits::SmemLayoutPair ds_layout{};
  auto acc = partition_fragment_C(mma_sdp, Shape<Int<kTile>, Int<kTile>>{});  // registers
  const auto a_view = fna::cuda::fused::gmma_acc_as_a_operand(acc.layout());
  std::vector<int> element_of(size(acc), -1);  // register -> accumulator element index
  for (int i = 0; i < size(acc); ++i) element_of[acc.layout()(i)] = i;
  int bad_a = 0, bad_pairs = 0, bad_dq = 0;
  std::vector<int> dq_hits(kTile * kCols, 0);
  auto dq_coords = [&](int t) {  // (query, column) of each dQ element of thread t: (rows, cols)
    auto c_dq = mma_dq.get_thread_slice(t).partition_C(
        make_identity_tensor(Shape<Int<kTile>, Int<kCols>>{}));
    return make_tensor(c_dq.data(), fna::cuda::fused::gmma_acc_rowcol(c_dq.layout()));
  };
  for (int t = 0; t < 128; ++t) {
    auto c_s = mma_sdp.get_thread_slice(t).partition_C(
        make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));  // (key, query) per element
    auto c_a = mma_kv.get_thread_slice(t).partition_A(
        make_identity_tensor(Shape<Int<kTile>, Int<kTile>>{}));  // (MMA, MMA_M, MMA_K)
    bad_a += size(a_view) != size(c_a) || size<2>(a_view) != size<2>(c_a);
    for (int v = 0; v < size<0>(c_a); ++v)
      for (int kb = 0; kb < size<2>(c_a); ++kb)
        bad_a += c_s(element_of[a_view(v, 0, kb)]) != c_a(v, 0, kb);
    for (int i = 0; i < size(c_s); i += 2) {
      const int key = get<0>(c_s(i)), q = get<1>(c_s(i));
      bad_pairs += get<0>(c_s(i + 1)) != key || get<1>(c_s(i + 1)) != q + 1 || q % 2 != 0 ||
                   int(ds_layout(key, q + 1)) != int(ds_layout(key, q)) + 1;
    }
    // dQ's 16-byte reductions into ws_dq rows in ws_dq_gmma_col order, at the kernel's positions:
    // the vector of row r and columns c .. c + 3 at pos0 + (col(r, c) - col(r, 0)); and the quad's
    // four lanes (same rows) side by side, 64 contiguous bytes per reduction instruction.
    const auto own = dq_coords(t), first = dq_coords(t & ~3);
    const int pos0 = fna::cuda::fused::ws_dq_gmma_col(get<1>(own(0, 0)));
    for (int r = 0; r < size<0>(own); ++r) {
      const int q = get<0>(own(r, 0));
      bad_dq += get<0>(first(r, 0)) != q;
      for (int c = 0; c < size<1>(own); c += 4) {
        const int pos = pos0 + (get<1>(own(r, c)) - get<1>(own(r, 0)));
        const int first_pos = fna::cuda::fused::ws_dq_gmma_col(get<1>(first(r, c)));
        bad_dq += pos % 4 != 0 || pos != first_pos + 4 * (t % 4);
        for (int e = 0; e < 4; ++e) {
          bad_dq += get<0>(own(r, c + e)) != q ||
                    fna::cuda::fused::ws_dq_gmma_col(get<1>(own(r, c + e))) != pos + e;
          ++dq_hits[q * kCols + pos + e];
        }
      }
    }
  }
  for (int h : dq_hits) bad_dq += h != 1;
  EXPECT_EQ(bad_a, 0) << "P^T / dS^T registers are not the RS wgmma's A operand";
  EXPECT_EQ(bad_pairs, 0) << "dS^T pair stores";
  EXPECT_EQ(bad_dq, 0) << "dQ atomics";
}

TEST(FusedBackwardSm90Layout, WsDqGmmaColIsABlockBijection) {
  std::vector<int> hits(256, 0);
  for (int d = 0; d < 256; ++d) {
    const int pos = fna::cuda::fused::ws_dq_gmma_col(d);
    EXPECT_EQ(pos / 64, d / 64) << d;
    ++hits[pos];
  }
  for (int h : hits) EXPECT_EQ(h, 1);
}
TEST(FusedBackwardSm90Layout, Bf16) { check_views<cutlass::bfloat16_t>(); }
TEST(FusedBackwardSm90Layout, Fp16) { check_views<cutlass::half_t>(); }
TEST(FusedBackwardSm90Layout, DescriptorsBf16) { check_gmma_descriptors<cutlass::bfloat16_t>(); }
TEST(FusedBackwardSm90Layout, DescriptorsFp16) { check_gmma_descriptors<cutlass::half_t>(); }
TEST(FusedBackwardSm90Layout, RegisterMappingsBf16) {
  check_register_mappings<cutlass::bfloat16_t>();
}
TEST(FusedBackwardSm90Layout, RegisterMappingsFp16) { check_register_mappings<cutlass::half_t>(); }

}  // namespace
