// The unified SDL training step on the CPU, with hand-written gradients (the same objective as
// src/sdl/step.ts, which is the portable reference):
//   x~ = x - b_dec (when applied) ;  pre = x~ W_enc + b_enc ;  f = sigma(pre) ;  y^ = f W_dec + b_dec
//   L = (1/B) sum_b ||y^_b - y_b||^2  + sparsity + AuxK + anchoring   (Matryoshka: mean over nested prefixes)
// Weights are latent-major: W_enc is stored transposed, [d_sae, d_in], so each latent owns a contiguous row
// in both matrices. The encoder is a dense GEMM; after it the work follows the active entries only: the
// sparse path (every activation) touches nnz rows of W_dec per pass, and a dense path (ReLU and JumpReLU when
// many latents fire) uses GEMMs for the decoder and the backward pass.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pool.h"
#include "simd.h"
#include "util.h"

namespace sdl {

enum Activation { RELU = 0, TOPK = 1, BATCHTOPK = 2, JUMPRELU = 3, MATRYOSHKA = 4 };

// One selected entry's term of the sparsity sum: ReLU's v |W_dec row j| (l1Norms: the rows' norms, null without the
// L1 term), JumpReLU's count of entries that fired (v != 0). entryGrad adds it; a step whose dL/da come later (the
// blocked path's dot products made by latent, Engine::step) adds it alone, in the same row order.
inline void entryLoss(Activation act, float v, int j, const float* l1Norms, double& sl) {
  if (act == RELU && l1Norms) sl += (double)v * l1Norms[j];
  if (act == JUMPRELU) sl += v != 0.f ? 1.0 : 0.0;
}

// dL/dpre of one selected entry (latent j, value v) from dL/da = da, the sparse steps' rule for every activation:
// ReLU adds its L1 term's lb |W_dec row j| (l1Norms: the rows' norms, null without the term) and adds v |W_dec row j|
// to the sparsity sum; JumpReLU passes da only where the entry fired (v != 0: the straight-through window's entries
// hold 0) and counts the firing for its L0 term (its threshold's gradient reads da itself, which the caller keeps);
// the TopK family passes da through.
inline float entryGrad(Activation act, float da, float v, int j, const float* l1Norms, float lb, double& sl) {
  entryLoss(act, v, j, l1Norms, sl);
  if (act == RELU) {
    // Fused (one rounding), as the dense path's vectors compute it: the same number wherever the compiler inlines
    // this. + 0.f without the term, as before: a -0 da gives +0.
    return l1Norms ? std::fma(lb, l1Norms[j], da) : da + 0.f;
  }
  if (act == JUMPRELU) return v != 0.f ? da : 0.f;
  return da;
}

// How an encoder call may screen in bf16 (screen.h): `level` as Config::screen (0 never, 1 where it is faster, 2
// wherever the processor can), and whether the engine is lean (Config::lean, `--low-memory`): a lean call gives the
// screen's bf16 copy of W_enc back before its float32 recomputation and holds a quarter of the screened values at
// once; otherwise the copy and those buffers are kept for the next call.
struct Screen {
  int level = 0;
  bool lean = false;
  Screen(int level = 0, bool lean = false) : level(level), lean(lean) {}  // NOLINT: an int is a level
};

struct Config {
  int dIn = 0, dOut = 0, dSae = 0;
  Activation act = TOPK;
  int k = 0;
  std::vector<int> widths;  // Matryoshka prefixes, ascending, last = dSae
  bool applyBDec = true, noBias = false, tied = false;
  // The TopK family: screen the encoder in bf16 (screen.h; the same result): 0 never, 1 where it is faster (d_in >= 256
  // and 2^20 products a row, with AVX512_BF16), 2 wherever the processor can (tests).
  int screen = 1;
  // Gives each phase's scratch back to the system once the phase is over (sdl fit --low-memory): the encoder's packed
  // copy of W_enc after the encoder, the per-entry and per-row buffers of the gradient after the update. The peak is
  // then the larger phase's, not the two together, for a few page faults a step. The same values either way.
  bool lean = false;
  // How this engine's encoder calls screen (encode.h).
  Screen screening() const { return Screen{screen, lean}; }
};

// Parameter (or gradient) buffers. W_encT [dSae][dIn]; W_dec [dSae][dOut] (the same buffer as W_encT when tied).
struct Tensors {
  float* W_encT = nullptr;
  float* b_enc = nullptr;
  float* W_dec = nullptr;
  float* b_dec = nullptr;
  float* log_threshold = nullptr;
};

// ReLU/JumpReLU: the fraction of a batch firing above which a step uses GEMMs for the decoder and backward, when the
// caller gives none. The engines of src/sdl give theirs (denseAbove in src/sdl/engine-native.ts: 0.125 for ReLU
// decoders over 1 MiB; the measured crossovers are in docs/native.md; SDLKIT_DENSE_ABOVE sets it per run).
constexpr float kDenseAbove = 0.1f;
// ReLU's sparse steps screen their encoder in bf16 (screen.h, where Config::screen wants it) while the last step fired
// under this fraction: each entry whose bound reaches 0 (1.2-1.5 a positive one) is recomputed in float32, which
// costs more than the bf16 GEMM saves once more fire (docs/BENCHMARKS.md, stops 48 and 63: at 2-3% firing the same
// time either way at 512 x 4,096 and 768 x 6,144, 40-90 ms a step less screened at 768 x 24,576; ~even at 3-4%).
constexpr float kScreenReluBelow = 0.03f;
// The sparse path's decoder pass, in blocks of this many latents (0: a row at a time) when W_dec is larger than the
// last-level cache would hold and a row has on average at least a few entries in a block (ReLU while a few percent
// fire at 768 x 24,576): see Engine::step.
int blockedDecode(long dSae, int dOut, long entries, int B, int option);
// The sparse path's gradient rows, a block of this many batch rows at a time (0: every entry of a latent at once),
// when the rows they read (B x width floats) are larger than the cache would hold and a latent has on average enough
// entries in a block: see Engine::step.
int blockedRows(int B, int width, long entries, long dSae, int option);

// Where a batch-wide selection (BatchTopK, Matryoshka) looks for the next step's threshold. The step's fused encoder
// keeps the entries above a floor as candidates; when they number at least the k B it selects, the selection is among
// them (exact), and otherwise the step takes a floor from the rows' own top 2k, another encoder pass. A floor far under
// the threshold lists more candidates than the selection needs, each one stored, bounded and sorted (Gaussian rows,
// k 32 of 4,096 latents: at 0.8 x the last threshold ~3 k B, and in the bf16 screen every entry over it listed):
// BatchTopK steps at 512 x 4,096 ran ~20% faster screened at 0.95 than at 0.8 (docs/BENCHMARKS.md). So the floor
// follows how far the threshold fell from step to step lately: kMargin under the smallest ratio of the last kWindow
// steps' thresholds, within [kLow, kHigh]; kLow (the fixed fraction before) until kWindow / 4 ratios are known. A
// fall past the floor costs that step the rows' pass, and widens the floor for the next kWindow steps.
class BatchFloor {
 public:
  // The next step's floor; 0 before any threshold.
  float next() const { return last_ > 0 ? frac_ * last_ : 0.f; }
  // A step's threshold (a step without one, kth <= 0, leaves the floor as it was).
  void observe(float kth) {
    if (!(kth > 0)) return;
    if (last_ > 0) {
      ratio_[at_] = kth / last_;
      at_ = (at_ + 1) % kWindow;
      if (seen_ < kWindow) seen_++;
    }
    last_ = kth;
    const float low = *std::min_element(ratio_, ratio_ + seen_);
    frac_ = seen_ < kWindow / 4 ? kLow : std::clamp(low - kMargin, kLow, kHigh);
  }

  static constexpr int kWindow = 16;
  static constexpr float kLow = 0.8f, kHigh = 0.97f, kMargin = 0.03f;

 private:
  float last_ = 0, frac_ = kLow;
  float ratio_[kWindow] = {};
  int seen_ = 0, at_ = 0;
};

struct StepOptions {
  float sparsity = 0, bandwidth = 1;
  float auxkCoefficient = 0;
  int auxkK = 0;
  const uint8_t* dead = nullptr;  // 1 for latents counted dead (AuxK)
  const float* anchorEnc = nullptr;  // [anchorK][dIn]
  const float* anchorDec = nullptr;  // [anchorK][dOut]
  int anchorK = 0;
  float anchorWeight = 0;
  // BatchTopK/Matryoshka with no threshold yet, or after it fell: store the pre-activations (the unfused path) instead
  // of taking a floor from the rows' top 2k. The same selection; for tests.
  bool storedFallback = false;
  float denseAbove = kDenseAbove;  // use the dense path for ReLU/JumpReLU when more than this fraction fires
  // The sparse path's decoder pass a block of latents at a time (blockedDecode): 0 where it pays, n > 0 in blocks of
  // n latents always, < 0 never. The same step either way; for tests.
  int decodeBlock = 0;
  int rowBlock = 0;  // the same for the gradient rows (blockedRows): batch rows a block, 0 where it pays, < 0 never
  // ReLU's dL/dact a dot product an entry apart from the gradient rows' sums even where both can be made in one pass
  // over the dL/dy^ rows (accumulateDots). The same step either way; for tests.
  bool dotsApart = false;
  // Untied TopK family only: W_enc's and W_dec's gradients are not written (g.W_encT, g.W_dec may be null); the step
  // keeps its entries grouped by latent, and applyRows makes each latent's rows again and applies Adam to them.
  // Untied, projectDec: the decoder rows' gradients have their component along the row removed (the unit-norm
  // constraint) as each latent's rows are finished, before their norm and the update; rowsNorm: the step reports
  // W_enc's and W_dec's gradients' squared norm (StepResult::rowsSq), summed over the rows as they are finished
  // (gradient-norm clipping needs it; with deferRows and no norm the rows are made once, by applyRows).
  bool deferRows = false, projectDec = false;
  bool rowsNorm = true;
};

struct StepResult {
  double loss = 0, mse = 0, sparsityLoss = 0, auxLoss = 0, anchorLoss = 0, l0 = 0;
  float minSelected = -1;  // BatchTopK/Matryoshka: smallest selected pre-activation (-1 when none)
  bool dense = false;
  long nnz = 0;
  // How the batch's selection was made: 0 from stored pre-activations, 1 inside the encoder GEMM, 2 inside it first
  // and then from stored pre-activations (BatchTopK: the floor under the last threshold left too few candidates),
  // 3 inside the encoder GEMM screened in bf16 (TopK, BatchTopK, ReLU; screen.h: the same selection as 1), 4 inside it
  // above a floor from the rows' own top 2k (BatchTopK with no threshold yet, or after it fell).
  int selection = 0;
  double rowsSq = 0;  // untied: the squared norm of W_enc's and W_dec's gradients (NaN without rowsNorm, and tied)
  bool dotsFused = false;  // the sparse path made dL/dact in the gradient rows' pass over dL/dy^ (accumulateDots)
  double denseBytes = 0;   // bytes held after the step in the [B, m] arrays of the stored and dense paths: for tests
};

// Active entries of a batch, row-major: row b holds entries [start[b], start[b] + count[b]) (rows may leave gaps).
struct Sparse {
  std::vector<long> start;
  std::vector<int> count;
  LargeVector<int32_t> idx;  // huge pages from 4 MiB (util.h)
  LargeVector<float> val;
  long nnz = 0;
};

// A batch-wide selection's candidates: every pre-activation above a floor (and > 0), per row in index order, in
// blocks of gemmBlockRows() rows (block q holds rows [q R, q R + mc), row r's entries at [off[r], off[r + 1])); and
// how many entries of the batch are positive.
struct Candidates {
  struct Block {
    std::vector<long> off;
    std::vector<int32_t> idx;
    std::vector<float> val;
    long npos = 0;
  };
  std::vector<Block> blocks;
  // Per row block, its entries of each column chunk finished so far (encodeAbove, between chunks). Kept from call to
  // call like the blocks: made afresh, a ReLU step at 13% firing faulted in and zeroed ~100 MB of them at 768 x 24,576.
  std::vector<std::vector<Block>> parts;
  long total = 0, npos = 0;
  // Gives back the arrays of both (a lean engine, or more entries than a sparse step keeps).
  void release() {
    blocks = {};
    parts = {};
  }
};

// Sum of squares of n floats, and Adam with bias correction on one tensor (g scaled by gscale first): shared by
// every engine. adamUnitRows: the same update on a tensor of rows of width d, each row renormalised to unit norm
// (the unit-norm decoder) right after its update, while in cache, as applyRows does its decoder rows: the values of
// adamUpdate and then a pass of its own over the rows, without that pass.
double sumSquares(Pool& pool, const float* x, long n);
void adamUpdate(Pool& pool, float* p, const float* g, float* m, float* v, long n, float lr, float gscale, float b1, float b2, float eps, int t);
void adamUnitRows(Pool& pool, float* p, const float* g, float* m, float* v, long rows, int d, float lr, float gscale, float b1, float b2, float eps,
                  int t);
// Frees the calling thread's lists of the sparse step's per-latent gradient rows (step.cc, Engine::entryRows).
void releaseEntryLists();

// One Adam step's constants, and its update of elements [i0, i1): one implementation for every caller.
struct AdamStep {
  float lr, gscale, b1, b2, eps, ib1, ib2, rbc1, rbc2;
  AdamStep(float lr, float gscale, float b1, float b2, float eps, int t)
      : lr(lr), gscale(gscale), b1(b1), b2(b2), eps(eps), ib1(1.f - b1), ib2(1.f - b2),
        rbc1(1.f / (1.f - std::pow(b1, (float)t))), rbc2(1.f / (1.f - std::pow(b2, (float)t))) {}
};
// Adam streams four arrays (p, g, m, v) and writes three: each is read kAdamAhead floats ahead, 64 elements at a time
// (the hardware's prefetching alone left it waiting on memory: 768 x 24,576's update 14-17 -> 11-13 ms). The same
// operations per element as one plain loop.
constexpr long kAdamAhead = 1024;
inline void adamSpan(const AdamStep& a, float* p, const float* g, float* m, float* v, long i0, long i1) {
  for (long b0 = i0; b0 < i1; b0 += 64) {
    const long b1 = b0 + 64 < i1 ? b0 + 64 : i1;
    if (b0 + kAdamAhead < i1)
      for (long q = 0; q < 64; q += 16) {
        __builtin_prefetch(p + b0 + kAdamAhead + q, 1, 3);
        __builtin_prefetch(g + b0 + kAdamAhead + q, 0, 3);
        __builtin_prefetch(m + b0 + kAdamAhead + q, 1, 3);
        __builtin_prefetch(v + b0 + kAdamAhead + q, 1, 3);
      }
    for (long i = b0; i < b1; i++) {
      float gi = g[i] * a.gscale;
      float mi = a.b1 * m[i] + a.ib1 * gi;
      float vi = a.b2 * v[i] + a.ib2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] -= a.lr * (mi * a.rbc1) / (std::sqrt(vi * a.rbc2) + a.eps);
    }
  }
}
// One row's Adam step, then the row renormalised to unit norm: adamUnitRows' rows, and applyRows' decoder rows.
inline void adamUnitRow(const AdamStep& a, float* w, const float* g, float* m, float* v, int d) {
  adamSpan(a, w, g, m, v, 0, d);
  normalizeRow(w, d);
}

// Inference by a threshold rule on rows [r0, r0 + rows) of pre-activations pre [rows][M]: the entries with z > thr(j)
// and z > 0, counted per row and then written after out's existing entries (rows back to back). Both engines' forward.
template <class Thr>
void appendThresholded(Pool& pool, const float* pre, int rows, int M, int r0, Thr thr, Sparse& out) {
  pool.range(rows, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++) {
      const float* z = pre + b * M;
      int cnt = 0;
      for (int j = 0; j < M; j++) cnt += z[j] > thr(j) && z[j] > 0.f;
      out.count[r0 + b] = cnt;
    }
  });
  long base = out.nnz;
  for (int b = 0; b < rows; b++) {
    out.start[r0 + b] = base;
    base += out.count[r0 + b];
  }
  out.idx.resize(base + 1);
  out.val.resize(base + 1);
  pool.range(rows, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++) {
      const float* z = pre + b * M;
      long s = out.start[r0 + b];
      for (int j = 0; j < M; j++)
        if (z[j] > thr(j) && z[j] > 0.f) {
          out.idx[s] = j;
          out.val[s] = z[j];
          s++;
        }
    }
  });
  out.nnz = base;
}

class Engine {
 public:
  Engine(const Config& cfg, int threads);
  const Config& config() const { return cfg_; }
  Pool& pool() { return pool_; }

  // Loss and gradients (written into g; W_dec's gradient goes to g.W_encT when tied). fired[dSae] receives
  // how many tokens each latent fired on.
  StepResult step(const Tensors& p, const Tensors& g, const float* X, const float* Y, int B, const StepOptions& o, float* fired);

  // Inference: activations with thresholds instead of batch statistics (BatchTopK/Matryoshka: pre > threshold).
  // Writes the active entries into `out` and, when yhat is given, the reconstruction [n][dOut].
  void forward(const Tensors& p, const float* X, int n, float threshold, Sparse& out, float* yhat);
  // forward's output kept between the calls of a pass over many chunks (the index's): a Sparse made afresh for each
  // chunk faulted in new pages every time.
  Sparse passOut;

  // Removes from each decoder row's gradient its component along the row.
  void projectDecoderGrad(const float* W, float* g);
  // Rescales each row of W [dSae][d] to unit norm.
  void normalizeRows(float* W, int d);
  // Sum of squares of n floats.
  double sumSquares(const float* x, long n);
  // Adam with bias correction on one tensor: g is scaled by gscale first.
  void adam(float* p, const float* g, float* m, float* v, long n, float lr, float gscale, float b1, float b2, float eps, int t);
  // After a step with deferRows: Adam on W_enc's and W_dec's rows (moments mEnc, vEnc [dSae][dIn] and mDec, vDec
  // [dSae][dOut]) with the gradients made again from that step's entries, scaled by gscale; W_dec's rows renormalised
  // after when `normalize`. The same values as the step writing the gradients and the separate kernels. X: the array
  // the step was given, unchanged (W_enc's gradient rows read its rows; checked, else invalid_argument).
  void applyRows(const Tensors& p, const float* X, float* mEnc, float* vEnc, float* mDec, float* vDec, float lr, float gscale, float b1, float b2, float eps, int t,
                 bool normalize);

 private:
  // The encoder's input rows: x - b_dec written into xt when given (b_dec applied to the input), else X.
  const float* encoderInput(const Tensors& p, const float* X, int B, float* xt);
  // Config::lean: the encoder's scratch (gemm's and the screen's, this thread's), and the gradient's (after the
  // update, or after a step whose gradients were written).
  void releaseEncoder();
  void releaseGradient();
  Config cfg_;
  Pool pool_;
  // In huge pages (util.h LargeVector): the sparse path reads the input rows and dL/dy^ rows at random, one latent's
  // entries at a time, and each 4 KiB page a row lands in cost a TLB miss.
  LargeVector<float> xt_, pre_, acts_, dacts_, yhat_, scratch_;
  LargeVector<float> G_, E_;  // given back and taken again every step by a lean engine
  std::vector<long> blockEnds_;  // the blocked decoder pass's: where each row's entries of each block end
  std::vector<long> latentAt_;   // the blocked gradient rows': each latent's place in its entries
  Sparse sp_, aux_, rowTop_;
  Candidates cand_;  // the fused encoder's candidates (BatchTopK, Matryoshka, sparse ReLU), kept across steps
  // An entry of the sparse path as its latent's gradient rows read it: value, dL/dpre, row of the batch, and its dL/dy^
  // row of Grouped::G (Matryoshka: of its prefix's block), -1 for an AuxK entry (whose is its row of Grouped::auxG).
  // 16 bytes: AuxK's 1.57M entries a step at 768 x 24,576 hold 25 MB of them.
  struct Entry {
    float v, dp;
    int32_t row, grow;
  };
  // The sparse path's per-entry and per-latent workspace, kept across steps.
  struct Work {
    LargeVector<float> dpre, dact;
    LargeVector<const float*> grow;
    std::vector<long> cnt, colStart, off, cntAux, auxColStart, auxOff;
    LargeVector<Entry> ent;       // the main entries grouped by latent
    LargeVector<int32_t> auxRef;  // AuxK's entries grouped by latent: slots into its arrays (row = slot / k_aux)
    LargeVector<float> edact;  // JumpReLU: each grouped entry's dL/dact
  } w_;
  // What a sparse step's per-latent gradient rows are made of besides w_ and the entries (entryRows, rowTerms), kept
  // for applyRows after a step with deferRows.
  struct Grouped {
    const float* G = nullptr;      // the main entries' dL/dy^ rows
    const float* xrows = nullptr;  // the rows W_enc's gradient rows read [B][dIn]: the engine's x - b_dec, or X
    const float* xIn = nullptr;    // untied: X, the step's input (applyRows checks it is given the same, unchanged)
    long xLen = 0;
    uint64_t xHash = 0;
    const float* xcenter = nullptr;  // untied with b_dec applied: b_dec as the step read it, subtracted from X's rows
    const float* auxG = nullptr;   // AuxK's gradient rows [B][dOut] (an AuxK entry's is its row's)
    const float* auxVal = nullptr;    // AuxK's activations by slot
    const int32_t* auxDp = nullptr;   // and dL/dpre, by slot, written over the latent ids (floatBits)
    int kAux = 0;                  // AuxK's slots per row; 0: no AuxK entries this step
    const float* pre = nullptr;    // JumpReLU: the stored pre-activations
    float eps = 1;                 // JumpReLU's bandwidth
    bool l1 = false;               // ReLU's L1 term (norms_)
    float sparsityOverB = 0;
    const float *anchorEnc = nullptr, *anchorDec = nullptr;
    int anchorK = 0;
    float anchorWeight = 0;
    bool projectDec = false, pending = false;
  } grp_;
  struct LatentSums {
    double sumV = 0, sumDaK = 0, sumK = 0, gbe = 0, nf = 0;
  };
  std::vector<LatentSums> sums_;  // the blocked gradient rows': each latent's sums so far
  LatentSums entryRows(long j, float* gwd, float* gwe) const;
  void entrySums(long j, long e, long e1, long a, long a1, float* gwd, float* gwe, bool onto, LatentSums& ls) const;
  bool entrySumsDots(long j, long e, long e1, const float* wj, const float* l1Norms, float lb, float* gwd, float* gwe, bool onto, LatentSums& ls);
  double rowTerms(const Tensors& p, long j, double sumV, float* gwd, float* gwe) const;
  // ReLU L1's decoder row norms, JumpReLU's thresholds, per-thread rows, b_dec as the step read it (Grouped::xcenter)
  std::vector<float> norms_, theta_, rowBuf_, bdecAt_;
  std::vector<float> colSums_;  // the dense ReLU step's column sums, per row block (DpreStore, step.cc)
  std::vector<double> rowSq_;
  // BatchTopK/Matryoshka: the floor under the next step's threshold, from the last steps' (the fused encoder keeps
  // the entries above it as candidates).
  BatchFloor floor_;
  // ReLU: the last step took the sparse path, so this one first tries keeping the positive entries inside the GEMM;
  // the fraction of the batch that fired in the last step (its encoder is screened under kScreenReluBelow).
  bool lastSparse_ = false;
  float lastFiring_ = 1;
};

}  // namespace sdl
