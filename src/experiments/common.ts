// Shared pieces of the bench experiments: cached bench data, dictionary configs per method, anchors from the truth.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateLrb, type LrbConfig } from '../synth/lrb.js';
import type { TruthFile } from '../analysis/truth.js';
import type { Manifest } from '../activations/manifest.js';
import { fmtDuration } from '../util/progress.js';
import { TRAIN_DEFAULTS, makeDictConfig, type Activation, type DictConfig, type Kind, type TrainConfig } from '../sdl/config.js';
import { MANIFEST_FILE } from '../util/files.js';

/** The bench's shards and truth in `dir`, generated unless a finished copy with the same configuration is there. */
export function ensureLrb(dir: string, cfg: Partial<LrbConfig>): void {
  const tj = join(dir, 'truth.json');
  if (existsSync(tj) && existsSync(join(dir, MANIFEST_FILE))) {
    const old = JSON.parse(readFileSync(tj, 'utf8')).config as Record<string, unknown>;
    if (Object.entries(cfg).every(([k, v]) => JSON.stringify(old[k]) === JSON.stringify(v))) return;
  }
  generateLrb(dir, cfg);
}

export interface Method {
  act: Activation;
  kind: Kind;
}

export const METHODS: Record<string, Method> = {
  relu: { act: 'relu', kind: 'sae' },
  jumprelu: { act: 'jumprelu', kind: 'sae' },
  topk: { act: 'topk', kind: 'sae' },
  batchtopk: { act: 'batchtopk', kind: 'sae' },
  matryoshka: { act: 'matryoshka', kind: 'sae' },
  transcoder: { act: 'topk', kind: 'transcoder' },
  crosscoder: { act: 'topk', kind: 'crosscoder' },
};

/** The dictionary for a method on bench shards: SAEs read x_p, transcoders x_p -> x_r, crosscoders every x_p.s. */
export function benchDict(m: Manifest, method: Method, latents: number, k: number): DictConfig {
  const sIn = method.kind === 'crosscoder' ? m.sites.filter((s) => s.name.startsWith('x_p')) : [m.sites.find((s) => s.name === 'x_p') ?? m.sites[0]];
  const sOut = method.kind === 'transcoder' ? [m.sites.find((s) => s.name === 'x_r')!] : sIn;
  const sitesIn = sIn.map((s) => ({ name: s.name, width: s.width })),
    sitesOut = sOut.map((s) => ({ name: s.name, width: s.width }));
  return makeDictConfig({ kind: method.kind, activation: method.act, sitesIn, sitesOut, latents, k });
}

/**
 * What every experiment's options hold: the bench (n features in n_p dimensions, S the probability a feature is off,
 * M the directions' largest interference, N rows: src/synth/lrb.ts), the dictionary (latents, k), training (steps, batch, learning rate), the seeds, where the
 * bench is cached, and whether each run's own progress is hidden (--json).
 */
export interface BenchRunOptions {
  n: number;
  np: number;
  S: number;
  M: number;
  N: number;
  latents: number;
  k: number;
  steps: number;
  batch: number;
  lr: number;
  seeds: number[];
  cache: string;
  quiet?: boolean;
}

/**
 * An experiment's training run on the bench: the defaults, its steps, batch, learning rate and seed, one evaluation
 * on 4,096 tokens at the end, no checkpoints, and BOS rows kept (the bench has no BOS); `more` replaces any of these.
 */
export function benchTrain(o: { steps: number; batch: number; lr: number }, seed: number, more: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...TRAIN_DEFAULTS,
    steps: o.steps,
    batchTokens: o.batch,
    lr: o.lr,
    seed,
    evalTokens: 4096,
    evalEvery: o.steps,
    checkpointEvery: 1e9,
    excludeBos: false,
    ...more,
  };
}

/** Unit anchor directions for the first `count` true features (the bench's features are exchangeable). */
export function anchorsFor(t: TruthFile, cfg: DictConfig, count: number): { encoder: Float32Array[]; decoder: Float32Array[] } {
  const dirOf = (key: string, f: number, w: number) => t.W[key].subarray(f * w, (f + 1) * w);
  const norm = (v: Float32Array) => {
    const n = Math.hypot(...v) || 1;
    return v.map((x) => x / n);
  };
  const parts = cfg.kind === 'crosscoder' ? cfg.sitesIn.map((s) => s.name.replace('x_p', 'W_p')) : ['W_p'];
  const per = cfg.dIn / parts.length;
  const enc = Array.from({ length: count }, (_, f) => norm(Float32Array.from(parts.flatMap((p) => [...dirOf(p, f, per)]))));
  const dec = cfg.kind === 'transcoder' ? Array.from({ length: count }, (_, f) => norm(Float32Array.from(dirOf('W_r', f, cfg.dOut)))) : enc;
  return { encoder: enc, decoder: dec };
}

export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
export const sd = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, b) => a + (b - mean(xs)) ** 2, 0) / (xs.length - 1)));
/** mean, or mean +- sd over seeds. */
export const pm = (xs: number[], digits: number, scale = 1) =>
  xs.length > 1 ? `${(scale * mean(xs)).toFixed(digits)} ± ${(scale * sd(xs)).toFixed(digits)}` : (scale * xs[0]).toFixed(digits);

/**
 * Progress over an experiment's runs: each finished run's line goes out prefixed with the count, the time so far
 * and the ETA of the rest (each run's own training also shows its rate and ETA unless quiet).
 */
export function runTracker(total: number, log: (s: string) => void): (line: string) => void {
  const t0 = performance.now();
  let done = 0;
  return (line) => {
    done++;
    const elapsed = (performance.now() - t0) / 1000;
    log(`[${done}/${total}, ${fmtDuration(elapsed)} elapsed, ETA ${fmtDuration((elapsed / done) * (total - done))}] ${line}`);
  };
}
