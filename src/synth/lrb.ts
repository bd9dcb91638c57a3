// The Linear Representation Bench (paper Appendix C) as shards plus a ground-truth file: unit feature
// directions with bounded interference, sparse non-negative feature activations, x_p = W_p x (and x_r = W_r x
// for transcoder benches, several sources for crosscoder benches), optionally with a feature hierarchy
// (a parent is active exactly when one of its children is, Definition 3.2) and per-feature frequencies.
import { join } from 'node:path';
import { featureDirections, embed } from './features.js';
import { writeRowsAsShards, type SiteRows } from './write.js';
import { writeSafetensors, type NamedTensor } from '../sdl/safetensors.js';
import { writeJsonAtomic } from '../util/fsx.js';
import { Rng } from '../util/rng.js';
import { UserError } from '../util/errors.js';

export interface LrbConfig {
  /** Ground-truth features. */
  n: number;
  /** Input width. */
  np: number;
  /** Target width (transcoder benches); 0 = SAE bench. */
  nr: number;
  /** Sources for crosscoder benches (each with its own directions); 1 = none. */
  sources: number;
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

export const LRB_DEFAULTS: LrbConfig = { n: 1000, np: 768, nr: 0, sources: 1, S: 0.99, M: 0.1, cMin: 0, beta: 1, N: 100000, seed: 0, parents: 0, children: 0, zipf: 0, shardTokens: 65536 };

export interface Truth {
  config: LrbConfig;
  /** parent feature index -> its children's indices. */
  hierarchy: { parent: number; children: number[] }[];
  frequencies: number[];
  interference: number;
  sites: string[];
}

export function generateLrb(out: string, cfgIn: Partial<LrbConfig>): Truth {
  const c = { ...LRB_DEFAULTS, ...cfgIn };
  if (c.parents * (c.children + 1) > c.n) throw new UserError(`the hierarchy needs ${c.parents * (c.children + 1)} features; n is ${c.n}`);
  if (!(c.S >= 0 && c.S < 1)) throw new UserError('--S must be in [0, 1)');
  const rng = new Rng(c.seed);
  // Per-feature activation probabilities with mean 1 - S.
  const p = new Float64Array(c.n);
  for (let i = 0; i < c.n; i++) p[i] = c.zipf > 0 ? 1 / Math.pow(i + 1, c.zipf) : 1;
  const scale = ((1 - c.S) * c.n) / p.reduce((a, b) => a + b, 0);
  for (let i = 0; i < c.n; i++) p[i] = Math.min(1, p[i] * scale);
  const hierarchy = Array.from({ length: c.parents }, (_, h) => {
    const parent = h * (c.children + 1);
    return { parent, children: Array.from({ length: c.children }, (_, j) => parent + 1 + j) };
  });
  const parentOf = new Map<number, number>();
  for (const h of hierarchy) for (const ch of h.children) parentOf.set(ch, h.parent);
  const isParent = new Set(hierarchy.map((h) => h.parent));
  const x = new Float32Array(c.N * c.n);
  const mag = () => c.cMin - c.beta * Math.log(1 - rng.next());
  for (let r = 0; r < c.N; r++) {
    for (let i = 0; i < c.n; i++) {
      if (isParent.has(i)) continue; // parents follow their children
      if (rng.next() < p[i]) {
        x[r * c.n + i] = mag();
        const par = parentOf.get(i);
        if (par !== undefined && x[r * c.n + par] === 0) x[r * c.n + par] = mag();
      }
    }
  }
  const sites: SiteRows[] = [];
  const truth: Record<string, NamedTensor> = {};
  let interference = 0;
  for (let s = 0; s < c.sources; s++) {
    const { W, achieved } = featureDirections(c.n, c.np, c.M, c.seed * 101 + s);
    interference = Math.max(interference, achieved);
    const name = c.sources > 1 ? `x_p.${s}` : 'x_p';
    sites.push({ name, width: c.np, data: embed(x, c.N, W, c.n, c.np) });
    truth[c.sources > 1 ? `W_p.${s}` : 'W_p'] = { data: W, shape: [c.n, c.np] };
  }
  if (c.nr > 0) {
    const { W } = featureDirections(c.n, c.nr, c.M, c.seed * 101 + 999);
    sites.push({ name: 'x_r', width: c.nr, data: embed(x, c.N, W, c.n, c.nr) });
    truth.W_r = { data: W, shape: [c.n, c.nr] };
  }
  writeRowsAsShards(out, sites, c.N, { source: 'lrb', seed: c.seed, shardTokens: c.shardTokens, params: c });
  writeSafetensors(join(out, 'truth.safetensors'), truth);
  const t: Truth = { config: c, hierarchy, frequencies: Array.from(p), interference, sites: sites.map((s) => s.name) };
  writeJsonAtomic(join(out, 'truth.json'), t);
  return t;
}
