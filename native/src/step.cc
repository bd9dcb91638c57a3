// Engine::step: loss and gradients of one batch (see engine.h for the objective). The encoder is one GEMM; then
// either the sparse path (every activation: per-row passes over the active decoder rows, then per-latent gradient
// rows from entries grouped by latent) or, for ReLU/JumpReLU with many active latents, the dense path (GEMMs).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "encode.h"
#include "engine.h"
#include "gemm.h"
#include "select.h"
#include "simd.h"
#include "util.h"

namespace sdl {

// A hash of n floats' bits that changes when any word changes or two trade places (each word times an odd number
// that depends on its place): a deferred step's input is checked unchanged at applyRows for ~1 ms a step at 4,096 x 768.
static uint64_t rowsHash(const float* x, long n) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(x);
  uint64_t h = 0;
  for (long i = 0; i < n; i++) h += (uint64_t)w[i] * (2 * (uint64_t)i + 1);
  return h;
}

int blockedDecode(long dSae, int dOut, long entries, int B, int option) {
  if (option != 0) return option > 0 ? option : 0;
  // Blocks the size of a share of the last-level cache, not of L2: at 768 x 24,576 (75 MB of decoder rows), 20 steps
  // from 5% firing, the pass took 5.8-6.0 s a row at a time, 4.1-4.3 s in blocks of 2,720 latents (8 MiB), 4.6-7.3 s
  // in blocks of 170 (L2). At 768 x 6,144 (19 MB) and 512 x 4,096 (8 MB) blocks were 4-8% slower, the decoder rows
  // served by the cache anyway (docs/BENCHMARKS.md, stop 62).
  constexpr double kLargerThan = 32.0 * (1 << 20), kEntriesPerBlock = 8.0;
  constexpr long kBlockBytes = 8 << 20;
  int JB = (int)(kBlockBytes / ((long)sizeof(float) * dOut));
  if (JB < 16) JB = 16;
  if ((double)dSae * dOut * sizeof(float) < kLargerThan || (double)entries / B * JB / dSae < kEntriesPerBlock) return 0;
  return JB;
}

int blockedRows(int B, int width, long entries, long dSae, int option) {
  if (option != 0) return option > 0 ? option : 0;
  // At 768 wide (25 MB of input and dL/dy^ rows), 20 steps from 5% firing at 24,576 latents: 4.5-4.9 s unblocked,
  // 3.3-3.7 s in two blocks of 2,048 rows (12 MiB), 4.3-4.4 s in six; at 512 x 4,096 (16 MB) no difference
  // (docs/BENCHMARKS.md, stop 62).
  constexpr long kBlockBytes = 12 << 20;
  constexpr double kLargerThan = 16.0 * (1 << 20), kEntriesPerBlock = 16.0;
  int RB = (int)(kBlockBytes / ((long)sizeof(float) * width));
  if (RB < 64) RB = 64;
  if ((double)B * width * sizeof(float) <= kLargerThan || RB >= B || (double)entries / dSae * RB / B < kEntriesPerBlock) return 0;
  return RB;
}

namespace {

// The dense ReLU step's encoder, a block of pre-activations at a time while it is in cache (gemmBlocks): stored as the
// activations max(z, 0), each row's positive entries counted. The pass over [B, m] that counted them and the one
// that applied the ReLU were 7 and 11 ms of a dense step at 768 x 24,576 (docs/BENCHMARKS.md, stops 64 and 68).
class ReluStore final : public BlockSink {
 public:
  ReluStore(float* acts, long lda, int* count) : acts_(acts), lda_(lda), count_(count) {}
  void block(int, int i0, int mc, int j0, int nc, const float* C, long ldc) override {
    const vf zero = vsplat(0.f);
    for (int r = 0; r < mc; r++) {
      const float* z = C + r * ldc;
      float* a = acts_ + (long)(i0 + r) * lda_ + j0;
      vi on = vi{};
      int j = 0;
      for (; j + VW <= nc; j += VW) {
        const vf v = vload(z + j);
        const vi pos = v > zero;
        vstore(a + j, pos ? v : zero);
        on -= pos;  // a true lane is -1
      }
      int n = 0;
      for (int q = 0; q < VW; q++) n += on[q];
      for (; j < nc; j++) {
        a[j] = z[j] > 0.f ? z[j] : 0.f;
        n += z[j] > 0.f;
      }
      count_[i0 + r] += n;  // each row block is one task's in a chunk, and chunks run one after another
    }
  }
  void rowsDone(int, int, int) override {}
  void rowsPause(int, int, int) override {}
  void rowsResume(int, int, int) override {}

 private:
  float* const acts_;
  const long lda_;
  int* const count_;
};

// The dense ReLU step's dL/dact = dL/dy^ W_dec^T, a block at a time while it is in cache (gemmBlocks): made dL/dpre
// into D (0 where the entry did not fire, plus the L1 term's lb |W_dec_j| where it did), with each row block's column
// sums of the activations, of dL/dpre and of the entries that fired written to sums[row block][3][m]. They are added
// up in row-block order afterwards, so that no sum depends on which thread ran which block. The pass over D it
// replaces, reading and writing [B, m] once more, was 26-30 ms of a dense step at 768 x 24,576 (docs/BENCHMARKS.md).
class DpreStore final : public BlockSink {
 public:
  DpreStore(int threads, const float* acts, float* D, long m, const float* norms, float lb, float* sums)
      : acts_(acts), D_(D), m_(m), norms_(norms), lb_(lb), sums_(sums), R_(gemmBlockRows()),
        scratch_((size_t)threads * 3 * gemmBlockCols()) {}
  void block(int thread, int i0, int mc, int j0, int nc, const float* C, long ldc) override {
    float* sV = scratch_.data() + (size_t)thread * 3 * gemmBlockCols();
    float *sDp = sV + nc, *sF = sDp + nc;
    std::fill(sV, sV + 3 * nc, 0.f);
    const vf zero = vsplat(0.f), one = vsplat(1.f), lbv = vsplat(norms_ ? lb_ : 0.f);
    for (int r = 0; r < mc; r++) {
      const float* d = C + r * ldc;
      const float* a = acts_ + (long)(i0 + r) * m_ + j0;
      float* out = D_ + (long)(i0 + r) * m_ + j0;
      int j = 0;
      for (; j + VW <= nc; j += VW) {
        const vf av = vload(a + j);
        const vi on = av > zero;
        const vf t = norms_ ? vload(d + j) + lbv * vload(norms_ + j0 + j) : vload(d + j);
        const vf dp = on ? t : zero;
        vstore(out + j, dp);
        vstore(sV + j, vload(sV + j) + av);
        vstore(sDp + j, vload(sDp + j) + dp);
        vstore(sF + j, vload(sF + j) + (on ? one : zero));
      }
      for (; j < nc; j++) {
        const bool on = a[j] > 0.f;
        const float t = norms_ ? d[j] + lb_ * norms_[j0 + j] : d[j];
        const float dp = on ? t : 0.f;
        out[j] = dp;
        sV[j] += a[j];
        sDp[j] += dp;
        sF[j] += on ? 1.f : 0.f;
      }
    }
    float* to = sums_ + (size_t)(i0 / R_) * 3 * m_ + j0;
    std::memcpy(to, sV, sizeof(float) * nc);
    std::memcpy(to + m_, sDp, sizeof(float) * nc);
    std::memcpy(to + 2 * m_, sF, sizeof(float) * nc);
  }
  void rowsDone(int, int, int) override {}
  void rowsPause(int, int, int) override {}
  void rowsResume(int, int, int) override {}

 private:
  const float* const acts_;
  float* const D_;
  const long m_;
  const float* const norms_;
  const float lb_;
  float* const sums_;
  const int R_;
  std::vector<float> scratch_;
};

}  // namespace

StepResult Engine::step(const Tensors& p, const Tensors& g, const float* X, const float* Y, int B, const StepOptions& o, float* fired) {
  const Config& c = cfg_;
  const int m = c.dSae, dIn = c.dIn, dOut = c.dOut;
  const int T = pool_.size();
  const long BM = (long)B * m;
  StepResult r;
  const bool useXt = c.applyBDec && !c.noBias;
  float* xt = useXt ? ensure(xt_, (size_t)B * dIn) : nullptr;
  const float* xrows = encoderInput(p, X, B, xt);
  if (o.deferRows && (c.tied || (c.act != TOPK && c.act != BATCHTOPK && c.act != MATRYOSHKA)))
    throw std::invalid_argument("deferRows needs an untied TopK, BatchTopK or Matryoshka dictionary");
  grp_.pending = false;
  // AuxK's candidates: the latents counted dead.
  const bool wantAux = (c.act == TOPK || c.act == BATCHTOPK) && o.dead && o.auxkCoefficient > 0;
  std::vector<int32_t> deadList;
  if (wantAux)
    for (int j = 0; j < m; j++)
      if (o.dead[j]) deadList.push_back(j);
  // AuxK runs (and keeps the residual E for it) only when some latent is dead: no [B, d_out] buffer otherwise.
  const bool auxRows = !deadList.empty() && o.auxkK > 0;
  // TopK selects inside the encoder GEMM (each row's top k, and AuxK's top k_aux among dead latents) and never
  // stores the pre-activations. BatchTopK and Matryoshka (a batch-wide TopK) do too: every entry above a floor is a
  // candidate, and when there are at least as many as the batch selects, its k B-th largest is among them (exact).
  // The floor is under the last step's threshold (floor_, engine.h: by how far the threshold fell lately); with no
  // threshold yet, or when it fell further, it is the k B-th largest of the rows' own top 2k (the union holds k B
  // entries at or above it, so the batch's k B-th largest is too). Only when the rows hold fewer than k B positive entries between them are the pre-activations stored.
  // ReLU's dense path and JumpReLU use the stored pre-activations.
  const bool fused = c.act == TOPK;
  Candidates& cand = cand_;
  bool batchFused = false;
  if (c.act == BATCHTOPK || c.act == MATRYOSHKA) {
    const long kB = (long)c.k * B;
    bool screened = false;
    auto above = [&](float floor) {
      screened = encodeAbove(pool_, xrows, dIn, B, dIn, m, p.W_encT, p.b_enc, floor, cand, deadList, o.auxkK, &aux_, c.screening(), kB);
      const long want = kB < cand.npos ? kB : cand.npos;
      return cand.total >= want;
    };
    if (const float f = floor_.next(); f > 0) {
      batchFused = above(f);
      r.selection = batchFused ? (screened ? 3 : 1) : 2;
    }
    if (!batchFused && !o.storedFallback) {
      const float floor = rowsTopFloor(pool_, xrows, dIn, B, dIn, m, p.W_encT, p.b_enc, 2 * c.k < m ? 2 * c.k : m, kB, rowTop_, c.screening());
      if (floor > 0) {
        batchFused = above(std::nextafter(floor, 0.f));  // entries >= floor are candidates
        r.selection = batchFused ? 4 : 2;
      }
    }
  }
  // ReLU once a step has taken the sparse path: the GEMM keeps the positive entries (encodeAbove with floor 0, which
  // are the selection) instead of storing [B, m]; if more than denseAbove of the batch fires after all, the
  // pre-activations are computed for the dense path (selection 2). Screened in bf16 (the same entries, and their exact
  // count) while the last step fired under kScreenReluBelow: every entry whose bound reaches 0 is recomputed in float32.
  bool reluFused = false;
  if (c.act == RELU && lastSparse_) {
    const Screen s = lastFiring_ < kScreenReluBelow ? c.screening() : Screen{0, c.lean};
    const bool screened = encodeAbove(pool_, xrows, dIn, B, dIn, m, p.W_encT, p.b_enc, 0.f, cand, {}, 0, nullptr, s);
    reluFused = !((double)cand.npos > o.denseAbove * (double)BM);
    r.selection = reluFused ? (screened ? 3 : 1) : 2;
    if (!reluFused) cand.release();  // more than a sparse step's worth: not kept for the next one
  }
  float* pre = nullptr;
  if (fused) {
    r.selection = encodeTopK(pool_, xrows, dIn, B, dIn, m, p.W_encT, p.b_enc, c.k, sp_, deadList, o.auxkK, &aux_, c.screening()) ? 3 : 1;
  } else if (!batchFused && !reluFused) {
    pre = ensure(pre_, (size_t)BM);
    if (c.act == RELU) {
      // Stored as activations, each row's count with them (ReluStore): the same values as the GEMM's, the negative
      // ones 0, which no later pass of a ReLU step tells apart.
      ensure(sp_.count, B);
      std::fill(sp_.count.begin(), sp_.count.begin() + B, 0);
      ReluStore sink(pre, m, sp_.count.data());
      gemmBlocks(pool_, B, m, dIn, View{xrows, dIn, 1}, View{p.W_encT, 1, dIn}, p.b_enc, sink);
    } else {
      gemm(pool_, B, m, dIn, View{xrows, dIn, 1}, View{p.W_encT, 1, dIn}, pre, m, false, p.b_enc);
    }
  }
  if (c.lean) releaseEncoder();  // no encoder GEMM follows in this step
  const bool auxSelected = fused || batchFused;
  float* Wd = c.tied ? p.W_encT : p.W_dec;
  float* gWd = c.tied ? g.W_encT : g.W_dec;

  // Decoder row norms (ReLU's L1 term) and JumpReLU thresholds.
  std::vector<float>&norms = norms_, &theta = theta_;
  const bool l1 = c.act == RELU && o.sparsity > 0;
  if (l1) {
    norms.resize(m);
    pool_.range(m, [&](long j0, long j1, int) {
      for (long j = j0; j < j1; j++) norms[j] = std::sqrt(dot(dOut, Wd + j * dOut, Wd + j * dOut));
    });
  }
  if (c.act == JUMPRELU) {
    theta.resize(m);
    for (int j = 0; j < m; j++) theta[j] = std::exp(p.log_threshold[j]);
  }
  const float eps = o.bandwidth;
  auto inWindow = [&](float z, int j) { float u = (z - theta[j]) / eps; return u > -0.5f && u < 0.5f; };

  // ---- Which entries are active (and, for JumpReLU, inside the STE window).
  Sparse& sp = sp_;
  ensure(sp.start, B);
  ensure(sp.count, B);
  float kth = 0;
  bool haveKth = false;
  if (batchFused || reluFused) {
    const long want = (long)c.k * B < cand.npos ? (long)c.k * B : cand.npos;
    if (reluFused) {
      haveKth = true;  // every candidate is selected: kth stays 0 and each candidate is > 0
    } else if (want > 0) {
      std::vector<FloatSpan> all;
      for (auto& bl : cand.blocks) all.push_back({bl.val.data(), (long)bl.val.size()});
      kth = kthLargestPositive(pool_, all, want);
      haveKth = true;
      r.minSelected = kth;
    }
    // Each row's selected entries from its candidates (index order, as the unfused fill).
    const int R = gemmBlockRows();
    fillSparse(pool_, B, sp, [&](long b, auto&& f) {
      const Candidates::Block& bl = cand.blocks[b / R];
      const int rr = (int)(b % R);
      for (long e = bl.off[rr]; e < bl.off[rr + 1]; e++)
        if (haveKth && bl.val[e] >= kth) f(bl.idx[e], bl.val[e]);
    });
    if (c.lean) cand.release();
  } else if (c.act == BATCHTOPK || c.act == MATRYOSHKA) {
    long npos = countPositive(pool_, pre, BM);
    long want = (long)c.k * B < npos ? (long)c.k * B : npos;
    if (want > 0) {
      kth = kthLargestPositive(pool_, pre, BM, want);
      haveKth = true;
      r.minSelected = kth;
    }
  }
  if (haveKth && !reluFused) floor_.observe(kth);
  if (c.act != TOPK && !batchFused && !reluFused) {
    // Threshold rules: count per row, then fill (or go dense).
    auto keep = [&](float z, int j) -> bool {
      switch (c.act) {
        case RELU: return z > 0.f;
        case JUMPRELU: return z > theta[j] || inWindow(z, j);
        default: return haveKth && z >= kth;
      }
    };
    // ReLU's rows were counted by the encoder (ReluStore).
    if (c.act != RELU)
      pool_.range(B, [&](long b0, long b1, int) {
        for (long b = b0; b < b1; b++) {
          const float* z = pre + b * m;
          int n = 0;
          for (int j = 0; j < m; j++) n += keep(z[j], j);
          sp.count[b] = n;
        }
      });
    long total = 0;
    for (int b = 0; b < B; b++) { sp.start[b] = total; total += sp.count[b]; }
    r.dense = (c.act == RELU || c.act == JUMPRELU) && (double)total > o.denseAbove * (double)BM;
    if (!r.dense) {
      ensureGrowing(sp.idx, (size_t)total + 1);
      ensureGrowing(sp.val, (size_t)total + 1);
      pool_.range(B, [&](long b0, long b1, int) {
        for (long b = b0; b < b1; b++) {
          const float* z = pre + b * m;
          long s = sp.start[b];
          for (int j = 0; j < m; j++) {
            if (!keep(z[j], j)) continue;
            sp.idx[s] = j;
            sp.val[s] = (c.act == JUMPRELU && !(z[j] > theta[j])) ? 0.f : z[j];
            s++;
          }
        }
      });
    }
  }

  if (c.act == RELU) lastSparse_ = !r.dense;
  // A sparse ReLU or JumpReLU step gives back the dense path's [B, m] arrays, and ReLU its pre-activations too (its
  // entries are in sp now; JumpReLU's window reads them below): kept, they held 806 MB at 4,096 x 24,576 beside the
  // sparse path's arrays through the rest of the run (bench:fit's ReLU run there peaked at 2,722 MB, now 1,954; its
  // first sparse step, whose arrays now take the freed pages, 3.4 -> 2.8 s). A step that goes dense takes them again.
  if (!r.dense && (c.act == RELU || c.act == JUMPRELU)) {
    release(acts_);
    release(dacts_);
    if (c.act == RELU) release(pre_);
  }

  // ---- Per-latent epilogue shared by both paths: sparsity terms, anchors, biases, fired counts.
  // sumV: sum of activations (ReLU L1's decoder-norm gradient); sumDaK, sumK: JumpReLU's threshold gradient.
  Partials anchorLoss(T);
  grp_ = Grouped{};
  grp_.l1 = l1;
  grp_.sparsityOverB = o.sparsity / B;
  grp_.anchorEnc = o.anchorEnc;
  grp_.anchorDec = o.anchorDec;
  grp_.anchorK = o.anchorK;
  grp_.anchorWeight = o.anchorWeight;
  auto finishLatent = [&](long j, double sumV, double sumDaK, double sumK, double gbe, double nFired, int th, float* gwd, float* gwe) {
    if (gwd) {
      const double al = rowTerms(p, j, sumV, gwd, gwe);
      if (j < o.anchorK) anchorLoss.at(th)[0] += al;
    }
    if (c.act == JUMPRELU) {
      double gTheta = -theta[j] * sumDaK - o.sparsity / B * sumK;
      g.log_threshold[j] = (float)(gTheta * theta[j]);
    }
    if (!c.noBias) g.b_enc[j] = (float)gbe;
    fired[j] = (float)nFired;
  };
  // Untied, each latent's finished gradient rows, still in cache: the decoder row's projected (projectDec) and both
  // rows' squared norm kept (rowsNorm), so that the update makes no pass of its own over the gradients for either.
  // The same sums in the same order whether the rows are kept (the gradient buffers) or made again by applyRows
  // (deferRows, which keeps only the norm here): --low-memory then changes where the rows live, not the update.
  double* rowSq = !c.tied && o.rowsNorm ? ensure(rowSq_, (size_t)m) : nullptr;
  auto finishRows = [&](long j, float* gwd, const float* gwe) {
    if (c.tied || !gwd) return;
    if (o.projectDec) projectRow(dOut, Wd + j * dOut, gwd);
    if (rowSq) rowSq[j] = (double)dot(dIn, gwe, gwe) + (double)dot(dOut, gwd, gwd);
  };

  Partials sse(T), spLoss(T), aux(T);
  float* G = nullptr;            // dL/dy^ rows [B][dOut] (Matryoshka: one block of rows per prefix)
  const int nG = c.act == MATRYOSHKA ? (int)c.widths.size() : 1;

  if (r.dense) {
    // ---- Dense path (ReLU / JumpReLU with many active latents): GEMMs for decoder and backward.
    // ReLU's encoder stored the activations (ReluStore) and counted them; JumpReLU's are made here.
    float* acts = c.act == RELU ? pre : ensure(acts_, (size_t)BM);
    if (c.act == RELU) {
      long n = 0;
      for (int b = 0; b < B; b++) n += sp.count[b];
      r.nnz = n;
    } else {
      Partials nnz(T);
      pool_.range(B, [&](long b0, long b1, int th) {
        long n = 0;
        for (long b = b0; b < b1; b++) {
          const float* z = pre + b * m;
          float* a = acts + b * m;
          for (int j = 0; j < m; j++) a[j] = z[j] > theta[j] ? z[j] : 0.f;
          for (int j = 0; j < m; j++) n += a[j] > 0.f;
        }
        nnz.at(th)[0] += n;
      });
      r.nnz = (long)nnz.total();
    }
    float* yh = ensure(yhat_, (size_t)B * dOut);
    gemm(pool_, B, dOut, m, View{acts, m, 1}, View{Wd, dOut, 1}, yh, dOut, false);
    G = ensure(G_, (size_t)B * dOut);
    pool_.range(B, [&](long b0, long b1, int th) {
      double s = 0;
      for (long b = b0; b < b1; b++) s += residualRow(dOut, yh + b * dOut, p.b_dec, Y + b * dOut, 2.f / B, G + b * dOut, nullptr);
      sse.at(th)[0] += s;
    });
    float* D = ensure(dacts_, (size_t)BM);
    const int NS = 5;  // sumV, sumDaK, sumK, gbe, fired
    // Column sums: ReLU's per row block (DpreStore), JumpReLU's per thread.
    const int R = gemmBlockRows(), rowBlocks = (B + R - 1) / R;
    std::vector<float> cols;
    if (c.act == RELU) {
      DpreStore sink(T, acts, D, m, l1 ? norms.data() : nullptr, o.sparsity / B, ensure(colSums_, (size_t)rowBlocks * 3 * m));
      gemmBlocks(pool_, B, m, dOut, View{G, dOut, 1}, View{Wd, 1, dOut}, nullptr, sink);
    } else {
      gemm(pool_, B, m, dOut, View{G, dOut, 1}, View{Wd, 1, dOut}, D, m, false);
      // dpre in place of dacts, with per-thread column sums.
      cols.assign((size_t)T * NS * m, 0.f);
      pool_.range(B, [&](long b0, long b1, int th) {
        float* cV = cols.data() + (size_t)th * NS * m;
        float *cDaK = cV + m, *cK = cV + 2 * m, *cDp = cV + 3 * m, *cF = cV + 4 * m;
        double sl = 0;
        for (long b = b0; b < b1; b++) {
          const float* a = acts + b * m;
          const float* z = pre + b * m;
          float* d = D + b * m;
          for (int j = 0; j < m; j++) {
            bool on = a[j] > 0.f;
            float K = rect(z[j], theta[j], eps);
            cDaK[j] += d[j] * K;
            cK[j] += K;
            float dp = on ? d[j] : 0.f;
            d[j] = dp;
            cDp[j] += dp;
            cF[j] += on ? 1.f : 0.f;
            sl += on ? 1.0 : 0.0;
          }
        }
        spLoss.at(th)[0] += sl;
      });
    }
    gemm(pool_, m, dOut, B, View{acts, 1, m}, View{G, dOut, 1}, gWd, dOut, false);
    gemm(pool_, m, dIn, B, View{D, 1, m}, View{xrows, dIn, 1}, g.W_encT, dIn, c.tied);
    pool_.range(m, [&](long j0, long j1, int th) {
      for (long j = j0; j < j1; j++) {
        double s[NS] = {0, 0, 0, 0, 0};
        if (c.act == RELU) {
          // The L1 term's loss from the column sums: sum_j |W_dec_j| sum_b a_bj.
          for (int q = 0; q < rowBlocks; q++) {
            const float* at = colSums_.data() + (size_t)q * 3 * m + j;
            s[0] += at[0];
            s[3] += at[m];
            s[4] += at[2 * m];
          }
        } else {
          for (int t = 0; t < T; t++)
            for (int q = 0; q < NS; q++) s[q] += cols[((size_t)t * NS + q) * m + j];
        }
        if (c.act == RELU && l1) spLoss.at(th)[0] += s[0] * norms[j];
        finishLatent(j, s[0], s[1], s[2], s[3], s[4], th, gWd + j * dOut, g.W_encT + j * dIn);
        finishRows(j, gWd + j * dOut, g.W_encT + j * dIn);
      }
    });
  } else {
    // ---- Sparse path: per row, reconstruct from the active decoder rows, then dL/dacts on those entries.
    long total = 0;
    for (int b = 0; b < B; b++) total += sp.count[b];
    r.nnz = total;
    const long cap = c.act == TOPK ? (long)B * (c.k < m ? c.k : m) : total;
    // Per-entry buffers live in the engine (a fresh vector per step costs page faults and zeroing).
    float* dpre = ensureGrowing(w_.dpre, (size_t)cap + 1);
    float* dact = ensureGrowing(w_.dact, c.act == JUMPRELU ? (size_t)cap + 1 : 1);
    const float** grow = ensureGrowing(w_.grow, (size_t)cap + 1);
    // Untied, the gradient rows of W_enc read the input rows from X and b_dec (the encoder's input rows x - b_dec,
    // each difference rounded as encoderInput's copy): the copy is given back here by a lean engine (12 MiB at batch
    // 4,096 x 768 of the gradient's phase, where AuxK's arrays join it once latents die), and a deferred step's rows
    // are read from the caller's X, which applyRows is given again, instead of a copy.
    if (!c.tied) {
      grp_.xIn = X;
      grp_.xLen = (long)B * dIn;
      if (o.deferRows) grp_.xHash = rowsHash(X, grp_.xLen);
      if (useXt) grp_.xcenter = static_cast<const float*>(std::memcpy(ensure(bdecAt_, (size_t)dIn), p.b_dec, sizeof(float) * dIn));
      if (c.lean) release(xt_);
    }
    G = ensure(G_, (size_t)nG * B * dOut);
    float* E = auxRows ? ensure(E_, (size_t)B * dOut) : nullptr;
    ensure(scratch_, (size_t)T * dOut);
    const float lb = o.sparsity / B;
    // Hundreds of entries a row (ReLU while a few percent fire) over a W_dec too large for the cache: the row-at-a-time
    // pass read each row's decoder rows from memory. Blocked (blockedDecode), a thread takes its rows a block of
    // latents at a time, the block's decoder rows held in cache while every row adds its entries there, the partial
    // sums kept in the rows of G; then dL/dacts the same way. The same sums in the same order as decodeRow's: the
    // same step to the bit.
    const int JB = c.act == MATRYOSHKA ? 0 : blockedDecode(m, dOut, total, B, o.decodeBlock);
    // The gradient rows' blocks (blockedRows; below): not with AuxK's entries, which join the lists, nor deferred rows.
    const int RB = o.deferRows || auxRows ? 0 : blockedRows(B, c.tied ? dOut : dIn + dOut, total, m, o.rowBlock);
    // dL/dact is made with the gradient rows (dotsByLatent), latent by latent (within each block of batch rows when
    // those are blocked), just before that latent's rows are summed, rather than by the decoder pass a row at a time,
    // which read every entry's decoder row from the cache's last level (21 GB a step at 7% of 24,576 latents firing,
    // 768 wide); the latent's decoder row is then in L1. ReLU's, untied and with no AuxK, where d_out is whole blocks
    // of accumulateDots' columns (fuseDots), come from the same pass over each entry's row of dL/dy^ that sums the
    // decoder's gradient row (entrySumsDots): a sparse step at 768 x 24,576 3-10% faster at 1-7% firing and ~15% at
    // 15%, at 768 x 6,144 3-8% (docs/BENCHMARKS.md, stop 67). Otherwise only where both passes are blocked, a dot
    // product an entry that reads the row from the last level, the sum right after reading it again from L2. The same
    // dot products of the same rows either way: the same step to the bit. Not JumpReLU (its threshold's gradient
    // reads dL/dact in row order).
    const bool fuseDots = !o.dotsApart && c.act == RELU && !auxRows && !c.tied && !o.deferRows && accumulateDotsFits(dOut);
    const bool dotsByLatent = fuseDots || (JB && RB && c.act != JUMPRELU);
    r.dotsFused = fuseDots;
    if (JB) {
      const int nb = (m + JB - 1) / JB;
      // Where each row's entries of each block end, [block][row], found by the first pass and read by the second.
      long* ends = ensure(blockEnds_, (size_t)nb * B);
      pool_.range(B, [&](long b0, long b1, int th) {
        auto from = [&](int blk, long b) { return blk ? ends[(size_t)(blk - 1) * B + b] : sp.start[b]; };
        for (long b = b0; b < b1; b++) std::memcpy(G + b * dOut, p.b_dec, sizeof(float) * dOut);
        for (int blk = 0; blk < nb; blk++) {
          const int j1 = (blk + 1) * JB < m ? (blk + 1) * JB : m;
          for (long b = b0; b < b1; b++) {
            const long q0 = from(blk, b), end = sp.start[b] + sp.count[b];
            long q1 = q0;
            while (q1 < end && sp.idx[q1] < j1) q1++;
            ends[(size_t)blk * B + b] = q1;
            float* Gb = G + b * dOut;
            if (q1 > q0) decodeRow(dOut, (int)(q1 - q0), sp.idx.data() + q0, sp.val.data() + q0, Wd, Gb, Gb, true);
          }
        }
        double s = 0, sl = 0;
        for (long b = b0; b < b1; b++) s += residualRow(dOut, G + b * dOut, nullptr, Y + b * dOut, 2.f / B, G + b * dOut, E ? E + b * dOut : nullptr);
        if (dotsByLatent) {
          // Each entry's row of dL/dy^, and the sparsity loss in row order, as the row-at-a-time pass sums it.
          for (long b = b0; b < b1; b++)
            for (long q = sp.start[b]; q < sp.start[b] + sp.count[b]; q++) {
              grow[q] = G + b * dOut;
              entryLoss(c.act, sp.val[q], sp.idx[q], l1 ? norms.data() : nullptr, sl);
            }
        } else {
          for (int blk = 0; blk < nb; blk++)
            for (long b = b0; b < b1; b++) {
              const float* Gb = G + b * dOut;
              for (long q = from(blk, b), q1 = ends[(size_t)blk * B + b]; q < q1; q++) {
                dpre[q] = dot(dOut, Gb, Wd + (long)sp.idx[q] * dOut);  // dL/dact, made dL/dpre below
                grow[q] = Gb;
              }
            }
          // Each entry's dL/dpre in row order, as the row-at-a-time pass: the sparsity loss summed in the same order.
          for (long b = b0; b < b1; b++)
            for (long q = sp.start[b]; q < sp.start[b] + sp.count[b]; q++) {
              if (c.act == JUMPRELU) dact[q] = dpre[q];
              dpre[q] = entryGrad(c.act, dpre[q], sp.val[q], sp.idx[q], l1 ? norms.data() : nullptr, lb, sl);
            }
        }
        sse.at(th)[0] += s;
        spLoss.at(th)[0] += sl;
      });
    } else pool_.range(B, [&](long b0, long b1, int th) {
      float* yh = scratch_.data() + (size_t)th * dOut;
      double s = 0, sl = 0;
      for (long b = b0; b < b1; b++) {
        const long st = sp.start[b];
        const int n = sp.count[b];
        const int32_t* ix = sp.idx.data() + st;
        const float* v = sp.val.data() + st;
        const float* y = Y + b * dOut;
        // The active decoder rows lie scattered over W_dec; decodeRow's sum fetches them a few entries ahead. Fetching
        // the next row's as well, while this one computes, cost more than it saved once that sum fetched its own
        // (a 512 x 4,096 step, six alternated pairs: TopK 62.7k -> 64.4k tok/s median, BatchTopK 59.6k -> 63.0k;
        // docs/BENCHMARKS.md, stop 60); with ReLU's hundreds of rows it pushed this row's out of cache.
        if (c.act == MATRYOSHKA) {
          // Nested prefixes: r_g = b_dec + sum_{j < w_g} f_j W_dec[j] - y; L = mean_g ||r_g||^2 / B.
          for (int i = 0; i < dOut; i++) yh[i] = p.b_dec[i];
          // S_h = sum_{g >= h} 2 r_g / (B G) is dL/dy^ for the latents of block h.
          int q = 0;
          for (int gi = 0; gi < nG; gi++) {
            for (; q < n && ix[q] < c.widths[gi]; q++) axpy(dOut, v[q], Wd + (long)ix[q] * dOut, yh);
            float* Rg = G + ((size_t)gi * B + b) * dOut;
            double sg = 0;
            for (int i = 0; i < dOut; i++) {
              float e = yh[i] - y[i];
              Rg[i] = e;
              sg += (double)e * e;
            }
            sl += sg / nG;  // main loss (mean over prefixes), accumulated apart from the MSE
            if (gi == nG - 1) s += sg;
          }
          const float sc = 2.f / ((float)B * nG);
          for (int gi = nG - 1; gi >= 0; gi--) {
            float* Rg = G + ((size_t)gi * B + b) * dOut;
            const float* Rn = gi + 1 < nG ? G + ((size_t)(gi + 1) * B + b) * dOut : nullptr;
            for (int i = 0; i < dOut; i++) Rg[i] = Rg[i] * sc + (Rn ? Rn[i] : 0.f);
          }
          int blk = 0;
          for (int q2 = 0; q2 < n; q2++) {
            while (ix[q2] >= c.widths[blk]) blk++;
            const float* Sg = G + ((size_t)blk * B + b) * dOut;
            grow[st + q2] = Sg;
            dpre[st + q2] = dot(dOut, Sg, Wd + (long)ix[q2] * dOut);
          }
          continue;
        }
        decodeRow(dOut, n, ix, v, Wd, p.b_dec, yh, true);
        float* Gb = G + b * dOut;
        s += residualRow(dOut, yh, nullptr, y, 2.f / B, Gb, E ? E + b * dOut : nullptr);
        if (dotsByLatent) {
          // dL/dact comes with the gradient rows; the sparsity loss is summed here, in row order, as entryGrad would.
          for (int q = 0; q < n; q++) {
            grow[st + q] = Gb;
            entryLoss(c.act, v[q], ix[q], l1 ? norms.data() : nullptr, sl);
          }
          continue;
        }
        for (int q = 0; q < n; q++) {
          const int j = ix[q];
          const float da = dot(dOut, Gb, Wd + (long)j * dOut);
          grow[st + q] = Gb;
          if (c.act == JUMPRELU) dact[st + q] = da;
          dpre[st + q] = entryGrad(c.act, da, v[q], j, l1 ? norms.data() : nullptr, lb, sl);
        }
      }
      sse.at(th)[0] += s;
      spLoss.at(th)[0] += sl;
    });

    // ---- AuxK: the top k_aux dead pre-activations reconstruct the (detached) residual y - y^.
    Sparse& ax = aux_;
    long auxTotal = 0, runAux = 0;
    int kAuxUsed = 0;  // AuxK's slots per row this step
    int32_t* auxRef = nullptr;
    // The counting sort's first pass: each thread's count of each latent's entries in its rows of s.
    auto countByLatent = [&](const Sparse& s, auto& buf) {
      long* cn = ensure(buf, (size_t)T * (m + 1));
      std::fill(cn, cn + (size_t)T * (m + 1), 0L);
      pool_.run(T, [&](int t, int) {
        long* ct = cn + (size_t)t * (m + 1);
        auto [b0, b1] = threadRows(B, T, t);
        for (long b = b0; b < b1; b++)
          for (int q = 0; q < s.count[b]; q++) ct[s.idx[s.start[b] + q]]++;
      });
      return cn;
    };
    if (auxRows) {
      const int nDead = (int)deadList.size();
      const int kAux = o.auxkK < nDead ? o.auxkK : nDead;
      kAuxUsed = kAux;
      // Variance of the target -e about its batch mean.
      std::vector<double> mean(dOut, 0.0);
      for (int b = 0; b < B; b++)
        for (int i = 0; i < dOut; i++) mean[i] -= E[(long)b * dOut + i];
      for (int i = 0; i < dOut; i++) mean[i] /= B;
      Partials var(T);
      pool_.range(B, [&](long b0, long b1, int th) {
        double s = 0;
        for (long b = b0; b < b1; b++)
          for (int i = 0; i < dOut; i++) {
            double d = -E[b * dOut + i] - mean[i];
            s += d * d;
          }
        var.at(th)[0] += s;
      });
      const double denom = var.total() + 1e-12;
      if (!auxSelected) {
        // The top k_aux dead pre-activations of each row (a fused encoder selected them already).
        ensure(ax.start, B);
        ensure(ax.count, B);
        ensure(ax.idx, (size_t)B * kAux);
        ensure(ax.val, (size_t)B * kAux);
        const size_t scrW = (size_t)6 * nDead + 128;
        std::vector<float> scr((size_t)T * scrW);
        pool_.range(B, [&](long b0, long b1, int th) {
          float* s0 = scr.data() + (size_t)th * scrW;
          float* gathered = s0 + 5 * nDead + 128;
          for (long b = b0; b < b1; b++) {
            const float* z = pre + b * m;
            for (int t = 0; t < nDead; t++) gathered[t] = z[deadList[t]];
            int32_t* ix = ax.idx.data() + b * kAux;
            float* v = ax.val.data() + b * kAux;
            int n = topkRow(gathered, nDead, kAux, ix, v, s0);
            for (int q = 0; q < n; q++) ix[q] = deadList[ix[q]];
            ax.start[b] = b * kAux;
            ax.count[b] = n;
          }
        });
      }
      for (int b = 0; b < B; b++) auxTotal += ax.count[b];
      if (auxTotal > 0) {
        // AuxK's slots grouped by latent (a counting sort per thread, as the main entries below) while its arrays
        // still hold the latent ids: the pass below writes each slot's dL/dpre over its id, so that no third
        // [B, k_aux] array is held through the gradient's phase (6 MiB at 768 x 24,576).
        long* cntAux = countByLatent(ax, w_.cntAux);
        runAux = groupOffsets(cntAux, T, m, ensure(w_.auxColStart, (size_t)m + 1), ensure(w_.auxOff, (size_t)T * m));
        auxRef = ensureGrowing(w_.auxRef, (size_t)runAux + 1);
        pool_.run(T, [&](int t, int) {
          long* oa = w_.auxOff.data() + (size_t)t * m;
          auto [b0, b1] = threadRows(B, T, t);
          for (long b = b0; b < b1; b++) {
            // Row b lies at b x k_aux in AuxK's arrays (every selection path lays it so): a slot gives its row back.
            if (ax.start[b] != b * kAux) throw std::logic_error("AuxK's rows are not laid out at row x k_aux");
            for (int q = 0; q < ax.count[b]; q++) {
              const long s = ax.start[b] + q;
              auxRef[oa[ax.idx[s]]++] = (int32_t)s;
            }
          }
        });
      }
      // AuxK's gradient rows overwrite the residual E row by row, each element once it is read: no second [B, d_out] buffer.
      float* GA = E;
      grp_.auxG = GA;
      std::vector<float> ehs((size_t)T * dOut);
      const float ga = (float)(2.0 * o.auxkCoefficient / denom);
      pool_.range(B, [&](long b0, long b1, int th) {
        float* eh = ehs.data() + (size_t)th * dOut;
        double s = 0;
        for (long b = b0; b < b1; b++) {
          const int32_t* ix = ax.idx.data() + ax.start[b];
          const float* v = ax.val.data() + ax.start[b];
          const int n = ax.count[b];
          decodeRow(dOut, n, ix, v, Wd, nullptr, eh, false);
          float* ga_b = GA + b * dOut;
          for (int i = 0; i < dOut; i++) {
            float d = eh[i] + E[b * dOut + i];  // e^ - (y - y^)
            s += (double)d * d;
            ga_b[i] = ga * d;
          }
          // Each slot's dL/dpre over its latent id, once read (entryRows reads it back: floatBits).
          int32_t* dpBits = ax.idx.data() + ax.start[b];
          for (int q = 0; q < n; q++) putFloatBits(dpBits + q, dot(dOut, ga_b, Wd + (long)ix[q] * dOut));
        }
        aux.at(th)[0] += s;
      });
      r.auxLoss = o.auxkCoefficient * aux.total() / denom;
    }

    // ---- Entries grouped by latent (a counting sort per thread), then each latent's gradient rows. The main
    // entries and AuxK's are grouped apart: AuxK's (above), 12x as many (4,096 x 384 at 768 x 24,576), as 4-byte slots
    // into its arrays rather than 16-byte records (27 MB of the gradient's phase once latents die); entryRows merges
    // the two lists of a latent in row order, as one list of both held them.
    const bool hasAux = auxTotal > 0;
    const int kAuxRow = hasAux ? kAuxUsed : 0;
    long* cnt = countByLatent(sp, w_.cnt);
    // Each thread's place in each latent's list: the latents' lists one after another, threads in row order within.
    const long run = groupOffsets(cnt, T, m, ensure(w_.colStart, (size_t)m + 1), ensure(w_.off, (size_t)T * m));
    long* off = w_.off.data();
    // What entryRows reads of each main entry (engine.h Entry; JumpReLU's dL/dact apart), one record written in grouped
    // order here, where the entries are read in slot order: entryRows then reads them in sequence instead of four
    // scattered loads an entry (a third of a TopK step at 128 x 1,024 was entryRows and its gathers).
    Entry* ent = ensureGrowing(w_.ent, (size_t)run + 1);
    float* edact = c.act == JUMPRELU ? ensureGrowing(w_.edact, (size_t)run + 1) : nullptr;
    pool_.run(T, [&](int t, int) {
      long* o2 = off + (size_t)t * m;
      auto [b0, b1] = threadRows(B, T, t);
      for (long b = b0; b < b1; b++) {
        for (int q = 0; q < sp.count[b]; q++) {
          const long s = sp.start[b] + q;
          const long e = o2[sp.idx[s]]++;
          ent[e] = Entry{sp.val[s], dotsByLatent ? 0.f : w_.dpre[s], (int32_t)b, (int32_t)((w_.grow[s] - G) / dOut)};
          if (edact) edact[e] = w_.dact[s];
        }
      }
    });
    grp_.auxVal = hasAux ? ax.val.data() : nullptr;
    grp_.auxDp = hasAux ? ax.idx.data() : nullptr;
    grp_.kAux = kAuxRow;
    grp_.G = G;
    grp_.xrows = grp_.xIn ? X : xrows;
    grp_.pre = pre;
    grp_.eps = eps;
    // Deferred (o.deferRows): each latent's gradient rows are made in this thread's scratch, projected, and only
    // their squared norm kept; applyRows makes them again from the same entries for the Adam update.
    const bool defer = o.deferRows;
    float* rowBuf = defer ? ensure(rowBuf_, (size_t)T * (dIn + dOut)) : nullptr;
    // Latent j's main entries [e, e1) added to its gradient rows (onto: to what they hold) and to ls, their dL/dpre
    // made first where dotsByLatent: in the same pass where fuseDots allows, else a dot product an entry.
    auto addEntries = [&](long j, long e, long e1, bool onto, LatentSums& ls) {
      float *gwd = gWd + j * dOut, *gwe = g.W_encT + j * dIn;
      if (dotsByLatent) {
        const float* wj = Wd + j * dOut;
        if (fuseDots && entrySumsDots(j, e, e1, wj, l1 ? norms.data() : nullptr, lb, gwd, gwe, onto, ls)) return;
        double unused = 0;  // the sparsity loss was summed in row order above
        for (long q = e; q < e1; q++) {
          Entry& en = w_.ent[q];
          en.dp = entryGrad(c.act, dot(dOut, G + (long)en.grow * dOut, wj), en.v, (int)j, l1 ? norms.data() : nullptr, lb, unused);
        }
      }
      entrySums(j, e, e1, 0, 0, gwd, gwe, onto, ls);
    };
    auto latentRows = [&](long j0, long j1, int th) {
      if (dotsByLatent) {
        // No AuxK, not deferred (fuseDots): each latent's entries at once, straight into the gradient buffers.
        for (long j = j0; j < j1; j++) {
          LatentSums ls;
          addEntries(j, w_.colStart[j], w_.colStart[j + 1], false, ls);
          finishLatent(j, ls.sumV, ls.sumDaK, ls.sumK, ls.gbe, ls.nf, th, gWd + j * dOut, g.W_encT + j * dIn);
          finishRows(j, gWd + j * dOut, g.W_encT + j * dIn);
        }
        return;
      }
      for (long j = j0; j < j1; j++) {
        float* gwd = defer ? rowBuf + (size_t)th * (dIn + dOut) : gWd + j * dOut;
        float* gwe = defer ? gwd + dOut : g.W_encT + j * dIn;
        if (defer && !o.rowsNorm) gwd = gwe = nullptr;  // no norm wanted: the rows are made once, by applyRows
        const LatentSums ls = entryRows(j, gwd, gwe);
        finishLatent(j, ls.sumV, ls.sumDaK, ls.sumK, ls.gbe, ls.nf, th, gwd, gwe);
        finishRows(j, gwd, gwe);
      }
    };
    // Latents fire unevenly, so equal slices leave one thread waiting: chunks claimed as threads free up. Each
    // latent writes only its own rows, so the result does not depend on the schedule, except the anchors' loss
    // (summed per slice): with anchors, fixed slices.
    auto eachLatent = [&](auto&& f) {
      if (o.anchorK > 0) pool_.range(m, f);
      else pool_.rangeDynamic(m, f, 8);
    };
    // Hundreds of entries a latent (ReLU while a few percent fire) read input and dL/dy^ rows scattered over 25 MB
    // at 768 wide, more than the cache holds beside the rest: blocked (blockedRows), every latent adds its entries
    // of one block of batch rows at a time, the block's rows held in cache, onto the gradient rows written so far.
    // The same sums in the same order as entryRows's, so the same gradient to the bit.
    if (RB) {
      LatentSums* sums = ensure(sums_, (size_t)m);
      std::fill(sums, sums + m, LatentSums{});
      long* cur = ensure(latentAt_, (size_t)m);
      for (long r0 = 0; r0 < B; r0 += RB) {
        const long r1 = r0 + RB < B ? r0 + RB : B;
        pool_.rangeDynamic(m, [&](long j0, long j1, int) {
          for (long j = j0; j < j1; j++) {
            const long e = r0 ? cur[j] : w_.colStart[j], end = w_.colStart[j + 1];
            long e1 = e;
            while (e1 < end && w_.ent[e1].row < r1) e1++;
            const bool onto = e > w_.colStart[j];  // an earlier block added (or zeroed) the rows
            if (e1 > e || (r1 == B && !onto)) addEntries(j, e, e1, onto, sums[j]);
            cur[j] = e1;
          }
        }, 8);
      }
      eachLatent([&](long j0, long j1, int th) {
        for (long j = j0; j < j1; j++) {
          const LatentSums& ls = sums[j];
          finishLatent(j, ls.sumV, ls.sumDaK, ls.sumK, ls.gbe, ls.nf, th, gWd + j * dOut, g.W_encT + j * dIn);
          finishRows(j, gWd + j * dOut, g.W_encT + j * dIn);
        }
      });
    } else {
      eachLatent(latentRows);
    }
    if (defer) {
      grp_.projectDec = o.projectDec;
      grp_.pending = true;
    }
  }

  // ---- b_dec: sum over rows of dL/dy^ (Matryoshka: the first prefix's, which every prefix includes),
  // minus W_enc gb_enc where pre depends on b_dec through x~ = x - b_dec.
  if (!c.noBias) {
    const float* G0 = G;
    // Partial sums per fixed slice of rows (task t always sums the same rows), added in task order: the result
    // does not depend on which thread ran which slice, so training is bit-for-bit reproducible (and resumable).
    std::vector<double> part((size_t)T * (dOut + 8), 0.0);
    pool_.run(T, [&](int t, int) {
      double* pp = part.data() + (size_t)t * (dOut + 8);
      const auto [b0, b1] = threadRows(B, T, t);
      for (long b = b0; b < b1; b++)
        for (int i = 0; i < dOut; i++) pp[i] += G0[b * dOut + i];
    });
    std::vector<double> corr((size_t)T * (dIn + 8), 0.0);
    if (useXt) {
      pool_.run(T, [&](int t, int) {
        double* cc = corr.data() + (size_t)t * (dIn + 8);
        const auto [j0, j1] = threadRows(m, T, t);
        for (long j = j0; j < j1; j++) {
          float gb = g.b_enc[j];
          if (gb == 0.f) continue;
          const float* w = p.W_encT + j * dIn;
          for (int i = 0; i < dIn; i++) cc[i] += (double)gb * w[i];
        }
      });
    }
    for (int i = 0; i < dOut; i++) {
      double s = 0;
      for (int t = 0; t < T; t++) s += part[(size_t)t * (dOut + 8) + i];
      if (useXt)
        for (int t = 0; t < T; t++) s -= corr[(size_t)t * (dIn + 8) + i];
      g.b_dec[i] = (float)s;
    }
  }

  // rowsNorm: the latents' squared row norms summed in latent order (NaN where not computed: tied, or not asked).
  if (rowSq) {
    double sq = 0;
    for (int j = 0; j < m; j++) sq += rowSq[j];
    r.rowsSq = sq;
  } else {
    r.rowsSq = NAN;
  }
  double l0 = 0;
  for (int j = 0; j < m; j++) l0 += fired[j];
  r.l0 = l0 / B;
  lastFiring_ = (float)(r.l0 / m);
  r.mse = sse.total() / B;
  const double mainLoss = c.act == MATRYOSHKA ? spLoss.total() / B : r.mse;
  if (c.act == RELU) r.sparsityLoss = l1 ? o.sparsity * spLoss.total() / B : 0;
  else if (c.act == JUMPRELU) r.sparsityLoss = o.sparsity * spLoss.total() / B;
  r.anchorLoss = anchorLoss.total();
  r.denseBytes = (double)sizeof(float) * (double)(pre_.size() + acts_.size() + dacts_.size());
  r.loss = mainLoss + r.sparsityLoss + r.auxLoss + r.anchorLoss;
  if (c.lean && !grp_.pending) releaseGradient();  // gradients written: nothing of the step is read again
  return r;
}

namespace {
// entryRows' lists, one set per thread, grown to the most entries a latent has had. They reach a whole batch's rows
// (4,096) when the first latents die, as every row's AuxK selection then holds all of them (fewer than k_aux are
// dead): ~96 KB a thread, made by doubling in the C library's arenas, where they were kept for the run (a lean
// engine now gives them back with the gradient's arrays: releaseEntryLists).
struct EntryLists {
  std::vector<float> coefD, coefE, dots;
  std::vector<const float*> srcD, srcE;
  std::vector<float> partial;  // accumulateDots' four vector sums an entry
};
thread_local EntryLists entryLists;
}  // namespace

void releaseEntryLists() { entryLists = EntryLists{}; }

// Latent j's gradient rows from its entries (the sparse path's grouping, grp_): gwd = sum of v dL/dy^ rows, gwe =
// sum of dL/dpre input rows (one row when tied), and the sums the per-latent epilogue needs; without rows (gwd null)
// the sums alone.
Engine::LatentSums Engine::entryRows(long j, float* gwd, float* gwe) const {
  LatentSums ls;
  const long a0 = grp_.kAux ? w_.auxColStart[j] : 0, a1 = grp_.kAux ? w_.auxColStart[j + 1] : 0;
  entrySums(j, w_.colStart[j], w_.colStart[j + 1], a0, a1, gwd, gwe, false, ls);
  return ls;
}

// Latent j's main entries [e, e1) and AuxK slots [a, a1) of its lists added to its gradient rows (onto: to what they
// hold; else from 0) and to ls, in the order entryRows adds all of them: rows summed a block of entries at a time end
// as the whole list summed at once, bit for bit.
void Engine::entrySums(long j, long e, long e1, long a, long a1, float* gwd, float* gwe, bool onto, LatentSums& ls) const {
  const Config& c = cfg_;
  const int dIn = c.dIn, dOut = c.dOut, m = c.dSae;
  const Grouped& G = grp_;
  // Each row's sources and coefficients (entries with a zero coefficient add nothing and are left out, as axpy's
  // callers skip them), then the rows summed in registers.
  std::vector<float>& coefD = entryLists.coefD;
  std::vector<float>& coefE = entryLists.coefE;
  std::vector<const float*>& srcD = entryLists.srcD;
  std::vector<const float*>& srcE = entryLists.srcE;
  coefD.clear(), coefE.clear(), srcD.clear(), srcE.clear();
  // The main entries and AuxK's (slots into its arrays), merged in row order, a row's main entry before its AuxK one.
  while (e < e1 || a < a1) {
    const bool main = a >= a1 || (e < e1 && w_.ent[e].row <= w_.auxRef[a] / G.kAux);
    float v, dp;
    int b;
    const float* gr;
    if (main) {
      const Entry& en = w_.ent[e++];
      v = en.v, dp = en.dp, b = en.row;
      gr = G.G + (long)en.grow * dOut;
    } else {
      // AuxK's slots of one latent lie a row apart (k_aux floats) in its arrays: fetched 16 entries ahead.
      if (a + 16 < a1) {
        __builtin_prefetch(G.auxVal + w_.auxRef[a + 16]);
        __builtin_prefetch(G.auxDp + w_.auxRef[a + 16]);
      }
      const int32_t s = w_.auxRef[a++];
      v = G.auxVal[s], dp = floatBits(G.auxDp + s), b = s / G.kAux;
      gr = G.auxG + (long)b * dOut;
    }
    if (main) {
      ls.sumV += v;
      ls.nf += v > 0.f;
      if (c.act == JUMPRELU) {
        float K = rect(G.pre[(long)b * m + j], theta_[j], G.eps);
        ls.sumDaK += (double)w_.edact[e - 1] * K;
        ls.sumK += K;
      }
    }
    // Tied (W_dec = W_enc^T, one row): both terms into one list, in entry order.
    std::vector<float>& ce = c.tied ? coefD : coefE;
    std::vector<const float*>& se = c.tied ? srcD : srcE;
    if (v != 0.f && gwd) coefD.push_back(v), srcD.push_back(gr);
    if (dp != 0.f) {
      if (gwd) ce.push_back(dp), se.push_back(G.xrows + (long)b * dIn);
      ls.gbe += dp;
    }
  }
  if (!gwd) return;
  accumulate(dOut, (int)coefD.size(), coefD.data(), srcD.data(), onto ? gwd : nullptr, gwd);
  if (!c.tied) accumulate(dIn, (int)coefE.size(), coefE.data(), srcE.data(), onto ? gwe : nullptr, gwe, G.xcenter);
}

// entrySums for latent j's main entries [e, e1) whose dL/dpre is not made yet (untied ReLU without AuxK; all its
// entries, or one block of batch rows' when the gradient rows are blocked): each entry's dL/dact = dL/dy^ row . W_dec
// row j made in the same pass over the dL/dy^ rows that sums the decoder's gradient row (accumulateDots), then its
// dL/dpre (entryGrad; the sparsity loss was summed in row order by the decoder pass) and the encoder's gradient row as
// entrySums makes it. The same numbers to the bit as dot and then entrySums, with each dL/dy^ row read once instead of
// twice. False, with nothing changed, where it does not apply (a width accumulateDots does not take, or an entry with
// v = 0, which entrySums leaves out of the decoder's row).
bool Engine::entrySumsDots(long j, long e, long e1, const float* wj, const float* l1Norms, float lb, float* gwd, float* gwe, bool onto, LatentSums& ls) {
  const Config& c = cfg_;
  const int dIn = c.dIn, dOut = c.dOut;
  const Grouped& G = grp_;
  if (c.tied || c.act != RELU || G.kAux || !gwd || !accumulateDotsFits(dOut)) return false;
  for (long q = e; q < e1; q++)
    if (w_.ent[q].v == 0.f) return false;
  EntryLists& L = entryLists;
  const int cnt = (int)(e1 - e);
  L.coefD.clear(), L.coefE.clear(), L.srcD.clear(), L.srcE.clear();
  for (long q = e; q < e1; q++) L.coefD.push_back(w_.ent[q].v), L.srcD.push_back(G.G + (long)w_.ent[q].grow * dOut);
  if (L.dots.size() < (size_t)cnt) L.dots.resize(cnt);
  if (L.partial.size() < (size_t)cnt * 4 * VW) L.partial.resize((size_t)cnt * 4 * VW);
  accumulateDots(dOut, cnt, L.coefD.data(), L.srcD.data(), wj, onto ? gwd : nullptr, gwd, L.dots.data(), L.partial.data());
  double unused = 0;
  for (long q = e; q < e1; q++) {
    Entry& en = w_.ent[q];
    en.dp = entryGrad(c.act, L.dots[q - e], en.v, (int)j, l1Norms, lb, unused);
    ls.sumV += en.v;
    ls.nf += en.v > 0.f;
    if (en.dp != 0.f) {
      L.coefE.push_back(en.dp), L.srcE.push_back(G.xrows + (long)en.row * dIn);
      ls.gbe += en.dp;
    }
  }
  accumulate(dIn, (int)L.coefE.size(), L.coefE.data(), L.srcE.data(), onto ? gwe : nullptr, gwe, G.xcenter);
  return true;
}

// The terms of latent j's gradient rows that come from its parameters rather than its entries: ReLU's L1 term on the
// decoder row, and the anchors (returns the anchor's loss).
double Engine::rowTerms(const Tensors& p, long j, double sumV, float* gwd, float* gwe) const {
  const Config& c = cfg_;
  const int dIn = c.dIn, dOut = c.dOut;
  const Grouped& G = grp_;
  const float* Wd = c.tied ? p.W_encT : p.W_dec;
  if (G.l1) axpy(dOut, (float)(G.sparsityOverB * sumV / (norms_[j] + 1e-12)), Wd + j * dOut, gwd);
  if (j >= G.anchorK) return 0;
  double s = 0;
  const float w2 = 2 * G.anchorWeight;
  for (int i = 0; i < dIn; i++) {
    float de = p.W_encT[j * dIn + i] - G.anchorEnc[j * dIn + i];
    s += (double)de * de;
    gwe[i] += w2 * de;
  }
  for (int i = 0; i < dOut; i++) {
    float dd = Wd[j * dOut + i] - G.anchorDec[j * dOut + i];
    s += (double)dd * dd;
    gwd[i] += w2 * dd;
  }
  return G.anchorWeight * s;
}

void Engine::applyRows(const Tensors& p, const float* X, float* mEnc, float* vEnc, float* mDec, float* vDec, float lr, float gscale, float b1, float b2, float eps, int t,
                       bool normalize) {
  if (!grp_.pending) throw std::logic_error("applyRows needs a step with deferRows first (and at most once per step)");
  if (grp_.xIn && (X != grp_.xIn || rowsHash(X, grp_.xLen) != grp_.xHash))
    throw std::invalid_argument(X != grp_.xIn ? "applyRows needs the X its step was given (W_enc's gradient rows read its rows)"
                                              : "X changed between the step and applyRows (W_enc's gradient rows read its rows)");
  grp_.pending = false;
  const int dIn = cfg_.dIn, dOut = cfg_.dOut;
  float* rowBuf = ensure(rowBuf_, (size_t)pool_.size() * (dIn + dOut));
  const AdamStep a(lr, gscale, b1, b2, eps, t);
  // Each latent's rows are made, projected, and applied while in cache: W_enc's and W_dec's rows and their moments
  // are read and written once, and no [dSae, d] gradient exists.
  pool_.rangeDynamic(cfg_.dSae, [&](long j0, long j1, int th) {
    float* gwd = rowBuf + (size_t)th * (dIn + dOut);
    float* gwe = gwd + dOut;
    for (long j = j0; j < j1; j++) {
      float* wd = p.W_dec + j * dOut;
      const LatentSums ls = entryRows(j, gwd, gwe);
      rowTerms(p, j, ls.sumV, gwd, gwe);
      if (grp_.projectDec) projectRow(dOut, wd, gwd);
      adamSpan(a, p.W_encT + j * dIn, gwe, mEnc + j * dIn, vEnc + j * dIn, 0, dIn);
      if (normalize) adamUnitRow(a, wd, gwd, mDec + j * dOut, vDec + j * dOut, dOut);
      else adamSpan(a, wd, gwd, mDec + j * dOut, vDec + j * dOut, 0, dOut);
    }
  }, 8);
  if (cfg_.lean) releaseGradient();
}

}  // namespace sdl
