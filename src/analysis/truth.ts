// A dictionary against known features (the paper's section 5 metrics): GT recovery M_GT(tau), mean max inner
// product M_IP, activation patterns of the latents on features in isolation, and absorption against a hierarchy.
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import type { Dictionary } from '../sdl/dictionary.js';
import { readSafetensors } from '../tensor/safetensors.js';
import { UserError } from '../util/errors.js';
import { encodeDense } from '../sdl/encoder.js';
import { gemm } from '../tensor/linalg.js';
import { encodeSparse } from '../sdl/encoder.js';
import { openActivations } from '../activations/manifest.js';
import { readShard } from '../activations/reader.js';
import { benchShardCodes, type Truth } from '../synth/lrb.js';

export interface TruthFile {
  truth: Truth;
  /** [n, width] per truth tensor (W_p, W_r, W_p.s). */
  W: Record<string, Float32Array>;
}

export function readTruth(path: string): TruthFile {
  const dir = path.endsWith('.json') ? path.replace(/\/[^/]+$/, '') : path;
  const jp = join(dir, 'truth.json'),
    sp = join(dir, 'truth.safetensors');
  if (!existsSync(jp) || !existsSync(sp)) throw new UserError(`${path} has no truth.json / truth.safetensors; pass the folder written by 'sdl synth'`);
  const truth = JSON.parse(readFileSync(jp, 'utf8')) as Truth;
  const st = readSafetensors(sp).tensors;
  return { truth, W: Object.fromEntries(Object.entries(st).map(([k, v]) => [k, v.data])) };
}

export interface RecoveryMetrics {
  /** Fraction of (non-anchored) ground-truth features with a learned feature of |cosine| > tau. */
  mgt: number;
  mip: number;
  tau: number;
  sweep: { tau: number; mgt: number }[];
  features: number;
  using: 'encoder' | 'decoder';
}

/** Learned directions: encoder columns (the paper's rows of W_E) or decoder rows, unit-normalised, [dSae, d]. */
function learned(d: Dictionary, using: 'encoder' | 'decoder'): { L: Float32Array; dim: number } {
  const { dIn, dOut, dSae } = d.cfg;
  const dim = using === 'encoder' ? dIn : dOut;
  const L = new Float32Array(dSae * dim);
  for (let i = 0; i < dSae; i++) {
    let n = 0;
    for (let j = 0; j < dim; j++) {
      const v = using === 'encoder' ? d.w.W_enc[j * dSae + i] : d.w.W_dec[i * dOut + j];
      L[i * dim + j] = v;
      n += v * v;
    }
    n = Math.sqrt(n) || 1;
    for (let j = 0; j < dim; j++) L[i * dim + j] /= n;
  }
  return { L, dim };
}

/** For each true direction (rows of W [n, dim]), the largest |cosine| with a learned one (blocks of a GEMM). */
export function maxCosines(W: Float32Array, n: number, d: Dictionary, using: 'encoder' | 'decoder'): Float64Array {
  const { L, dim } = learned(d, using);
  const m = d.cfg.dSae;
  const out = new Float64Array(n);
  const blk = 256;
  const C = new Float32Array(blk * m);
  for (let f0 = 0; f0 < n; f0 += blk) {
    const rows = Math.min(blk, n - f0);
    gemm(rows, m, dim, W.subarray(f0 * dim), dim, 1, L, 1, dim, C, m);
    for (let r = 0; r < rows; r++) {
      const f = f0 + r;
      let wn = 0;
      for (let j = 0; j < dim; j++) wn += W[f * dim + j] ** 2;
      wn = Math.sqrt(wn) || 1;
      let best = 0;
      for (let i = 0; i < m; i++) best = Math.max(best, Math.abs(C[r * m + i]));
      out[f] = best / wn;
    }
  }
  return out;
}

/** The true directions [n, dim] in the space of the dictionary's encoder or decoder side. */
function trueDirections(d: Dictionary, t: TruthFile, using: 'encoder' | 'decoder'): Float32Array {
  // Decoder directions live in the target space: W_r for a transcoder writing x_r, W_p otherwise.
  const key = using === 'decoder' && t.W.W_r && d.cfg.sitesOut.some((s) => s.name === 'x_r') ? 'W_r' : t.W.W_p ? 'W_p' : Object.keys(t.W)[0];
  const n = t.truth.config.n;
  let W = t.W[key];
  const dim = W.length / n;
  const want = using === 'encoder' ? d.cfg.dIn : d.cfg.dOut;
  if (dim !== want) {
    // Crosscoders: the true direction of a feature is the concatenation of its per-source directions.
    const parts = Object.keys(t.W)
      .filter((k) => k.startsWith('W_p'))
      .sort();
    const per = t.W[parts[0]].length / n;
    if (parts.length * per !== want) throw new UserError(`the truth's directions have width ${dim}, the dictionary's ${using} side ${want}`);
    W = new Float32Array(n * want);
    for (let f = 0; f < n; f++) parts.forEach((k, s) => W.set(t.W[k].subarray(f * per, (f + 1) * per), f * want + s * per));
  }
  return W;
}

export function recovery(d: Dictionary, t: TruthFile, opts: { tau?: number; using?: 'encoder' | 'decoder'; exclude?: number[] } = {}): RecoveryMetrics {
  const using = opts.using ?? 'encoder';
  const n = t.truth.config.n;
  const W = trueDirections(d, t, using);
  const cos = maxCosines(W, n, d, using);
  const skip = new Set(opts.exclude ?? []);
  const keep = Array.from(cos).filter((_, i) => !skip.has(i));
  const tau = opts.tau ?? 0.95;
  const frac = (th: number) => keep.filter((c) => c > th).length / Math.max(1, keep.length);
  return {
    mgt: frac(tau),
    mip: keep.reduce((a, b) => a + b, 0) / Math.max(1, keep.length),
    tau,
    using,
    features: keep.length,
    sweep: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99].map((th) => ({ tau: th, mgt: frac(th) })),
  };
}

export interface MatchingMetrics {
  /** Mean |cosine| over the best one-to-one matching of true features to latents (Hungarian; SynthSAEBench's MCC). */
  mcc: number;
  /** The matching: for each latent, its true feature (-1: unmatched). */
  featureOf: Int32Array;
  /** Distinct true features among the latents' nearest ones, over min(features, latents). */
  uniqueness: number;
  matched: number;
  using: 'encoder' | 'decoder';
}

/**
 * SynthSAEBench's matching metrics. MCC: the assignment of true features to distinct latents that maximises the
 * summed |cosine| (each feature to at most one latent and back), averaged over the matched pairs. A dictionary
 * that spends several latents on one feature scores lower here than on M_GT, which lets them share.
 */
export function matching(d: Dictionary, t: TruthFile, using: 'encoder' | 'decoder' = 'decoder'): MatchingMetrics {
  const n = t.truth.config.n;
  const W = trueDirections(d, t, using);
  const { L, dim } = learned(d, using);
  const m = d.cfg.dSae;
  const C = new Float32Array(n * m);
  gemm(n, m, dim, W, dim, 1, L, 1, dim, C, m);
  for (let f = 0; f < n; f++) {
    let wn = 0;
    for (let j = 0; j < dim; j++) wn += W[f * dim + j] ** 2;
    wn = Math.sqrt(wn) || 1;
    for (let i = 0; i < m; i++) C[f * m + i] = Math.abs(C[f * m + i]) / wn;
  }
  // Hungarian on the smaller side as rows.
  const rows = Math.min(n, m),
    cols = Math.max(n, m);
  const score = n <= m ? (r: number, c: number) => C[r * m + c] : (r: number, c: number) => C[c * m + r];
  const assign = hungarianMax(rows, cols, score);
  let sum = 0;
  for (let r = 0; r < rows; r++) sum += score(r, assign[r]);
  const nearest = new Set<number>();
  for (let i = 0; i < m; i++) {
    let best = -1,
      bf = -1;
    for (let f = 0; f < n; f++)
      if (C[f * m + i] > best) {
        best = C[f * m + i];
        bf = f;
      }
    nearest.add(bf);
  }
  const featureOf = new Int32Array(m).fill(-1);
  for (let r = 0; r < rows; r++) {
    if (n <= m) featureOf[assign[r]] = r;
    else featureOf[r] = assign[r];
  }
  return { mcc: sum / rows, featureOf, uniqueness: nearest.size / rows, matched: rows, using };
}

/**
 * The assignment of each of `rows` rows to a distinct column (rows <= cols) maximising the summed score: the
 * Hungarian method with potentials (Jonker-Volgenant style shortest augmenting paths), O(rows^2 cols).
 */
export function hungarianMax(rows: number, cols: number, score: (r: number, c: number) => number): Int32Array {
  const INF = Number.POSITIVE_INFINITY;
  const u = new Float64Array(rows + 1),
    v = new Float64Array(cols + 1);
  const p = new Int32Array(cols + 1); // p[c] = row (1-based) assigned to column c; 0 = none
  const way = new Int32Array(cols + 1);
  const minv = new Float64Array(cols + 1);
  const used = new Uint8Array(cols + 1);
  for (let i = 1; i <= rows; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(INF);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      let delta = INF,
        j1 = 0;
      for (let j = 1; j <= cols; j++) {
        if (used[j]) continue;
        const cur = -score(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (let j = 0; j <= cols; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  const out = new Int32Array(rows);
  for (let j = 1; j <= cols; j++) if (p[j]) out[p[j] - 1] = j - 1;
  return out;
}

export interface ActivityMetrics {
  /** Rows of the bench the latents were scored on. */
  rows: number;
  /** Means over the matched latents whose feature was active at least once. */
  precision: number;
  recall: number;
  f1: number;
  scored: number;
}

/**
 * SynthSAEBench's per-latent scores: each latent against the true feature the matching gives it, on the bench's
 * own rows (their true activations regenerated from the shard seeds). Precision: of the rows where the latent
 * fires, the share where its feature is active; recall: of the rows where the feature is active, the share where
 * the latent fires. A latent that never fires scores precision 0.
 */
export function activityScores(d: Dictionary, t: TruthFile, benchDir: string, featureOf: Int32Array, maxRows = 16384): ActivityMetrics {
  const input = d.cfg.sitesIn.length === 1 ? d.cfg.sitesIn[0].name : undefined;
  if (input !== 'x_p') throw new UserError('per-latent precision and recall need an SAE or transcoder reading the bench input x_p');
  const m = openActivations(benchDir);
  const n = t.truth.config.n,
    L = d.cfg.dSae;
  const fires = new Float64Array(L),
    both = new Float64Array(L),
    active = new Float64Array(n);
  let rows = 0;
  for (let s = 0; s < m.shards.length && rows < maxRows; s++) {
    const k = Number(/(\d+)/.exec(m.shards[s].file)![1]);
    const shard = readShard(benchDir, m, s, [input]);
    const codes = benchShardCodes(t.truth.config, k, shard.rows);
    const take = Math.min(shard.rows, maxRows - rows);
    const f = encodeSparse(d, shard.values.get(input)!.subarray(0, take * d.cfg.dIn), take);
    const on = new Uint8Array(n);
    for (let r = 0; r < take; r++) {
      for (let e = codes.start[r]; e < codes.start[r + 1]; e++) {
        on[codes.feat[e]] = 1;
        active[codes.feat[e]]++;
      }
      for (let q = f.start[r]; q < f.start[r + 1]; q++) {
        const i = f.idx[q];
        fires[i]++;
        if (featureOf[i] >= 0 && on[featureOf[i]]) both[i]++;
      }
      for (let e = codes.start[r]; e < codes.start[r + 1]; e++) on[codes.feat[e]] = 0;
    }
    rows += take;
  }
  let P = 0,
    R = 0,
    F = 0,
    scored = 0;
  for (let i = 0; i < L; i++) {
    const f = featureOf[i];
    if (f < 0 || active[f] === 0) continue;
    const precision = fires[i] ? both[i] / fires[i] : 0;
    const recall = both[i] / active[f];
    P += precision;
    R += recall;
    F += precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    scored++;
  }
  return { rows, precision: P / Math.max(1, scored), recall: R / Math.max(1, scored), f1: F / Math.max(1, scored), scored };
}

export interface PatternSummary {
  dead: number;
  monosemantic: number;
  polysemantic: number;
  /** For each latent, the true features that fire it in isolation (Definition 3.1). */
  patterns: number[][];
}

/** Activation pattern F_i = {d : latent i fires on feature d alone at a typical magnitude}. */
export function activationPatterns(d: Dictionary, t: TruthFile, magnitude?: number): PatternSummary {
  const n = t.truth.config.n;
  const W = t.W.W_p ?? t.W[Object.keys(t.W).find((k) => k.startsWith('W_p'))!];
  const dim = d.cfg.dIn;
  if (W.length / n !== dim) throw new UserError('activation patterns need an SAE or transcoder on the bench input x_p');
  const a = magnitude ?? t.truth.config.cMin + t.truth.config.beta;
  const x = new Float32Array(n * dim);
  for (let f = 0; f < n; f++) for (let j = 0; j < dim; j++) x[f * dim + j] = a * W[f * dim + j];
  const acts = encodeDense(d, x, n);
  const patterns: number[][] = Array.from({ length: d.cfg.dSae }, () => []);
  for (let f = 0; f < n; f++) for (let i = 0; i < d.cfg.dSae; i++) if (acts[f * d.cfg.dSae + i] > 0) patterns[i].push(f);
  return {
    dead: patterns.filter((p) => p.length === 0).length,
    monosemantic: patterns.filter((p) => p.length === 1).length,
    polysemantic: patterns.filter((p) => p.length >= 2).length,
    patterns,
  };
}

export interface Absorption {
  parent: number;
  parentLatent: number;
  /** Children whose (parent + child) input leaves the parent latent silent, with the latent that took them. */
  absorbed: { child: number; by: number }[];
  /** The child the parent latent responds to most weakly (the paper's predicted absorbed child). */
  weakestChild: number;
  predictionHolds: boolean | null;
}

/** Absorption against the truth's hierarchy: does the parent's latent still fire when a child is present? */
export function absorption(d: Dictionary, t: TruthFile): { rate: number; parents: Absorption[] } {
  const { n, cMin, beta } = t.truth.config;
  const W = t.W.W_p;
  const dim = d.cfg.dIn;
  const a = cMin + beta;
  const cos = (f: number, i: number) => {
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += W[f * dim + j] * d.w.W_enc[j * d.cfg.dSae + i];
    return dot;
  };
  const parents: Absorption[] = [];
  let absorbedCount = 0,
    childCount = 0;
  for (const h of t.truth.hierarchy) {
    // The parent's latent: the one whose encoder direction best matches the parent's direction.
    let pl = 0,
      best = -Infinity;
    for (let i = 0; i < d.cfg.dSae; i++) {
      let nn = 0;
      for (let j = 0; j < dim; j++) nn += d.w.W_enc[j * d.cfg.dSae + i] ** 2;
      const c = cos(h.parent, i) / (Math.sqrt(nn) || 1);
      if (c > best) {
        best = c;
        pl = i;
      }
    }
    const absorbed: { child: number; by: number }[] = [];
    for (const ch of h.children) {
      const x = new Float32Array(dim);
      for (let j = 0; j < dim; j++) x[j] = a * (W[h.parent * dim + j] + W[ch * dim + j]);
      const f = encodeDense(d, x, 1);
      childCount++;
      if (f[pl] > 0) continue;
      let by = 0;
      for (let i = 1; i < d.cfg.dSae; i++) if (f[i] > f[by]) by = i;
      absorbed.push({ child: ch, by });
      absorbedCount++;
    }
    let weakest = h.children[0];
    for (const ch of h.children) if (cos(ch, pl) < cos(weakest, pl)) weakest = ch;
    parents.push({
      parent: h.parent,
      parentLatent: pl,
      absorbed,
      weakestChild: weakest,
      predictionHolds: absorbed.length ? absorbed.some((x) => x.child === weakest) : null,
    });
  }
  void n;
  return { rate: childCount ? absorbedCount / childCount : 0, parents };
}

export interface CltLayerRecovery {
  /** Target layer t and the true (feature, t) pairs there: every feature read at a layer <= t. */
  layer: number;
  pairs: number;
  /** Share of those pairs whose direction W_r.t[i] has a learned decoder block (of a latent at a layer <= t) at |cos| > tau. */
  mgt: number;
  /** Mean |cos| of the best one-to-one matching of those pairs to the latents of layers <= t (Hungarian). */
  mcc: number;
}

/**
 * A CLT against a CLT bench (`sdl synth --layers L`): per target layer t, the decoder blocks W_dec^{l->t} of the
 * latents of layers l <= t against the true directions W_r.t of the features written there.
 */
export function cltRecovery(d: Dictionary, t: TruthFile, tau = 0.9): CltLayerRecovery[] {
  const L = t.truth.config.layers,
    n = t.truth.config.n;
  const c = d.cfg;
  if (!L || c.kind !== 'clt') throw new UserError('per-layer recovery needs a CLT and a CLT bench (sdl synth --layers)');
  if (c.sitesOut.length !== L) throw new UserError(`the CLT writes ${c.sitesOut.length} layers, the bench has ${L}`);
  const per = c.dSae / L,
    dO = c.dOut / L;
  const out: CltLayerRecovery[] = [];
  for (let tl = 0; tl < L; tl++) {
    const W = t.W[`W_r.${tl}`];
    const feats = Array.from({ length: n }, (_, i) => i).filter((i) => i % L <= tl);
    const lat = (tl + 1) * per;
    // |cos| between each true direction and each latent's block for this target, [feats, lat].
    const C = new Float64Array(feats.length * lat);
    for (let j = 0; j < lat; j++) {
      const row = d.w.W_dec.subarray(j * c.dOut + tl * dO, j * c.dOut + (tl + 1) * dO);
      const norm = Math.hypot(...row) || 1;
      feats.forEach((i, r) => {
        let dot = 0,
          wn = 0;
        for (let a = 0; a < dO; a++) {
          dot += row[a] * W[i * dO + a];
          wn += W[i * dO + a] ** 2;
        }
        C[r * lat + j] = Math.abs(dot) / (norm * (Math.sqrt(wn) || 1));
      });
    }
    let hit = 0;
    for (let r = 0; r < feats.length; r++) {
      let best = 0;
      for (let j = 0; j < lat; j++) best = Math.max(best, C[r * lat + j]);
      if (best > tau) hit++;
    }
    const rows = Math.min(feats.length, lat),
      cols = Math.max(feats.length, lat);
    const score = feats.length <= lat ? (r: number, col: number) => C[r * lat + col] : (r: number, col: number) => C[col * lat + r];
    const assign = hungarianMax(rows, cols, score);
    let sum = 0;
    for (let r = 0; r < rows; r++) sum += score(r, assign[r]);
    out.push({ layer: tl, pairs: feats.length, mgt: hit / feats.length, mcc: sum / rows });
  }
  return out;
}
