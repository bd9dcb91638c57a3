// Typed configuration records for dictionaries and their training, with the defaults sdlkit uses.
// Where the established tools disagree (SAELens, sparsify, dictionary_learning), the choice is named at the field.
import { UserError } from '../util/errors.js';
import { checkFields, checkFitsInMemory, checkNumber, type Rule } from '../util/check.js';
import { ACTIVATIONS, ACTIVATION_NAMES, KINDS, KIND_NAMES } from './activations.js';

import type { Activation, Kind } from './activations.js';

export type { Activation, Kind };

/** What a dictionary is: shapes, activation, and the sites it reads and writes. */
export interface DictConfig {
  kind: Kind;
  activation: Activation;
  /** Encoder input sites (concatenated in this order) and their widths. */
  sitesIn: { name: string; width: number }[];
  /** Decoder output sites and widths (per-site decoder blocks for crosscoders). */
  sitesOut: { name: string; width: number }[];
  dIn: number;
  dOut: number;
  dSae: number;
  /** TopK / BatchTopK / Matryoshka: active latents per token. */
  k: number;
  /** Matryoshka: nested prefix widths (ascending, last = dSae). */
  matryoshkaWidths: number[];
  /** Subtract b_dec from the input before encoding (SAEs and crosscoders; never transcoders). */
  applyBDecToInput: boolean;
  /** The paper's theory setting: no b_enc / b_dec. */
  noBias: boolean;
  /** W_dec = W_enc^T. */
  tied: boolean;
  /** Skip transcoders and CLTs: a learned linear path W_skip from input to output (absent in older records: false). */
  skip?: boolean;
}

export interface TrainConfig {
  /** Adam learning rate; default 2e-4 / sqrt(dSae / 2^14) (sparsify's rule). */
  lr?: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  /** Linear LR warm-up, in steps (default 5% of training). */
  lrWarmupSteps?: number;
  /** Linear LR decay to zero over the last fraction of training. */
  lrDecayFraction: number;
  /** Sparsity-coefficient warm-up, in steps (default 5% of training). */
  sparsityWarmupSteps?: number;
  /** Clip the global gradient norm (SAELens: 1.0). 0 disables. */
  clipGradNorm: number;
  batchTokens: number;
  /** Training length: tokens or steps (steps wins when both are set). */
  tokens?: number;
  steps?: number;
  seed: number;
  /** ReLU: L1 coefficient (weighted by decoder norms). JumpReLU: L0 coefficient. */
  sparsityCoefficient?: number;
  jumpreluBandwidth: number;
  jumpreluInitThreshold: number;
  /** Keep decoder rows at unit norm, removing the gradient along them. */
  unitNormDecoder: boolean;
  bDecInit: 'geometric_median' | 'mean' | 'zeros';
  /** Scale inputs (and targets) to mean norm sqrt(width) per site; folded back into the saved weights. */
  normalizeActivations: boolean;
  /** Latents that have not fired for this many tokens are dead (default min(10M, 25% of training)). */
  deadWindowTokens?: number;
  /** AuxK for the TopK family: coefficient (OpenAI/dictionary_learning: 1/32) and k_aux (default dIn/2). */
  auxkCoefficient: number;
  auxkK?: number;
  /** BatchTopK threshold EMA rate (SAELens topk_threshold_lr). */
  thresholdLr: number;
  /** Anthropic resampling every N steps (0: off). */
  resampleEvery: number;
  /** Stop resampling after this step (default: 75% of training). */
  resampleUntil?: number;
  /** Feature anchoring (paper section 5). */
  anchors?: { encoder: Float32Array[]; decoder: Float32Array[] };
  anchorWeight: number;
  /** Held-out tokens (taken from the end of the shards, never trained on). */
  evalTokens: number;
  evalEvery: number;
  checkpointEvery: number;
  /** Rows in the streaming shuffle buffer. */
  shuffleBufferTokens: number;
  /** Skip the BOS row of every window (its activations are outliers). */
  excludeBos: boolean;
  /**
   * Keep no W_enc/W_dec gradients (native engine, untied TopK family): the update makes each latent's gradient rows
   * again from the step's entries and applies Adam to them in cache. Saves dSae x (dIn + dOut) x 4 bytes; the same
   * weights without clipping, and to rounding with it (where each step makes the rows twice).
   */
  lowMemory?: boolean;
}

export const TRAIN_DEFAULTS: TrainConfig = {
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEps: 1e-8,
  lrDecayFraction: 0.2,
  clipGradNorm: 1.0,
  // Measured (docs/fit.md, bench/defaults.ts): batch 1,024 ended at a lower FVU than 4,096 at every learning rate on
  // the bundled model (100k-10M tokens) and on the synthetic bench up to 1M; at 10M on the bench the two are within 2%.
  batchTokens: 1024,
  seed: 0,
  // JumpReLU in normalised units (pre-activations of order 1): SAELens' small defaults (0.05 / 0.01) leave the
  // threshold inside a window few pre-activations reach, and Adam moves log theta by at most lr per step.
  jumpreluBandwidth: 2,
  jumpreluInitThreshold: 1,
  unitNormDecoder: true,
  bDecInit: 'geometric_median',
  normalizeActivations: true,
  auxkCoefficient: 1 / 32,
  thresholdLr: 0.01,
  resampleEvery: 0,
  anchorWeight: 0.1,
  evalTokens: 16384,
  evalEvery: 500,
  checkpointEvery: 500,
  shuffleBufferTokens: 262144,
  excludeBos: true,
};

/**
 * `sdl fit`'s shuffle buffer when --buffer is not given: TRAIN_DEFAULTS' 262,144 rows, or as many rows of `width`
 * floats as fit in 256 MiB when that is fewer (d 768: 87,381 rows; the buffer alone would otherwise be 805 MB).
 */
export const SHUFFLE_BUFFER_BYTES = 256 * 2 ** 20;
export const defaultShuffleRows = (width: number): number =>
  Math.max(1, Math.min(TRAIN_DEFAULTS.shuffleBufferTokens, Math.floor(SHUFFLE_BUFFER_BYTES / (4 * width))));

/** Default sparsity coefficients per activation (normalised units, E||x|| = sqrt(d)). */
export const defaultSparsity = (a: Activation): number => ACTIVATIONS[a].defaultSparsity;

/**
 * sparsify's rule (lr proportional to 1/sqrt(latents)) at 4x its constant: on the synthetic bench within 3% of the
 * best swept FVU at 1M and 10M tokens; on the bundled model 2-8x higher rates were better still (docs/fit.md).
 */
export const defaultLr = (dSae: number): number => 8e-4 / Math.sqrt(dSae / 16384);

/** The rule's rate for a dictionary: per selection group, since a CLT layer trains like a transcoder of its own latents. */
export const ruleLr = (cfg: DictConfig): number => defaultLr(cfg.dSae / selectionGroups(cfg));

/**
 * Groups of latents the TopK family selects within, in equal consecutive blocks: a CLT's layers (k per layer, one
 * BatchTopK threshold per layer); one group for every other kind.
 */
export const selectionGroups = (cfg: { kind: Kind; sitesIn: unknown[] }): number => (cfg.kind === 'clt' ? cfg.sitesIn.length : 1);

/** Below this many steps, `sdl fit` says the run is short (measured: such runs end far from a longer run's FVU). */
export const SHORT_RUN_STEPS = 1000;

/** The line `sdl fit` prints after a run of fewer than SHORT_RUN_STEPS steps (undefined otherwise). */
export function shortRunNote(steps: number): string | undefined {
  if (steps >= SHORT_RUN_STEPS) return undefined;
  return `a short run (${steps} steps, under ${SHORT_RUN_STEPS}): measured (docs/fit.md), runs of ~100 steps ended at 2.5-3x the FVU of 10M-token runs and recovered under 1% of a synthetic bench's features; for a good dictionary pass more --tokens (several passes over the harvest are fine)`;
}

/** Matryoshka prefixes: dSae/16, /8, /4, /2, 1 (rounded), as SAELens' matryoshka_widths examples nest. */
export function defaultMatryoshkaWidths(dSae: number): number[] {
  const w = [16, 8, 4, 2].map((f) => Math.max(1, Math.round(dSae / f)));
  return [...new Set([...w, dSae])].sort((a, b) => a - b);
}

/** Each training setting's valid range, keyed by field, with the `sdl fit` option that sets it. */
const TRAIN_RULES: [keyof TrainConfig, Rule, string][] = [
  ['lr', '>0', '--lr'],
  ['adamBeta1', '[0,1]', 'adam beta1'],
  ['adamBeta2', '[0,1]', 'adam beta2'],
  ['adamEps', '>0', 'adam eps'],
  ['lrWarmupSteps', 'int>=0', '--lr-warmup'],
  ['lrDecayFraction', '[0,1]', '--lr-decay'],
  ['sparsityWarmupSteps', 'int>=0', '--sparsity-warmup'],
  ['clipGradNorm', '>=0', '--clip'],
  ['batchTokens', 'int>0', '--batch'],
  ['tokens', 'int>0', '--tokens'],
  ['steps', 'int>0', '--steps'],
  ['seed', 'int', '--seed'],
  ['sparsityCoefficient', '>=0', '--sparsity'],
  ['jumpreluBandwidth', '>0', '--bandwidth'],
  ['jumpreluInitThreshold', '>0', '--threshold-init'],
  ['deadWindowTokens', 'int>0', '--dead-window'],
  ['auxkCoefficient', '>=0', '--auxk-coef'],
  ['auxkK', 'int>0', '--auxk-k'],
  ['thresholdLr', '(0,1)', 'threshold EMA rate'],
  ['resampleEvery', 'int>=0', '--resample'],
  ['resampleUntil', 'int>=0', 'resample until'],
  ['anchorWeight', '>=0', '--anchor-weight'],
  ['evalTokens', 'int>0', '--eval-tokens'],
  ['evalEvery', 'int>0', '--eval-every'],
  ['checkpointEvery', 'int>0', '--checkpoint-every'],
  ['shuffleBufferTokens', 'int>0', '--buffer'],
];

/** Refuses out-of-range training settings with one line naming the option; every caller of the trainer gets it. */
export function checkTrainConfig(t: TrainConfig): void {
  checkFields(t, TRAIN_RULES);
}

/**
 * Refuses a dictionary record that cannot be built, trained or loaded: one check for every way a config comes
 * into being (`sdl fit`, the pipeline, the bench, imports, a cfg.json on disk). `source` names a file the record
 * was read from, so the message can say the file is damaged. The sizes the native kernels get come from here.
 */
export function checkDictConfig(c: DictConfig, source?: string): void {
  const bad = (what: string) => new UserError(source ? `${source}: ${what}; the file is damaged or edited, fit the dictionary again` : what);
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!KIND_NAMES.includes(c.kind)) throw bad(`unknown kind ${JSON.stringify(c.kind)}`);
  if (!ACTIVATION_NAMES.includes(c.activation)) throw bad(`unknown activation ${JSON.stringify(c.activation)}`);
  for (const key of ['dIn', 'dOut', 'dSae'] as const)
    if (!posInt(c[key]))
      throw bad(source ? `${key} is ${JSON.stringify(c[key])}, not a positive integer` : `${key} must be a positive integer (got ${c[key]})`);
  for (const [sites, d, what] of [
    [c.sitesIn, c.dIn, 'sitesIn'],
    [c.sitesOut, c.dOut, 'sitesOut'],
  ] as const) {
    if (!Array.isArray(sites) || !sites.length || sites.some((s) => typeof s?.name !== 'string' || !posInt(s.width))) throw bad(`${what} is malformed`);
    if (sites.reduce((a, s) => a + s.width, 0) !== d) throw bad(`the widths of ${what} do not add up to ${d}`);
  }
  if (!(Number.isInteger(c.k) && c.k >= 1 && c.k <= c.dSae)) {
    throw bad(`--k must be an integer between 1 and the number of latents (${c.dSae}) (got ${c.k})`);
  }
  const w = c.matryoshkaWidths;
  if (
    ACTIVATIONS[c.activation].nested &&
    (!Array.isArray(w) || !w.length || w.some((x, i) => !Number.isInteger(x) || x < 1 || (i > 0 && x <= w[i - 1])) || w[w.length - 1] !== c.dSae)
  ) {
    throw bad(`--matryoshka-widths must be increasing integers ending at the number of latents (${c.dSae}) (got ${Array.isArray(w) ? w.join(',') : w})`);
  }
  if (c.tied && c.dIn !== c.dOut) throw bad('--tied needs the same input and output width (not a transcoder between different widths)');
  if (c.skip && c.kind !== 'transcoder' && c.kind !== 'clt') throw bad(`--skip is for transcoders and CLTs (--kind transcoder|clt), not a ${c.kind}`);
  if (c.kind === 'clt' || c.skip) {
    const what = c.kind === 'clt' ? 'a CLT' : 'a skip transcoder';
    if (!CLT_ACTIVATIONS.includes(c.activation)) throw bad(`${what} trains with --activation ${CLT_ACTIVATIONS.join(', ')} (got ${c.activation})`);
    if (c.tied || c.noBias) throw bad(`${what} cannot be --tied or --no-bias`);
  }
  if (c.kind === 'clt') {
    const L = c.sitesIn.length;
    if (c.sitesOut.length !== L) throw bad(`a CLT reads and writes the same layers: ${L} input sites but ${c.sitesOut.length} output sites`);
    const wi = c.sitesIn[0].width,
      wo = c.sitesOut[0].width;
    const odd = [...c.sitesIn.filter((s) => s.width !== wi), ...c.sitesOut.filter((s) => s.width !== wo)][0];
    if (odd) throw bad(`a CLT needs one width across its layers: ${odd.name} is ${odd.width} wide, ${c.sitesIn[0].name} ${wi} and ${c.sitesOut[0].name} ${wo}`);
    if (c.dSae % L !== 0) throw bad(`a CLT's ${c.dSae} latents do not split evenly over its ${L} layers`);
    if (ACTIVATIONS[c.activation].usesK && c.k > c.dSae / L)
      throw bad(`--k is per layer for a CLT and must be at most --latents-per-layer (${c.dSae / L}) (got ${c.k})`);
  }
}

/** The activations the CLT kernels train (Matryoshka's nested loss is not defined across layers). */
export const CLT_ACTIVATIONS: Activation[] = ['topk', 'batchtopk', 'jumprelu', 'relu'];

/** TopK-family k when none is given (SAELens and sparsify use 32 too), at most the number of latents. */
export const DEFAULT_K = 32;
export const DEFAULT_EXPANSION = 8;

/** What a caller says about a dictionary; makeDictConfig fills the rest. */
export interface DictSpec {
  kind: Kind;
  activation: Activation;
  sitesIn: { name: string; width: number }[];
  /** Default: the input sites (SAEs, crosscoders). */
  sitesOut?: { name: string; width: number }[];
  /** Number of latents; default expansion x d_in. */
  latents?: number;
  expansion?: number;
  k?: number;
  matryoshkaWidths?: number[];
  /** false: no b_enc / b_dec (the paper's theory setting). */
  bias?: boolean;
  tied?: boolean;
  /** Default: the kind's rule (subtract b_dec when input and output are the same space) and only with biases. */
  applyBDecToInput?: boolean;
  /** Transcoders and CLTs: learn a skip matrix W_skip. */
  skip?: boolean;
  /** CLTs: latents per layer (instead of --latents, the total). */
  latentsPerLayer?: number;
}

/** The one way to build a DictConfig: defaults filled by one rule each, then checked. */
export function makeDictConfig(s: DictSpec): DictConfig {
  const sitesOut = s.sitesOut ?? s.sitesIn;
  const dIn = s.sitesIn.reduce((a, x) => a + x.width, 0),
    dOut = sitesOut.reduce((a, x) => a + x.width, 0);
  // A CLT's expansion is per layer (of one layer's width), like a transcoder's.
  const layers = selectionGroups(s);
  checkNumber(s.latents, 'int>0', '--latents');
  checkNumber(s.expansion, '>0', '--expansion');
  checkNumber(s.latentsPerLayer, 'int>0', '--latents-per-layer');
  const dSae = s.latentsPerLayer !== undefined ? s.latentsPerLayer * layers : (s.latents ?? Math.round((s.expansion ?? DEFAULT_EXPANSION) * dIn));
  if (!(Number.isInteger(dSae) && dSae > 0)) throw new UserError(`--latents / --expansion must give a positive whole number of latents (got ${dSae})`);
  // W_enc and W_dec alone (training adds Adam's two moments of each): past the machine's memory nothing can be trained.
  checkFitsInMemory(4 * dSae * (dIn + dOut), `${dSae} latents x (d_in ${dIn} + d_out ${dOut}): W_enc and W_dec`, 'lower --latents or --expansion');
  const bias = s.bias ?? true;
  const cfg: DictConfig = {
    kind: s.kind,
    activation: s.activation,
    sitesIn: s.sitesIn,
    sitesOut,
    dIn,
    dOut,
    dSae,
    k: s.k ?? Math.min(DEFAULT_K, dSae / layers),
    matryoshkaWidths: s.matryoshkaWidths ?? defaultMatryoshkaWidths(dSae),
    applyBDecToInput: s.applyBDecToInput ?? (KINDS[s.kind].applyBDecToInput && bias),
    noBias: !bias,
    tied: s.tied ?? false,
    ...(s.skip ? { skip: true } : {}),
  };
  checkDictConfig(cfg);
  return cfg;
}
