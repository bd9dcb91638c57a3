// The CLT step and inference in plain TypeScript: the reference native/src/clt.cc is tested against, and the engine
// where the native kernels are not built. Same objective and same rules (per-layer selection, per-layer AuxK), with
// float64 sums. Slow (scalar loops), but it needs nothing compiled.
import type { Activation } from './activations.js';
import { type CltParams, type CltShape, decRow } from './clt.js';
import type { EngineStepOptions, EngineStepResult } from './engine-types.js';

/** As the SAE engine's step: `dead` is [L n] here. */
export type CltStepOptions = EngineStepOptions;

/** minSelected: BatchTopK's k-th selected pre-activation per layer (-1 where nothing was selected). */
export type CltStepResult = EngineStepResult & { minSelected: number[] };

interface Entry {
  b: number;
  j: number;
  v: number;
}

/** The k largest positive values of z[from, from + m), as latent indices (from + i), in index order. */
function topk(z: Float32Array, from: number, m: number, k: number, base: number): { j: number; v: number }[] {
  const c: { j: number; v: number }[] = [];
  for (let i = 0; i < m; i++) if (z[from + i] > 0) c.push({ j: base + i, v: z[from + i] });
  c.sort((a, b) => b.v - a.v || a.j - b.j);
  return c.slice(0, k).sort((a, b) => a.j - b.j);
}

function preacts(s: CltShape, p: CltParams, X: Float32Array, B: number): Float32Array {
  const { L, dI, n } = s,
    M = L * n;
  const pre = new Float32Array(B * M);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < M; j++) {
      const l = Math.floor(j / n);
      let acc = p.b_enc[j];
      for (let a = 0; a < dI; a++) acc += X[b * L * dI + l * dI + a] * p.W_encT[j * dI + a];
      pre[b * M + j] = acc;
    }
  return pre;
}

/** Skip path and b_dec: y[b] = b_dec + (x_t W_skip^t per layer t). */
function baseline(s: CltShape, p: CltParams, X: Float32Array, B: number): Float64Array {
  const { L, dI, dO } = s,
    DO = L * dO;
  const y = new Float64Array(B * DO);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < DO; t++) {
      let acc = p.b_dec[t];
      if (s.skip && p.W_skip) {
        const l = Math.floor(t / dO),
          c = t % dO;
        for (let a = 0; a < dI; a++) acc += X[b * L * dI + l * dI + a] * p.W_skip[(l * dI + a) * dO + c];
      }
      y[b * DO + t] = acc;
    }
  return y;
}

function addDecoded(s: CltShape, p: CltParams, e: Entry, y: Float64Array): void {
  const r = decRow(s, e.j),
    base = e.b * s.L * s.dO + r.l * s.dO;
  for (let i = 0; i < r.len; i++) y[base + i] += e.v * p.W_dec[r.off + i];
}

export function cltReferenceStep(
  s: CltShape,
  act: Activation,
  k: number,
  p: CltParams,
  g: CltParams,
  X: Float32Array,
  Y: Float32Array,
  B: number,
  o: CltStepOptions,
): CltStepResult {
  const { L, dI, dO, n } = s,
    M = L * n,
    DI = L * dI,
    DO = L * dO;
  const pre = preacts(s, p, X, B);
  const theta = act === 'jumprelu' ? Float64Array.from(p.log_threshold!, Math.exp) : undefined;
  const eps = o.bandwidth;
  const norms = new Float64Array(M);
  for (let j = 0; j < M; j++) {
    const r = decRow(s, j);
    let q = 0;
    for (let i = 0; i < r.len; i++) q += p.W_dec[r.off + i] ** 2;
    norms[j] = Math.sqrt(q);
  }
  // ---- Selection per layer.
  const kth = new Array<number>(L).fill(-1);
  if (act === 'batchtopk')
    for (let l = 0; l < L; l++) {
      const pos: number[] = [];
      for (let b = 0; b < B; b++) for (let i = 0; i < n; i++) if (pre[b * M + l * n + i] > 0) pos.push(pre[b * M + l * n + i]);
      pos.sort((a, c) => c - a);
      const want = Math.min(k * B, pos.length);
      if (want > 0) kth[l] = pos[want - 1];
    }
  const entries: Entry[] = [];
  for (let b = 0; b < B; b++) {
    if (act === 'topk') {
      for (let l = 0; l < L; l++) for (const e of topk(pre, b * M + l * n, n, Math.min(k, n), l * n)) entries.push({ b, j: e.j, v: e.v });
      continue;
    }
    for (let j = 0; j < M; j++) {
      const z = pre[b * M + j];
      if (act === 'relu' && z > 0) entries.push({ b, j, v: z });
      else if (act === 'batchtopk' && kth[Math.floor(j / n)] > 0 && z >= kth[Math.floor(j / n)]) entries.push({ b, j, v: z });
      else if (act === 'jumprelu') {
        const u = (z - theta![j]) / eps;
        if (z > theta![j]) entries.push({ b, j, v: z });
        else if (u > -0.5 && u < 0.5) entries.push({ b, j, v: 0 });
      }
    }
  }
  // ---- Reconstruction and error.
  const yh = baseline(s, p, X, B);
  for (const e of entries) if (e.v !== 0) addDecoded(s, p, e, yh);
  const G = new Float64Array(B * DO);
  const E = new Float64Array(B * DO);
  let sse = 0;
  for (let i = 0; i < B * DO; i++) {
    const e = yh[i] - Y[i];
    sse += e * e;
    E[i] = e;
    G[i] = (2 / B) * e;
  }
  for (const key of ['W_encT', 'b_enc', 'W_dec', 'b_dec', 'log_threshold', 'W_skip'] as const) g[key]?.fill(0);
  const fired = new Float32Array(M);
  const sumV = new Float64Array(M),
    sumDaK = new Float64Array(M),
    sumK = new Float64Array(M);
  let spl = 0;
  const l1 = act === 'relu' && o.sparsity > 0;
  const addEncoderGrad = (b: number, j: number, dp: number) => {
    const l = Math.floor(j / n);
    for (let a = 0; a < dI; a++) g.W_encT[j * dI + a] += dp * X[b * DI + l * dI + a];
    g.b_enc[j] += dp;
  };
  for (const e of entries) {
    const r = decRow(s, e.j),
      gbase = e.b * DO + r.l * dO;
    let da = 0;
    for (let i = 0; i < r.len; i++) da += G[gbase + i] * p.W_dec[r.off + i];
    let dp = da;
    if (act === 'relu') {
      if (l1) {
        dp += (o.sparsity / B) * norms[e.j];
        spl += e.v * norms[e.j];
      }
    } else if (act === 'jumprelu') {
      const z = pre[e.b * M + e.j];
      const u = (z - theta![e.j]) / eps;
      const K = u > -0.5 && u < 0.5 ? 1 / eps : 0;
      sumDaK[e.j] += da * K;
      sumK[e.j] += K;
      dp = e.v !== 0 ? da : 0;
      if (e.v !== 0) spl += 1;
    }
    sumV[e.j] += e.v;
    if (e.v > 0) fired[e.j]++;
    if (e.v !== 0) for (let i = 0; i < r.len; i++) g.W_dec[r.off + i] += e.v * G[gbase + i];
    if (dp !== 0) addEncoderGrad(e.b, e.j, dp);
  }
  for (let j = 0; j < M; j++) {
    if (l1) {
      const r = decRow(s, j),
        c = ((o.sparsity / B) * sumV[j]) / (norms[j] + 1e-12);
      for (let i = 0; i < r.len; i++) g.W_dec[r.off + i] += c * p.W_dec[r.off + i];
    }
    if (act === 'jumprelu') {
      const gTheta = -theta![j] * sumDaK[j] - (o.sparsity / B) * sumK[j];
      g.log_threshold![j] = gTheta * theta![j];
    }
  }
  // ---- AuxK per layer.
  let aux = 0;
  if ((act === 'topk' || act === 'batchtopk') && o.dead && o.auxkCoefficient > 0) {
    for (let l = 0; l < L; l++) {
      const dead: number[] = [];
      for (let i = 0; i < n; i++) if (o.dead[l * n + i]) dead.push(l * n + i);
      if (!dead.length) continue;
      const kAux = Math.min(o.auxkK, dead.length),
        len = (L - l) * dO;
      const mean = new Float64Array(len);
      for (let b = 0; b < B; b++) for (let i = 0; i < len; i++) mean[i] -= E[b * DO + l * dO + i] / B;
      let v = 0;
      for (let b = 0; b < B; b++) for (let i = 0; i < len; i++) v += (-E[b * DO + l * dO + i] - mean[i]) ** 2;
      const denom = v + 1e-12,
        ga = (2 * o.auxkCoefficient) / (denom * L);
      let a2 = 0;
      for (let b = 0; b < B; b++) {
        const z = Float32Array.from(dead, (j) => pre[b * M + j]);
        const sel = topk(z, 0, dead.length, kAux, 0).map((e) => ({ j: dead[e.j], v: e.v }));
        const eh = new Float64Array(len);
        for (const e of sel) {
          const r = decRow(s, e.j);
          for (let i = 0; i < len; i++) eh[i] += e.v * p.W_dec[r.off + i];
        }
        const gb = new Float64Array(len);
        for (let i = 0; i < len; i++) {
          const d = eh[i] + E[b * DO + l * dO + i];
          a2 += d * d;
          gb[i] = ga * d;
        }
        for (const e of sel) {
          const r = decRow(s, e.j);
          let dp = 0;
          for (let i = 0; i < len; i++) {
            dp += gb[i] * p.W_dec[r.off + i];
            g.W_dec[r.off + i] += e.v * gb[i];
          }
          if (dp !== 0) addEncoderGrad(b, e.j, dp);
        }
      }
      aux += a2 / denom;
    }
    aux = (o.auxkCoefficient * aux) / L;
  }
  // ---- b_dec and W_skip.
  for (let b = 0; b < B; b++) for (let t = 0; t < DO; t++) g.b_dec[t] += G[b * DO + t];
  if (s.skip && g.W_skip)
    for (let l = 0; l < L; l++)
      for (let a = 0; a < dI; a++)
        for (let c = 0; c < dO; c++) {
          let acc = 0;
          for (let b = 0; b < B; b++) acc += X[b * DI + l * dI + a] * G[b * DO + l * dO + c];
          g.W_skip[(l * dI + a) * dO + c] = acc;
        }
  const mse = sse / B;
  const sparsityLoss = act === 'relu' ? (l1 ? (o.sparsity * spl) / B : 0) : act === 'jumprelu' ? (o.sparsity * spl) / B : 0;
  const l0 = fired.reduce((a, c) => a + c, 0) / B;
  return { loss: mse + sparsityLoss + aux, mse, sparsityLoss, auxLoss: aux, l0, fired, minSelected: kth };
}

/** Inference: TopK per layer, or pre > theta[j] and > 0 (theta: BatchTopK's per-layer thresholds, JumpReLU's own). */
export function cltReferenceForward(
  s: CltShape,
  act: Activation,
  k: number,
  p: CltParams,
  X: Float32Array,
  rows: number,
  theta?: Float32Array,
): { count: Int32Array; idx: Int32Array; val: Float32Array; yhat: Float32Array } {
  const { L, n } = s,
    M = L * n;
  const pre = preacts(s, p, X, rows);
  const entries: Entry[] = [];
  const count = new Int32Array(rows);
  for (let b = 0; b < rows; b++) {
    const before = entries.length;
    if (act === 'topk') {
      for (let l = 0; l < L; l++) for (const e of topk(pre, b * M + l * n, n, Math.min(k, n), l * n)) entries.push({ b, j: e.j, v: e.v });
    } else {
      for (let j = 0; j < M; j++) {
        const z = pre[b * M + j];
        if (z > 0 && (act === 'relu' || z > theta![j])) entries.push({ b, j, v: z });
      }
    }
    count[b] = entries.length - before;
  }
  const y = baseline(s, p, X, rows);
  for (const e of entries) addDecoded(s, p, e, y);
  return {
    count,
    idx: Int32Array.from(entries, (e) => e.j),
    val: Float32Array.from(entries, (e) => e.v),
    yhat: Float32Array.from(y),
  };
}
