#include "index_stats.h"

#include <algorithm>
#include <functional>

namespace sdl {

IndexStats::IndexStats(int m_, int vocab_, int topK_, int radius_, bool coOn_, std::vector<float> edges_, int threads)
    : m(m_), vocab(vocab_), topK(topK_), radius(radius_), coOn(coOn_), edges(std::move(edges_)),
      count(m_, 0.0), sum(m_, 0.0), max(m_, 0.f), hist((size_t)m_ * (edges.size() + 1), 0u),
      tokCount(vocab_ > 0 ? (size_t)m_ * vocab_ : 0, 0.f), tokSum(vocab_ > 0 ? (size_t)m_ * vocab_ : 0, 0.f),
      co(coOn_ ? (size_t)m_ * m_ : 0, 0u), heap_(m_), pool_(threads), tev_(threads), tctx_(threads) {}

void IndexStats::add(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window) {
  const int T = pool_.size();
  pool_.run(T, [&](int t, int) {
    tev_[t].clear();
    tctx_[t].clear();
    addRange(n, start, idx, val, token, window, (int)((long)m * t / T), (int)((long)m * (t + 1) / T), tev_[t], tctx_[t]);
  });
  events.clear();
  ctxActs.clear();
  for (int t = 0; t < T; t++) {
    const int32_t base = (int32_t)ctxActs.size();
    for (IndexEvent e : tev_[t]) {
      e.ctxOffset += base;
      events.push_back(e);
    }
    ctxActs.insert(ctxActs.end(), tctx_[t].begin(), tctx_[t].end());
  }
}

void IndexStats::addRange(int n, const int32_t* start, const int32_t* idx, const float* val, const int32_t* token, const int32_t* window, int j0,
                          int j1, std::vector<IndexEvent>& events, std::vector<float>& ctxActs) {
  const int H = (int)edges.size();
  const std::greater<float> minFirst;
  for (int r = 0; r < n; r++) {
    const int q0 = start[r], q1 = start[r + 1];
    const int t = token[r];
    const bool tokOk = vocab > 0 && t >= 0 && t < vocab;
    // This thread's entries of the row (latents increase along it).
    int a0 = q0, a1 = q1;
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
        tokCount[(size_t)i * vocab + t] += 1.f;
        tokSum[(size_t)i * vocab + t] += a;
      }
      std::vector<float>& h = heap_[i];
      if ((int)h.size() < topK || a > h.front()) {
        if ((int)h.size() >= topK) {
          std::pop_heap(h.begin(), h.end(), minFirst);
          h.pop_back();
        }
        h.push_back(a);
        std::push_heap(h.begin(), h.end(), minFirst);
        int lo = r, hi = r;
        while (lo > 0 && r - lo < radius && window[lo - 1] == window[r]) lo--;
        while (hi + 1 < n && hi - r < radius && window[hi + 1] == window[r]) hi++;
        events.push_back(IndexEvent{i, r, lo, hi, a, (int32_t)ctxActs.size()});
        for (int rr = lo; rr <= hi; rr++) {
          float v = 0.f;
          for (int s = start[rr]; s < start[rr + 1]; s++)
            if (idx[s] == i) { v = val[s]; break; }
          ctxActs.push_back(v);
        }
      }
    }
    if (coOn) {
      for (int a = a0; a < a1; a++) {
        uint32_t* row = co.data() + (size_t)idx[a] * m;
        for (int b = a + 1; b < q1; b++) row[idx[b]]++;
      }
    }
  }
}

}  // namespace sdl
