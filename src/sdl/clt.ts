// Cross-layer transcoders in the unified problem: x_p is the per-layer inputs side by side, x_r the per-layer MLP
// outputs side by side, and the dictionary is one encoder/decoder pair with a block structure:
//   W_enc [L dI, L n] block-diagonal  (layer l's n features read only layer l's input)
//   W_dec [L n, L dO] block upper-triangular (the causal mask: layer l's features write layers l..L-1)
//   W_skip [L dI, L dO] block-diagonal (skip transcoders: a linear path from each layer's input to its output)
// A transcoder is the case L = 1; `--skip` on a transcoder trains it as that one-layer CLT. The compact layout the
// kernels train (CltParams) never stores the zero blocks; Dictionary holds the dense form, so every reader of
// dictionaries (index, dashboard, ONNX export, steering) sees a CLT as one more encoder/decoder pair.
import { selectionGroups, type DictConfig } from './config.js';
import { UserError } from '../util/errors.js';
import { ACTIVATIONS } from './activations.js';

/** The block shape of a CLT (or of a skip transcoder, L = 1). */
export interface CltShape {
  L: number;
  /** Input and output width per layer. */
  dI: number;
  dO: number;
  /** Latents per layer. */
  n: number;
  skip: boolean;
}

/** Compact, latent-major parameters: what the native kernels and the TypeScript reference train. */
export interface CltParams {
  /** [L n, dI]: latent j's encoder row. */
  W_encT: Float32Array;
  b_enc: Float32Array;
  /** Layer blocks back to back: block l holds n rows of (L - l) dO values (the layer's writes to l..L-1). */
  W_dec: Float32Array;
  /** [L dO] */
  b_dec: Float32Array;
  /** JumpReLU: [L n] */
  log_threshold?: Float32Array;
  /** [L, dI, dO] */
  W_skip?: Float32Array;
}

/** Whether a dictionary trains and runs through the CLT kernels: CLTs and skip transcoders. */
export const usesCltKernels = (cfg: DictConfig): boolean => cfg.kind === 'clt' || !!cfg.skip;

export function cltShape(cfg: DictConfig): CltShape {
  const L = selectionGroups(cfg);
  return { L, dI: cfg.dIn / L, dO: cfg.dOut / L, n: cfg.dSae / L, skip: !!cfg.skip };
}

/** Start of layer l's block in the compact W_dec (l = L gives its length). */
export function decOffset(s: CltShape, l: number): number {
  let off = 0;
  for (let j = 0; j < l; j++) off += s.n * (s.L - j) * s.dO;
  return off;
}

/** Latent j's row in the compact W_dec: its layer, offset and length. */
export function decRow(s: CltShape, j: number): { l: number; off: number; len: number } {
  const l = Math.floor(j / s.n),
    len = (s.L - l) * s.dO;
  return { l, off: decOffset(s, l) + (j % s.n) * len, len };
}

/** Dense values a CLT's Dictionary holds; refused above this (the compact form is L times smaller for the encoder). */
const DENSE_LIMIT = 1.5e9;

/** Dense parameters (SAELens orientation) from the compact ones. */
export function cltToDense(s: CltShape, p: CltParams): { W_enc: Float32Array; W_dec: Float32Array; W_skip?: Float32Array } {
  const { L, dI, dO, n } = s;
  const dIn = L * dI,
    dOut = L * dO,
    M = L * n;
  if (dIn * M + M * dOut > DENSE_LIMIT)
    throw new UserError(
      `this CLT's dense form (${L} layers x ${n} latents, widths ${dI}/${dO}) would hold over ${DENSE_LIMIT} values; use fewer latents per layer`,
    );
  const W_enc = new Float32Array(dIn * M);
  for (let j = 0; j < M; j++) {
    const l = Math.floor(j / n);
    for (let a = 0; a < dI; a++) W_enc[(l * dI + a) * M + j] = p.W_encT[j * dI + a];
  }
  const W_dec = new Float32Array(M * dOut);
  for (let j = 0; j < M; j++) {
    const r = decRow(s, j);
    W_dec.set(p.W_dec.subarray(r.off, r.off + r.len), j * dOut + r.l * dO);
  }
  let W_skip: Float32Array | undefined;
  if (s.skip && p.W_skip) {
    W_skip = new Float32Array(dIn * dOut);
    for (let l = 0; l < L; l++)
      for (let a = 0; a < dI; a++) W_skip.set(p.W_skip.subarray((l * dI + a) * dO, (l * dI + a + 1) * dO), (l * dI + a) * dOut + l * dO);
  }
  return { W_enc, W_dec, W_skip };
}

/** Compact parameters from dense ones (entries outside the blocks are dropped: they are zero in any CLT). */
export function cltFromDense(
  s: CltShape,
  d: { W_enc: Float32Array; b_enc: Float32Array; W_dec: Float32Array; b_dec: Float32Array; W_skip?: Float32Array; log_threshold?: Float32Array },
): CltParams {
  const { L, dI, dO, n } = s;
  const dOut = L * dO,
    M = L * n;
  const W_encT = new Float32Array(M * dI);
  for (let j = 0; j < M; j++) {
    const l = Math.floor(j / n);
    for (let a = 0; a < dI; a++) W_encT[j * dI + a] = d.W_enc[(l * dI + a) * M + j];
  }
  const W_dec = new Float32Array(decOffset(s, L));
  for (let j = 0; j < M; j++) {
    const r = decRow(s, j);
    W_dec.set(d.W_dec.subarray(j * dOut + r.l * dO, j * dOut + r.l * dO + r.len), r.off);
  }
  let W_skip: Float32Array | undefined;
  if (s.skip) {
    W_skip = new Float32Array(L * dI * dO);
    if (d.W_skip)
      for (let l = 0; l < L; l++)
        for (let a = 0; a < dI; a++) W_skip.set(d.W_skip.subarray((l * dI + a) * dOut + l * dO, (l * dI + a) * dOut + (l + 1) * dO), (l * dI + a) * dO);
  }
  return {
    W_encT,
    b_enc: Float32Array.from(d.b_enc),
    W_dec,
    b_dec: Float32Array.from(d.b_dec),
    ...(d.log_threshold ? { log_threshold: Float32Array.from(d.log_threshold) } : {}),
    ...(W_skip ? { W_skip } : {}),
  };
}

/** Per-feature decoder norms per target layer: [L n, L] (zero for layers before the feature's own). */
export function targetNorms(cfg: DictConfig, W_dec: Float32Array): Float32Array {
  const out = cfg.sitesOut.length,
    norms = new Float32Array(cfg.dSae * out);
  for (let j = 0; j < cfg.dSae; j++) {
    let off = 0;
    cfg.sitesOut.forEach((site, t) => {
      let s = 0;
      for (let c = off; c < off + site.width; c++) s += W_dec[j * cfg.dOut + c] ** 2;
      norms[j * out + t] = Math.sqrt(s);
      off += site.width;
    });
  }
  return norms;
}

/** The compact tensors a CLT trains (and keeps Adam moments for). */
export function cltTrained(cfg: DictConfig): (keyof CltParams)[] {
  return [
    'W_encT',
    'W_dec',
    'b_enc',
    'b_dec',
    ...(ACTIVATIONS[cfg.activation].selection === 'threshold' ? ['log_threshold' as const] : []),
    ...(cfg.skip ? ['W_skip' as const] : []),
  ];
}

/** The tensors a CLT checkpoint holds: parameters under their dense names and Adam moments of the compact ones. */
export function cltCheckpointNames(cfg: DictConfig): string[] {
  const trained = cltTrained(cfg);
  return [
    'W_enc',
    'W_dec',
    'b_enc',
    'b_dec',
    ...(cfg.skip ? ['W_skip'] : []),
    ...(trained.includes('log_threshold') ? ['log_threshold'] : []),
    ...trained.flatMap((n) => [`adam_m.${n}`, `adam_v.${n}`]),
  ];
}
