// Register-blocked fp32 micro-kernels of the fused CPU backend, written with GCC vector extensions
// (eight fp32 lanes). Included only by fused_kernels_impl.h, inside an ISA-specific namespace and
// an anonymous namespace, so every function here has internal linkage per translation unit.
//
// Two products cover the forward and both backward passes (lanes = the eight query or key lanes):
//   dot: out[o][l] = sum_d a[d][l] * B(d, o, l)       (scores: Q.K^T, dO.V^T, K.Q^T, V.dO^T)
//   acc: c[d][l]  += sum_o p[o][l] * B(d, o, l)       (P.V, dS.K, P^T.dO, dS^T.Q)
// with B(d, o, l) = b[d * ldb + o + l] for shifted rows (one unaligned load serves all lanes) and
// b[d * ldb + o] broadcast for the other rows.

// Registers per ISA: 16 ymm with AVX2 (one v8f each); the generic build splits a v8f in two xmm.
#if defined(FNA_FUSED_WIDE)
// dot keeps R x kDotBlock accumulators + R lane vectors + 1 key vector live: 12 + 3 + 1 <= 16.
template <int R>
inline constexpr int kDotBlock = R == 1   ? 12
                                 : R == 2 ? 6
                                          : 4;
template <int R>
inline constexpr int kAccBlock = R == 1   ? 12
                                 : R == 2 ? 6
                                          : 4;
#else
template <int R>
inline constexpr int kDotBlock = R == 1 ? 6 : 3;
template <int R>
inline constexpr int kAccBlock = R == 1 ? 6 : 3;
#endif
// Most lines one register pass takes: three would not fit the generic build's 16 xmm registers
// (a v8f takes two), so there the callers split three lines into two passes.
#if defined(FNA_FUSED_WIDE)
inline constexpr int kMaxPassLines = 3;
#else
inline constexpr int kMaxPassLines = 2;
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

constexpr float kNegInf = -__builtin_inff();
constexpr float kLog2e = 1.44269504088896341f;

inline v8f vload(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof v); }
inline v8f vsplat(float x) { return v8f{x, x, x, x, x, x, x, x}; }
inline v8i vsplati(int32_t x) { return v8i{x, x, x, x, x, x, x, x}; }
// a > b ? a : b, which is vmaxps's definition (b where unordered); GCC compiled the vector
// conditional to a compare and a blend (two operations in the forward's exp and max loops).
inline v8f vmax(v8f a, v8f b) {
#if defined(__AVX__)
  return __builtin_ia32_maxps256(a, b);
#else
  return a > b ? a : b;
#endif
}

// Pins a loaded key/value vector in a register. Without it GCC folds the load into every FMA
// that use it (R >= 2), multiplying the loads of the kernels' load-bound inner loops.
inline void keep_in_register([[maybe_unused]] v8f& v) {
#if defined(FNA_FUSED_WIDE)
  __asm__("" : "+x"(v));
#endif
}

// e^x per lane (Cephes expf polynomial, ~1 ulp); exactly 0 below -87 (covers -inf).
inline v8f vexp(v8f x) {
  const v8f lo = vsplat(-87.0f), hi = vsplat(88.0f);
  v8f xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const v8f magic = vsplat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const v8f n = (xc * 1.44269504088896341f + magic) - magic;
  v8f r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  v8f y = vsplat(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f two_n;
  __builtin_memcpy(&two_n, &bits, sizeof two_n);
  const v8f res = y * two_n;
  return x < lo ? vsplat(0.0f) : res;
}

// 2^x per lane for x <= 0 or -inf (the forward's logits minus their running max, times log2(e)):
// n = round(x), a degree-5 polynomial of 2^f for f = x - n in [-1/2, 1/2] (fitted for relative
// error, constant term exactly 1 so that 2^0 = 1; <= 1.9e-7 evaluated in fp32), n added to the
// exponent bits. x is clamped to -127 first, where f = 0, the polynomial is exactly 1 and adding
// -127 to the exponent gives exactly +0 (so -inf, a masked slot, gives 0 without a select); for x
// in (-127, -126) the result is a subnormal below 2^-125 instead of the true value, which no sum
// of at least 1 can notice. About 11 vector operations against vexp's 22.
inline v8f vexp2_nonpos(v8f x) {
  const v8f xc = vmax(x, vsplat(-127.0f));
  // t = 1.5 * 2^23 + xc rounds xc to the integer n, which then sits in t's low mantissa bits.
  const v8f magic = vsplat(12582912.0f);
  const v8f t = xc + magic;
  const v8f f = xc - (t - magic);
  v8f y = vsplat(1.3264726149e-3f);
  y = y * f + 9.6715129912e-3f;
  y = y * f + 5.5507335812e-2f;
  y = y * f + 2.4022242427e-1f;
  y = y * f + 6.9314700365e-1f;
  y = y * f + 1.0f;
  v8i tbits, bits;
  __builtin_memcpy(&tbits, &t, sizeof tbits);
  __builtin_memcpy(&bits, &y, sizeof bits);
  bits += tbits << 23;  // n << 23: the mantissa's 2^22 offset shifts out of the 32 bits
  v8f res;
  __builtin_memcpy(&res, &bits, sizeof res);
  return res;
}

// ln(x) per lane for normal x > 0 (Cephes logf polynomial, ~1 ulp); the forward's lse = m + ln(l)
// with l >= 1. One libm logf per lane cost ~2% of a 13x13 forward.
inline v8f vlog(v8f x) {
  v8i bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  v8i e = ((bits >> 23) & 0xff) - 126;
  const v8i mbits = (bits & 0x007fffff) | 0x3f000000;  // mantissa f in [0.5, 1)
  v8f f;
  __builtin_memcpy(&f, &mbits, sizeof f);
  const v8i small = f < 0.707106781186547524f;  // -1 where f < sqrt(1/2): use 2f, e - 1
  e = e + small;
  f = (small ? f + f : f) - 1.0f;
  const v8f ef = __builtin_convertvector(e, v8f);
  const v8f z = f * f;
  v8f y = vsplat(7.0376836292e-2f);
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  return f + y + ef * 0.693359375f;
}

// ---- dot ---------------------------------------------------------------------------------------
// dot prefetches the key rows this many dims ahead: each dim of a row is a new cache line (rows are
// [dim][ldn]), and the first pass over a row found most of them outside L1 (half of dot_block's
// samples sat on the first FMA after the key load).
inline constexpr int kDotPrefetchDims = 16;

// Prefetches p + floats; the address is formed as an integer since it may lie past the buffer
// (prefetches never fault).
inline void prefetch_at(const float* p, int64_t floats) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) +
                                                   static_cast<uintptr_t>(floats) * sizeof(float)));
}

// dot_block prefetches, per dim, the key-row floats [0, span) kDotPrefetchDims dims ahead of its
// loads with PF prefetches: at 16 * i for i < PF - 1 and at span - 1 (PF = 0: none). A 16-float
// cache line inside [0, span) always holds one of them when span <= 16 * (PF - 1).
template <bool Shift, int R, int N, int PF>
inline void dot_block(const float* const* a, int64_t lda, const float* b, int64_t ldb, int64_t dim,
                      float* const* out, v8f* mx, int64_t span) {
  const float* ar[R];
  for (int r = 0; r < R; ++r) ar[r] = a[r];
  v8f acc[R][N];
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int o = 0; o < N; ++o) acc[r][o] = v8f{};
  for (int64_t d = 0; d < dim; ++d) {
    v8f av[R];
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r) av[r] = vload(ar[r] + d * lda);
    const float* bd = b + d * ldb;
    if constexpr (PF > 0) {
#pragma GCC unroll 4
      for (int i = 0; i + 1 < PF; ++i) prefetch_at(bd, kDotPrefetchDims * ldb + 16 * i);
      prefetch_at(bd, kDotPrefetchDims * ldb + span - 1);
    }
#pragma GCC unroll 16
    for (int o = 0; o < N; ++o) {
      v8f bv = Shift ? vload(bd + o) : vsplat(bd[o]);
      if constexpr (R > 1) keep_in_register(bv);
#pragma GCC unroll 3
      for (int r = 0; r < R; ++r) acc[r][o] += av[r] * bv;
    }
  }
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int o = 0; o < N; ++o) vstore(out[r] + o * 8, acc[r][o]);
  if (mx)
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int o = 0; o < N; ++o) mx[r] = vmax(mx[r], acc[r][o]);
}

template <bool Shift, int R, int N, int PF>
inline void dot_n(int n, const float* const* a, int64_t lda, const float* b, int64_t ldb,
                  int64_t dim, float* const* out, v8f* mx, int64_t span) {
  if constexpr (N >= 1) {
    if (n == N) return dot_block<Shift, R, N, PF>(a, lda, b, ldb, dim, out, mx, span);
    dot_n<Shift, R, N - 1, PF>(n, a, lda, b, ldb, dim, out, mx, span);
  }
}

// out[r] + o * 8 for o in [0, cnt): R lane matrices a[r] ([dim][lda], eight lanes at a[r]) against
// cnt key slots of one row (b = the row at its first slot, [dim][ldb]). With mx (R vectors), also
// the running per-lane max of the products (the forward's softmax then skips a pass over S).
template <bool Shift, int R>
void dot(const float* const* a, int64_t lda, const float* b, int64_t ldb, int64_t dim, int64_t cnt,
         float* const* out, v8f* mx) {
  constexpr int kB = kDotBlock<R>;
  int64_t blocks = (cnt + kB - 1) / kB;
  // The floats of the row the loads touch. Up to 48 (a 13x13 window's rows: 20), the first block
  // prefetches them all and the others none; the loads of one block per dim feed 2N FMAs, and a
  // prefetch per block and dim took load slots the kernel is short of.
  const int64_t span = Shift ? cnt + kLanes - 1 : cnt;
  const bool whole = span <= 48;
  // Even block sizes (13 slots -> 5, 4, 4) keep more accumulators live than kB, kB, 1 would.
  for (int64_t o = 0; o < cnt; --blocks) {
    const int n = static_cast<int>((cnt - o + blocks - 1) / blocks);
    float* oo[R];
    for (int r = 0; r < R; ++r) oo[r] = out[r] + o * 8;
    if (!whole)
      dot_n<Shift, R, kB, 2>(n, a, lda, b + o, ldb, dim, oo, mx, Shift ? n + kLanes - 1 : n);
    else if (o > 0)
      dot_n<Shift, R, kB, 0>(n, a, lda, b + o, ldb, dim, oo, mx, 0);
    else if (span <= 32)
      dot_n<Shift, R, kB, 3>(n, a, lda, b, ldb, dim, oo, mx, span);
    else
      dot_n<Shift, R, kB, 4>(n, a, lda, b, ldb, dim, oo, mx, span);
    o += n;
  }
}

// ---- acc ---------------------------------------------------------------------------------------
// One run of slots of one row: b = row at its first slot (dim 0), slots [slot, slot + cnt).
struct Seg {
  const float* b;
  int64_t slot;
  int64_t cnt;
};

template <bool Shift, int R, int N>
inline void acc_block(const Seg* segs, int nseg, const float* const* p, int64_t ldb, int64_t d0,
                      float* const* c) {
  v8f acc[R][N];
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < N; ++j) acc[r][j] = vload(c[r] + (d0 + j) * 8);
  for (int s = 0; s < nseg; ++s) {
    const float* b = segs[s].b + d0 * ldb;
    if (s + 1 < nseg) {
      // The next run's rows: ~2 lines per row, otherwise fetched on demand from L2.
      const float* nb = segs[s + 1].b + d0 * ldb;
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        __builtin_prefetch(nb + j * ldb);
        __builtin_prefetch(nb + j * ldb + 16);
      }
    }
    const float* pr[R];
    for (int r = 0; r < R; ++r) pr[r] = p[r] + segs[s].slot * 8;
    const int64_t cnt = segs[s].cnt;
    for (int64_t o = 0; o < cnt; ++o) {
      v8f pv[R];
#pragma GCC unroll 3
      for (int r = 0; r < R; ++r) pv[r] = vload(pr[r] + o * 8);
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        v8f bv = Shift ? vload(b + j * ldb + o) : vsplat(b[j * ldb + o]);
        if constexpr (R > 1) keep_in_register(bv);
#pragma GCC unroll 3
        for (int r = 0; r < R; ++r) acc[r][j] += pv[r] * bv;
      }
    }
  }
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < N; ++j) vstore(c[r] + (d0 + j) * 8, acc[r][j]);
}

template <bool Shift, int R, int N>
inline void acc_n(int n, const Seg* segs, int nseg, const float* const* p, int64_t ldb, int64_t d0,
                  float* const* c) {
  if constexpr (N >= 1) {
    if (n == N) return acc_block<Shift, R, N>(segs, nseg, p, ldb, d0, c);
    acc_n<Shift, R, N - 1>(n, segs, nseg, p, ldb, d0, c);
  }
}

// c[r][d * 8 + l] += sum over segs, slots o of p[r][(slot + o) * 8 + l] * B(d, o, l), d < dim.
template <bool Shift, int R>
void acc(const Seg* segs, int nseg, const float* const* p, int64_t ldb, int64_t dim,
         float* const* c) {
  if (nseg == 0) return;
  constexpr int kB = kAccBlock<R>;
  int64_t blocks = (dim + kB - 1) / kB;
  for (int64_t d0 = 0; d0 < dim; --blocks) {
    const int n = static_cast<int>((dim - d0 + blocks - 1) / blocks);
    acc_n<Shift, R, kB>(n, segs, nseg, p, ldb, d0, c);
    d0 += n;
  }
}

// Slots whose key position (pos0 + o) lies outside a lane's [lo, hi) become -inf; with mx, the
// running per-lane max of the masked scores.
inline void apply_mask(float* s, int64_t cnt, int64_t pos0, v8i lo, v8i hi, v8f* mx) {
  const v8f neg = vsplat(kNegInf);
  v8f m = mx ? *mx : neg;
  for (int64_t o = 0; o < cnt; ++o) {
    const v8i pos = vsplati(static_cast<int32_t>(pos0 + o));
    const v8i in = (pos >= lo) & (pos < hi);
    const v8f x = in ? vload(s + o * 8) : neg;
    vstore(s + o * 8, x);
    m = vmax(m, x);
  }
  if (mx) *mx = m;
}
