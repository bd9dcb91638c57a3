// Per-feature statistics of the feature index, accumulated over sparse activations chunk by chunk: firing
// counts, sums, maxima, a histogram over fixed edges, per-token counts and sums, pair co-occurrence, and the
// running top-K activations of each feature, and each feature's quantile examples (a reservoir sample per
// activation band). When an activation enters a feature's top K, or is kept in a band's sample, the example (its row's
// fields, its context's tokens and the feature's activation on each) is written to a slot of the owning thread's store.
#pragma once
#include <cstdint>
#include <vector>

#include "pool.h"
#include "util.h"

namespace sdl {

// Each of the m unit rows' n nearest other rows by dot product (cosine), best first (ties: the lower index first),
// as [m, n] ids (-1 past the last) and cosines: 256-row blocks of the m x m cosines by gemm, each row's n largest
// kept by insertion (the TypeScript reference, index/neighbors.ts, selects the same way from the same blocks).
void nearestRows(Pool& pool, const float* unit, int m, int d, int n, int32_t* other, float* cosine);

// The n largest of row[0..len) (negate: of -row), best first, ties to the lower index, as ids (-1 past the last) and
// values (of -row when negated): index/select.ts topIndices(a, n, true) is the reference.
void largestOfRow(const float* row, int len, int n, bool negate, int32_t* idx, float* val);
// largestOfRow for each row of C [rows, cols], into idx and val [rows, n].
void rowsLargest(Pool& pool, const float* C, int rows, int cols, int n, bool negate, int32_t* idx, float* val);

// One step of the absorption probes' gradient (src/analysis/absorption.ts trainProbe, its TypeScript reference): for
// each row r and class c with positives, p = sigmoid(L[r, c] + b[c]), g = w (p - t) / n with w the class-balanced
// weight of the target t (1 when y[r] == c), G[r, c] = g, gb[c] += g (rows in order); G[r, c] = 0 for a class
// without positives. In double, as the reference; the exponentials by a vector series accurate to a few units in the
// last place (Math.exp's own may differ in the last bit), arguments clamped to +-700.
void probeGradient(const float* L, const double* b, const int32_t* y, const double* pos, const double* wPos, const double* wNeg, int n, int C, float* G,
                   double* gb);

// Examples kept while indexing, one slot each (index/examples.ts ExampleStore is the reference): the firing row's
// fields, and `width` context tokens with the feature's activation on each (the first ctxLen used). Slots are handed
// out in blocks and never freed. In huge pages (util.h LargeVector), reserved for the most slots the store can take:
// grown by doubling, each growth copied the store and faulted in fresh 4 KiB pages (a third of the index's page
// faults at 16,384 latents).
struct ExampleSlots {
  int width = 0;
  LargeVector<float> act, ctxAct;
  LargeVector<int32_t> doc, window, pos, token, ctxStart, ctxLen, ctxTok;
  // Capacity for n slots (address space only until they are handed out).
  void reserve(size_t n);
  // n consecutive new slots; returns the first.
  int32_t alloc(int n);
  // Slot `from` of `src` appended here.
  void append(const ExampleSlots& src, int32_t from);
  size_t size() const { return act.size(); }
};

// Every feature's examples in order (feature by feature; quantile examples band by band), strongest first, each
// feature's from off[i] to off[i + 1]; `band`, for quantile examples, each one's band.
struct ExampleList {
  ExampleSlots slots;
  std::vector<int32_t> off;
  std::vector<uint8_t> band;
};

// Reservoir sampling's draw for the n-th firing of a (feature, band) key, as index/quantiles.ts reservoirSlot:
// a slot in [0, n) from a hash of (key, n), the same whichever thread draws it.
inline uint32_t reservoirSlot(uint32_t key, uint32_t n) {
  uint32_t h = (key * 0x9e3779b1u) ^ (n * 0x85ebca77u) ^ 0x2545f491u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h % n;
}

class IndexStats {
 public:
  // cooTop: each feature's most co-occurring features to find (0: none); their rows are kept up to cooMaxEntries
  // latent ids in all (whole rows; the rest of the pass uncounted, as cooTokens() says).
  // cooBlock: the most grouped rows held at once while counting (cooccurrence()).
  IndexStats(int m, int vocab, int topK, int radius, int cooTop, size_t cooMaxEntries, size_t cooBlock, std::vector<float> edges, int perBand,
             std::vector<double> bandEdges, int threads);
  // One chunk: rows [0, n) with activations in idx/val[start[r] .. start[r+1]) (latents increasing within a row), and
  // each row's token, window, document and position in its window.
  void add(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, const int32_t* doc,
           const int32_t* pos);
  // The top examples (slots sorted strongest first, ties to the earlier slot) and the quantile examples (band by band,
  // the min(firings, perBand) slots filled, strongest first, ties to the earlier slot). Before result(), which moves
  // qSeen out. Each once: the stores are emptied.
  ExampleList topExamples();
  ExampleList quantileExamples();
  // Each feature's cooTop features that fire with it on the most rows kept (count > 0; most first, ties to the lower
  // id), as [m][cooTop] ids (-1 past the last) and counts: exact, from the rows grouped by feature (each feature's
  // counts over the rows it fires on, in one array of m counters per thread). Once: the kept rows are released.
  void cooccurrence(int32_t* other, uint32_t* count);
  long cooTokens() const { return (long)cooStart_.size() - 1; }

  int m, vocab, topK, radius;
  int cooTop;
  size_t cooMaxEntries, cooBlock;
  std::vector<float> edges;
  int perBand;
  std::vector<double> bandEdges;  // between quantile bands
  std::vector<int32_t> qSeen;     // [m][bands]: firings per band, when sampling
  std::vector<double> count, sum;
  std::vector<float> max;
  // The large tables in huge pages (util.h): zeroed in 4 KiB pages, the token table alone (64 MB at 16,384 latents
  // and 512 tokens) was ~10% of the index's page faults.
  LargeVector<uint32_t> hist;  // [m][edges + 1]
  LargeVector<float> tok;      // [vocab][m][2]: firings and summed activation, when kept

 private:
  // Rows [0, n), the thread's latents (a range of its own: no counter or store is shared).
  void addRange(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, const int32_t* doc,
                const int32_t* pos, int thread);
  int owner(int i) const;  // the thread whose range of latents holds i
  // The rows kept for co-occurrence: their latent ids one after another, row r's at [cooStart_[r], cooStart_[r + 1]).
  // O(firings) instead of m x m counters (1 GiB at 16,384 latents); full once a row would pass cooMaxEntries. In
  // 16 bits where every id fits (m <= 65,536), half the memory; otherwise 32. In huge pages (util.h), as the offsets:
  // grown by doubling a chunk at a time, in 4 KiB pages they were 7,300 of the index's 154,000 page faults at 256k
  // tokens x 16,384 latents.
  LargeVector<uint16_t> cooIds16_;
  LargeVector<int32_t> cooIds32_;
  size_t cooSize() const { return m <= 65536 ? cooIds16_.size() : cooIds32_.size(); }
  template <class Id>
  void cooCount(const LargeVector<Id>& ids, int32_t* other, uint32_t* count);
  LargeVector<uint32_t> cooStart_{0};
  bool cooFull_ = false;
  LargeVector<float> heap_;        // [m][topK]: each feature's top-K activations so far, a min-heap of heapSize_[i]
  std::vector<int32_t> heapSize_;  // [m]
  std::vector<float> heapMin_;     // [m]: heap_'s smallest where full (the activation to beat)
  Pool pool_;
  // Each thread's stores of top and quantile examples, and where a feature's (a feature band's) slots begin, -1 before
  // its first example (a feature's top slots filled: heapSize_).
  std::vector<ExampleSlots> topStore_, quantileStore_;
  std::vector<int32_t> topBase_, quantileBase_;
  int32_t topSlot(ExampleSlots& st, int i);
  ExampleList gather(std::vector<ExampleSlots>& stores, const std::vector<int32_t>& base, int keysPerFeature, int per,
                     const int32_t* filled) const;
};

}  // namespace sdl
