#include "select.h"

#include <cstring>
#include <vector>

#include "simd.h"

namespace sdl {

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

namespace {
constexpr int CHUNK = 16;
}

int topkRow(const float* z, int m, int k, int32_t* idx, float* val, float* scratch) {
  if (k <= 0) return 0;
  float* cv = scratch;                                       // candidate values
  int32_t* ci = reinterpret_cast<int32_t*>(scratch + m + 16);  // candidate indices
  int nc = 0;
  const int chunks = m / CHUNK;
  if (k >= m || chunks < 2 * k) {
    // Small rows: every positive value is a candidate.
    for (int j = 0; j < m; j++)
      if (z[j] > 0.f) { cv[nc] = z[j]; ci[nc] = j; nc++; }
  } else {
    // The k-th largest chunk maximum t bounds the k-th largest value from below (k chunks each hold a value
    // >= t), so only chunks whose maximum reaches t can hold the top k.
    float* cmax = scratch + 2 * m + 32;  // caller provides room: see kernels' scratch sizing
    int32_t* corder = reinterpret_cast<int32_t*>(cmax + chunks + 16);
    for (int c = 0; c < chunks; c++) {
      const float* p = z + c * CHUNK;
      float mx = p[0];
      for (int i = 1; i < CHUNK; i++) mx = p[i] > mx ? p[i] : mx;
      cmax[c] = mx;
      corder[c] = c;
    }
    // The tail (m % CHUNK values) is always scanned.
    float* tmp = cv;  // reuse candidate storage to find t
    int32_t* tmpi = ci;
    memcpy(tmp, cmax, sizeof(float) * chunks);
    memcpy(tmpi, corder, sizeof(int32_t) * chunks);
    partitionTopK(tmp, tmpi, chunks, k);
    float t = tmp[0];
    for (int i = 1; i < k; i++) t = tmp[i] < t ? tmp[i] : t;
    if (t <= 0.f) t = 0.f;
    for (int c = 0; c < chunks; c++) {
      if (!(cmax[c] >= t) || cmax[c] <= 0.f) continue;
      const float* p = z + c * CHUNK;
      for (int i = 0; i < CHUNK; i++)
        if (p[i] >= t && p[i] > 0.f) { cv[nc] = p[i]; ci[nc] = c * CHUNK + i; nc++; }
    }
    for (int j = chunks * CHUNK; j < m; j++)
      if (z[j] >= t && z[j] > 0.f) { cv[nc] = z[j]; ci[nc] = j; nc++; }
  }
  int keep = nc < k ? nc : k;
  partitionTopK(cv, ci, nc, keep);
  for (int i = 0; i < keep; i++) { idx[i] = ci[i]; val[i] = cv[i]; }
  sortByIndex(idx, val, keep);
  return keep;
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

float kthLargestPositive(Pool& pool, const float* z, long n, long want) {
  // Radix select on the bit patterns of positive floats (monotone in value): a histogram of the top 12 bits
  // finds the bucket holding the want-th largest, then that bucket's values are selected exactly.
  constexpr int BITS = 12, NB = 1 << BITS, SHIFT = 32 - BITS;
  const int T = pool.size();
  std::vector<long> hist((size_t)T * NB, 0);
  pool.range(n, [&](long b, long e, int th) {
    long* h = hist.data() + (size_t)th * NB;
    for (long i = b; i < e; i++) {
      float v = z[i];
      if (v > 0.f) {
        uint32_t u;
        memcpy(&u, &v, 4);
        h[u >> SHIFT]++;
      }
    }
  });
  for (int t = 1; t < T; t++)
    for (int i = 0; i < NB; i++) hist[i] += hist[(size_t)t * NB + i];
  long above = 0;
  int bucket = NB - 1;
  for (; bucket >= 0; bucket--) {
    if (above + hist[bucket] >= want) break;
    above += hist[bucket];
  }
  if (bucket < 0) return 0.f;
  long need = want - above;  // rank inside the bucket
  std::vector<std::vector<float>> parts(T);
  pool.range(n, [&](long b, long e, int th) {
    std::vector<float>& out = parts[th];
    for (long i = b; i < e; i++) {
      float v = z[i];
      if (v > 0.f) {
        uint32_t u;
        memcpy(&u, &v, 4);
        if ((int)(u >> SHIFT) == bucket) out.push_back(v);
      }
    }
  });
  std::vector<float> vals;
  vals.reserve(hist[bucket]);
  for (auto& p : parts) vals.insert(vals.end(), p.begin(), p.end());
  std::vector<int32_t> ix(vals.size(), 0);
  partitionTopK(vals.data(), ix.data(), (int)vals.size(), (int)need);
  float t = vals[0];
  for (long i = 1; i < need; i++) t = vals[i] < t ? vals[i] : t;
  return t;
}

}  // namespace sdl
