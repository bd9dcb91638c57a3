// The vector type and register-tile shape for the instruction set this translation unit is compiled for.
// Each addon binary (avx512, avx2, generic) compiles all sources with its own flags; nothing ISA-specific is
// shared between them, so no function compiled for one instruction set can be linked into another.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sdl {

#if defined(__AVX512F__)
constexpr int VW = 16;  // floats per vector
constexpr int MR = 14;  // rows of the GEMM register tile (14 x 2 vectors = 28 of 32 zmm accumulators)
constexpr int NV = 2;   // vectors per tile row
#define SDL_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int VW = 8;
constexpr int MR = 6;
constexpr int NV = 2;
#define SDL_ISA "avx2"
#else
constexpr int VW = 4;
constexpr int MR = 6;
constexpr int NV = 2;
#define SDL_ISA "generic"
#endif
constexpr int NR = VW * NV;  // columns of the GEMM register tile

typedef float vf __attribute__((vector_size(VW * 4), aligned(4), may_alias));

static inline vf vload(const float* p) { return *reinterpret_cast<const vf*>(p); }
static inline void vstore(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
template <size_t... I>
static inline vf vsplatImpl(float x, std::index_sequence<I...>) { return vf{((void)I, x)...}; }
static inline vf vsplat(float x) { return vsplatImpl(x, std::make_index_sequence<VW>()); }
static inline float vsum(vf v) {
  float s = 0;
  for (int i = 0; i < VW; i++) s += v[i];
  return s;
}
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
typedef int32_t vi __attribute__((vector_size(VW * 4)));  // a comparison's lanes: all ones where true

// Whether any lane of a comparison is true: one instruction where the build has it (GCC otherwise reads the lanes out
// one at a time).
static inline bool vany(vi g) {
#if defined(__AVX512F__)
  return _mm512_test_epi32_mask((__m512i)g, (__m512i)g) != 0;
#elif defined(__AVX2__)
  return !_mm256_testz_si256((__m256i)g, (__m256i)g);
#else
  int32_t any = 0;
  for (int q = 0; q < VW; q++) any |= g[q];
  return any != 0;
#endif
}

// Whether any lane of v is above t's (NaN lanes are not).
static inline bool anyAbove(vf v, vf t) { return vany(v > t); }

// Whether any lane of a, b, c or d is above t's: each compared (a maximum first would let a NaN lane hide a larger one).
static inline bool anyAbove4(vf a, vf b, vf c, vf d, vf t) { return vany((a > t) | (b > t) | (c > t) | (d > t)); }

// y[0..n) += a * x[0..n)
static inline void axpy(int n, float a, const float* __restrict x, float* __restrict y) {
  vf av = vsplat(a);
  int i = 0;
  for (; i + VW <= n; i += VW) vstore(y + i, vload(y + i) + av * vload(x + i));
  for (; i < n; i++) y[i] += a * x[i];
}

// <x, y> over n floats, with four independent accumulators.
static inline float dot(int n, const float* __restrict x, const float* __restrict y) {
  vf s0 = vsplat(0), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 4 * VW <= n; i += 4 * VW) {
    s0 += vload(x + i) * vload(y + i);
    s1 += vload(x + i + VW) * vload(y + i + VW);
    s2 += vload(x + i + 2 * VW) * vload(y + i + 2 * VW);
    s3 += vload(x + i + 3 * VW) * vload(y + i + 3 * VW);
  }
  for (; i + VW <= n; i += VW) s0 += vload(x + i) * vload(y + i);
  float s = vsum((s0 + s1) + (s2 + s3));
  for (; i < n; i++) s += x[i] * y[i];
  return s;
}

// The reconstruction error of one row: e = (yh + bias) - y (bias: b_dec for a product without it; null: none),
// stored as g = e * scale (and as e in E when given); g may be yh (in place). Returns the sum of e^2 in double, summed
// in VW double lanes (a sequential double sum was one dependent add per element: ~1.4% of a TopK step at 512 x
// 4,096); only the reported loss's last bits depend on that order.
static inline double residualRow(int n, const float* yh, const float* bias, const float* y, float scale, float* g, float* E) {
  typedef float hf __attribute__((vector_size(VW * 2), may_alias));
  typedef double vd __attribute__((vector_size(VW * 4), may_alias));  // VW / 2 doubles
  vd s0 = {}, s1 = {};
  const vf sc = vsplat(scale);
  int i = 0;
  for (; i + VW <= n; i += VW) {
    const vf e = (bias ? vload(yh + i) + vload(bias + i) : vload(yh + i)) - vload(y + i);
    if (E) vstore(E + i, e);
    vstore(g + i, e * sc);
    hf lo, hi;
    std::memcpy(&lo, &e, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&e) + sizeof lo, sizeof hi);
    const vd dl = __builtin_convertvector(lo, vd), dh = __builtin_convertvector(hi, vd);
    s0 += dl * dl;
    s1 += dh * dh;
  }
  s0 += s1;
  double s = 0;
  for (int q = 0; q < VW / 2; q++) s += s0[q];
  for (; i < n; i++) {
    const float e = (bias ? yh[i] + bias[i] : yh[i]) - y[i];
    if (E) E[i] = e;
    g[i] = e * scale;
    s += (double)e * e;
  }
  return s;
}

// out[0..n) = init[0..n) (0 without it) + sum over e < cnt of coef[e] (src[e] - center)[0..n) (center 0 without it),
// each element summed in e order with the same roundings as repeated axpy of the differences, but with the partial
// sums in registers (a block of columns at a time) instead of loaded and stored once per source row. `center` lets a
// caller read rows x - c from x and c without a stored copy of the differences: each is rounded as the copy's was.
constexpr int kAccumulateAhead = 8;
constexpr int kAccumulateVectors = VW == 16 ? 16 : 8;  // accumulators: half the register file
constexpr int kAccumulateBlock = kAccumulateVectors * VW;  // columns summed in registers at a time
// Dots: also dots[e] = dot(n, src[e], w) for every source row (no center), made in the same pass, each row read once:
// dot's four vector sums carried from one block of columns to the next in `partial` (cnt x 4 x VW floats) and added
// as dot adds them, so each is dot's to the bit. Only for n whole blocks (accumulateDotsFits).
template <bool Centered, bool Dots = false>
static inline void accumulateRows(int n, int cnt, const float* coef, const float* const* src, const float* init, const float* center, float* out,
                                  const float* w = nullptr, float* dots = nullptr, float* partial = nullptr) {
  constexpr int U = kAccumulateVectors;
  static_assert(!Dots || (U % 4 == 0 && !Centered), "a block of columns holds whole steps of dot's four sums");
  auto row = [&](const float* x, int i) { return Centered ? vload(x + i) - vload(center + i) : vload(x + i); };
  if (Dots) std::memset(partial, 0, sizeof(float) * 4 * VW * (size_t)cnt);
  int i = 0;
  for (; i + U * VW <= n; i += U * VW) {
    vf acc[U];
    for (int u = 0; u < U; u++) acc[u] = init ? vload(init + i + u * VW) : vsplat(0.f);
    for (int e = 0; e < cnt; e++) {
      const vf av = vsplat(coef[e]);
      const float* x = src[e];
      // The source rows lie scattered (a latent's entries' batch rows, a row's decoder rows): this block of the row
      // kAccumulateAhead entries on is fetched now, a cache line at a time.
      if (e + kAccumulateAhead < cnt)
        for (int u = 0; u < U * VW; u += 64 / (int)sizeof(float)) __builtin_prefetch(src[e + kAccumulateAhead] + i + u, 0, 3);
      if constexpr (Dots) {
        float* pe = partial + (long)e * 4 * VW;
        vf s[4] = {vload(pe), vload(pe + VW), vload(pe + 2 * VW), vload(pe + 3 * VW)};
#pragma GCC unroll 16
        for (int u = 0; u < U; u++) {
          const vf xv = vload(x + i + u * VW);
          acc[u] = acc[u] + av * xv;
          s[u % 4] += xv * vload(w + i + u * VW);
        }
        for (int k = 0; k < 4; k++) vstore(pe + k * VW, s[k]);
      } else {
        for (int u = 0; u < U; u++) acc[u] = acc[u] + av * row(x, i + u * VW);
      }
    }
    for (int u = 0; u < U; u++) vstore(out + i + u * VW, acc[u]);
  }
  if constexpr (Dots) {
    for (int e = 0; e < cnt; e++) {
      const float* pe = partial + (long)e * 4 * VW;
      dots[e] = vsum((vload(pe) + vload(pe + VW)) + (vload(pe + 2 * VW) + vload(pe + 3 * VW)));
    }
    return;
  }
  for (; i + VW <= n; i += VW) {
    vf acc = init ? vload(init + i) : vsplat(0.f);
    for (int e = 0; e < cnt; e++) acc = acc + vsplat(coef[e]) * row(src[e], i);
    vstore(out + i, acc);
  }
  for (; i < n; i++) {
    float a = init ? init[i] : 0.f;
    for (int e = 0; e < cnt; e++) a += coef[e] * (Centered ? src[e][i] - center[i] : src[e][i]);
    out[i] = a;
  }
}
static inline void accumulate(int n, int cnt, const float* coef, const float* const* src, const float* init, float* out, const float* center = nullptr) {
  if (center) accumulateRows<true>(n, cnt, coef, src, init, center, out);
  else accumulateRows<false>(n, cnt, coef, src, init, nullptr, out);
}
static inline bool accumulateDotsFits(int n) { return n > 0 && n % kAccumulateBlock == 0; }
// accumulate (no center) and dots[e] = dot(n, src[e], w) for each source row, to the bit, in one pass over the rows.
static inline void accumulateDots(int n, int cnt, const float* coef, const float* const* src, const float* w, const float* init, float* out, float* dots, float* partial) {
  accumulateRows<false, true>(n, cnt, coef, src, init, nullptr, out, w, dots, partial);
}

// out[0..d) = init (0 without it) + sum over q < n of val[q] W[idx[q]] (rows of width d), in q order; entries whose
// value is 0 are left out when skipZero (as the callers' loops of axpy left them out).
static inline void decodeRow(int d, int n, const int32_t* idx, const float* val, const float* W, const float* init, float* out, bool skipZero) {
  static thread_local std::vector<float> coef;
  static thread_local std::vector<const float*> src;
  coef.clear();
  src.clear();
  for (int q = 0; q < n; q++)
    if (!skipZero || val[q] != 0.f) coef.push_back(val[q]), src.push_back(W + (long)idx[q] * d);
  accumulate(d, (int)coef.size(), coef.data(), src.data(), init, out);
}

// Removes from g[0..d) its component along the unit row w (the unit-norm decoder constraint's gradient projection).
static inline void projectRow(int d, const float* w, float* g) { axpy(d, -dot(d, g, w), w, g); }

// Rescales w[0..d) to unit norm (the 1e-12 keeps a zero row finite): the unit-norm decoder constraint's one kernel.
static inline void normalizeRow(float* w, int d) {
  const float s = 1.f / (std::sqrt(dot(d, w, w)) + 1e-12f);
  for (int i = 0; i < d; i++) w[i] *= s;
}

}  // namespace sdl
