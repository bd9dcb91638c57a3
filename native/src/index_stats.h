// Per-feature statistics of the feature index, accumulated over sparse activations chunk by chunk: firing
// counts, sums, maxima, a histogram over fixed edges, per-token counts and sums, pair co-occurrence, and the
// running top-K activations of each feature. When an activation enters a feature's top K, an event carries
// it out (row, context bounds, the feature's activation on each context row) so the caller can keep the example.
#pragma once
#include <cstdint>
#include <vector>

#include "pool.h"

namespace sdl {

// Each of the m unit rows' n nearest other rows by dot product (cosine), best first (ties: the lower index first),
// as [m, n] ids (-1 past the last) and cosines: 256-row blocks of the m x m cosines by gemm, each row's n largest
// kept by insertion (the TypeScript reference, index/neighbors.ts, selects the same way from the same blocks).
void nearestRows(Pool& pool, const float* unit, int m, int d, int n, int32_t* other, float* cosine);

struct IndexEvent {
  int32_t feature, row, lo, hi;  // context rows [lo, hi] of the chunk (same window, within the radius)
  float act;
  int32_t ctxOffset;  // into ctxActs
};

class IndexStats {
 public:
  IndexStats(int m, int vocab, int topK, int radius, bool cooccurrence, std::vector<float> edges, int threads);
  // One chunk: rows [0, n) with activations in idx/val[start[r] .. start[r+1]) (latents increasing within a row).
  void add(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window);

  int m, vocab, topK, radius;
  bool coOn;
  std::vector<float> edges;
  std::vector<double> count, sum;
  std::vector<float> max;
  std::vector<uint32_t> hist;      // [m][edges + 1]
  std::vector<float> tokCount, tokSum;  // [m][vocab], when kept
  std::vector<uint32_t> co;        // [m][m], i < j
  std::vector<IndexEvent> events;  // of the last chunk
  std::vector<float> ctxActs;      // of the last chunk's events

 private:
  // Rows [0, n), latents [j0, j1): each thread owns a range of latents, so no counter is shared.
  void addRange(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, int j0, int j1,
                std::vector<IndexEvent>& ev, std::vector<float>& ctx);
  std::vector<std::vector<float>> heap_;  // per feature: min-heap of its top-K activations
  Pool pool_;
  std::vector<std::vector<IndexEvent>> tev_;
  std::vector<std::vector<float>> tctx_;
};

}  // namespace sdl
