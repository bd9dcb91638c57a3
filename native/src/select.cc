#include "select.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "simd.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sdl {

#if !defined(__AVX512F__) && defined(__AVX2__)
namespace {
// AVX2 has no compress instruction: lane permutations that move a mask's set lanes to the front, in order, one
// per 8-bit mask (8 KB), for _mm256_permutevar8x32.
struct CompressTable {
  alignas(32) int32_t perm[256][8];
  CompressTable() {
    for (int mask = 0; mask < 256; mask++) {
      int o = 0;
      for (int b = 0; b < 8; b++)
        if (mask >> b & 1) perm[mask][o++] = b;
      for (; o < 8; o++) perm[mask][o] = 0;
    }
  }
};
const CompressTable kCompress;
inline __m256i compressPerm(int mask) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.perm[mask])); }
}  // namespace
#endif

void partitionTopK(float* val, int32_t* idx, int n, int k) {
  if (k <= 0 || k >= n) return;
  int lo = 0, hi = n - 1, target = k - 1;
  while (lo < hi) {
    // Median of three as pivot.
    int mid = lo + (hi - lo) / 2;
    float a = val[lo], b = val[mid], c = val[hi];
    float pivot = (a > b) ? ((b > c) ? b : (a > c ? c : a)) : ((a > c) ? a : (b > c ? c : b));
    int i = lo, j = hi;
    while (i <= j) {
      while (val[i] > pivot) i++;
      while (val[j] < pivot) j--;
      if (i <= j) {
        float tv = val[i]; val[i] = val[j]; val[j] = tv;
        int32_t ti = idx[i]; idx[i] = idx[j]; idx[j] = ti;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break;
  }
}

void sortByIndex(int32_t* idx, float* val, int n) {
  for (int i = 1; i < n; i++) {
    int32_t ki = idx[i];
    float kv = val[i];
    int j = i - 1;
    while (j >= 0 && idx[j] > ki) {
      idx[j + 1] = idx[j];
      val[j + 1] = val[j];
      j--;
    }
    idx[j + 1] = ki;
    val[j + 1] = kv;
  }
}

// The k-th largest of v[0..n) (1 <= k <= n). Quickselect without data-dependent branches: each round splits
// the values into those above and below the pivot (compressed vectors: AVX-512's instruction, AVX2 by a lane
// permutation table), rotating through three buffers; v has room for n + 16 floats and `work` for 2n + 32. v may be
// overwritten.
float kthLargestInPlace(float* v, int n, int k, float* work) {
  float* buf[3] = {v, work, work + n + 16};
  int in = 0;
  for (;;) {
    float* x = buf[in];
    if (n <= 8) {
      for (int i = 1; i < n; i++) {
        float key = x[i];
        int j = i - 1;
        while (j >= 0 && x[j] < key) { x[j + 1] = x[j]; j--; }
        x[j + 1] = key;
      }
      return x[k - 1];
    }
    float a = x[0], b = x[n / 2], c = x[n - 1];
    float pivot = (a > b) ? ((b > c) ? b : (a > c ? c : a)) : ((a > c) ? a : (b > c ? c : b));
    float* hi = buf[(in + 1) % 3];
    float* lo = buf[(in + 2) % 3];
    int nh = 0, nl = 0, i = 0;
#if defined(__AVX512F__)
    const __m512 pv = _mm512_set1_ps(pivot);
    for (; i + 16 <= n; i += 16) {
      __m512 y = _mm512_loadu_ps(x + i);
      __mmask16 mh = _mm512_cmp_ps_mask(y, pv, _CMP_GT_OQ), ml = _mm512_cmp_ps_mask(y, pv, _CMP_LT_OQ);
      // Compress in registers and store whole vectors (a masked compress-store to memory is slow on some
      // cores); the buffers have 16 floats of slack.
      _mm512_storeu_ps(hi + nh, _mm512_maskz_compress_ps(mh, y));
      _mm512_storeu_ps(lo + nl, _mm512_maskz_compress_ps(ml, y));
      nh += __builtin_popcount(mh);
      nl += __builtin_popcount(ml);
    }
#elif defined(__AVX2__)
    const __m256 pv = _mm256_set1_ps(pivot);
    for (; i + 8 <= n; i += 8) {
      __m256 y = _mm256_loadu_ps(x + i);
      const int mh = _mm256_movemask_ps(_mm256_cmp_ps(y, pv, _CMP_GT_OQ)), ml = _mm256_movemask_ps(_mm256_cmp_ps(y, pv, _CMP_LT_OQ));
      _mm256_storeu_ps(hi + nh, _mm256_permutevar8x32_ps(y, compressPerm(mh)));
      _mm256_storeu_ps(lo + nl, _mm256_permutevar8x32_ps(y, compressPerm(ml)));
      nh += __builtin_popcount(mh);
      nl += __builtin_popcount(ml);
    }
#endif
    for (; i < n; i++) {
      float y = x[i];
      hi[nh] = y;
      nh += y > pivot;
      lo[nl] = y;
      nl += y < pivot;
    }
    if (k <= nh) { n = nh; in = (in + 1) % 3; }
    else if (k <= n - nl) return pivot;
    else { k -= n - nl; n = nl; in = (in + 2) % 3; }
  }
}

namespace {


int nextPow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// gmax[i] = max over z[i], z[i + G], z[i + 2G], ... with G = NVEC * VW, the maxima held in registers.
template <int NVEC>
void groupMax(const float* z, int m, float* gmax) {
  constexpr int G = NVEC * VW;
  vf acc[NVEC];
  for (int v = 0; v < NVEC; v++) acc[v] = vload(z + v * VW);
  const int blocks = m / G;
  for (int b = 1; b < blocks; b++) {
    const float* p = z + (long)b * G;
    for (int v = 0; v < NVEC; v++) acc[v] = vmax(acc[v], vload(p + v * VW));
  }
  for (int v = 0; v < NVEC; v++) vstore(gmax + v * VW, acc[v]);
  for (int i = blocks * G; i < m; i++) gmax[i - blocks * G] = z[i] > gmax[i - blocks * G] ? z[i] : gmax[i - blocks * G];
}

void groupMaxAny(const float* z, int m, int G, float* gmax) {
  for (int i = 0; i < G; i++) gmax[i] = z[i];
  const int blocks = m / G;
  for (int b = 1; b < blocks; b++) {
    const float* p = z + (long)b * G;
    for (int i = 0; i < G; i += VW) vstore(gmax + i, vmax(vload(gmax + i), vload(p + i)));
  }
  for (int i = blocks * G; i < m; i++) gmax[i - blocks * G] = z[i] > gmax[i - blocks * G] ? z[i] : gmax[i - blocks * G];
}

}  // namespace

int collect(const float* z, int m, float t, bool strict, int j0, int32_t* ci, float* cv) {
  // Zero activations are inactive: at t <= 0 the test is always > 0.
  if (t <= 0.f) { t = 0.f; strict = true; }
  int n = 0;
  int j = 0;
#if defined(__AVX512F__)
  const __m512 tv = _mm512_set1_ps(t);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(j0));
  for (; j + 16 <= m; j += 16) {
    __m512 x = _mm512_loadu_ps(z + j);
    __mmask16 k = strict ? _mm512_cmp_ps_mask(x, tv, _CMP_GT_OQ) : _mm512_cmp_ps_mask(x, tv, _CMP_GE_OQ);
    // Stored whether or not any lane passed: a branch on it mispredicts (a row's first block passes ~6% of its
    // entries, so ~60% of 16-lane groups hold one). The 16 lanes written at n <= j stay inside [0, m).
    _mm512_storeu_ps(cv + n, _mm512_maskz_compress_ps(k, x));
    _mm512_storeu_si512(ci + n, _mm512_maskz_compress_epi32(k, iv));
    n += __builtin_popcount(k);
    iv = _mm512_add_epi32(iv, step);
  }
#elif defined(__AVX2__)
  // Few entries pass (the threshold is a top-k floor): test 32 at a time and compress only blocks with a hit.
  const __m256 tv = _mm256_set1_ps(t);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  auto pass = [&](__m256 x) { return strict ? _mm256_cmp_ps(x, tv, _CMP_GT_OQ) : _mm256_cmp_ps(x, tv, _CMP_GE_OQ); };
  for (; j + 32 <= m; j += 32) {
    const __m256 x0 = _mm256_loadu_ps(z + j), x1 = _mm256_loadu_ps(z + j + 8), x2 = _mm256_loadu_ps(z + j + 16), x3 = _mm256_loadu_ps(z + j + 24);
    const __m256 p0 = pass(x0), p1 = pass(x1), p2 = pass(x2), p3 = pass(x3);
    if (!_mm256_movemask_ps(_mm256_or_ps(_mm256_or_ps(p0, p1), _mm256_or_ps(p2, p3)))) continue;
    const __m256 xs[4] = {x0, x1, x2, x3}, ps[4] = {p0, p1, p2, p3};
    for (int q = 0; q < 4; q++) {
      const int mask = _mm256_movemask_ps(ps[q]);
      if (!mask) continue;
      const __m256i perm = compressPerm(mask);
      _mm256_storeu_ps(cv + n, _mm256_permutevar8x32_ps(xs[q], perm));
      const __m256i iv = _mm256_add_epi32(lane, _mm256_set1_epi32(j0 + j + 8 * q));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ci + n), _mm256_permutevar8x32_epi32(iv, perm));
      n += __builtin_popcount(mask);
    }
  }
#endif
  for (; j < m; j++) {
    float x = z[j];
    if (strict ? x > t : x >= t) { cv[n] = x; ci[n] = j0 + j; n++; }
  }
  return n;
}

float keepTopK(int32_t* ci, float* cv, int n, int k, float* work) {
  // The k-th largest, then in index order the entries above it and ties up to k.
  for (int i = 0; i < n; i++) work[i] = cv[i];
  float kth = kthLargestInPlace(work, n, k, work + n + 16);
  int above = 0;
  for (int i = 0; i < n; i++) above += cv[i] > kth;
  int ties = k - above, o = 0;
  for (int i = 0; i < n; i++) {
    float x = cv[i];
    if (x > kth || (x == kth && ties-- > 0)) { ci[o] = ci[i]; cv[o] = x; o++; }
  }
  return kth;
}

float topkFloor(const float* z, int m, int k, float* work) {
  // Strided groups {z[g], z[g + G], z[g + 2G], ...}: their maxima come from vertical vector maxima. The k-th
  // largest group maximum t bounds the k-th largest value from below (k groups each hold a value >= t), so
  // only values >= t can be among the top k; with G = 4k groups that leaves few candidates.
  int G = nextPow2(4 * k);
  if (G < VW) G = VW;
  if (k <= 0 || k >= m || m < 2 * G) return 0.f;
  float* gmax = work;
  switch (G / VW) {
    case 1: groupMax<1>(z, m, gmax); break;
    case 2: groupMax<2>(z, m, gmax); break;
    case 4: groupMax<4>(z, m, gmax); break;
    case 8: groupMax<8>(z, m, gmax); break;
    case 16: groupMax<16>(z, m, gmax); break;
    default: groupMaxAny(z, m, G, gmax);
  }
  return kthLargestInPlace(gmax, G, k, work + G + 16);
}

int topkRow(const float* z, int m, int k, int32_t* idx, float* val, float* scratch) {
  if (k <= 0) return 0;
  float* cv = scratch;                                         // candidate values
  int32_t* ci = reinterpret_cast<int32_t*>(scratch + m + 16);  // candidate indices
  float* tmp = scratch + 2 * m + 32;                           // selection workspace (3m + 64 values)
  const float t = topkFloor(z, m, k, tmp);
  int nc = collect(z, m, t, false, 0, ci, cv);
  if (nc > k) {
    keepTopK(ci, cv, nc, k, tmp);
    nc = k;
  }
  for (int i = 0; i < nc; i++) { idx[i] = ci[i]; val[i] = cv[i]; }
  return nc;
}

long countPositive(Pool& pool, const float* z, long n) {
  std::vector<long> part(pool.size() * 16, 0);
  pool.range(n, [&](long b, long e, int th) {
    long c = 0;
    for (long i = b; i < e; i++) c += z[i] > 0.f;
    part[th * 16] += c;
  });
  long c = 0;
  for (int t = 0; t < pool.size(); t++) c += part[t * 16];
  return c;
}

namespace {
// Runs f(p, len) over the pieces of the concatenation of `parts` that fall in its positions [b, e).
template <class F>
void eachPiece(const std::vector<FloatSpan>& parts, const std::vector<long>& at, long b, long e, F&& f) {
  size_t s = std::upper_bound(at.begin(), at.end(), b) - at.begin() - 1;
  for (; s < parts.size() && at[s] < e; s++) {
    const long lo = b > at[s] ? b - at[s] : 0, hi = (e < at[s] + parts[s].n ? e : at[s] + parts[s].n) - at[s];
    if (hi > lo) f(parts[s].p + lo, hi - lo);
  }
}
}  // namespace

float kthLargestPositive(Pool& pool, const std::vector<FloatSpan>& parts, long want) {
  // Radix select on the bit patterns of positive floats (monotone in value): a histogram of the top 12 bits
  // finds the bucket holding the want-th largest, then that bucket's values are selected exactly. The values are
  // read where they lie (a list of spans: BatchTopK's candidate blocks, a row store's rows), not gathered first.
  constexpr int BITS = 12, NB = 1 << BITS, SHIFT = 32 - BITS;
  std::vector<long> at(parts.size());
  long n = 0;
  for (size_t s = 0; s < parts.size(); s++) at[s] = n, n += parts[s].n;
  const int T = pool.size();
  std::vector<long> hist((size_t)T * NB, 0);
  pool.range(n, [&](long b, long e, int th) {
    long* h = hist.data() + (size_t)th * NB;
    eachPiece(parts, at, b, e, [&](const float* z, long len) {
      for (long i = 0; i < len; i++) {
        float v = z[i];
        if (v > 0.f) {
          uint32_t u;
          memcpy(&u, &v, 4);
          h[u >> SHIFT]++;
        }
      }
    });
  });
  std::vector<long> total(hist.begin(), hist.begin() + NB);
  for (int t = 1; t < T; t++)
    for (int i = 0; i < NB; i++) total[i] += hist[(size_t)t * NB + i];
  long above = 0;
  int bucket = NB - 1;
  for (; bucket >= 0; bucket--) {
    if (above + total[bucket] >= want) break;
    above += total[bucket];
  }
  if (bucket < 0) return 0.f;
  long need = want - above;  // rank inside the bucket
  // The bucket's values, each slice's written straight to its own part of vals (it counted them above). Each part
  // has one slot more, where the values outside the bucket land: the loop stores every value and keeps it by counting
  // it, without a branch (whether a value falls in the bucket is unpredictable: 1.1% of a BatchTopK step with it).
  std::vector<long> from(T + 1, 0);
  for (int t = 0; t < T; t++) from[t + 1] = from[t] + hist[(size_t)t * NB + bucket] + 1;
  std::vector<float> vals(from[T]);
  pool.range(n, [&](long b, long e, int th) {
    float* out = vals.data() + from[th];
    const long cap = from[th + 1] - from[th] - 1;
    long c = 0;
    eachPiece(parts, at, b, e, [&](const float* z, long len) {
      for (long i = 0; i < len; i++) {
        float v = z[i];
        uint32_t u;
        memcpy(&u, &v, 4);
        out[c < cap ? c : cap] = v;
        c += v > 0.f && (int)(u >> SHIFT) == bucket;
      }
    });
  });
  // Close the gaps the spare slots left.
  long filled = 0;
  for (int t = 0; t < T; t++) {
    const long cnt = from[t + 1] - from[t] - 1;
    if (filled != from[t]) std::memmove(vals.data() + filled, vals.data() + from[t], cnt * sizeof(float));
    filled += cnt;
  }
  vals.resize(filled);
  std::vector<int32_t> ix(vals.size(), 0);
  partitionTopK(vals.data(), ix.data(), (int)vals.size(), (int)need);
  float t = vals[0];
  for (long i = 1; i < need; i++) t = vals[i] < t ? vals[i] : t;
  return t;
}

float kthLargestPositive(Pool& pool, const float* z, long n, long want) { return kthLargestPositive(pool, {FloatSpan{z, n}}, want); }

}  // namespace sdl
