#include "encode.h"

#include <algorithm>

#include "select.h"

namespace sdl {
namespace {

// Per thread, per row of its current block: candidates in index order (at most 2k before a compaction, plus one
// block's worth), and the running threshold: once a row holds k candidates, only values above its k-th can enter
// (an equal value later in the row loses the tie to the earlier one).
class TopKSink final : public BlockSink {
 public:
  TopKSink(int threads, int k, Sparse& out, const std::vector<int32_t>& dead, int kAux, Sparse* aux)
      : k_(k), R_(gemmBlockRows()), cap_(2 * k + gemmBlockCols() + 32), out_(out), dead_(dead), kAux_(kAux), aux_(aux), th_(threads) {
    const int nDead = (int)dead.size();
    for (auto& t : th_) {
      t.ci.resize((size_t)R_ * cap_);
      t.cv.resize((size_t)R_ * cap_);
      t.n.assign(R_, 0);
      t.thr.assign(R_, 0.f);
      t.work.resize((size_t)3 * cap_ + 64);
      if (aux_) {
        t.gathered.resize((size_t)R_ * nDead + 16);
        t.scratch.resize((size_t)5 * nDead + 128);
      }
    }
  }

  void block(int thread, int, int mc, int j0, int nc, const float* C, long ldc) override {
    Th& t = th_[thread];
    for (int r = 0; r < mc; r++) {
      int32_t* ci = t.ci.data() + (size_t)r * cap_;
      float* cv = t.cv.data() + (size_t)r * cap_;
      int& cnt = t.n[r];
      cnt += collect(C + r * ldc, nc, t.thr[r], true, j0, ci + cnt, cv + cnt);
      if (cnt >= 2 * k_) {
        t.thr[r] = keepTopK(ci, cv, cnt, k_, t.work.data());
        cnt = k_;
      }
    }
    if (!aux_) return;
    const int nDead = (int)dead_.size();
    const int lo = (int)(std::lower_bound(dead_.begin(), dead_.end(), j0) - dead_.begin());
    const int hi = (int)(std::lower_bound(dead_.begin(), dead_.end(), j0 + nc) - dead_.begin());
    for (int r = 0; r < mc; r++) {
      float* g = t.gathered.data() + (size_t)r * nDead;
      const float* z = C + r * ldc - j0;
      for (int q = lo; q < hi; q++) g[q] = z[dead_[q]];
    }
  }

  void rowsDone(int thread, int i0, int mc) override {
    Th& t = th_[thread];
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      int32_t* ci = t.ci.data() + (size_t)r * cap_;
      float* cv = t.cv.data() + (size_t)r * cap_;
      int cnt = t.n[r];
      if (cnt > k_) {
        keepTopK(ci, cv, cnt, k_, t.work.data());
        cnt = k_;
      }
      out_.start[row] = row * k_;
      out_.count[row] = cnt;
      std::copy(ci, ci + cnt, out_.idx.data() + row * k_);
      std::copy(cv, cv + cnt, out_.val.data() + row * k_);
      t.n[r] = 0;
      t.thr[r] = 0.f;
      if (aux_) {
        const int nDead = (int)dead_.size();
        int32_t* ix = aux_->idx.data() + row * kAux_;
        float* v = aux_->val.data() + row * kAux_;
        int na = topkRow(t.gathered.data() + (size_t)r * nDead, nDead, kAux_, ix, v, t.scratch.data());
        for (int q = 0; q < na; q++) ix[q] = dead_[ix[q]];
        aux_->start[row] = row * kAux_;
        aux_->count[row] = na;
      }
    }
  }

 private:
  struct Th {
    std::vector<int32_t> ci;
    std::vector<float> cv, thr, work, gathered, scratch;
    std::vector<int> n;
  };
  const int k_, R_, cap_;
  Sparse& out_;
  const std::vector<int32_t>& dead_;
  const int kAux_;
  Sparse* aux_;
  std::vector<Th> th_;
};

}  // namespace

void encodeTopK(Pool& pool, const float* A, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k, Sparse& out,
                const std::vector<int32_t>& dead, int kAux, Sparse* aux) {
  k = k < m ? k : m;
  out.start.resize(n);
  out.count.resize(n);
  out.idx.resize((size_t)n * k + 1);
  out.val.resize((size_t)n * k + 1);
  const bool withAux = aux && !dead.empty() && kAux > 0;
  if (withAux) {
    kAux = kAux < (int)dead.size() ? kAux : (int)dead.size();
    aux->start.resize(n);
    aux->count.resize(n);
    aux->idx.resize((size_t)n * kAux + 1);
    aux->val.resize((size_t)n * kAux + 1);
  }
  if (k <= 0) {
    for (int b = 0; b < n; b++) { out.start[b] = 0; out.count[b] = 0; }
    out.nnz = 0;
    return;
  }
  TopKSink sink(pool.size(), k, out, dead, kAux, withAux ? aux : nullptr);
  gemmBlocks(pool, n, m, dIn, View{A, dIn, 1}, View{W_encT, 1, dIn}, b_enc, sink);
  long s = 0;
  for (int b = 0; b < n; b++) s += out.count[b];
  out.nnz = s;
  if (withAux) {
    long a = 0;
    for (int b = 0; b < n; b++) a += aux->count[b];
    aux->nnz = a;
  }
}

}  // namespace sdl
