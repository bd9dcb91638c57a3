#include "index_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "gemm.h"
#include "simd.h"
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sdl {

IndexStats::IndexStats(int m_, int vocab_, int topK_, int radius_, int cooTop_, size_t cooMaxEntries_, size_t cooBlock_, std::vector<float> edges_,
                       int perBand_, std::vector<double> bandEdges_, int threads)
    : m(m_), vocab(vocab_), topK(topK_), radius(radius_), cooTop(cooTop_), cooMaxEntries(cooMaxEntries_), cooBlock(cooBlock_ ? cooBlock_ : 1), edges(std::move(edges_)), perBand(perBand_),
      bandEdges(std::move(bandEdges_)),
      qSeen(perBand_ > 0 ? (size_t)m_ * (bandEdges.size() + 1) : 0, 0),
      count(m_, 0.0), sum(m_, 0.0), max(m_, 0.f), hist((size_t)m_ * (edges.size() + 1), 0u),
      tok(vocab_ > 0 ? (size_t)2 * m_ * vocab_ : 0, 0.f),
      heap_((size_t)m_ * topK_), heapSize_(m_, 0), heapMin_(m_, 0.f), pool_(threads), topStore_(pool_.size()),
      quantileStore_(pool_.size()), topBase_(m_, -1), quantileBase_(perBand_ > 0 ? (size_t)m_ * (bandEdges.size() + 1) : 0, -1) {
  for (auto* stores : {&topStore_, &quantileStore_})
    for (ExampleSlots& st : *stores) st.width = 2 * radius + 1;
  // Each thread's stores hold at most topK slots per feature of its range, and perBand per band of each.
  const int T = pool_.size();
  for (int t = 0; t < T; t++) {
    const size_t features = (size_t)((long)m * (t + 1) / T - (long)m * t / T);
    if (topK > 0) topStore_[t].reserve(features * topK);
    if (perBand > 0) quantileStore_[t].reserve(features * (bandEdges.size() + 1) * perBand);
  }
}

void ExampleSlots::reserve(size_t n) {
  for (auto* v : {&act, &ctxAct}) v->reserve(v == &act ? n : n * width);
  for (auto* v : {&doc, &window, &pos, &token, &ctxStart, &ctxLen}) v->reserve(n);
  ctxTok.reserve(n * width);
}

int32_t ExampleSlots::alloc(int n) {
  const size_t first = act.size(), to = first + n;
  // Doubling, as the reference: a feature's first example costs an amortised copy, not a reallocation each.
  act.resize(to);
  for (auto* v : {&doc, &window, &pos, &token, &ctxStart, &ctxLen}) v->resize(to);
  ctxAct.resize(to * width);
  ctxTok.resize(to * width);
  return (int32_t)first;
}

void ExampleSlots::append(const ExampleSlots& src, int32_t from) {
  act.push_back(src.act[from]);
  doc.push_back(src.doc[from]);
  window.push_back(src.window[from]);
  pos.push_back(src.pos[from]);
  token.push_back(src.token[from]);
  ctxStart.push_back(src.ctxStart[from]);
  ctxLen.push_back(src.ctxLen[from]);
  ctxTok.insert(ctxTok.end(), src.ctxTok.begin() + (size_t)from * width, src.ctxTok.begin() + (size_t)(from + 1) * width);
  ctxAct.insert(ctxAct.end(), src.ctxAct.begin() + (size_t)from * width, src.ctxAct.begin() + (size_t)(from + 1) * width);
}

namespace {

// Where latent i is among a row's n latents (increasing), or -1: eight compared at a time where the build has vectors
// (no branch to mispredict per step, as a bisection has), the rest one by one.
int findLatent(const int32_t* ids, int n, int32_t i) {
  int q = 0;
#if defined(__AVX2__)
  const __m256i want = _mm256_set1_epi32(i);
  for (; q + 8 <= n; q += 8) {
    const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i*)(ids + q)), want)));
    if (mask) return q + __builtin_ctz(mask);
  }
#endif
  for (; q < n; q++)
    if (ids[q] == i) return q;
  return -1;
}

}  // namespace

void IndexStats::add(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, const int32_t* doc,
                     const int32_t* pos) {
  pool_.run(pool_.size(), [&](int t, int) { addRange(n, start, idx, val, token, window, doc, pos, t); });
  // Whole rows, in order, while they fit.
  for (int r = 0; cooTop > 0 && !cooFull_ && r < n; r++) {
    const size_t len = (size_t)(start[r + 1] - start[r]);
    if (cooSize() + len > cooMaxEntries) {
      cooFull_ = true;
      break;
    }
    if (m <= 65536)
      cooIds16_.insert(cooIds16_.end(), idx + start[r], idx + start[r + 1]);  // ids < m: each fits
    else
      cooIds32_.insert(cooIds32_.end(), idx + start[r], idx + start[r + 1]);
    cooStart_.push_back((uint32_t)cooSize());
  }
}

void IndexStats::cooccurrence(int32_t* other, uint32_t* count) {
  std::fill(other, other + (size_t)m * cooTop, -1);
  std::fill(count, count + (size_t)m * cooTop, 0u);
  if (m <= 65536)
    cooCount(cooIds16_, other, count);
  else
    cooCount(cooIds32_, other, count);
  release(cooIds16_);
  release(cooIds32_);
}

namespace {

// Feature i's co-occurrence counts: c[j] += 1 for every latent j of every row feature i fires on (rows[0, len), row r's
// ids at ids[rowStart[r], rowStart[r + 1])). No branch per increment (which latent a row brings first is a coin flip):
// a counter for every latent. The rows lie scattered over the ids: each is fetched a few rows ahead, its offset
// further ahead, and its ids from their first and 16 further.
template <class Id>
void countRows(const uint32_t* rows, uint32_t len, const uint32_t* rowStart, const Id* ids, uint32_t* c) {
  for (uint32_t e = 0; e < len; e++) {
    if (e + 16 < len) __builtin_prefetch(rowStart + rows[e + 16]);
    if (e + 6 < len) {
      const Id* ahead = ids + rowStart[rows[e + 6]];
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + 16);
    }
    const uint32_t r = rows[e];
    for (uint32_t q = rowStart[r]; q < rowStart[r + 1]; q++) c[ids[q]]++;
  }
}

// The n largest non-zero counters of c[0, m) (m a multiple of 16) into o (ids) and k (counts), most first (those
// past the last non-zero one left as they were); scanned in id order, so a tie keeps the lower id. A group of 16 is
// looked at only when its largest could enter; every counter is cleared behind (c all zero on return).
void takeTop(uint32_t* c, long m, int n, int32_t* o, uint32_t* k) {
  int size = 0;
  for (long g = 0; g < m; g += 16) {
    uint32_t mx = 0;
    for (int l = 0; l < 16; l++) mx = c[g + l] > mx ? c[g + l] : mx;
    if (mx > 0 && (size < n || mx > k[n - 1])) {
      for (int l = 0; l < 16; l++) {
        const uint32_t v = c[g + l];
        if (v == 0 || (size == n && v <= k[n - 1])) continue;
        int p = size < n ? size++ : n - 1;
        while (p > 0 && k[p - 1] < v) {
          k[p] = k[p - 1];
          o[p] = o[p - 1];
          p--;
        }
        k[p] = v;
        o[p] = (int32_t)(g + l);
      }
    }
    std::fill(c + g, c + g + 16, 0u);
  }
}

}  // namespace

template <class Id>
void IndexStats::cooCount(const LargeVector<Id>& ids, int32_t* other, uint32_t* count) {
  const int n = cooTop;
  const long rows = cooTokens();
  // The rows each feature fires on, in increasing order (a counting sort of the kept entries by latent), a block of
  // features at a time: each block's lists made by a pass over the kept rows, at most cooBlock entries (128 MB by
  // default) beside the ids however long the index's pass (every list at once was 4 bytes more per firing: 328 MB
  // at 2.56M tokens x k 32). A feature with more entries than cooBlock takes a block of its own.
  std::vector<uint32_t> colStart((size_t)m + 1, 0);
  for (Id j : ids) colStart[(size_t)j + 1]++;
  for (int j = 0; j < m; j++) colStart[j + 1] += colStart[j];
  const int T = pool_.size();
  const long mPad = ((long)m + 15) / 16 * 16;  // whole groups of 16 for takeTop, the tail's counters left at 0
  std::vector<std::vector<uint32_t>> counters(T);
  // The lists in huge pages: 32 MB at 256k tokens x k 32, whose 4 KiB pages were 8,000 of the index's page faults.
  LargeVector<uint32_t> rowsOf;
  std::vector<uint32_t> at(m);
  for (int j0 = 0; j0 < m;) {
    int j1 = j0 + 1;
    while (j1 < m && colStart[j1 + 1] - colStart[j0] <= cooBlock) j1++;
    const uint32_t base = colStart[j0];
    rowsOf.resize(colStart[j1] - base);
    for (int j = j0; j < j1; j++) at[j] = colStart[j] - base;
    for (long r = 0; r < rows; r++)
      for (uint32_t q = cooStart_[r]; q < cooStart_[r + 1]; q++) {
        const int j = ids[q];
        if (j >= j0 && j < j1) rowsOf[at[j]++] = (uint32_t)r;
      }
    pool_.rangeDynamic(j1 - j0, [&](long a0, long a1, int th) {
      std::vector<uint32_t>& cv = counters[th];
      if (cv.empty()) cv.assign((size_t)mPad, 0u);
      for (long i = j0 + a0; i < j0 + a1; i++) {
        if (colStart[i] == colStart[i + 1]) continue;  // never fired: no list
        countRows(rowsOf.data() + (colStart[i] - base), colStart[i + 1] - colStart[i], cooStart_.data(), ids.data(), cv.data());
        cv[i] = 0;  // not its own
        takeTop(cv.data(), mPad, n, other + i * n, count + i * n);
      }
    }, 16);
    j0 = j1;
  }
}

int IndexStats::owner(int i) const {
  const int T = pool_.size();
  int t = (int)((long)i * T / m);
  while (t > 0 && i < (int)((long)m * t / T)) t--;
  while (t + 1 < T && i >= (int)((long)m * (t + 1) / T)) t++;
  return t;
}

// Feature i's slot for a new top example, chosen before the heap takes it: its next free one (the heap's size is the
// number filled), or its weakest (the first of equals), as index/examples.ts TopExamples.slotFor.
int32_t IndexStats::topSlot(ExampleSlots& st, int i) {
  if (topBase_[i] < 0) topBase_[i] = st.alloc(topK);
  const int32_t b = topBase_[i];
  if (heapSize_[i] < topK) return b + heapSize_[i];
  int32_t worst = b;
  for (int32_t q = b + 1; q < b + topK; q++)
    if (st.act[q] < st.act[worst]) worst = q;
  return worst;
}

void IndexStats::addRange(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, const int32_t* doc,
                          const int32_t* pos, int thread) {
  const int T = pool_.size();
  const int j0 = (int)((long)m * thread / T), j1 = (int)((long)m * (thread + 1) / T);
  ExampleSlots& tops = topStore_[thread];
  ExampleSlots& quantiles = quantileStore_[thread];
  const int H = (int)edges.size();
  const int QB = (int)bandEdges.size() + 1;
  const std::greater<float> minFirst;
  for (int r = 0; r < n; r++) {
    const int q0 = start[r], q1 = start[r + 1];
    const int t = token[r];
    const bool tokOk = vocab > 0 && t >= 0 && t < vocab;
    // This thread's entries of the row (latents increase along it).
    int a0 = q0, a1 = q0;
    while (a0 < q1 && idx[a0] < j0) a0++;
    a1 = a0;
    while (a1 < q1 && idx[a1] < j1) a1++;
    for (int q = a0; q < a1; q++) {
      const int i = idx[q];
      const float a = val[q];
      count[i] += 1;
      sum[i] += a;
      if (a > max[i]) max[i] = a;
      // Number of edges <= a.
      int b = (int)(std::upper_bound(edges.begin(), edges.end(), a) - edges.begin());
      hist[(size_t)i * (H + 1) + b]++;
      if (tokOk) {
        // Token-major, count and sum side by side: a row's latents share its token's stretch, which stays cached for
        // the frequent tokens (feature-major, each firing was a miss somewhere in 2 m V floats).
        float* c = tok.data() + 2 * ((size_t)t * m + i);
        c[0] += 1.f;
        c[1] += a;
      }
      // The example into slot s of a store: row r's fields, its context (same window, within the radius) and feature
      // i's activation on each context row.
      auto keep = [&](ExampleSlots& st, int32_t s) {
        int lo = r, hi = r;
        while (lo > 0 && r - lo < radius && window[lo - 1] == window[r]) lo--;
        while (hi + 1 < n && hi - r < radius && window[hi + 1] == window[r]) hi++;
        st.act[s] = a;
        st.doc[s] = doc[r];
        st.window[s] = window[r];
        st.pos[s] = pos[r];
        st.token[s] = t;
        st.ctxStart[s] = pos[lo];
        const int len = std::min(hi - lo + 1, st.width);
        st.ctxLen[s] = len;
        int32_t* ct = st.ctxTok.data() + (size_t)s * st.width;
        float* ca = st.ctxAct.data() + (size_t)s * st.width;
        for (int c = 0; c < len; c++) {
          const int rr = lo + c;
          const int at = findLatent(idx + start[rr], start[rr + 1] - start[rr], i);
          ct[c] = token[rr];
          ca[c] = at >= 0 ? val[start[rr] + at] : 0.f;
        }
      };
      // Feature i's top K as a min-heap in its own stretch of one array; whether a enters is decided from the flat arrays
      // of sizes and minima (the heap itself, a cache miss away, is touched only when it does).
      if (topK > 0 && (heapSize_[i] < topK || a > heapMin_[i])) {
        const int32_t slot = topSlot(tops, i);
        float* h = heap_.data() + (size_t)i * topK;
        int size = heapSize_[i];
        if (size >= topK) std::pop_heap(h, h + size--, minFirst);
        h[size++] = a;
        std::push_heap(h, h + size, minFirst);
        heapSize_[i] = size;
        heapMin_[i] = h[0];
        keep(tops, slot);
      }
      if (perBand > 0 && a > 0) {
        int band = 0;
        while (band < QB - 1 && bandEdges[band] <= (double)a) band++;
        const int key = i * QB + band;
        const int seen = ++qSeen[key];
        const int slot = seen <= perBand ? seen - 1 : (int)reservoirSlot((uint32_t)key, (uint32_t)seen);
        if (slot < perBand) {
          if (quantileBase_[key] < 0) quantileBase_[key] = quantiles.alloc(perBand);
          keep(quantiles, quantileBase_[key] + slot);
        }
      }
    }
  }
}

// Each key's (feature's, or feature band's) filled slots, strongest first (ties: the earlier slot), copied out key by
// key in order.
ExampleList IndexStats::gather(std::vector<ExampleSlots>& stores, const std::vector<int32_t>& base, int keysPerFeature, int per,
                               const int32_t* filled) const {
  ExampleList out;
  out.slots.width = 2 * radius + 1;
  out.off.assign(m + 1, 0);
  size_t total = 0;
  for (size_t key = 0; key < base.size(); key++)
    if (base[key] >= 0) total += (size_t)std::min(filled[key], per);
  out.slots.reserve(total);  // appended without regrowing
  if (keysPerFeature > 1) out.band.reserve(total);
  std::vector<int32_t> order;
  for (int i = 0; i < m; i++) {
    const ExampleSlots& st = stores[owner(i)];
    for (int k = 0; k < keysPerFeature; k++) {
      const size_t key = (size_t)i * keysPerFeature + k;
      if (base.empty() || base[key] < 0) continue;
      const int nKept = std::min(filled[key], per);
      order.resize(nKept);
      for (int q = 0; q < nKept; q++) order[q] = base[key] + q;
      std::stable_sort(order.begin(), order.end(), [&](int32_t p, int32_t q) { return st.act[p] > st.act[q]; });
      for (int32_t sl : order) {
        out.slots.append(st, sl);
        if (keysPerFeature > 1) out.band.push_back((uint8_t)k);
      }
    }
    out.off[i + 1] = (int32_t)out.slots.size();
  }
  // The stores are done with: their memory goes before the lists are copied out.
  for (ExampleSlots& st : stores) st = ExampleSlots{};
  return out;
}

ExampleList IndexStats::topExamples() { return gather(topStore_, topBase_, 1, topK, heapSize_.data()); }

ExampleList IndexStats::quantileExamples() {
  return gather(quantileStore_, quantileBase_, (int)bandEdges.size() + 1, perBand, qSeen.data());
}

namespace {

typedef double vd __attribute__((vector_size(VW * 4), aligned(8), may_alias));
typedef int64_t vl __attribute__((vector_size(VW * 4)));
constexpr int VD = VW / 2;  // doubles per vector

// e^x for each lane, to a few units in the last place: x = n ln 2 + r with |r| <= ln 2 / 2 (n rounded by the
// 1.5 * 2^52 shift, whose low bits then hold n), e^r by its Taylor series to r^13 (the rest below 1e-17 of it), times
// 2^n built in the exponent bits. Arguments beyond +-700 are clamped: there the sigmoid is 0 or 1 to float precision.
inline vd vexp(vd x) {
  const vd zero = {}, lo = zero - 700.0, hi = zero + 700.0;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const double shift = 0x1.8p52;
  const vd t = x * 1.4426950408889634 + shift;
  const vd n = t - shift;
  const vd r = (x - n * 0x1.62e42fee00000p-1) - n * 0x1.a39ef35793c76p-33;
  const double c[14] = {1.0,
                        1.0,
                        1.0 / 2,
                        1.0 / 6,
                        1.0 / 24,
                        1.0 / 120,
                        1.0 / 720,
                        1.0 / 5040,
                        1.0 / 40320,
                        1.0 / 362880,
                        1.0 / 3628800,
                        1.0 / 39916800,
                        1.0 / 479001600,
                        1.0 / 6227020800.0};
  vd p = r * c[13] + c[12];
  for (int k = 11; k >= 0; k--) p = p * r + c[k];
  vl bits;
  std::memcpy(&bits, &t, sizeof t);
  vl shiftBits;
  const vd shiftV = zero + shift;
  std::memcpy(&shiftBits, &shiftV, sizeof shiftV);
  const vl e = ((bits - shiftBits) + 1023) << 52;
  vd scale;
  std::memcpy(&scale, &e, sizeof e);
  return p * scale;
}

}  // namespace

void probeGradient(const float* L, const double* b, const int32_t* y, const double* pos, const double* wPos, const double* wNeg, int n, int C, float* G,
                   double* gb) {
  // A row's C exponentials a vector at a time (15% of the step here), then the reference's steps class by class.
  std::vector<double> e((size_t)(C + VD - 1) / VD * VD, 0.0);
  for (int r = 0; r < n; r++) {
    const int yr = y[r];
    for (int c = 0; c < C; c++) e[c] = -((double)L[(long)r * C + c] + b[c]);
    for (int c = 0; c < C; c += VD) {
      vd x;
      std::memcpy(&x, e.data() + c, sizeof x);
      x = vexp(x);
      std::memcpy(e.data() + c, &x, sizeof x);
    }
    for (int c = 0; c < C; c++) {
      if (pos[c] == 0) {
        G[(long)r * C + c] = 0.f;
        continue;
      }
      const double p = 1 / (1 + e[c]);
      const int t = yr == c ? 1 : 0;
      const double g = ((t ? wPos[c] : wNeg[c]) * (p - t)) / n;
      G[(long)r * C + c] = (float)g;
      gb[c] += g;
    }
  }
}

namespace {

// Candidate id with value x into a list of the n largest (size held so far, best first; ties: the earlier candidate
// first, as it was inserted first). Returns whether it went in.
inline bool insertLargest(float x, int32_t id, int n, int32_t* idx, float* val, int& size) {
  if (size == n && !(x > val[n - 1])) return false;
  int p = size < n ? size++ : n - 1;
  for (; p > 0 && val[p - 1] < x; p--) {
    val[p] = val[p - 1];
    idx[p] = idx[p - 1];
  }
  val[p] = x;
  idx[p] = id;
  return true;
}

// Feeds values v[0..len) (negated when Negate), standing for candidates base, base + 1, ..., into a running list of the
// n largest (size held so far, ids and values best first; ties: the earlier candidate first). A list fed its candidates
// in pieces, in increasing order, ends as one fed them all at once.
template <bool Negate>
void feedLargest(const float* v, int len, int base, int n, int32_t* idx, float* val, int& size) {
  for (int j = 0; j < len; j++) {
    // Once n are held, most values fall below the n-th: skip 4 vectors at a time that hold nothing above it (the test
    // below skips each of their values), so the scan runs at vector speed.
    if (size == n && (j & (4 * VW - 1)) == 0) {
      const vf t = vsplat(val[n - 1]);
      while (j + 4 * VW <= len) {
        const float* q = v + j;
        vf a = vload(q), b = vload(q + VW), c = vload(q + 2 * VW), d = vload(q + 3 * VW);
        if (Negate) a = -a, b = -b, c = -c, d = -d;
        if (anyAbove4(a, b, c, d, t)) break;
        j += 4 * VW;
      }
      if (j >= len) break;
    }
    insertLargest(Negate ? -v[j] : v[j], base + j, n, idx, val, size);
  }
}

void endLargest(int n, int32_t* idx, float* val, int size) {
  for (int q = size; q < n; q++) {
    idx[q] = -1;
    val[q] = 0.f;
  }
}

}  // namespace

void largestOfRow(const float* row, int len, int n, bool negate, int32_t* idx, float* val) {
  int size = 0;
  if (negate) feedLargest<true>(row, len, 0, n, idx, val, size);
  else feedLargest<false>(row, len, 0, n, idx, val, size);
  endLargest(n, idx, val, size);
}

void rowsLargest(Pool& pool, const float* C, int rows, int cols, int n, bool negate, int32_t* idx, float* val) {
  pool.range(rows, [&](long r0, long r1, int) {
    for (long r = r0; r < r1; r++) largestOfRow(C + r * cols, cols, n, negate, idx + r * n, val + r * n);
  });
}

void nearestRows(Pool& pool, const float* unit, int m, int d, int n, int32_t* other, float* cosine) {
  // The cosines are symmetric (each entry is the same k-ordered sum of the same products either way round), so only
  // the upper triangle is multiplied: block I's rows against rows I0 .. m. Its rows take their candidates from I0 on
  // there; every later row j takes block I's rows as candidates from column j of the block. Each row is fed its
  // candidates in increasing order (earlier blocks first), as the reference scans them, so the lists come out the same.
  const int BR = 256;
  std::vector<int> size(m, 0);
  std::vector<float> thr(m);  // each row's n-th value held, NaN while its list has room
  LargeVector<float> C((size_t)(m < BR ? m : BR) * m);  // huge pages: 16 MB at 16,384 rows
  auto takeOne = [&](float x, int cand, int j) {
    float* val = cosine + (long)j * n;
    if (insertLargest(x, cand, n, other + (long)j * n, val, size[j])) thr[j] = size[j] < n ? NAN : val[n - 1];
  };
  for (int i0 = 0; i0 < m; i0 += BR) {
    const int rows = m - i0 < BR ? m - i0 : BR, cols = m - i0;
    gemm(pool, rows, cols, d, View{unit + (long)i0 * d, d, 1}, View{unit + (long)i0 * d, 1, d}, C.data(), cols, false);
    pool.range(rows, [&](long r0, long r1, int) {
      for (long r = r0; r < r1; r++) {
        float* row = C.data() + r * cols;
        row[r] = -INFINITY;  // not its own neighbour
        feedLargest<false>(row, cols, i0, n, other + (i0 + r) * n, cosine + (i0 + r) * n, size[i0 + r]);
      }
    });
    // Later rows j = i0 + c (c >= rows) take candidate i0 + r from C[r][c], r in order, each thread its own columns. A
    // vector of VW rows' thresholds tells which of them may take it: !(x <= t) holds above t and where either is NaN
    // (a list with room); takeOne decides exactly.
    const int later = cols - rows;
    pool.range((later + VW - 1) / VW, [&](long v0, long v1, int) {
      const int c0 = rows + (int)v0 * VW, c1 = rows + (int)(v1 * VW < later ? v1 * VW : later);
      for (int c = c0; c < c1; c++) thr[i0 + c] = size[i0 + c] < n ? NAN : cosine[(long)(i0 + c) * n + n - 1];
      for (int r = 0; r < rows; r++) {
        const float* row = C.data() + (size_t)r * cols;
        int c = c0;
        const float* t = thr.data() + i0;
        for (; c + 4 * VW <= c1; c += 4 * VW) {
          // Four vectors tested together: most of them take nothing.
          const vi t0 = !(vload(row + c) <= vload(t + c)), t1 = !(vload(row + c + VW) <= vload(t + c + VW));
          const vi t2 = !(vload(row + c + 2 * VW) <= vload(t + c + 2 * VW)), t3 = !(vload(row + c + 3 * VW) <= vload(t + c + 3 * VW));
          if (!vany(t0 | t1 | t2 | t3)) continue;
          for (int q = 0; q < 4 * VW; q++)
            if (!(row[c + q] <= t[c + q])) takeOne(row[c + q], i0 + r, i0 + c + q);
        }
        for (; c < c1; c++)
          if (!(row[c] <= t[c])) takeOne(row[c], i0 + r, i0 + c);
      }
    });
  }
  for (int i = 0; i < m; i++) endLargest(n, other + (long)i * n, cosine + (long)i * n, size[i]);
}

}  // namespace sdl
