// Inference for saved dictionaries: features as sparse rows (the active latents of each token), from the native
// kernels where they are built, else from Dictionary's plain-TypeScript reference. Every reader of features
// (the index, in-model evaluation, ground-truth metrics, search) goes through here.
import { native, nativeThreads, type NativeCltTensors, type NativeForward, type NativeTensors } from '../native/kernels.js';
import { cltFromDense, cltShape, usesCltKernels } from './clt.js';
import type { Dictionary } from './dictionary.js';
import { transpose } from '../tensor/linalg.js';
import { ACTIVATIONS } from './activations.js';

/** Active latents per token: row r holds idx/val[start[r] .. start[r + 1]), latents in increasing order. */
export interface SparseActs {
  rows: number;
  start: Int32Array;
  idx: Int32Array;
  val: Float32Array;
}

type NativeEncode = (x: Float32Array, n: number, into?: Partial<NativeForward>) => NativeForward;

/**
 * Arrays a pass over many chunks (the index's) has each chunk's sparse rows written into, kept from chunk to chunk: made
 * afresh for every chunk (and their pages first touched each time), they were 11,000 of the index's 154,000 page faults
 * at 256k tokens x 16,384 latents. The SparseActs encodeSparse returns with them are views of these arrays, valid until
 * its next call with the same buffers.
 */
export class SparseBuffers {
  /** The native encoder writes count, idx and val into these where long enough, else makes new ones (kept for the next call). */
  readonly into: Partial<NativeForward> = {};
  private start = new Int32Array(0);

  /** Keeps the native result's arrays, the whole of each buffer, for the next chunk. */
  keep(r: NativeForward): void {
    if (r.count.buffer !== this.into.count?.buffer) this.into.count = new Int32Array(r.count.buffer);
    if (r.idx.buffer !== this.into.idx?.buffer) this.into.idx = new Int32Array(r.idx.buffer);
    if (r.val.buffer !== this.into.val?.buffer) this.into.val = new Float32Array(r.val.buffer);
  }

  /** The row offsets of n rows, start[0] = 0. */
  starts(n: number): Int32Array {
    if (this.start.length < n + 1) this.start = new Int32Array(n + 1);
    return this.start.subarray(0, n + 1);
  }
}
const engines = new WeakMap<Dictionary, NativeEncode>();

function nativeFor(d: Dictionary): NativeEncode | undefined {
  const hit = engines.get(d);
  if (hit) return hit;
  const mod = native();
  if (!mod) return undefined;
  const c = d.cfg;
  const spec = ACTIVATIONS[c.activation];
  let enc: NativeEncode;
  if (usesCltKernels(c)) {
    // CLTs (per-layer selection) and skip transcoders: the CLT kernels on the compact blocks.
    const s = cltShape(c);
    const e = new mod.Clt({ L: s.L, dIn: s.dI, dOut: s.dO, n: s.n, activation: spec.nativeCode, k: c.k, skip: s.skip, threads: nativeThreads() });
    const p = cltFromDense(s, d.w) as NativeCltTensors;
    const theta = spec.inference === 'per-latent' || spec.inference === 'global' ? d.inferenceThreshold() : undefined;
    enc = (x, n, into) => e.forward(p, x, n, theta, false, into);
  } else {
    const e = new mod.Engine({
      dIn: c.dIn,
      dOut: c.dOut,
      dSae: c.dSae,
      activation: spec.nativeCode,
      k: c.k,
      widths: c.matryoshkaWidths,
      applyBDec: c.applyBDecToInput,
      noBias: false,
      tied: false,
      threads: nativeThreads(),
    });
    // JumpReLU thresholds travel as log thresholds (the training parameter); BatchTopK/Matryoshka use one global value.
    const p: NativeTensors = {
      W_encT: transpose(d.w.W_enc, c.dIn, c.dSae),
      b_enc: d.w.b_enc,
      W_dec: d.w.W_dec,
      b_dec: d.w.b_dec,
      log_threshold: spec.inference === 'per-latent' ? Float32Array.from(d.inferenceThreshold(), (t) => Math.log(Math.max(t, 1e-30))) : undefined,
    };
    const threshold = spec.inference === 'global' ? d.inferenceThreshold()[0] : 0;
    enc = (x, n, into) => e.forward(p, x, n, threshold, false, into);
  }
  engines.set(d, enc);
  return enc;
}

/** Features of n rows of x [n, dIn] (inference thresholds), as sparse rows; with `buffers`, in them (see SparseBuffers). */
export function encodeSparse(d: Dictionary, x: Float32Array, n: number, buffers?: SparseBuffers): SparseActs {
  if (!Number.isInteger(n) || n < 0 || x.length < n * d.cfg.dIn) throw new Error(`encodeSparse: ${n} rows of ${d.cfg.dIn} do not fit ${x.length} values`);
  if (n === 0) return { rows: 0, start: new Int32Array(1), idx: new Int32Array(0), val: new Float32Array(0) };
  const nat = nativeFor(d);
  if (nat) {
    const r = nat(x, n, buffers?.into);
    buffers?.keep(r);
    const start = buffers ? buffers.starts(n) : new Int32Array(n + 1);
    for (let i = 0; i < n; i++) start[i + 1] = start[i] + r.count[i];
    return { rows: n, start, idx: r.idx, val: r.val };
  }
  return sparsify(d.encode(x, n), n, d.cfg.dSae);
}

/** Features of n rows as a dense [n, dSae] matrix. */
export function encodeDense(d: Dictionary, x: Float32Array, n: number): Float32Array {
  return densify(encodeSparse(d, x, n), d.cfg.dSae);
}

/** Reconstructions [rows, dOut] from sparse features; skip dictionaries need the inputs x too. */
export function decodeSparse(d: Dictionary, f: SparseActs, x?: Float32Array): Float32Array {
  const { dOut } = d.cfg;
  const { W_dec } = d.w;
  const out = d.baseline(f.rows, x);
  for (let r = 0; r < f.rows; r++) {
    const o = out.subarray(r * dOut, (r + 1) * dOut);
    for (let q = f.start[r]; q < f.start[r + 1]; q++) {
      const a = f.val[q],
        base = f.idx[q] * dOut;
      for (let j = 0; j < dOut; j++) o[j] += a * W_dec[base + j];
    }
  }
  return out;
}

export function sparsify(dense: Float32Array, rows: number, m: number): SparseActs {
  const start = new Int32Array(rows + 1);
  let nnz = 0;
  for (let i = 0; i < dense.length; i++) if (dense[i] !== 0) nnz++;
  const idx = new Int32Array(nnz),
    val = new Float32Array(nnz);
  let q = 0;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < m; i++) {
      const a = dense[r * m + i];
      if (a !== 0) {
        idx[q] = i;
        val[q] = a;
        q++;
      }
    }
    start[r + 1] = q;
  }
  return { rows, start, idx, val };
}

export function densify(f: SparseActs, m: number): Float32Array {
  const out = new Float32Array(f.rows * m);
  for (let r = 0; r < f.rows; r++) for (let q = f.start[r]; q < f.start[r + 1]; q++) out[r * m + f.idx[q]] = f.val[q];
  return out;
}
