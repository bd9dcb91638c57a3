// Initial weights: unit-norm decoder rows, the encoder as the decoder's transpose where shapes allow
// (as SAELens, dictionary_learning and sparsify do), b_dec at the geometric median, mean or zero.
import type { DictConfig, TrainConfig } from './config.js';
import { Dictionary, type DictionaryWeights } from './dictionary.js';
import { decodeSparse, encodeSparse } from './encoder.js';
import { Rng } from '../util/rng.js';
import { ACTIVATIONS } from './activations.js';
import { cltShape } from './clt.js';

/** Weiszfeld's algorithm for the geometric median of n rows of width d. */
export function geometricMedian(a: Float32Array, n: number, d: number, iters = 100, tol = 1e-6): Float32Array {
  const med = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) med[j] += a[r * d + j] / n;
  const next = new Float64Array(d);
  for (let it = 0; it < iters; it++) {
    next.fill(0);
    let wsum = 0;
    for (let r = 0; r < n; r++) {
      let dist = 0;
      for (let j = 0; j < d; j++) dist += (a[r * d + j] - med[j]) ** 2;
      const w = 1 / Math.max(Math.sqrt(dist), 1e-8);
      wsum += w;
      for (let j = 0; j < d; j++) next[j] += w * a[r * d + j];
    }
    let move = 0;
    for (let j = 0; j < d; j++) {
      const v = next[j] / wsum;
      move += (v - med[j]) ** 2;
      med[j] = v;
    }
    if (Math.sqrt(move) < tol) break;
  }
  return Float32Array.from(med);
}

export function meanRows(a: Float32Array, n: number, d: number): Float32Array {
  const m = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) m[j] += a[r * d + j];
  return Float32Array.from(m, (v) => v / Math.max(1, n));
}

export function initWeights(cfg: DictConfig, train: TrainConfig, sampleY: { y: Float32Array; n: number }): DictionaryWeights {
  const { dIn, dOut, dSae } = cfg;
  const rng = new Rng(train.seed * 7919 + 17);
  const W_dec = new Float32Array(dSae * dOut);
  for (let i = 0; i < dSae; i++) {
    let norm = 0;
    for (let j = 0; j < dOut; j++) norm += (W_dec[i * dOut + j] = rng.normal()) ** 2;
    norm = Math.sqrt(norm);
    for (let j = 0; j < dOut; j++) W_dec[i * dOut + j] /= norm;
  }
  const W_enc = new Float32Array(dIn * dSae);
  if (cfg.kind !== 'transcoder' && cfg.kind !== 'clt' && dIn === dOut) {
    for (let i = 0; i < dSae; i++) for (let j = 0; j < dIn; j++) W_enc[j * dSae + i] = W_dec[i * dOut + j];
  } else {
    // Transcoders: a small random encoder (columns of norm 0.1), so the first predictions stay near b_dec
    // instead of adding k random unit decoder rows (sparsify starts its transcoders from W_dec = 0).
    for (let i = 0; i < dSae; i++) {
      let norm = 0;
      for (let j = 0; j < dIn; j++) norm += (W_enc[j * dSae + i] = rng.normal()) ** 2;
      norm = Math.sqrt(norm) * 10;
      for (let j = 0; j < dIn; j++) W_enc[j * dSae + i] /= norm;
    }
  }
  const b_dec =
    cfg.noBias || train.bDecInit === 'zeros'
      ? new Float32Array(dOut)
      : train.bDecInit === 'mean'
        ? meanRows(sampleY.y, sampleY.n, dOut)
        : geometricMedian(sampleY.y, Math.min(sampleY.n, 4096), dOut);
  const w: DictionaryWeights = { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec };
  if (cfg.kind === 'clt') cltMask(cfg, w);
  if (cfg.skip) w.W_skip = new Float32Array(dIn * dOut); // the skip path starts at zero (as circuit-tracer's)
  if (cfg.kind !== 'transcoder' && cfg.kind !== 'clt' && dIn === dOut && ACTIVATIONS[cfg.activation].selection !== 'threshold' && sampleY.n > 0)
    calibrateEncoderScale(cfg, w, sampleY.y, Math.min(sampleY.n, 4096));
  return w;
}

/**
 * The CLT's block structure on dense random weights: each latent's encoder column keeps only its layer's input
 * (rescaled to norm 0.1) and its decoder row only the layers it may write (rescaled to unit norm).
 */
function cltMask(cfg: DictConfig, w: DictionaryWeights): void {
  const { dI, dO, n } = cltShape(cfg);
  const { dIn, dOut, dSae } = cfg;
  for (let j = 0; j < dSae; j++) {
    const l = Math.floor(j / n);
    let e = 0;
    for (let r = 0; r < dIn; r++) {
      if (r < l * dI || r >= (l + 1) * dI) w.W_enc[r * dSae + j] = 0;
      else e += w.W_enc[r * dSae + j] ** 2;
    }
    for (let r = l * dI; r < (l + 1) * dI; r++) w.W_enc[r * dSae + j] *= 0.1 / Math.sqrt(e);
    let d = 0;
    for (let c = 0; c < dOut; c++) {
      if (c < l * dO) w.W_dec[j * dOut + c] = 0;
      else d += w.W_dec[j * dOut + c] ** 2;
    }
    for (let c = l * dO; c < dOut; c++) w.W_dec[j * dOut + c] /= Math.sqrt(d);
  }
}

/**
 * Scales W_enc = W_dec^T so the first reconstructions have the right size. With b_enc = 0 the TopK, BatchTopK
 * and ReLU selections do not change when W_enc is scaled by c > 0, so the reconstruction is b_dec + c R0 and
 * the best c is <x - b_dec, R0> / ||R0||^2 over the sample. Unscaled, k unit rows each weighted by a top
 * pre-activation overshoot badly when k is large (held-out FVU near 9 at d_in 64, 4096 latents, k 32),
 * and short runs spend their steps shrinking it.
 */
function calibrateEncoderScale(cfg: DictConfig, w: DictionaryWeights, x: Float32Array, n: number): void {
  const { dIn, dSae } = cfg;
  const probe = new Dictionary(
    { ...cfg, activation: ACTIVATIONS[cfg.activation].selection === 'relu' ? 'relu' : 'topk', noBias: false },
    { ...w, b_dec: w.b_dec, threshold: undefined },
  );
  const rows = x.subarray(0, n * dIn);
  const f = encodeSparse(probe, rows, n);
  const R0 = decodeSparse(probe, f);
  let num = 0,
    den = 0;
  for (let r = 0; r < n; r++)
    for (let j = 0; j < dIn; j++) {
      const r0 = R0[r * dIn + j] - w.b_dec[j];
      num += (x[r * dIn + j] - w.b_dec[j]) * r0;
      den += r0 * r0;
    }
  const c = den > 0 ? num / den : 1;
  if (c > 0 && Number.isFinite(c)) for (let i = 0; i < dIn * dSae; i++) w.W_enc[i] *= c;
}
