// The dictionary: x_q = sigma(W_enc^T (x - b_dec?) + b_enc), x_r_hat = W_dec^T x_q + b_dec, one shape for
// SAEs, transcoders and crosscoders (they differ only in the sites they read and write).
// Weights are stored in SAELens orientation: W_enc [d_in, d_sae], W_dec [d_sae, d_out].
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DictConfig } from './config.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from '../tensor/safetensors.js';
import { UserError } from '../util/errors.js';
import { checkOutput, writeJsonAtomic } from '../util/fsx.js';
import { ACTIVATIONS, needsThreshold } from './activations.js';
import { checkDictConfig, selectionGroups } from './config.js';
import { CFG_FILE, WEIGHTS_FILE } from '../util/files.js';
import { cltFromDense, cltShape, cltToDense, decOffset } from './clt.js';

export interface DictionaryWeights {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** Per-latent inference threshold (JumpReLU; BatchTopK and Matryoshka store their global one here). */
  threshold?: Float32Array;
  /** Skip transcoders and CLTs: [d_in, d_out] (block-diagonal for CLTs); y^ gains x W_skip. */
  W_skip?: Float32Array;
}

export { CFG_FILE, WEIGHTS_FILE };

/** The saved cfg.json: SAELens' keys (so its loader reads the folder) plus sdlkit's full record. */
export interface SavedCfg {
  d_in: number;
  d_sae: number;
  d_out?: number;
  dtype: 'float32';
  device: 'cpu';
  apply_b_dec_to_input: boolean;
  normalize_activations: 'none';
  reshape_activations: 'none';
  architecture: string;
  k?: number;
  rescale_acts_by_decoder_norm?: boolean;
  metadata: Record<string, unknown>;
  sdlkit: { dict: DictConfig; [key: string]: unknown };
}

export const SAELENS_VERSION = '6.0.0';

/**
 * A dictionary's cfg.json in SAELens v6's inference layout: the one builder for sdlkit's own folders (which add
 * their `sdlkit` record) and for `sdl export --format saelens`.
 */
export function saelensCfg(d: Dictionary): Omit<SavedCfg, 'sdlkit'> {
  const c = d.cfg,
    meta = d.meta,
    arch = saelensArchitecture(c);
  return {
    d_in: c.dIn,
    d_sae: c.dSae,
    ...(c.kind === 'transcoder' ? { d_out: c.dOut } : {}),
    dtype: 'float32',
    device: 'cpu',
    apply_b_dec_to_input: c.applyBDecToInput,
    normalize_activations: 'none',
    reshape_activations: 'none',
    architecture: arch,
    ...(ACTIVATIONS[c.activation].inference === 'topk' ? { k: c.k, rescale_acts_by_decoder_norm: false } : {}),
    metadata: {
      sae_lens_version: SAELENS_VERSION,
      sae_lens_training_version: SAELENS_VERSION,
      model_name: meta.model_name ?? null,
      hook_name: c.sitesIn[0].name,
      hook_head_index: null,
      ...(c.kind === 'transcoder' ? { hook_name_out: c.sitesOut[0].name, hook_head_index_out: null } : {}),
      model_class_name: 'HookedTransformer',
      dataset_path: meta.dataset_path ?? null,
      context_size: meta.context_size ?? null,
      prepend_bos: true,
      exclude_special_tokens: false,
    },
  };
}

/** SAELens architecture name for a dictionary. BatchTopK/Matryoshka infer as JumpReLU with a global threshold. */
export function saelensArchitecture(cfg: DictConfig): string {
  if (cfg.kind === 'clt') return 'clt'; // no SAELens class: sdlkit's own name (circuit-tracer reads `sdl export --format circuit-tracer`)
  const arch = ACTIVATIONS[cfg.activation].saelens[cfg.kind === 'transcoder' ? 'transcoder' : 'sae'];
  // SAELens' skip transcoders: skip_transcoder (ReLU) and jumprelu_skip_transcoder; TopK has none (topk_skip_transcoder
  // is sdlkit's name, which SAELens refuses).
  return cfg.skip ? arch.replace(/transcoder$/, 'skip_transcoder') : arch;
}

export class Dictionary {
  constructor(
    readonly cfg: DictConfig,
    readonly w: DictionaryWeights,
    readonly meta: Record<string, unknown> = {},
  ) {
    const { dIn, dOut, dSae } = cfg;
    const check = (name: string, a: Float32Array | undefined, n: number) => {
      if (a && a.length !== n) throw new UserError(`dictionary tensor ${name} has ${a.length} values, expected ${n}`);
    };
    check('W_enc', w.W_enc, dIn * dSae);
    check('W_dec', w.W_dec, dSae * dOut);
    check('b_enc', w.b_enc, dSae);
    check('b_dec', w.b_dec, dOut);
    check('threshold', w.threshold, dSae);
    check('W_skip', w.W_skip, dIn * dOut);
    if (cfg.skip && !w.W_skip) throw new UserError('this skip dictionary has no W_skip tensor; fit or import it again');
  }

  /**
   * The per-latent inference threshold: JumpReLU's own, BatchTopK/Matryoshka's global one repeated. A dictionary of
   * those activations without one cannot encode correctly, so it fails here rather than thresholding at 0.
   */
  inferenceThreshold(): Float32Array {
    const th = this.w.threshold;
    if (!th) throw new UserError(`this ${this.cfg.activation} dictionary has no threshold tensor, which its inference needs; fit or import it again`);
    return th;
  }

  /** Pre-activations for `n` rows of x [n, dIn] (row-major). */
  preacts(x: Float32Array, n: number): Float32Array {
    const { dIn, dSae, applyBDecToInput } = this.cfg;
    const { W_enc, b_enc, b_dec } = this.w;
    const pre = new Float32Array(n * dSae);
    const xr = new Float32Array(dIn);
    for (let r = 0; r < n; r++) {
      for (let i = 0; i < dIn; i++) xr[i] = x[r * dIn + i] - (applyBDecToInput ? b_dec[i] : 0);
      const out = pre.subarray(r * dSae, (r + 1) * dSae);
      out.set(b_enc);
      for (let i = 0; i < dIn; i++) {
        const v = xr[i];
        if (v === 0) continue;
        const row = W_enc.subarray(i * dSae, (i + 1) * dSae);
        for (let j = 0; j < dSae; j++) out[j] += v * row[j];
      }
    }
    return pre;
  }

  /** The activation at inference (thresholds, not batch statistics), in place on pre-activations. */
  activate(pre: Float32Array, n: number): Float32Array {
    const { dSae, k } = this.cfg;
    const how = ACTIVATIONS[this.cfg.activation].inference;
    const th = this.w.threshold;
    for (let r = 0; r < n; r++) {
      const z = pre.subarray(r * dSae, (r + 1) * dSae);
      if (how === 'relu') for (let j = 0; j < dSae; j++) z[j] = z[j] > 0 ? z[j] : 0;
      else if (how === 'topk') {
        // CLTs select per layer: k of each layer's latents.
        const groups = selectionGroups(this.cfg),
          per = dSae / groups;
        for (let g = 0; g < groups; g++) topkInPlace(z.subarray(g * per, (g + 1) * per), Math.min(k, per));
      } else {
        const t = th ?? this.inferenceThreshold();
        for (let j = 0; j < dSae; j++) z[j] = z[j] > t[j] && z[j] > 0 ? z[j] : 0;
      }
    }
    return pre;
  }

  encode(x: Float32Array, n: number): Float32Array {
    return this.activate(this.preacts(x, n), n);
  }

  /** Reconstructions from dense features; skip dictionaries need the inputs x too. */
  decode(acts: Float32Array, n: number, x?: Float32Array): Float32Array {
    const { dSae, dOut } = this.cfg;
    const { W_dec } = this.w;
    const out = this.baseline(n, x);
    for (let r = 0; r < n; r++) {
      const o = out.subarray(r * dOut, (r + 1) * dOut);
      for (let j = 0; j < dSae; j++) {
        const a = acts[r * dSae + j];
        if (a === 0) continue;
        const row = W_dec.subarray(j * dOut, (j + 1) * dOut);
        for (let i = 0; i < dOut; i++) o[i] += a * row[i];
      }
    }
    return out;
  }

  /** b_dec on every row, plus the skip path x W_skip where the dictionary has one: what the features add to. */
  baseline(n: number, x?: Float32Array): Float32Array {
    const { dIn, dOut } = this.cfg;
    const out = new Float32Array(n * dOut);
    for (let r = 0; r < n; r++) out.set(this.w.b_dec, r * dOut);
    const S = this.w.W_skip;
    if (!S) return out;
    if (!x || x.length < n * dIn) throw new Error('a skip dictionary decodes from its inputs too: pass x');
    for (let r = 0; r < n; r++)
      for (let i = 0; i < dIn; i++) {
        const v = x[r * dIn + i];
        if (v === 0) continue;
        for (let c = 0; c < dOut; c++) out[r * dOut + c] += v * S[i * dOut + c];
      }
    return out;
  }

  save(dir: string, extra: { training?: unknown; metadata?: Record<string, unknown> } = {}): void {
    checkOutput(dir, 'dir');
    mkdirSync(dir, { recursive: true });
    const { dIn, dOut, dSae } = this.cfg;
    const t: Record<string, NamedTensor> = {
      W_enc: { data: this.w.W_enc, shape: [dIn, dSae] },
      W_dec: { data: this.w.W_dec, shape: [dSae, dOut] },
      b_enc: { data: this.w.b_enc, shape: [dSae] },
      b_dec: { data: this.w.b_dec, shape: [dOut] },
    };
    if (this.w.threshold) t.threshold = { data: this.w.threshold, shape: [dSae] };
    if (this.w.W_skip) t.W_skip = { data: this.w.W_skip, shape: [dIn, dOut] };
    writeSafetensors(join(dir, WEIGHTS_FILE), this.cfg.kind === 'clt' ? cltSavedTensors(this) : t);
    const base = saelensCfg(this);
    const cfg: SavedCfg = {
      ...base,
      metadata: { ...base.metadata, ...this.meta, ...extra.metadata },
      sdlkit: { format: 'sdlkit-dictionary/1', dict: this.cfg, ...(extra.training ? { training: extra.training } : {}) },
    };
    // cfg.json last: a folder with weights but no cfg.json is not a finished dictionary.
    writeJsonAtomic(join(dir, CFG_FILE), cfg);
  }

  /** A dictionary folder's checked cfg.json, without reading the weights. */
  static readConfig(dir: string): SavedCfg {
    const cfgPath = join(dir, CFG_FILE);
    if (!existsSync(cfgPath) || !existsSync(join(dir, WEIGHTS_FILE)))
      throw new UserError(`${dir} is not a dictionary folder (needs ${CFG_FILE} and ${WEIGHTS_FILE}); 'sdl fit' writes one`);
    let saved: SavedCfg;
    try {
      saved = JSON.parse(readFileSync(cfgPath, 'utf8')) as SavedCfg;
    } catch (e) {
      throw new UserError(`${cfgPath} is not valid JSON (${(e as Error).message.split('\n')[0]}); fit the dictionary again or restore the file`);
    }
    if (!saved || typeof saved !== 'object' || !saved.sdlkit?.dict)
      throw new UserError(`${cfgPath} was not written by sdlkit; use 'sdl import saelens' for SAELens folders`);
    checkDictConfig(saved.sdlkit.dict, cfgPath);
    return saved;
  }

  static load(dir: string): Dictionary {
    const saved = Dictionary.readConfig(dir);
    const st = readSafetensors(join(dir, WEIGHTS_FILE)).tensors;
    const get = (n: string) => {
      if (!st[n]) throw new UserError(`${dir}/${WEIGHTS_FILE} has no tensor ${n}`);
      return st[n].data;
    };
    const cfg = saved.sdlkit.dict;
    const w =
      cfg.kind === 'clt'
        ? cltWeightsFromSaved(cfg, get, st.threshold?.data, st.W_skip?.data)
        : { W_enc: get('W_enc'), W_dec: get('W_dec'), b_enc: get('b_enc'), b_dec: get('b_dec'), threshold: st.threshold?.data, W_skip: st.W_skip?.data };
    const d = new Dictionary(cfg, w, saved.metadata);
    if (needsThreshold(d.cfg.activation)) d.inferenceThreshold();
    return d;
  }
}

/** Keeps the k largest positive values of z (ties at the k-th place: the first ones, exactly k in all), zeroes the rest. */
function topkInPlace(z: Float32Array, k: number): void {
  const kth = kthLargest(z, k);
  let greater = 0;
  for (let j = 0; j < z.length; j++) if (z[j] > kth) greater++;
  let ties = k - greater;
  for (let j = 0; j < z.length; j++) {
    const keep = z[j] > kth || (z[j] === kth && ties-- > 0);
    z[j] = keep && z[j] > 0 ? z[j] : 0;
  }
}

/**
 * A CLT's weights file: the compact blocks, in circuit-tracer's shapes (W_enc [L, n, d_in], W_dec.l [n, L - l,
 * d_out], b_enc/threshold [L, n], b_dec [L, d_out], W_skip [L, d_in, d_out]); the dense zero blocks are not stored.
 */
function cltSavedTensors(d: Dictionary): Record<string, NamedTensor> {
  const s = cltShape(d.cfg);
  const { L, dI, dO, n } = s;
  const p = cltFromDense(s, d.w);
  const t: Record<string, NamedTensor> = {
    W_enc: { data: p.W_encT, shape: [L, n, dI] },
    b_enc: { data: p.b_enc, shape: [L, n] },
    b_dec: { data: p.b_dec, shape: [L, dO] },
  };
  for (let l = 0; l < L; l++) t[`W_dec.${l}`] = { data: p.W_dec.subarray(decOffset(s, l), decOffset(s, l + 1)), shape: [n, L - l, dO] };
  if (d.w.threshold) t.threshold = { data: d.w.threshold, shape: [L, n] };
  if (p.W_skip) t.W_skip = { data: p.W_skip, shape: [L, dI, dO] };
  return t;
}

function cltWeightsFromSaved(
  cfg: DictConfig,
  get: (n: string) => Float32Array,
  threshold: Float32Array | undefined,
  skip: Float32Array | undefined,
): DictionaryWeights {
  const s = cltShape(cfg);
  const W_dec = new Float32Array(decOffset(s, s.L));
  for (let l = 0; l < s.L; l++) {
    const block = get(`W_dec.${l}`);
    if (block.length !== decOffset(s, l + 1) - decOffset(s, l))
      throw new UserError(`dictionary tensor W_dec.${l} has ${block.length} values, expected ${decOffset(s, l + 1) - decOffset(s, l)}`);
    W_dec.set(block, decOffset(s, l));
  }
  const p = { W_encT: get('W_enc'), b_enc: get('b_enc'), W_dec, b_dec: get('b_dec'), W_skip: skip };
  for (const [name, a, want] of [
    ['W_enc', p.W_encT, s.L * s.n * s.dI],
    ['W_skip', skip, s.skip ? s.L * s.dI * s.dO : 0],
  ] as const)
    if (a && a.length !== want) throw new UserError(`dictionary tensor ${name} has ${a.length} values, expected ${want}`);
  const dense = cltToDense(s, p);
  return { W_enc: dense.W_enc, W_dec: dense.W_dec, b_enc: p.b_enc, b_dec: p.b_dec, threshold, W_skip: dense.W_skip };
}

/** The k-th largest value of an array (1-based k), by quickselect on a copy. */
export function kthLargest(a: ArrayLike<number>, k: number): number {
  const b = Float32Array.from(a);
  let lo = 0,
    hi = b.length - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = b[(lo + hi) >> 1];
    let i = lo,
      j = hi;
    while (i <= j) {
      while (b[i] > pivot) i++;
      while (b[j] < pivot) j--;
      if (i <= j) {
        const t = b[i];
        b[i] = b[j];
        b[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break;
  }
  return b[target];
}
