// Feature absorption on real activations: SAEBench's first-letter method, adapted to a small
// model and vocabulary. Adaptations (documented in docs/index.md): activations are read at natural occurrences
// of word tokens in the indexed text (no ICL spelling prompts, which a tiny model cannot follow); the "main"
// latents of a letter are chosen by a greedy k-sparse search on a thresholded sum (k <= 5, each step must add
// >= 0.03 F1) instead of an L1 probe; everything else (probe direction, absorber rules, thresholds 0.1 / 0.4,
// top 3 absorbers) follows SAEBench.

/** A word token: letters only, after an optional leading space; its class is the lower-cased first letter. */
export function firstLetter(piece: string): number {
  const m = /^[ \u0120\u2581]?([A-Za-z]+)$/.exec(piece);
  if (!m || m[1].length < 2) return -1;
  return m[1].toLowerCase().charCodeAt(0) - 97;
}

export interface AbsorptionSample {
  x: Float32Array; // [n, d] activations at the word tokens
  label: Int32Array; // [n] first letter 0..25
  token: Int32Array; // [n]
  /** Sparse features per row: active latent ids and values. */
  feats: { ids: Int32Array; vals: Float32Array }[];
}

export interface LetterResult {
  letter: string;
  probeF1: number;
  main: number[];
  mainF1: number;
  tokens: number;
  meanAbsorption: number;
  fullAbsorptionRate: number;
}

export interface AbsorptionResult {
  letters: LetterResult[];
  meanAbsorption: number;
  meanFullAbsorption: number;
  /** Per latent: how often it was the top absorber, over the probe true positives where it fired. */
  latentScore: Map<number, number>;
}

import { gemm } from '../tensor/linalg.js';
import { native, type ProbeGradient } from '../native/kernels.js';
import { topIndices } from '../index/select.js';

const f1 = (tp: number, fp: number, fn: number) => (tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn));

/**
 * One step of the probes' gradient from the logits L [n, C] (without bias): per row r and class c with positives,
 * p = sigmoid(L + b[c]), g = w (p - t) / n (w the class-balanced weight of the target t = [y[r] == c]); G = g, gb += g
 * (rows in order). The reference of the native probeGradient (native/src/index_stats.cc).
 */
export const probeGradient: ProbeGradient = (L, b, pos, wPos, wNeg, y, G, gb) => {
  const n = y.length,
    C = b.length;
  for (let r = 0; r < n; r++) {
    const yr = y[r];
    for (let c = 0; c < C; c++) {
      if (pos[c] === 0) {
        G[r * C + c] = 0;
        continue;
      }
      const p = 1 / (1 + Math.exp(-(L[r * C + c] + b[c])));
      const t = yr === c ? 1 : 0;
      const g = ((t ? wPos[c] : wNeg[c]) * (p - t)) / n;
      G[r * C + c] = g;
      gb[c] += g;
    }
  }
};

/** One-vs-rest logistic probes (26 outputs) by full-batch gradient descent with class-balanced weights. */
function trainProbe(x: Float32Array, y: Int32Array, idx: number[], d: number, steps = 120, lr = 1): { W: Float64Array; b: Float64Array } {
  const C = 26,
    n = idx.length;
  const pos = new Float64Array(C);
  for (const i of idx) pos[y[i]]++;
  // Standardise for conditioning; fold the scale back into W at the end.
  const mu = new Float64Array(d),
    sd = new Float64Array(d);
  for (const i of idx) for (let j = 0; j < d; j++) mu[j] += x[i * d + j] / n;
  for (const i of idx) for (let j = 0; j < d; j++) sd[j] += (x[i * d + j] - mu[j]) ** 2 / n;
  for (let j = 0; j < d; j++) sd[j] = Math.sqrt(sd[j]) || 1;
  const Z = new Float32Array(n * d);
  idx.forEach((i, r) => {
    for (let j = 0; j < d; j++) Z[r * d + j] = (x[i * d + j] - mu[j]) / sd[j];
  });
  // Per-sample class weights w and targets, as [n, C].
  const wPos = Float64Array.from(pos, (p) => (p ? n / (2 * p) : 0)),
    wNeg = Float64Array.from(pos, (p) => (p ? n / (2 * (n - p)) : 0));
  const W = new Float32Array(C * d),
    b = new Float64Array(C);
  const L = new Float32Array(n * C),
    G = new Float32Array(n * C),
    gW = new Float32Array(C * d);
  const yRow = Int32Array.from(idx, (i) => y[i]);
  const mod = native();
  for (let s = 0; s < steps; s++) {
    gemm(n, C, d, Z, d, 1, W, 1, d, L, C); // logits without bias: Z W^T
    const gb = new Float64Array(C);
    // The sigmoid's 26 n exponentials a step are most of the probes' time: in C++ where built (std::exp, 2-3x faster
    // than Math.exp here), else the reference.
    if (mod) mod.probeGradient(L, b, pos, wPos, wNeg, yRow, G, gb);
    else probeGradient(L, b, pos, wPos, wNeg, yRow, G, gb);
    gemm(C, d, n, G, 1, C, Z, d, 1, gW, d); // G^T Z
    for (let k = 0; k < W.length; k++) W[k] -= lr * (gW[k] + 1e-4 * W[k]);
    for (let c = 0; c < C; c++) b[c] -= lr * gb[c];
  }
  // Back to raw units: w_raw = w / sd, b_raw = b - sum w mu / sd.
  const Wr = new Float64Array(C * d);
  for (let c = 0; c < C; c++)
    for (let j = 0; j < d; j++) {
      b[c] -= (W[c * d + j] * mu[j]) / sd[j];
      Wr[c * d + j] = W[c * d + j] / sd[j];
    }
  return { W: Wr, b };
}

export function measureAbsorption(s: AbsorptionSample, d: number, W_dec: Float32Array, dOut: number, dSae: number): AbsorptionResult {
  const n = s.label.length;
  // 80/20 split. SAEBench splits the vocabulary so test words are unseen; a vocabulary of a few hundred pieces
  // has too few words per letter for that, so occurrences are split instead (the same word can be in both).
  const isTest = (i: number) => i % 5 === 0;
  const train: number[] = [],
    test: number[] = [];
  for (let i = 0; i < n; i++) (isTest(i) ? test : train).push(i);
  const probe = trainProbe(s.x, s.label, train, d);
  const score = (c: number, i: number) => {
    let a = probe.b[c];
    for (let j = 0; j < d; j++) a += probe.W[c * d + j] * s.x[i * d + j];
    return a;
  };
  const act = (i: number, lat: number) => {
    const f = s.feats[i];
    for (let k = 0; k < f.ids.length; k++) if (f.ids[k] === lat) return f.vals[k];
    return 0;
  };
  const decNorm = new Float64Array(dSae);
  for (let i = 0; i < dSae; i++) {
    let q = 0;
    for (let j = 0; j < dOut; j++) q += W_dec[i * dOut + j] ** 2;
    decNorm[i] = Math.sqrt(q) || 1;
  }
  const letters: LetterResult[] = [];
  const topAbsorber = new Map<number, number>(),
    fired = new Map<number, number>();
  for (let c = 0; c < 26; c++) {
    let tp = 0,
      fp = 0,
      fn = 0;
    for (const i of test) {
      const p = score(c, i) > 0,
        t = s.label[i] === c;
      if (p && t) tp++;
      else if (p) fp++;
      else if (t) fn++;
    }
    const probeF1 = f1(tp, fp, fn);
    const nPos = test.filter((i) => s.label[i] === c).length;
    if (probeF1 <= 0.6 || nPos < 10) continue;
    // Main latents: greedy k-sparse selection on the training split.
    const mean = new Float64Array(dSae);
    const meanRest = new Float64Array(dSae);
    let nc = 0,
      nr = 0;
    for (const i of train) {
      const f = s.feats[i];
      const inC = s.label[i] === c;
      if (inC) nc++;
      else nr++;
      for (let k = 0; k < f.ids.length; k++) (inC ? mean : meanRest)[f.ids[k]] += f.vals[k];
    }
    // The 20 latents most above their mean elsewhere (ties: the lower id first), chosen without sorting all of them.
    const lift = new Float64Array(dSae);
    for (let i = 0; i < dSae; i++) lift[i] = mean[i] / Math.max(1, nc) - meanRest[i] / Math.max(1, nr);
    const cand = Array.from(topIndices(lift, 20, true));
    // Whether each candidate fires on each training row, so a set's F1 is an OR of bitmaps.
    // Built in one pass over the rows' active latents (a row lists each latent once).
    const firesOn = new Map(cand.map((l) => [l, new Uint8Array(train.length)]));
    train.forEach((i, r) => {
      const f = s.feats[i];
      for (let q = 0; q < f.ids.length; q++)
        if (f.vals[q] > 0) {
          const map = firesOn.get(f.ids[q]);
          if (map) map[r] = 1;
        }
    });
    const evalSet = (lats: number[]) => {
      const maps = lats.map((l) => firesOn.get(l)!);
      let tp2 = 0,
        fp2 = 0,
        fn2 = 0;
      train.forEach((i, r) => {
        let p = false;
        for (const mp of maps)
          if (mp[r]) {
            p = true;
            break;
          }
        const t = s.label[i] === c;
        if (p && t) tp2++;
        else if (p) fp2++;
        else if (t) fn2++;
      });
      return f1(tp2, fp2, fn2);
    };
    let main: number[] = [],
      best = 0;
    for (let k = 0; k < 5; k++) {
      let pick = -1,
        pickF1 = best;
      for (const l of cand) {
        if (main.includes(l)) continue;
        const v = evalSet([...main, l]);
        if (v > pickF1) {
          pickF1 = v;
          pick = l;
        }
      }
      if (pick < 0 || pickF1 < best + 0.03) break;
      main = [...main, pick];
      best = pickF1;
    }
    // Probe direction in the input space; cosines with decoder rows (SAEs: same space).
    const pw = probe.W.subarray(c * d, (c + 1) * d);
    const pn = Math.hypot(...pw) || 1;
    const cos = new Float64Array(dSae);
    if (dOut === d)
      for (let i = 0; i < dSae; i++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += W_dec[i * dOut + j] * pw[j];
        cos[i] = dot / (pn * decNorm[i]);
      }
    let fracSum = 0,
      full = 0,
      count = 0;
    for (const i of test) {
      if (s.label[i] !== c || score(c, i) <= 0) continue; // probe true positives
      count++;
      let P = 0;
      for (let j = 0; j < d; j++) P += (s.x[i * d + j] * pw[j]) / pn;
      const f = s.feats[i];
      let M = 0;
      const others: { lat: number; proj: number; cos: number }[] = [];
      for (let k = 0; k < f.ids.length; k++) {
        const lat = f.ids[k];
        const proj = f.vals[k] * cos[lat] * decNorm[lat];
        if (main.includes(lat)) M += proj;
        else if (cos[lat] >= 0.1 && proj > 0) others.push({ lat, proj, cos: cos[lat] });
        fired.set(lat, (fired.get(lat) ?? 0) + 1);
      }
      others.sort((a, b) => b.proj - a.proj);
      const A = others.slice(0, 3).reduce((a, o) => a + o.proj, 0);
      let frac: number;
      if (M >= P || P <= 0 || A / P < 0.4) frac = 0;
      else if (M <= 0) frac = 1;
      else {
        const q = Math.min(A, P - M);
        frac = Math.min(1, Math.max(0, q / (q + M)));
      }
      fracSum += frac;
      if (frac > 0 && others.length) topAbsorber.set(others[0].lat, (topAbsorber.get(others[0].lat) ?? 0) + 1);
      const mainSilent = main.every((l) => act(i, l) < 1e-8);
      if (mainSilent && others.length && others[0].cos >= 0.025 && P >= 0 && others[0].proj / P >= 0.4) full++;
    }
    letters.push({
      letter: String.fromCharCode(97 + c),
      probeF1,
      main,
      mainF1: best,
      tokens: count,
      meanAbsorption: count ? fracSum / count : 0,
      fullAbsorptionRate: count ? full / count : 0,
    });
  }
  const latentScore = new Map<number, number>();
  for (const [lat, k] of topAbsorber) latentScore.set(lat, k / Math.max(1, fired.get(lat) ?? 1));
  const avg = (f: (l: LetterResult) => number) => (letters.length ? letters.reduce((a, l) => a + f(l), 0) / letters.length : 0);
  return { letters, meanAbsorption: avg((l) => l.meanAbsorption), meanFullAbsorption: avg((l) => l.fullAbsorptionRate), latentScore };
}
