// The engine apart from the training step (step.cc): pre-activations, inference, and the optimiser kernels.
#include "engine.h"

#include "encode.h"

#include <cmath>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "gemm.h"
#include "screen.h"
#include "select.h"
#include "simd.h"
#include "util.h"

namespace sdl {

Engine::Engine(const Config& cfg, int threads) : cfg_(cfg), pool_(threads) {}

const float* Engine::encoderInput(const Tensors& p, const float* X, int B, float* xt) {
  if (!xt) return X;
  const int dIn = cfg_.dIn;
  pool_.range(B, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++)
      for (int i = 0; i < dIn; i++) xt[b * dIn + i] = X[b * dIn + i] - p.b_dec[i];
  });
  return xt;
}

void Engine::releaseEncoder() {
  gemmRelease();
  screenRelease();
  encodeRelease(pool_);
  // The float32 GEMM's per-thread panels: with the bf16 screen they are first made when AuxK's selection (or a row
  // block redone exactly) runs, and kept, they lifted a 10M-token fit's peak at 768 x 24,576 by ~1.6 MB when the first
  // latents died (docs/BENCHMARKS.md).
  pool_.each([](int) { gemmReleaseThread(); });
}

void Engine::releaseGradient() {
  release(G_);
  release(E_);
  release(w_.dpre);
  release(w_.dact);
  release(w_.grow);
  release(w_.ent);
  release(w_.auxRef);
  release(aux_.idx);  // AuxK's selection: made again by the next step's encoder
  release(aux_.val);
  release(w_.edact);
  // The per-latent counts and offsets (main entries' and AuxK's: T x d_sae longs each, ~1 MB a set at 24,576
  // latents) were kept between steps; kept, they lay under the next encoder's peak, AuxK's set from the first dead latent on.
  for (auto* v : {&w_.cnt, &w_.colStart, &w_.off, &w_.cntAux, &w_.auxColStart, &w_.auxOff, &blockEnds_, &latentAt_}) release(*v);
  release(sums_);
  grp_.auxG = nullptr;  // pointed into E_
  pool_.each([](int) { releaseEntryLists(); });
#if defined(__GLIBC__)
  // The step's small vectors (under the 16 KiB mmap threshold a lean engine sets) come and go in the C library's
  // arenas, and the free chunks they leave are kept resident: over a 10M-token run at 768 x 24,576 the main heap
  // alone grew 12 -> 17 MB between steps. malloc_trim gives every whole free page of every arena back (glibc 2.8+:
  // inside a heap, not only at its top), once a step.
  malloc_trim(0);
#endif
}

void Engine::forward(const Tensors& p, const float* X, int n, float threshold, Sparse& out, float* yhat) {
  const Config& c = cfg_;
  const int m = c.dSae, dIn = c.dIn, dOut = c.dOut;
  const int CH = 4096;
  const bool useXt = c.applyBDec && !c.noBias;
  const float* Wd = c.tied ? p.W_encT : p.W_dec;
  std::vector<float> theta;
  if (c.act == JUMPRELU) {
    theta.resize(m);
    for (int j = 0; j < m; j++) theta[j] = std::exp(p.log_threshold[j]);
  }
  if (c.act == TOPK) {
    // Rows' top k selected inside the encoder GEMM (encode.h): no [n, m] pre-activations.
    const float* A = encoderInput(p, X, n, useXt ? ensure(xt_, (size_t)n * dIn) : nullptr);
    encodeTopK(pool_, A, dIn, n, dIn, m, p.W_encT, p.b_enc, c.k, out, {}, 0, nullptr, c.screening());
  } else if (c.act != JUMPRELU) {
    // One threshold for every latent (ReLU's 0, the batch-wide rules' inference threshold): the entries above it
    // are kept inside the encoder GEMM (encodeAbove: the same values, no [n, m] pre-activations; screened in bf16
    // for the batch-wide rules, where many entries sit near the threshold less often than near ReLU's 0).
    const float* A = encoderInput(p, X, n, useXt ? ensure(xt_, (size_t)n * dIn) : nullptr);
    Candidates cand;
    encodeAbove(pool_, A, dIn, n, dIn, m, p.W_encT, p.b_enc, c.act == RELU ? 0.f : threshold, cand, {}, 0, nullptr, c.act == RELU ? Screen{} : c.screening());
    out.start.assign(n, 0);
    out.count.assign(n, 0);
    const int R = gemmBlockRows();
    fillSparse(pool_, n, out, [&](long b, auto&& f) {
      const Candidates::Block& bl = cand.blocks[b / R];
      const int rr = (int)(b % R);
      for (long e = bl.off[rr]; e < bl.off[rr + 1]; e++) f(bl.idx[e], bl.val[e]);
    });
    out.nnz = cand.total;
  } else {
    // JumpReLU's per-latent thresholds: counted and then filled without gaps, a chunk of rows at a time.
    out.start.assign(n, 0);
    out.count.assign(n, 0);
    out.nnz = 0;
    out.idx.clear();
    out.val.clear();
    auto thr = [&](int j) { return theta[j]; };
    for (int r0 = 0; r0 < n; r0 += CH) {
      const int rows = n - r0 < CH ? n - r0 : CH;
      const float* A = encoderInput(p, X + (long)r0 * dIn, rows, useXt ? ensure(xt_, (size_t)rows * dIn) : nullptr);
      float* pre = ensure(pre_, (size_t)rows * m);
      gemm(pool_, rows, m, dIn, View{A, dIn, 1}, View{p.W_encT, 1, dIn}, pre, m, false, p.b_enc);
      appendThresholded(pool_, pre, rows, m, r0, thr, out);
    }
  }
  if (c.lean) releaseEncoder();
  if (yhat) {
    pool_.range(n, [&](long b0, long b1, int) {
      for (long b = b0; b < b1; b++) {
        decodeRow(dOut, out.count[b], out.idx.data() + out.start[b], out.val.data() + out.start[b], Wd, p.b_dec, yhat + b * dOut, false);
      }
    });
  }
}

void Engine::projectDecoderGrad(const float* W, float* g) {
  const int d = cfg_.dOut;
  pool_.range(cfg_.dSae, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      const float* w = W + j * d;
      float* gr = g + j * d;
      projectRow(d, w, gr);
    }
  });
}

void Engine::normalizeRows(float* W, int d) {
  pool_.range(cfg_.dSae, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) normalizeRow(W + j * d, d);
  });
}

double Engine::sumSquares(const float* x, long n) { return sdl::sumSquares(pool_, x, n); }

void Engine::adam(float* p, const float* g, float* m, float* v, long n, float lr, float gscale, float b1, float b2, float eps, int t) {
  adamUpdate(pool_, p, g, m, v, n, lr, gscale, b1, b2, eps, t);
}

double sumSquares(Pool& pool, const float* x, long n) {
  Partials part(pool.size());
  pool.range(n, [&](long b, long e, int th) {
    vf s = vsplat(0.f);
    long i = b;
    for (; i + VW <= e; i += VW) { vf v = vload(x + i); s += v * v; }
    double t = vsum(s);
    for (; i < e; i++) t += (double)x[i] * x[i];
    part.at(th)[0] += t;
  });
  return part.total();
}

void adamUpdate(Pool& pool, float* p, const float* g, float* m, float* v, long n, float lr, float gscale, float b1, float b2, float eps, int t) {
  const AdamStep a(lr, gscale, b1, b2, eps, t);
  pool.range(n, [&](long b, long e, int) { adamSpan(a, p, g, m, v, b, e); });
}

void adamUnitRows(Pool& pool, float* p, const float* g, float* m, float* v, long rows, int d, float lr, float gscale, float b1, float b2, float eps,
                  int t) {
  const AdamStep a(lr, gscale, b1, b2, eps, t);
  pool.range(rows, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) adamUnitRow(a, p + j * d, g + j * d, m + j * d, v + j * d, d);
  });
}

}  // namespace sdl
