// The fused CPU backend's data plan, shared by the driver (cpu_backend.cpp) and the per-ISA kernel
// translation units (fused_kernels_*.cpp).
//
// The idea. Every axis is split into its dilation groups and worked on in group coordinates
// (DESIGN.md section 10). Along the *last* axis, eight consecutive queries form one vector of
// lanes; they share their window on every other axis, so they attend the same set of key *rows* (a
// row = the keys of one coordinate tuple of the non-last axes). Inside a row, lane l attends keys
// [lo_l, hi_l) of the last axis. In the interior of a stride-1 axis lo_l = lo_0 + l, so slot o of
// lane l is key lo_0 + o + l: one unaligned vector load of a transposed key row serves all eight
// lanes and nothing outside the window is computed ("shifted" rows). Elsewhere (borders, stride,
// causal starts) the row's union of lane ranges is computed with broadcast keys and a lane mask.
//
// To make both kinds of loads contiguous, inputs are first copied into fp32 *planes*: per
// (batch, head), per dilation group and line, a [dim][ldn] block whose n axis is the last spatial
// axis in group coordinates (zero-padded to ldn so shifted loads never leave the plane). The
// driver converts between planes and the user's strided tensors in any storage dtype; the forward
// only needs K and V planes (queries and outputs move per lane vector through driver callbacks).
// The backward uses the same machinery twice: queries as lanes for dQ, and keys as lanes (with
// the inverse neighborhood: the queries that attend a key) for dK / dV.
//
// Everything here is plain data: the kernel translation units are compiled with different -m
// flags, so they must not share inline functions with the rest of the library (the linker would
// keep one copy, possibly with instructions the CPU lacks). The kernels live in an anonymous
// namespace; each translation unit exports only its KernelTable.
#pragma once

#include <cstdint>

namespace fna::cpu::fused {

inline constexpr int kLanes = 8;  // fp32 lanes of one AVX register: the queries of one vector
// Zero padding after each plane line: a shifted load of the last valid key reads 7 more floats.
inline constexpr int kPlanePad = 8;
// Vectors (of kLanes queries along the last axis) per work unit: 32 queries, small enough for
// dynamic scheduling to balance two to a few dozen threads on a 64-wide grid.
inline constexpr int kUnitVectors = 4;

// Geometry in the kernels' terms. Axes beyond `rank` have extent 1, window 1.
struct KernelGeometry {
  int rank;
  int64_t dil[3];          // dilation per axis
  int64_t lmax[3];         // ceil(extent / dilation): the length of group 0, the longest
  int64_t groups;          // prod(dil)
  int64_t lines;           // lines per group in a plane: prod(lmax of the non-last axes)
  int64_t ldn;             // floats between consecutive dims of a plane line (>= lmax[last] + pad)
  const int64_t* glen[3];  // [axis][g]: length of dilation group g
  // [axis][g * lmax + i]: the window [lo, hi) of index i (queries -> keys), and the inverse
  // neighborhood [ilo, ihi) of key index j (the queries that attend it), in group coordinates.
  const int32_t* lo[3];
  const int32_t* hi[3];
  const int32_t* ilo[3];
  const int32_t* ihi[3];
};

// Lines per unit: the backward's units take two, the forward's KernelTable::forward_lines (three
// with AVX2: each key or value load then feeds three FMAs in the rows all three lines attend, 11 of
// 15 at a 13-row window; the generic build's registers hold two).
inline constexpr int kMaxUnitLines = 3;

// One work unit: up to kMaxUnitLines lines (adjacent along the innermost non-last axis, so they
// share most of their rows) x up to kUnitVectors lane vectors along the last axis.
struct Unit {
  int64_t head;                      // query head inside the GQA group (forward, dQ); dK/dV all
  int64_t group;                     // dilation-group index
  int64_t gc[3];                     // dilation-group coordinate per axis
  int64_t line_i[kMaxUnitLines][3];  // group coordinates of each line on the non-last axes
  int64_t line[kMaxUnitLines];       // line index inside the group's plane block
  int nlines;                        // 1 .. kMaxUnitLines (forward), 1 or 2 (backward)
  int64_t n_begin;                   // first lane index on the last axis (a multiple of kLanes)
  int64_t n_end;                     // one past the last lane index (<= group length)
};

// Planes of one (batch, kv head). Per-head planes are arrays indexed by the head inside the group.
// Plane offset of (group, line, dim d, n) = ((group * lines + line) * dim + d) * ldn + n.
struct Planes {
  int64_t head_dim, head_dim_v;
  float* k;  // [dim D]
  float* v;  // [dim Dv]
  // The forward reads K / V row r (group * lines + line) at plane row r & row_mask: all ones for
  // whole planes, ring size - 1 when the driver streams rows through a per-thread ring.
  int64_t row_mask = -1;
  float* const* q;      // per head [D], pre-multiplied by the softmax scale (backward)
  float* const* lse;    // per head [1] (backward input)
  float* const* dout;   // per head [Dv] (backward)
  float* const* delta;  // per head [1]: rowsum(dO * O) (backward)
  float* const* dq;     // per head [D] (backward output, already multiplied by scale)
  float* dk;            // [D] (backward output)
  float* dv;            // [Dv] (backward output)
  // Additional KV tokens: one line [dim][ld_add] each; nadd may be 0.
  int64_t nadd, ld_add;
  float* ak;
  float* av;
  float* dak;
  float* dav;
  float scale;  // softmax scale (dQ = scale * dS K; Q planes already carry it)
  // Forward only: queries are gathered from, and outputs written to, the user's tensors per lane
  // vector instead of through planes (two fewer full passes over memory). `io` is the driver's.
  const void* io;
  // dst [D][kLanes] = scale * q of lanes n0.. of (group, line), query head `head` of the group;
  // lanes >= valid are zero.
  void (*load_q)(const void* io, int64_t head, int64_t group, int64_t line, int64_t n0, int valid,
                 float* dst);
  // out of lanes n0..n0 + valid - 1 from o [Dv][kLanes] (normalized), lse from lse[kLanes].
  void (*store_out)(const void* io, int64_t head, int64_t group, int64_t line, int64_t n0,
                    int valid, const float* o, const float* lse);
  // Prefetches the query and output rows that load_q / store_out of lanes n0.. will touch. The
  // kernels call it for the next vector between the current one's Q.K^T and P.V: issued a whole
  // vector ahead, the lines were evicted again by the K/V streams (L2 is 512 KiB) before use.
  void (*prefetch_io)(const void* io, int64_t head, int64_t group, int64_t line, int64_t n0,
                      int valid);
};

// Per-thread scratch, sized by the driver with scratch_floats().
struct Scratch {
  float* buf;
  void* pieces;  // kMaxPieces Piece records (opaque to the driver)
};

// Slots (of kLanes floats) per line buffered between the score and the P.V step. 192 slots hold
// a 13x13 window in one chunk (one online-softmax rescale); S and dP of two lines take 24 KiB.
inline constexpr int kChunkSlots = 192;
// Pieces of one chunk. Each holds at least one slot, so kChunkSlots would do; the slack stays from
// 05b0d2e, whose heap corruption came from a test build of an uncommitted two-vector experiment
// (its kernels used a second pieces buffer the driver of that moment did not allocate). ASan on
// kMaxPieces = kChunkSlots with buffer recycling off is clean on the tests/cpp sweeps.
inline constexpr int kMaxPieces = 2 * kChunkSlots + 8;
inline constexpr int64_t kPieceBytes = 32;

// Four chunks of scores (forward: S of three lines; backward: S and dP of two lines), then six
// [dim][kLanes] accumulators (forward: O and the gathered Q of three lines; dQ: two lines;
// dK/dV: dK and dV of two lines).
inline int64_t scratch_floats(int64_t head_dim, int64_t head_dim_v) {
  const int64_t dmax = head_dim > head_dim_v ? head_dim : head_dim_v;
  return 4 * kChunkSlots * kLanes + 6 * dmax * kLanes;
}

struct KernelTable {
  const char* isa;
  int forward_lines;  // lines per forward unit (<= kMaxUnitLines)
  void (*forward)(const KernelGeometry&, const Planes&, const Unit&, Scratch&);
  void (*backward_dq)(const KernelGeometry&, const Planes&, const Unit&, Scratch&);
  void (*backward_dkv)(const KernelGeometry&, const Planes&, const Unit&, int64_t heads_per_group,
                       Scratch&);
  // Keys n_begin..n_end of the additional tokens against every query of every head in the group.
  void (*backward_dkv_additional)(const KernelGeometry&, const Planes&, int64_t n_begin,
                                  int64_t n_end, int64_t heads_per_group, Scratch&);
};

const KernelTable& kernels_generic();
#if defined(__x86_64__) || defined(__i386__)
const KernelTable& kernels_avx2();
#endif

}  // namespace fna::cpu::fused
