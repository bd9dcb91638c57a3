#include "encode.h"

#include <algorithm>
#include <atomic>

#include "screen.h"
#include "select.h"

namespace sdl {
namespace {

// A sink's per-thread state, kept on the thread that runs the row block (a gemmBlocks task runs on one thread from its
// first block to its pause or end) from one encoder call to the next: made afresh for every call, the TopK sink's
// candidate arrays (~0.9 MB a thread) were zeroed and faulted in every step, 3-4% of a TopK step at 512 x 4,096, and
// AuxK's gathered dead pre-activations (rows x dead latents) the same. `call` is the sink's id (one per sink object):
// a thread's first use in a call runs `start` on its state (sizes the buffers, empties the rows) whatever an earlier
// call left there.
uint64_t nextSinkId() {
  static std::atomic<uint64_t> ids{0};
  return ++ids;
}
template <class State>
State& threadSlot() {
  static thread_local State t;
  return t;
}
template <class State, class Start>
State& threadState(uint64_t call, Start&& start) {
  State& t = threadSlot<State>();
  if (t.call != call) {
    t.call = call;
    start(t);
  }
  return t;
}

// AuxK's selection inside the fused encoder: each row's pre-activations of the dead latents are gathered as the
// blocks pass, then each row keeps its top k_aux of them (topkRow, as the unfused path does). Across column chunks
// (gemmBlocks' rowsPause) a row's top k_aux so far waits in the AuxK arrays as positions among the dead latents, with
// its k_aux-th value (thr_, 0 while it holds fewer): a later chunk's entries above it are appended (their positions
// all follow) and the k_aux largest kept, ties to the earlier: the same selection as over every dead latent at once.
class DeadTopK {
 public:
  static void releaseThread() { threadSlot<Th>() = Th{}; }
  DeadTopK(int n, const std::vector<int32_t>& dead, int kAux, Sparse* aux) : id_(nextSinkId()), dead_(dead), kAux_(kAux), aux_(aux), thr_(aux ? n : 0, 0.f) {}
  void block(int mc, int j0, int nc, const float* C, long ldc) {
    if (!aux_) return;
    const int nDead = (int)dead_.size();
    const int lo = (int)(std::lower_bound(dead_.begin(), dead_.end(), j0) - dead_.begin());
    const int hi = (int)(std::lower_bound(dead_.begin(), dead_.end(), j0 + nc) - dead_.begin());
    Th& t = mine();
    if (t.qlo < 0) t.qlo = lo;
    t.qhi = hi;
    float* g0 = t.gathered.data();
    for (int r = 0; r < mc; r++) {
      float* g = g0 + (size_t)r * nDead;
      const float* z = C + r * ldc - j0;
      for (int q = lo; q < hi; q++) g[q] = z[dead_[q]];
    }
  }
  void rowsResume() {
    if (aux_) mine().resumed = true;
  }
  // The rows' dead latents gathered since the last pause, taken into each row's top k_aux.
  void rowsPause(int i0, int mc) {
    if (!aux_) return;
    Th& t = mine();
    const int nDead = (int)dead_.size();
    const int qlo = t.qlo < 0 ? 0 : t.qlo, width = t.qlo < 0 ? 0 : t.qhi - t.qlo;
    if (t.resumed) {
      ensure(t.mi, (size_t)width + 16);
      ensure(t.mv, (size_t)width + 16);
      ensure(t.work, (size_t)kAux_ + width + 16);
    }
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      int32_t* ix = aux_->idx.data() + row * kAux_;
      float* v = aux_->val.data() + row * kAux_;
      const float* g = t.gathered.data() + (size_t)r * nDead + qlo;
      if (!t.resumed) {
        const int na = width > 0 ? topkRow(g, width, kAux_, ix, v, t.scratch.data()) : 0;
        for (int q = 0; q < na; q++) ix[q] += qlo;
        aux_->count[row] = na;
        thr_[row] = na == kAux_ ? *std::min_element(v, v + na) : 0.f;
        continue;
      }
      // This chunk's entries above the row's k_aux-th so far (all after the kept ones in index order).
      const int c = aux_->count[row];
      const int nn = width > 0 ? collect(g, width, thr_[row], true, qlo, t.mi.data(), t.mv.data()) : 0;
      if (c + nn <= kAux_) {
        std::copy(t.mi.begin(), t.mi.begin() + nn, ix + c);
        std::copy(t.mv.begin(), t.mv.begin() + nn, v + c);
        aux_->count[row] = c + nn;
        continue;
      }
      // The k_aux largest of both, in place and in order, ties to the earlier: those above the k_aux-th value, and
      // as many equal to it as fill k_aux, the earliest first.
      float* w = t.work.data();
      std::copy(v, v + c, w);
      std::copy(t.mv.begin(), t.mv.begin() + nn, w + c);
      std::nth_element(w, w + (kAux_ - 1), w + c + nn, std::greater<float>());
      const float kth = w[kAux_ - 1];
      int ties = kAux_;
      for (int q = 0; q < c + nn; q++) ties -= w[q] > kth;
      int out = 0;
      for (int q = 0; q < c; q++)
        if (v[q] > kth || (v[q] == kth && ties-- > 0)) ix[out] = ix[q], v[out++] = v[q];
      for (int q = 0; q < nn; q++)
        if (t.mv[q] > kth || (t.mv[q] == kth && ties-- > 0)) ix[out] = t.mi[q], v[out++] = t.mv[q];
      aux_->count[row] = out;
      thr_[row] = kth;
    }
    t.qlo = -1;
    t.resumed = false;
  }
  void rowsDone(int i0, int mc) {
    if (!aux_) return;
    rowsPause(i0, mc);
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      int32_t* ix = aux_->idx.data() + row * kAux_;
      for (int q = 0; q < aux_->count[row]; q++) ix[q] = dead_[ix[q]];
      aux_->start[row] = row * kAux_;
    }
  }

 private:
  struct Th {
    std::vector<float> gathered, scratch, mv, work;
    std::vector<int32_t> mi;
    int qlo = -1, qhi = 0;  // the dead positions gathered since the last pause
    bool resumed = false;    // the rows hold what earlier chunks kept
    uint64_t call = 0;
  };
  Th& mine() const {
    return threadState<Th>(id_, [&](Th& t) {
      const size_t nDead = dead_.size();
      ensure(t.gathered, (size_t)gemmBlockRows() * nDead + 16);
      ensure(t.scratch, 5 * nDead + 128);
      t.qlo = -1;
      t.qhi = 0;
      t.resumed = false;
    });
  }
  const uint64_t id_;
  const std::vector<int32_t>& dead_;
  const int kAux_;
  Sparse* aux_;
  std::vector<float> thr_;  // each row's k_aux-th value so far (0 while it holds fewer)
};

// Per thread, per row of its current block: candidates in index order (at most 4k before a compaction, plus one
// block's worth), and the running threshold: once a row holds k candidates, only values above its k-th can enter
// (an equal value later in the row loses the tie to the earlier one). Between column chunks a row's state is its k
// largest so far (in the output arrays, in index order) and its threshold (thr_): what a compaction leaves.
class TopKSink final : public BlockSink {
 public:
  static void releaseThread() { threadSlot<Th>() = Th{}; }
  TopKSink(int n, int k, Sparse& out, DeadTopK& dead)
      : k_(k), R_(gemmBlockRows()), cap_(4 * k + gemmBlockCols() + 32), id_(nextSinkId()), out_(out), dead_(dead), thr_(n, 0.f) {}

  void block(int, int, int mc, int j0, int nc, const float* C, long ldc) override {
    Th& t = mine();
    for (int r = 0; r < mc; r++) {
      int32_t* ci = t.ci.data() + (size_t)r * cap_;
      float* cv = t.cv.data() + (size_t)r * cap_;
      int& cnt = t.n[r];
      if (cnt == 0 && t.thr[r] <= 0.f) {
        // A row's first block: a floor from its strided group maxima keeps the collection near k entries instead
        // of every positive one. The block holds k entries >= the floor, so ties at it are collected (>=) here, and
        // a later block's value equal to the k-th kept loses to it (> from then on, as after a compaction).
        const float floor = topkFloor(C + r * ldc, nc, k_, t.work.data());
        if (floor > 0.f) {
          cnt = collect(C + r * ldc, nc, floor, false, j0, ci, cv);
          // At least k were collected: keep the k largest now, so later blocks are held to their k-th (higher
          // than the floor: about half as many entries of a row's later blocks get collected).
          if (cnt > k_) {
            t.thr[r] = keepTopK(ci, cv, cnt, k_, t.work.data());
            cnt = k_;
          } else {
            t.thr[r] = *std::min_element(cv, cv + cnt);
          }
          continue;
        }
      }
      cnt += collect(C + r * ldc, nc, t.thr[r], true, j0, ci + cnt, cv + cnt);
      if (cnt >= 4 * k_) {
        t.thr[r] = keepTopK(ci, cv, cnt, k_, t.work.data());
        cnt = k_;
      }
    }
    dead_.block(mc, j0, nc, C, ldc);
  }

  void rowsDone(int, int i0, int mc) override {
    save(i0, mc);
    dead_.rowsDone(i0, mc);
  }

  void rowsPause(int, int i0, int mc) override {
    Th& t = mine();
    for (int r = 0; r < mc; r++) thr_[i0 + r] = t.thr[r];
    save(i0, mc);
    dead_.rowsPause(i0, mc);
  }

  void rowsResume(int, int i0, int mc) override {
    Th& t = mine();
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      const int cnt = out_.count[row];
      std::copy(out_.idx.data() + row * k_, out_.idx.data() + row * k_ + cnt, t.ci.data() + (size_t)r * cap_);
      std::copy(out_.val.data() + row * k_, out_.val.data() + row * k_ + cnt, t.cv.data() + (size_t)r * cap_);
      t.n[r] = cnt;
      t.thr[r] = thr_[row];
    }
    dead_.rowsResume();
  }

 private:
  // Rows [i0, i0 + mc) compacted to their k largest into the output arrays; the thread's rows emptied.
  void save(int i0, int mc) {
    Th& t = mine();
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      int32_t* ci = t.ci.data() + (size_t)r * cap_;
      float* cv = t.cv.data() + (size_t)r * cap_;
      int cnt = t.n[r];
      if (cnt > k_) {
        const float kth = keepTopK(ci, cv, cnt, k_, t.work.data());
        cnt = k_;
        thr_[row] = kth;
      }
      out_.start[row] = row * k_;
      out_.count[row] = cnt;
      std::copy(ci, ci + cnt, out_.idx.data() + row * k_);
      std::copy(cv, cv + cnt, out_.val.data() + row * k_);
      t.n[r] = 0;
      t.thr[r] = 0.f;
    }
  }

  // On the running thread (threadState); a task leaves its rows empty (save).
  struct Th {
    std::vector<int32_t> ci;
    std::vector<float> cv, thr, work;
    std::vector<int> n;
    uint64_t call = 0;
  };
  Th& mine() const {
    return threadState<Th>(id_, [&](Th& t) {
      ensure(t.ci, (size_t)R_ * cap_);
      ensure(t.cv, (size_t)R_ * cap_);
      ensure(t.work, (size_t)3 * cap_ + 64);
      t.n.assign(R_, 0);
      t.thr.assign(R_, 0.f);
    });
  }
  const int k_, R_, cap_;
  const uint64_t id_;
  Sparse& out_;
  DeadTopK& dead_;
  std::vector<float> thr_;  // each row's threshold between column chunks
};

// Every entry above a floor, per row in index order, and the count of positive entries: a batch-wide selection's
// candidates. Each row block's candidates land in its own slot of `out` (rows back to back). Between column chunks a
// row block's entries so far wait in out.parts (one block per chunk), joined row by row at the end.
class AboveSink final : public BlockSink {
 public:
  AboveSink(int threads, float floor, Candidates& out, DeadTopK& dead)
      : floor_(floor), R_(gemmBlockRows()), out_(out), dead_(dead), th_(threads), used_(out.blocks.size(), 0) {
    out_.parts.resize(out.blocks.size());
    for (auto& t : th_) {
      t.ci.resize(R_);
      t.cv.resize(R_);
      t.n.assign(R_, 0);
      t.npos = 0;
    }
  }

  void block(int thread, int, int mc, int j0, int nc, const float* C, long ldc) override {
    Th& t = th_[thread];
    for (int r = 0; r < mc; r++) {
      const float* z = C + r * ldc;
      std::vector<int32_t>& ci = t.ci[r];
      std::vector<float>& cv = t.cv[r];
      const size_t n0 = t.n[r];
      // Room for a whole block's entries; grown geometrically, so the zero-filling of resize() is rare (it was a
      // memset of every block's width per row per block).
      if (ci.size() < n0 + nc + 16) {
        const size_t cap = std::max(2 * ci.size(), n0 + nc + 16);
        ci.resize(cap);
        cv.resize(cap);
      }
      t.n[r] = n0 + collect(z, nc, floor_, true, j0, ci.data() + n0, cv.data() + n0);
      t.npos += countPositiveRow(z, nc);
    }
    dead_.block(mc, j0, nc, C, ldc);
  }

  void rowsDone(int thread, int i0, int mc) override {
    const int i = i0 / R_;
    Candidates::Block& b = out_.blocks[i];
    if (used_[i] == 0) {
      take(thread, mc, b);
    } else {
      // Each row's entries from every chunk, in chunk order (ascending latents).
      const int np = nextPart(thread, i0, mc) + 1;
      const std::vector<Candidates::Block>& parts = out_.parts[i];
      b.off.assign(mc + 1, 0);
      b.npos = 0;
      for (int q = 0; q < np; q++) {
        const Candidates::Block& p = parts[q];
        b.npos += p.npos;
        for (int r = 0; r < mc; r++) b.off[r + 1] += p.off[r + 1] - p.off[r];
      }
      for (int r = 0; r < mc; r++) b.off[r + 1] += b.off[r];
      resizeGrowing(b.idx, b.off[mc]);
      resizeGrowing(b.val, b.off[mc]);
      for (int r = 0; r < mc; r++) {
        long at = b.off[r];
        for (int q = 0; q < np; q++) {
          const Candidates::Block& p = parts[q];
          std::copy(p.idx.begin() + p.off[r], p.idx.begin() + p.off[r + 1], b.idx.begin() + at);
          std::copy(p.val.begin() + p.off[r], p.val.begin() + p.off[r + 1], b.val.begin() + at);
          at += p.off[r + 1] - p.off[r];
        }
      }
      used_[i] = 0;
    }
    dead_.rowsDone(i0, mc);
  }

  void rowsPause(int thread, int i0, int mc) override {
    nextPart(thread, i0, mc);
    dead_.rowsPause(i0, mc);
  }

  void rowsResume(int, int, int) override { dead_.rowsResume(); }

 private:
  // The thread's rows into the row block's next part (its arrays kept from the last call); returns the part's place.
  int nextPart(int thread, int i0, int mc) {
    const int i = i0 / R_;
    std::vector<Candidates::Block>& parts = out_.parts[i];
    if ((size_t)used_[i] == parts.size()) parts.emplace_back();
    take(thread, mc, parts[used_[i]]);
    return used_[i]++;
  }

  // The thread's rows (mc of them) into b, rows back to back; the thread's rows emptied.
  void take(int thread, int mc, Candidates::Block& b) {
    Th& t = th_[thread];
    b.off.assign(mc + 1, 0);
    for (int r = 0; r < mc; r++) b.off[r + 1] = b.off[r] + (long)t.n[r];
    resizeGrowing(b.idx, b.off[mc]);
    resizeGrowing(b.val, b.off[mc]);
    for (int r = 0; r < mc; r++) {
      std::copy(t.ci[r].begin(), t.ci[r].begin() + t.n[r], b.idx.begin() + b.off[r]);
      std::copy(t.cv[r].begin(), t.cv[r].begin() + t.n[r], b.val.begin() + b.off[r]);
      t.n[r] = 0;
    }
    b.npos = t.npos;
    t.npos = 0;
  }

  static long countPositiveRow(const float* z, int n) {
    long c = 0;
    for (int j = 0; j < n; j++) c += z[j] > 0.f;
    return c;
  }
  struct Th {
    std::vector<std::vector<int32_t>> ci;
    std::vector<std::vector<float>> cv;
    std::vector<size_t> n;  // entries held per row (the vectors are longer: capacity)
    long npos = 0;
  };
  const float floor_;
  const int R_;
  Candidates& out_;
  DeadTopK& dead_;
  std::vector<Th> th_;
  std::vector<int> used_;  // per row block, how many of out_.parts it holds this call
};

}  // namespace

void encodeRelease(Pool& pool) {
  pool.each([](int) {
    DeadTopK::releaseThread();
    TopKSink::releaseThread();
  });
}

namespace {

void prepareAux(int n, const std::vector<int32_t>& dead, int& kAux, Sparse* aux, bool& withAux) {
  withAux = aux && !dead.empty() && kAux > 0;
  if (!withAux) return;
  kAux = kAux < (int)dead.size() ? kAux : (int)dead.size();
  aux->start.resize(n);
  aux->count.resize(n);
}

// AuxK's arrays for the float32 path's fused selection (DeadTopK). The screened path's deadTopK sizes them itself
// when it runs, after the bf16 copy of W_enc is given back: not held beside it through the encoder.
void sizeAux(int n, int kAux, bool withAux, Sparse* aux) {
  if (!withAux) return;
  resizeExact(aux->idx, (size_t)n * kAux + 1);
  resizeExact(aux->val, (size_t)n * kAux + 1);
}

// Config::screen: 2 always (where the processor can), 1 where screening is faster (screen.h): from kScreenMinDepth
// inputs and kScreenMinProducts products a row.
bool screenWanted(int screen, int dIn, int m) {
  if (screen != 1) return screen == 2;
  return dIn >= kScreenMinDepth && (long)dIn * m >= kScreenMinProducts;
}

void finishAux(int n, bool withAux, Sparse* aux) {
  if (!withAux) return;
  long a = 0;
  for (int b = 0; b < n; b++) a += aux->count[b];
  aux->nnz = a;
}

}  // namespace

bool encodeTopK(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k, Sparse& out,
                const std::vector<int32_t>& dead, int kAux, Sparse* aux, Screen screen, const int32_t* cols, size_t chunkBudget) {
  k = k < m ? k : m;
  out.start.resize(n);
  out.count.resize(n);
  resizeExact(out.idx, (size_t)n * k + 1);
  resizeExact(out.val, (size_t)n * k + 1);
  bool withAux, screened = false;
  prepareAux(n, dead, kAux, aux, withAux);
  if (k <= 0) {
    for (int b = 0; b < n; b++) { out.start[b] = 0; out.count[b] = 0; }
    out.nnz = 0;
    if (withAux)
      for (int b = 0; b < n; b++) { aux->start[b] = 0; aux->count[b] = 0; }
  } else {
    screened = !cols && screenWanted(screen.level, dIn, m) &&
               screenTopK(pool, A, lda, n, dIn, m, W_encT, b_enc, k, out, dead, withAux ? kAux : 0, withAux ? aux : nullptr, screen.lean);
    if (!screened) {
      sizeAux(n, kAux, withAux, aux);
      DeadTopK dk(n, dead, kAux, withAux ? aux : nullptr);
      TopKSink sink(n, k, out, dk);
      gemmBlocks(pool, n, m, dIn, View{A, lda, 1}, View{W_encT, 1, dIn}, b_enc, sink, cols, chunkBudget);
    }
    long s = 0;
    for (int b = 0; b < n; b++) s += out.count[b];
    out.nnz = s;
  }
  finishAux(n, withAux, aux);
  return screened;
}

bool encodeAbove(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, float floor, Candidates& out,
                 const std::vector<int32_t>& dead, int kAux, Sparse* aux, Screen screen, long keepTop) {
  bool withAux;
  prepareAux(n, dead, kAux, aux, withAux);
  if (screenWanted(screen.level, dIn, m) &&
      screenAbove(pool, A, lda, n, dIn, m, W_encT, b_enc, floor, keepTop, out, dead, withAux ? kAux : 0, withAux ? aux : nullptr, screen.lean)) {
    finishAux(n, withAux, aux);
    return true;
  }
  // The blocks' arrays are kept from call to call (a step's candidates are about as many as the last step's): fresh,
  // a ReLU step at 5% firing faulted in and zeroed ~10 MB of them at 768 x 6,144.
  out.blocks.resize((n + gemmBlockRows() - 1) / gemmBlockRows());
  sizeAux(n, kAux, withAux, aux);
  DeadTopK dk(n, dead, kAux, withAux ? aux : nullptr);
  AboveSink sink(pool.size(), floor, out, dk);
  gemmBlocks(pool, n, m, dIn, View{A, lda, 1}, View{W_encT, 1, dIn}, b_enc, sink);
  out.total = 0;
  out.npos = 0;
  for (auto& b : out.blocks) {
    out.total += (long)b.val.size();
    out.npos += b.npos;
  }
  finishAux(n, withAux, aux);
  return false;
}

float rowsTopFloor(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k2, long want, Sparse& rows,
                   Screen screen) {
  encodeTopK(pool, A, lda, n, dIn, m, W_encT, b_enc, k2, rows, {}, 0, nullptr, screen);
  if (want <= 0 || rows.nnz < want) return -1.f;
  std::vector<FloatSpan> spans;
  spans.reserve(n);
  for (int b = 0; b < n; b++) spans.push_back({rows.val.data() + rows.start[b], (long)rows.count[b]});
  return kthLargestPositive(pool, spans, want);
}

}  // namespace sdl
