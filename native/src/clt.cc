// Clt: the cross-layer transcoder's step and inference (see clt.h for the objective and the layout). The structure
// follows step.cc's sparse path: encoder GEMMs (one per layer), per-layer selection, per-row reconstruction from the
// active decoder rows, dL/dpre on the active entries, then per-latent gradient rows from entries grouped by latent.
#include "clt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "encode.h"
#include "gemm.h"
#include "select.h"
#include "simd.h"
#include "util.h"

namespace sdl {

Clt::Clt(const CltConfig& cfg, int threads) : c_(cfg), pool_(threads), dec_(cfg.L + 1, 0) {
  for (int l = 0; l < c_.L; l++) dec_[l + 1] = dec_[l] + (long)c_.n * rowLen(l);
}

void Clt::preacts(const CltTensors& p, const float* X, int B, float* pre) {
  const int L = c_.L, dI = c_.dI, n = c_.n, M = L * n;
  for (int l = 0; l < L; l++)
    gemm(pool_, B, n, dI, View{X + (long)l * dI, (long)L * dI, 1}, View{p.W_encT + (long)l * n * dI, 1, dI}, pre + (long)l * n, M, false,
         p.b_enc + (long)l * n);
}

bool Clt::encodeTopKLayers(const CltTensors& p, const float* X, int B, const uint8_t* dead, int auxkK, Sparse& out, long r0) {
  const int L = c_.L, dI = c_.dI, n = c_.n, k = c_.k < n ? c_.k : n;
  layerSp_.resize(L);
  layerAux_.resize(L);
  bool screened = true;
  for (int l = 0; l < L; l++) {
    std::vector<int32_t> deadL;
    if (dead)
      for (int i = 0; i < n; i++)
        if (dead[(long)l * n + i]) deadL.push_back(i);
    Sparse* aux = dead && !deadL.empty() && auxkK > 0 ? &layerAux_[l] : nullptr;
    screened &= encodeTopK(pool_, X + (long)l * dI, (long)L * dI, B, dI, n, p.W_encT + (long)l * n * dI, p.b_enc + (long)l * n, k, layerSp_[l], deadL, auxkK, aux, c_.screen);
    if (aux)
      for (int b = 0; b < B; b++)
        for (int q = 0; q < aux->count[b]; q++) aux->idx[aux->start[b] + q] += l * n;
  }
  pool_.range(B, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++) {
      const long row = r0 + b;
      long s = row * L * k;
      out.start[row] = s;
      for (int l = 0; l < L; l++) {
        const Sparse& ls = layerSp_[l];
        for (int q = 0; q < ls.count[b]; q++, s++) {
          out.idx[s] = ls.idx[ls.start[b] + q] + l * n;
          out.val[s] = ls.val[ls.start[b] + q];
        }
      }
      out.count[row] = (int)(s - out.start[row]);
    }
  });
  return screened;
}

// Yh[b][t dO ..] = x_t W_skip^t for every layer t (overwrites Yh).
void Clt::addSkip(const CltTensors& p, const float* X, int B, float* Yh) {
  const int L = c_.L, dI = c_.dI, dO = c_.dO;
  for (int l = 0; l < L; l++)
    gemm(pool_, B, dO, dI, View{X + (long)l * dI, (long)L * dI, 1}, View{p.W_skip + (long)l * dI * dO, dO, 1}, Yh + (long)l * dO, (long)L * dO, false);
}

StepResult Clt::step(const CltTensors& p, const CltTensors& g, const float* X, const float* Y, int B, const CltStepOptions& o, float* fired) {
  const int L = c_.L, dI = c_.dI, dO = c_.dO, n = c_.n, M = L * n, DI = L * dI, DO = L * dO;
  const int T = pool_.size();
  const long BM = (long)B * M;
  StepResult r;
  const bool wantAux = (c_.act == TOPK || c_.act == BATCHTOPK) && o.dead && o.auxkCoefficient > 0;
  // TopK selects inside the encoder GEMMs. BatchTopK does too, per layer: the entries above a floor are candidates,
  // and when a layer has at least as many as it selects, its k-th largest is among them (exact). The floor is
  // under the layer's last threshold (floor_, engine.h: by how far it fell lately), or with none yet (or when it
  // fell further) the k B-th largest of the rows' own top 2k in that layer (rowsTopFloor); if a layer's rows hold too
  // few positive entries, the pre-activations are computed after all. The other rules need the pre-activations stored.
  const int R = gemmBlockRows();
  std::vector<Candidates> cand;
  bool batchFused = false;
  floor_.resize(L);
  if (c_.act == BATCHTOPK) {
    cand.resize(L);
    layerAux_.resize(L);
    batchFused = true;
    bool screened = true, rowsFloor = false;
    const long kB = (long)c_.k * B;
    for (int l = 0; l < L && batchFused; l++) {
      std::vector<int32_t> deadL;
      if (wantAux)
        for (int i = 0; i < n; i++)
          if (o.dead[(long)l * n + i]) deadL.push_back(i);
      Sparse* aux = !deadL.empty() && o.auxkK > 0 ? &layerAux_[l] : nullptr;
      const float* Xl = X + (long)l * dI;
      const float *Wl = p.W_encT + (long)l * n * dI, *bl = p.b_enc + (long)l * n;
      auto above = [&](float floor) {
        screened &= encodeAbove(pool_, Xl, (long)L * dI, B, dI, n, Wl, bl, floor, cand[l], deadL, o.auxkK, aux, c_.screen, kB);
        if (aux)  // AuxK's picks as global latent indices
          for (int b = 0; b < B; b++)
            for (int q = 0; q < aux->count[b]; q++) aux->idx[aux->start[b] + q] += l * n;
        const long want = kB < cand[l].npos ? kB : cand[l].npos;
        return cand[l].total >= want;
      };
      const float f = floor_[l].next();
      bool fusedL = f > 0 && above(f);
      if (!fusedL && !o.storedFallback) {
        const float floor = rowsTopFloor(pool_, Xl, (long)L * dI, B, dI, n, Wl, bl, 2 * c_.k < n ? 2 * c_.k : n, kB, rowTop_, c_.screen);
        if (floor > 0) {
          fusedL = above(std::nextafter(floor, 0.f));  // entries >= floor are candidates
          rowsFloor = true;
        }
      }
      batchFused = fusedL;
    }
    const bool hadThresholds = std::all_of(floor_.begin(), floor_.end(), [](const BatchFloor& f) { return f.next() > 0.f; });
    r.selection = batchFused ? (rowsFloor ? 4 : screened ? 3 : 1) : hadThresholds ? 2 : 0;
  }
  if (c_.act == TOPK) r.selection = 1;  // 3 below when every layer's selection was screened in bf16
  float* pre = c_.act == TOPK || batchFused ? nullptr : ensure(pre_, (size_t)BM);
  if (pre) preacts(p, X, B, pre);
  const float* Wd = p.W_dec;

  std::vector<float> norms, theta;
  const bool l1 = c_.act == RELU && o.sparsity > 0;
  if (l1) {
    norms.resize(M);
    pool_.range(M, [&](long j0, long j1, int) {
      for (long j = j0; j < j1; j++) norms[j] = std::sqrt(dot(rowLen(j / n), Wd + decRow(j), Wd + decRow(j)));
    });
  }
  if (c_.act == JUMPRELU) {
    theta.resize(M);
    for (int j = 0; j < M; j++) theta[j] = std::exp(p.log_threshold[j]);
  }
  const float eps = o.bandwidth;
  auto inWindow = [&](float z, int j) { float u = (z - theta[j]) / eps; return u > -0.5f && u < 0.5f; };

  // ---- Selection, per layer.
  Sparse& sp = sp_;
  ensure(sp.start, B);
  ensure(sp.count, B);
  kth_.assign(L, -1.f);
  if (batchFused) {
    for (int l = 0; l < L; l++) {
      const long want = (long)c_.k * B < cand[l].npos ? (long)c_.k * B : cand[l].npos;
      if (want <= 0) continue;
      std::vector<FloatSpan> all;
      for (auto& bl : cand[l].blocks) all.push_back({bl.val.data(), (long)bl.val.size()});
      kth_[l] = kthLargestPositive(pool_, all, want);
    }
    // Each row's selected entries, layer by layer (global index order, as the unfused fill).
    fillSparse(pool_, B, sp, [&](long b, auto&& f) {
      for (int l = 0; l < L; l++) {
        const float t = kth_[l];
        if (!(t > 0.f)) continue;
        const Candidates::Block& bl = cand[l].blocks[b / R];
        const int rr = (int)(b % R);
        for (long e = bl.off[rr]; e < bl.off[rr + 1]; e++)
          if (bl.val[e] >= t) f(bl.idx[e] + l * n, bl.val[e]);
      }
    });
  } else if (c_.act == TOPK) {
    const int k = c_.k < n ? c_.k : n;
    ensure(sp.idx, (size_t)B * L * k + 1);
    ensure(sp.val, (size_t)B * L * k + 1);
    if (encodeTopKLayers(p, X, B, wantAux ? o.dead : nullptr, o.auxkK, sp, 0)) r.selection = 3;
  } else {
  if (c_.act == BATCHTOPK) {
    float* tmp = ensure(tmp_, (size_t)B * n);
    for (int l = 0; l < L; l++) {
      pool_.range(B, [&](long b0, long b1, int) {
        for (long b = b0; b < b1; b++) std::memcpy(tmp + b * n, pre + b * M + (long)l * n, sizeof(float) * n);
      });
      long npos = countPositive(pool_, tmp, (long)B * n);
      long want = (long)c_.k * B < npos ? (long)c_.k * B : npos;
      if (want > 0) kth_[l] = kthLargestPositive(pool_, tmp, (long)B * n, want);
    }
  }
    auto keep = [&](float z, int j) -> bool {
      switch (c_.act) {
        case RELU: return z > 0.f;
        case JUMPRELU: return z > theta[j] || inWindow(z, j);
        default: { float t = kth_[j / n]; return t > 0.f && z >= t; }
      }
    };
    pool_.range(B, [&](long b0, long b1, int) {
      for (long b = b0; b < b1; b++) {
        const float* z = pre + b * M;
        int cnt = 0;
        for (int j = 0; j < M; j++) cnt += keep(z[j], j);
        sp.count[b] = cnt;
      }
    });
    long total = 0;
    for (int b = 0; b < B; b++) { sp.start[b] = total; total += sp.count[b]; }
    // ReLU/JumpReLU with many active entries (early in training): GEMMs for the decoder and the backward pass.
    r.dense = (c_.act == RELU || c_.act == JUMPRELU) && (double)total > o.denseAbove * (double)BM;
    if (r.dense) return denseStep(p, g, X, Y, B, o, fired, pre, norms, theta, r);
    release(acts_);  // the dense path's arrays, given back while steps stay sparse (as Engine::step does)
    release(dacts_);
    ensureGrowing(sp.idx, (size_t)total + 1);
    ensureGrowing(sp.val, (size_t)total + 1);
    pool_.range(B, [&](long b0, long b1, int) {
      for (long b = b0; b < b1; b++) {
        const float* z = pre + b * M;
        long s = sp.start[b];
        for (int j = 0; j < M; j++) {
          if (!keep(z[j], j)) continue;
          sp.idx[s] = j;
          sp.val[s] = (c_.act == JUMPRELU && !(z[j] > theta[j])) ? 0.f : z[j];
          s++;
        }
      }
    });
  }
  for (int l = 0; l < L; l++)
    floor_[l].observe(kth_[l]);
  long total = 0;
  for (int b = 0; b < B; b++) total += sp.count[b];
  r.nnz = total;
  long cap = 0;
  for (int b = 0; b < B; b++) cap = sp.start[b] + sp.count[b] > cap ? sp.start[b] + sp.count[b] : cap;

  // ---- Reconstruction, error and dL/dpre per active entry.
  float* G = ensure(G_, (size_t)B * DO);  // dL/dy^ rows
  float* E = wantAux ? ensure(E_, (size_t)B * DO) : nullptr;
  if (c_.skip) addSkip(p, X, B, G);  // G holds the skip path's output until each row turns it into the gradient
  std::vector<float> dpre(cap + 1), dact(c_.act == JUMPRELU ? cap + 1 : 1);
  Partials sse(T), spLoss(T);
  const float lb = o.sparsity / B;
  ensure(scratch_, (size_t)T * DO);
  pool_.range(B, [&](long b0, long b1, int th) {
    float* yh = scratch_.data() + (size_t)th * DO;
    double s = 0, sl = 0;
    for (long b = b0; b < b1; b++) {
      const long st = sp.start[b];
      const int cnt = sp.count[b];
      const int32_t* ix = sp.idx.data() + st;
      const float* v = sp.val.data() + st;
      float* Gb = G + b * DO;
      for (int i = 0; i < DO; i++) yh[i] = p.b_dec[i] + (c_.skip ? Gb[i] : 0.f);
      for (int q = 0; q < cnt; q++) {
        const int l = ix[q] / n;
        if (v[q] != 0.f) axpy(rowLen(l), v[q], Wd + decRow(ix[q]), yh + (long)l * dO);
      }
      const float* y = Y + b * DO;
      s += residualRow(DO, yh, nullptr, y, 2.f / B, Gb, E ? E + b * DO : nullptr);
      for (int q = 0; q < cnt; q++) {
        const int j = ix[q], l = j / n;
        const float da = dot(rowLen(l), Gb + (long)l * dO, Wd + decRow(j));
        if (c_.act == JUMPRELU) dact[st + q] = da;
        dpre[st + q] = entryGrad(c_.act, da, v[q], j, l1 ? norms.data() : nullptr, lb, sl);
      }
    }
    sse.at(th)[0] += s;
    spLoss.at(th)[0] += sl;
  });

  // ---- Entries grouped by latent (counting sort per slice of rows), then each latent's gradient rows.
  std::vector<long> cnt((size_t)T * (M + 1), 0);
  pool_.run(T, [&](int t, int) {
    long* ct = cnt.data() + (size_t)t * (M + 1);
    auto [b0, b1] = threadRows(B, T, t);
    for (long b = b0; b < b1; b++)
      for (int q = 0; q < sp.count[b]; q++) ct[sp.idx[sp.start[b] + q]]++;
  });
  std::vector<long> colStart(M + 1), off((size_t)T * M);
  const long run = groupOffsets(cnt.data(), T, M, colStart.data(), off.data());
  std::vector<long> order(run + 1);
  std::vector<int32_t> slotRow(cap + 1);
  pool_.run(T, [&](int t, int) {
    long* o2 = off.data() + (size_t)t * M;
    auto [b0, b1] = threadRows(B, T, t);
    for (long b = b0; b < b1; b++)
      for (int q = 0; q < sp.count[b]; q++) {
        long s = sp.start[b] + q;
        order[o2[sp.idx[s]]++] = s;
        slotRow[s] = (int32_t)b;
      }
  });
  pool_.range(M, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      const int l = (int)(j / n), len = rowLen(l);
      float* gwd = g.W_dec + decRow((int)j);
      float* gwe = g.W_encT + j * dI;
      // The entries' rows, summed in registers (accumulate: the same roundings as an axpy per entry).
      static thread_local std::vector<float> coefD, coefE;
      static thread_local std::vector<const float*> srcD, srcE;
      coefD.clear(), coefE.clear(), srcD.clear(), srcE.clear();
      double sumV = 0, sumDaK = 0, sumK = 0, gbe = 0, nf = 0;
      for (long e = colStart[j]; e < colStart[j + 1]; e++) {
        const long s = order[e];
        const int b = slotRow[s];
        const float v = sp.val[s], dp = dpre[s];
        sumV += v;
        nf += v > 0.f;
        if (c_.act == JUMPRELU) {
          float K = rect(pre[(long)b * M + j], theta[j], eps);
          sumDaK += (double)dact[s] * K;
          sumK += K;
        }
        if (v != 0.f) coefD.push_back(v), srcD.push_back(G + (long)b * DO + (long)l * dO);
        if (dp != 0.f) {
          coefE.push_back(dp), srcE.push_back(X + (long)b * DI + (long)l * dI);
          gbe += dp;
        }
      }
      accumulate(len, (int)coefD.size(), coefD.data(), srcD.data(), nullptr, gwd);
      accumulate(dI, (int)coefE.size(), coefE.data(), srcE.data(), nullptr, gwe);
      if (l1) axpy(len, (float)(o.sparsity / B * sumV / (norms[j] + 1e-12)), Wd + decRow((int)j), gwd);
      if (c_.act == JUMPRELU) {
        double gTheta = -theta[j] * sumDaK - o.sparsity / B * sumK;
        g.log_threshold[j] = (float)(gTheta * theta[j]);
      }
      g.b_enc[j] = (float)gbe;
      fired[j] = (float)nf;
    }
  });

  // ---- AuxK, per layer: layer l's top k_aux dead pre-activations reconstruct the (detached) residual of the
  // targets they can write (layers >= l), normalised by that residual's variance; the mean over layers (so a CLT
  // of one layer is exactly a transcoder).
  double auxTotal = 0;
  if (wantAux) {
    for (int l = 0; l < L; l++) {
      std::vector<int32_t> deadList;
      for (int i = 0; i < n; i++)
        if (o.dead[l * n + i]) deadList.push_back(l * n + i);
      if (deadList.empty()) continue;
      const int nDead = (int)deadList.size(), kAux = o.auxkK < nDead ? o.auxkK : nDead, len = rowLen(l);
      if (kAux <= 0) continue;
      std::vector<double> mean(len, 0.0);
      for (int b = 0; b < B; b++)
        for (int i = 0; i < len; i++) mean[i] -= E[(long)b * DO + (long)l * dO + i];
      for (int i = 0; i < len; i++) mean[i] /= B;
      Partials var(T), aux(T);
      pool_.range(B, [&](long b0, long b1, int th) {
        double s = 0;
        for (long b = b0; b < b1; b++)
          for (int i = 0; i < len; i++) {
            double d = -E[b * DO + (long)l * dO + i] - mean[i];
            s += d * d;
          }
        var.at(th)[0] += s;
      });
      const double denom = var.total() + 1e-12;
      const float ga = (float)(2.0 * o.auxkCoefficient / (denom * L));
      std::vector<int32_t> aIdx((size_t)B * kAux), aCnt(B);
      std::vector<float> aVal((size_t)B * kAux), aDp((size_t)B * kAux), GA((size_t)B * len);
      const size_t scrW = (size_t)5 * nDead + 128 + nDead + (size_t)len;
      std::vector<float> scr((size_t)T * scrW);
      pool_.range(B, [&](long b0, long b1, int th) {
        float* s0 = scr.data() + (size_t)th * scrW;
        float* gathered = s0 + 5 * nDead + 128;
        float* eh = gathered + nDead;
        double s = 0;
        for (long b = b0; b < b1; b++) {
          int32_t* ix = aIdx.data() + b * kAux;
          float* v = aVal.data() + b * kAux;
          int m2;
          if (!pre) {  // TopK: gathered inside the encoder GEMM
            const Sparse& la = layerAux_[l];
            m2 = la.count[b];
            std::memcpy(ix, la.idx.data() + la.start[b], sizeof(int32_t) * m2);
            std::memcpy(v, la.val.data() + la.start[b], sizeof(float) * m2);
          } else {
            const float* z = pre + b * M;
            for (int t = 0; t < nDead; t++) gathered[t] = z[deadList[t]];
            m2 = topkRow(gathered, nDead, kAux, ix, v, s0);
            for (int q = 0; q < m2; q++) ix[q] = deadList[ix[q]];
          }
          aCnt[b] = m2;
          for (int i = 0; i < len; i++) eh[i] = 0.f;
          for (int q = 0; q < m2; q++) axpy(len, v[q], Wd + decRow(ix[q]), eh);
          float* gb = GA.data() + b * len;
          const float* Eb = E + b * DO + (long)l * dO;
          for (int i = 0; i < len; i++) {
            float d = eh[i] + Eb[i];  // e^ - (y - y^)
            s += (double)d * d;
            gb[i] = ga * d;
          }
          for (int q = 0; q < m2; q++) aDp[b * kAux + q] = dot(len, gb, Wd + decRow(ix[q]));
        }
        aux.at(th)[0] += s;
      });
      auxTotal += aux.total() / denom;
      // Group by latent (small: B k_aux entries), then add each dead latent's gradient rows.
      std::vector<long> start(n + 1, 0), pos;
      for (int b = 0; b < B; b++)
        for (int q = 0; q < aCnt[b]; q++) start[aIdx[(long)b * kAux + q] - l * n + 1]++;
      for (int i = 0; i < n; i++) start[i + 1] += start[i];
      pos.assign(start.begin(), start.end() - 1);
      std::vector<long> ent(start[n] + 1);
      for (int b = 0; b < B; b++)
        for (int q = 0; q < aCnt[b]; q++) {
          long s = (long)b * kAux + q;
          ent[pos[aIdx[s] - l * n]++] = s;
        }
      pool_.range(n, [&](long i0, long i1, int) {
        for (long i = i0; i < i1; i++) {
          if (start[i] == start[i + 1]) continue;
          const int j = l * n + (int)i;
          float* gwd = g.W_dec + decRow(j);
          float* gwe = g.W_encT + (long)j * dI;
          double gbe = 0;
          for (long e = start[i]; e < start[i + 1]; e++) {
            const long s = ent[e];
            const long b = s / kAux;
            axpy(len, aVal[s], GA.data() + b * len, gwd);
            if (aDp[s] != 0.f) {
              axpy(dI, aDp[s], X + b * DI + (long)l * dI, gwe);
              gbe += aDp[s];
            }
          }
          g.b_enc[j] += (float)gbe;
        }
      });
    }
    r.auxLoss = o.auxkCoefficient * auxTotal / L;
  }

  return finish(g, X, B, fired, sse.total(), o.sparsity * spLoss.total(), r);
}

// b_dec's and W_skip's gradients from G (dL/dy^ rows), and the step's totals.
StepResult& Clt::finish(const CltTensors& g, const float* X, int B, const float* fired, double sse, double spl, StepResult& r) {
  const int L = c_.L, dI = c_.dI, dO = c_.dO, M = L * c_.n, DI = L * dI, DO = L * dO;
  const int T = pool_.size();
  const float* G = G_.data();
  // b_dec: the sum over rows of dL/dy^, in fixed slices added in order (bit-for-bit reproducible).
  std::vector<double> part((size_t)T * (DO + 8), 0.0);
  pool_.run(T, [&](int t, int) {
    double* pp = part.data() + (size_t)t * (DO + 8);
    auto [b0, b1] = threadRows(B, T, t);
    for (long b = b0; b < b1; b++)
      for (int i = 0; i < DO; i++) pp[i] += G[b * DO + i];
  });
  for (int i = 0; i < DO; i++) {
    double s = 0;
    for (int t = 0; t < T; t++) s += part[(size_t)t * (DO + 8) + i];
    g.b_dec[i] = (float)s;
  }
  // W_skip^l = x_l^T dL/dy^_l.
  if (c_.skip)
    for (int l = 0; l < L; l++)
      gemm(pool_, dI, dO, B, View{X + (long)l * dI, 1, DI}, View{G + (long)l * dO, DO, 1}, g.W_skip + (long)l * dI * dO, dO, false);
  double l0 = 0;
  for (int j = 0; j < M; j++) l0 += fired[j];
  r.l0 = l0 / B;
  r.mse = sse / B;
  if (c_.act == RELU || c_.act == JUMPRELU) r.sparsityLoss = spl / B;  // spl: the coefficient times the summed term
  r.loss = r.mse + r.sparsityLoss + r.auxLoss;
  float minSel = -1;
  for (float t : kth_) if (t > 0 && (minSel < 0 || t < minSel)) minSel = t;
  r.minSelected = minSel;
  return r;
}

// The dense path (ReLU/JumpReLU, many active entries): per layer, y^ += f_l W_dec^l (into the suffix of the row),
// dL/df_l = G_suffix W_dec^l^T, and the weight gradients as GEMMs over the batch; per-latent sums finish the rest.
StepResult& Clt::denseStep(const CltTensors& p, const CltTensors& g, const float* X, const float* Y, int B, const CltStepOptions& o, float* fired,
                           float* pre, const std::vector<float>& norms, const std::vector<float>& theta, StepResult& r) {
  const int L = c_.L, dI = c_.dI, dO = c_.dO, n = c_.n, M = L * n, DI = L * dI, DO = L * dO;
  const int T = pool_.size();
  const long BM = (long)B * M;
  const bool l1 = c_.act == RELU && o.sparsity > 0;
  const float eps = o.bandwidth;
  float* acts = c_.act == RELU ? pre : ensure(acts_, (size_t)BM);
  Partials nnz(T);
  pool_.range(B, [&](long b0, long b1, int th) {
    long cnt = 0;
    for (long b = b0; b < b1; b++) {
      float* z = pre + b * M;
      float* a = acts + b * M;
      for (int j = 0; j < M; j++) {
        a[j] = c_.act == RELU ? (z[j] > 0.f ? z[j] : 0.f) : (z[j] > theta[j] ? z[j] : 0.f);
        cnt += a[j] > 0.f;
      }
    }
    nnz.at(th)[0] += cnt;
  });
  r.nnz = (long)nnz.total();
  float* G = ensure(G_, (size_t)B * DO);
  if (c_.skip) addSkip(p, X, B, G);
  else std::memset(G, 0, sizeof(float) * B * DO);
  for (int l = 0; l < L; l++)
    gemm(pool_, B, rowLen(l), n, View{acts + (long)l * n, M, 1}, View{p.W_dec + dec_[l], rowLen(l), 1}, G + (long)l * dO, DO, true);
  Partials sse(T), spLoss(T);
  pool_.range(B, [&](long b0, long b1, int th) {
    double s = 0;
    for (long b = b0; b < b1; b++) s += residualRow(DO, G + b * DO, p.b_dec, Y + b * DO, 2.f / B, G + b * DO, nullptr);
    sse.at(th)[0] += s;
  });
  float* D = ensure(dacts_, (size_t)BM);
  for (int l = 0; l < L; l++)
    gemm(pool_, B, n, rowLen(l), View{G + (long)l * dO, DO, 1}, View{p.W_dec + dec_[l], 1, rowLen(l)}, D + (long)l * n, M, false);
  // dpre in place of dacts, with per-slice column sums: sumV, sumDaK, sumK, gbe, fired.
  const int NS = 5;
  std::vector<float> cols((size_t)T * NS * M, 0.f);
  const float lb = o.sparsity / B;
  pool_.range(B, [&](long b0, long b1, int th) {
    float* cV = cols.data() + (size_t)th * NS * M;
    float *cDaK = cV + M, *cK = cV + 2 * M, *cDp = cV + 3 * M, *cF = cV + 4 * M;
    double sl = 0;
    for (long b = b0; b < b1; b++) {
      const float* a = acts + b * M;
      const float* z = pre + b * M;
      float* d = D + b * M;
      for (int j = 0; j < M; j++) {
        const bool on = a[j] > 0.f;
        float dp;
        if (c_.act == RELU) {
          dp = on ? d[j] + (l1 ? lb * norms[j] : 0.f) : 0.f;
          if (l1) sl += (double)a[j] * norms[j];
        } else {
          const float K = rect(z[j], theta[j], eps);
          cDaK[j] += d[j] * K;
          cK[j] += K;
          dp = on ? d[j] : 0.f;
          sl += on ? 1.0 : 0.0;
        }
        d[j] = dp;
        cV[j] += a[j];
        cDp[j] += dp;
        cF[j] += on ? 1.f : 0.f;
      }
    }
    spLoss.at(th)[0] += sl;
  });
  for (int l = 0; l < L; l++) {
    gemm(pool_, n, rowLen(l), B, View{acts + (long)l * n, 1, M}, View{G + (long)l * dO, DO, 1}, g.W_dec + dec_[l], rowLen(l), false);
    gemm(pool_, n, dI, B, View{D + (long)l * n, 1, M}, View{X + (long)l * dI, DI, 1}, g.W_encT + (long)l * n * dI, dI, false);
  }
  pool_.range(M, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      double q[NS] = {0, 0, 0, 0, 0};
      for (int t = 0; t < T; t++)
        for (int k = 0; k < NS; k++) q[k] += cols[((size_t)t * NS + k) * M + j];
      if (l1) axpy(rowLen((int)j / n), (float)(lb * q[0] / (norms[j] + 1e-12)), p.W_dec + decRow((int)j), g.W_dec + decRow((int)j));
      if (c_.act == JUMPRELU) {
        double gTheta = -theta[j] * q[1] - lb * q[2];
        g.log_threshold[j] = (float)(gTheta * theta[j]);
      }
      g.b_enc[j] = (float)q[3];
      fired[j] = (float)q[4];
    }
  });
  return finish(g, X, B, fired, sse.total(), o.sparsity * spLoss.total(), r);
}

void Clt::forward(const CltTensors& p, const float* X, int rowsN, const float* theta, Sparse& out, float* yhat) {
  const int L = c_.L, dI = c_.dI, n = c_.n, M = L * n, DI = L * dI, DO = L * c_.dO;
  const int CH = 4096;
  const int k = c_.k < n ? c_.k : n;
  out.start.assign(rowsN, 0);
  out.count.assign(rowsN, 0);
  out.nnz = 0;
  out.idx.clear();
  out.val.clear();
  if (c_.act == TOPK) {
    out.idx.resize((size_t)rowsN * L * k + 1);
    out.val.resize((size_t)rowsN * L * k + 1);
  }
  auto thr = [&](int j) { return c_.act == RELU ? 0.f : theta[j]; };
  for (int r0 = 0; r0 < rowsN; r0 += CH) {
    const int rows = rowsN - r0 < CH ? rowsN - r0 : CH;
    if (c_.act == TOPK) {
      encodeTopKLayers(p, X + (long)r0 * DI, rows, nullptr, 0, out, r0);
      continue;
    }
    float* pre = ensure(pre_, (size_t)rows * M);
    preacts(p, X + (long)r0 * DI, rows, pre);
    appendThresholded(pool_, pre, rows, M, r0, thr, out);
  }
  if (c_.act == TOPK) {
    long s = 0;
    for (int b = 0; b < rowsN; b++) s += out.count[b];
    out.nnz = s;
  }
  if (yhat) {
    if (c_.skip) addSkip(p, X, rowsN, yhat);
    pool_.range(rowsN, [&](long b0, long b1, int) {
      for (long b = b0; b < b1; b++) {
        float* y = yhat + b * DO;
        for (int i = 0; i < DO; i++) y[i] = p.b_dec[i] + (c_.skip ? y[i] : 0.f);
        for (int q = 0; q < out.count[b]; q++) {
          long e = out.start[b] + q;
          const int j = out.idx[e], l = j / n;
          axpy(rowLen(l), out.val[e], p.W_dec + decRow(j), y + (long)l * c_.dO);
        }
      }
    });
  }
}

void Clt::projectDecoderGrad(const float* W, float* g) {
  pool_.range(latents(), [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      const int len = rowLen((int)j / c_.n);
      const float* w = W + decRow((int)j);
      float* gr = g + decRow((int)j);
      projectRow(len, w, gr);
    }
  });
}

void Clt::normalizeDecoder(float* W) {
  pool_.range(latents(), [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      const int len = rowLen((int)j / c_.n);
      float* w = W + decRow((int)j);
      float s = 1.f / (std::sqrt(dot(len, w, w)) + 1e-12f);
      for (int i = 0; i < len; i++) w[i] *= s;
    }
  });
}

}  // namespace sdl
