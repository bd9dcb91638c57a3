// The Linear Representation Bench (paper Appendix C) as shards plus a ground-truth file: unit feature
// directions with bounded interference, sparse non-negative feature activations, x_p = W_p x (and x_r = W_r x
// for transcoder benches, several sources for crosscoder benches), optionally with a feature hierarchy
// (a parent is active exactly when one of its children is, Definition 3.2) and per-feature frequencies.
import { join } from 'node:path';
import { featureDirections } from './features.js';
import { writeRowsAsShards } from './write.js';
import { writeSafetensors, type NamedTensor } from '../tensor/safetensors.js';
import { writeJsonAtomic, checkOutput } from '../util/fsx.js';
import { Rng } from '../util/rng.js';
import { UserError } from '../util/errors.js';
import { checkFields, checkFitsInMemory, type Rule } from '../util/check.js';

export interface LrbConfig {
  /** Ground-truth features. */
  n: number;
  /** Input width. */
  np: number;
  /** Target width (transcoder benches); 0 = SAE bench. */
  nr: number;
  /** Sources for crosscoder benches (each with its own directions); 1 = none. */
  sources: number;
  /**
   * CLT benches: layers (0 = off). Feature i is read at layer s(i) = i mod layers (site blocks.s.hook_mlp_in) and
   * written to every layer t >= s(i) (blocks.t.hook_mlp_out) along its own direction per target, with a gain
   * (1 at its own layer, uniform in [0.3, 1] after it).
   */
  layers: number;
  /** Probability that a feature is inactive (the paper's S); activation probability is 1 - S. */
  S: number;
  /** Maximum pairwise interference of the directions. */
  M: number;
  cMin: number;
  beta: number;
  N: number;
  seed: number;
  /** Hierarchy: this many parents, each with `children` sub-concepts (taken from the first features). */
  parents: number;
  children: number;
  /** Zipf exponent for per-feature frequencies (0 = all equal, mean kept at 1 - S). */
  zipf: number;
  shardTokens: number;
}

export const LRB_DEFAULTS: LrbConfig = {
  n: 1000,
  np: 768,
  nr: 0,
  sources: 1,
  layers: 0,
  S: 0.99,
  M: 0.1,
  cMin: 0,
  beta: 1,
  N: 100000,
  seed: 0,
  parents: 0,
  children: 0,
  zipf: 0,
  shardTokens: 65536,
};

export interface Truth {
  config: LrbConfig;
  /** parent feature index -> its children's indices. */
  hierarchy: { parent: number; children: number[] }[];
  frequencies: number[];
  interference: number;
  sites: string[];
}

/** The bench's settings, range-checked (names as `sdl synth` spells its options). */
export function checkLrbConfig(c: LrbConfig): LrbConfig {
  const spec: [keyof LrbConfig, Rule, string][] = [
    ['n', 'int>0', '--n'],
    ['np', 'int>0', '--np'],
    ['nr', 'int>=0', '--nr'],
    ['sources', 'int>0', '--sources'],
    ['layers', 'int>=0', '--layers'],
    ['S', '[0,1)', '--S'],
    ['M', '(0,1]', '--M'],
    ['cMin', '>=0', '--c-min'],
    ['beta', '>0', '--beta'],
    ['N', 'int>0', '--N'],
    ['seed', 'int>=0', '--seed'],
    ['parents', 'int>=0', '--parents'],
    ['children', 'int>=0', '--children'],
    ['zipf', '>=0', '--zipf'],
    ['shardTokens', 'int>0', 'shard tokens'],
  ];
  checkFields(c, spec);
  if (c.parents * (c.children + 1) > c.n) throw new UserError(`the hierarchy needs ${c.parents * (c.children + 1)} features; n is ${c.n}`);
  if (c.layers > 0 && (c.sources > 1 || c.nr > 0 || c.parents > 0))
    throw new UserError('--layers makes a CLT bench (targets per layer, n_r = n_p); it does not combine with --sources, --nr or --parents');
  if (c.layers > c.n) throw new UserError(`--layers ${c.layers} needs at least one feature per layer; n is ${c.n}`);
  // The true directions of every site at once, and featureDirections' Gram matrix and gradient for one of them.
  const widths = c.layers > 0 ? 2 * c.layers * c.np : c.sources * c.np + c.nr;
  checkFitsInMemory(
    4 * (c.n * widths + c.n * c.n + c.n * Math.max(c.np, c.nr)),
    `${c.n} features in ${widths} dimensions of sites: their directions`,
    'lower --n, --np, --nr, --sources or --layers',
  );
  return c;
}

/** What every shard's generator needs from the settings: frequencies and the hierarchy. */
interface LrbPlan {
  c: LrbConfig;
  p: Float64Array;
  logq: Float64Array;
  hierarchy: { parent: number; children: number[] }[];
  parentOf: Int32Array;
  isParent: Uint8Array;
}

function lrbPlan(c: LrbConfig): LrbPlan {
  // Per-feature activation probabilities with mean 1 - S.
  const p = new Float64Array(c.n);
  for (let i = 0; i < c.n; i++) p[i] = c.zipf > 0 ? 1 / (i + 1) ** c.zipf : 1;
  const scale = ((1 - c.S) * c.n) / p.reduce((a, b) => a + b, 0);
  for (let i = 0; i < c.n; i++) p[i] = Math.min(1, p[i] * scale);
  const hierarchy = Array.from({ length: c.parents }, (_, h) => {
    const parent = h * (c.children + 1);
    return { parent, children: Array.from({ length: c.children }, (_, j) => parent + 1 + j) };
  });
  const parentOf = new Int32Array(c.n).fill(-1);
  for (const h of hierarchy) for (const ch of h.children) parentOf[ch] = h.parent;
  const isParent = new Uint8Array(c.n);
  for (const h of hierarchy) isParent[h.parent] = 1;
  const logq = Float64Array.from(p, (pi) => (pi >= 1 ? -Infinity : Math.log(1 - pi)));
  return { c, p, logq, hierarchy, parentOf, isParent };
}

/** The true activations of one shard's rows, row by row (CSR): which features are on and how strongly. */
export interface ShardCodes {
  start: Int32Array;
  feat: Int32Array;
  /** Children's magnitudes are rounded to float32 (as the bench always stored them), parents' are not. */
  val: Float64Array;
}

/**
 * Shard k's true feature activations, from its own seed (so any shard can be regenerated: `sdl eval --truth` does,
 * to score latents against the features that were really active). Feature by feature, the rows where it is active
 * come from geometric gaps: work grows with the active entries, not with N x n. Within a row the children come first
 * (in feature order), then the parents in the order their first child appears.
 */
function shardCodes(plan: LrbPlan, k: number, rows: number): ShardCodes {
  const { c, p, logq, parentOf, isParent } = plan;
  const rng = new Rng(c.seed * 1_000_003 + k * 7919 + 1);
  const mag = () => c.cMin - c.beta * Math.log(1 - rng.next());
  const gap = (i: number) => (logq[i] === -Infinity ? 1 : 1 + Math.floor(Math.log(1 - rng.next()) / logq[i]));
  const rowOf: number[] = [],
    featOf: number[] = [],
    valOf: number[] = [];
  for (let i = 0; i < c.n; i++) {
    if (isParent[i] || p[i] <= 0) continue; // parents follow their children
    for (let r = gap(i) - 1; r < rows; r += gap(i)) {
      rowOf.push(r);
      featOf.push(i);
      valOf.push(mag());
    }
  }
  const cnt = new Int32Array(rows + 1);
  for (const r of rowOf) cnt[r + 1]++;
  for (let r = 0; r < rows; r++) cnt[r + 1] += cnt[r];
  const at = cnt.slice(0, rows);
  const feat = new Int32Array(rowOf.length),
    val = new Float32Array(rowOf.length);
  rowOf.forEach((r, e) => {
    feat[at[r]] = featOf[e];
    val[at[r]] = valOf[e];
    at[r]++;
  });
  const start = new Int32Array(rows + 1);
  const outFeat: number[] = [],
    outVal: number[] = [];
  const parentOn = new Map<number, number>();
  for (let r = 0; r < rows; r++) {
    parentOn.clear();
    for (let e = cnt[r]; e < cnt[r + 1]; e++) {
      const par = parentOf[feat[e]];
      if (par >= 0 && !parentOn.has(par)) parentOn.set(par, mag());
      outFeat.push(feat[e]);
      outVal.push(val[e]);
    }
    for (const [par, v] of parentOn) {
      outFeat.push(par);
      outVal.push(v);
    }
    start[r + 1] = outFeat.length;
  }
  return { start, feat: Int32Array.from(outFeat), val: Float64Array.from(outVal) };
}

/** The true activations of shard k of a bench made with these settings (rows: the shard's row count). */
export function benchShardCodes(c: LrbConfig, k: number, rows: number): ShardCodes {
  return shardCodes(lrbPlan(c), k, rows);
}

export function generateLrb(out: string, cfgIn: Partial<LrbConfig>): Truth {
  const c = checkLrbConfig({ ...LRB_DEFAULTS, ...cfgIn });
  checkOutput(out, 'dir');
  const plan = lrbPlan(c);
  const { p, hierarchy } = plan;
  // gain[i]: how strongly feature i appears in the site (absent: 1 for every feature).
  const sites: { name: string; width: number; W: Float32Array; gain?: Float32Array }[] = [];
  const truth: Record<string, NamedTensor> = {};
  let interference = 0;
  if (c.layers > 0) interference = cltBenchSites(c, sites, truth);
  else
    for (let s = 0; s < c.sources; s++) {
      const { W, achieved } = featureDirections(c.n, c.np, c.M, c.seed * 101 + s);
      interference = Math.max(interference, achieved);
      sites.push({ name: c.sources > 1 ? `x_p.${s}` : 'x_p', width: c.np, W });
      truth[c.sources > 1 ? `W_p.${s}` : 'W_p'] = { data: W, shape: [c.n, c.np] };
    }
  if (c.nr > 0 && c.layers === 0) {
    const { W } = featureDirections(c.n, c.nr, c.M, c.seed * 101 + 999);
    sites.push({ name: 'x_r', width: c.nr, W });
    truth.W_r = { data: W, shape: [c.n, c.nr] };
  }
  // Shard by shard, each from its own seed (memory stays one shard).
  writeRowsAsShards(out, sites, c.N, { source: 'lrb', seed: c.seed, shardTokens: c.shardTokens, params: c }, (k, _start, rows, values) => {
    const codes = shardCodes(plan, k, rows);
    for (let r = 0; r < rows; r++)
      sites.forEach((site, si) => {
        const o = values[si].subarray(r * site.width, (r + 1) * site.width);
        for (let e = codes.start[r]; e < codes.start[r + 1]; e++) {
          const i = codes.feat[e],
            v = codes.val[e] * (site.gain ? site.gain[i] : 1);
          if (v === 0) continue;
          for (let j = 0; j < site.width; j++) o[j] += v * site.W[i * site.width + j];
        }
      });
  });
  writeSafetensors(join(out, 'truth.safetensors'), truth);
  const t: Truth = { config: c, hierarchy, frequencies: Array.from(p), interference, sites: sites.map((x) => x.name) };
  writeJsonAtomic(join(out, 'truth.json'), t);
  return t;
}

/**
 * A CLT bench's sites: per layer l, blocks.l.hook_mlp_in (the features with s(i) = l, along W_p.l) and
 * blocks.l.hook_mlp_out (every feature with s(i) <= l, along W_r.l, times its gain). Truth: W_p.l, W_r.l, gain [n, L].
 */
function cltBenchSites(
  c: LrbConfig,
  sites: { name: string; width: number; W: Float32Array; gain?: Float32Array }[],
  truth: Record<string, NamedTensor>,
): number {
  const L = c.layers;
  const rng = new Rng(c.seed * 31 + 5);
  const gain = new Float32Array(c.n * L);
  for (let i = 0; i < c.n; i++) for (let t = i % L; t < L; t++) gain[i * L + t] = t === i % L ? 1 : 0.3 + 0.7 * rng.next();
  let interference = 0;
  for (let l = 0; l < L; l++) {
    const inW = featureDirections(c.n, c.np, c.M, c.seed * 101 + 2 * l),
      outW = featureDirections(c.n, c.np, c.M, c.seed * 101 + 2 * l + 1);
    interference = Math.max(interference, inW.achieved, outW.achieved);
    sites.push({ name: `blocks.${l}.hook_mlp_in`, width: c.np, W: inW.W, gain: Float32Array.from({ length: c.n }, (_, i) => (i % L === l ? 1 : 0)) });
    sites.push({ name: `blocks.${l}.hook_mlp_out`, width: c.np, W: outW.W, gain: Float32Array.from({ length: c.n }, (_, i) => gain[i * L + l]) });
    truth[`W_p.${l}`] = { data: inW.W, shape: [c.n, c.np] };
    truth[`W_r.${l}`] = { data: outW.W, shape: [c.n, c.np] };
  }
  truth.gain = { data: gain, shape: [c.n, L] };
  return interference;
}
