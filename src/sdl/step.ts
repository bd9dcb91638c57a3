// One training step of the unified SDL problem, forward and backward, with hand-written gradients.
//   x~ = x - b_dec (SAEs/crosscoders) or x (transcoders);  pre = x~ W_enc + b_enc;  f = sigma(pre)
//   y^ = f W_dec + b_dec;  L = (1/B) sum ||y^ - y||^2  (+ sparsity, AuxK, anchoring)
// Hand-written because tfjs autograd emits matMuls with transposed operands, which the wasm backend runs
// 10-20x slower than an explicit transpose followed by a plain matMul; every matMul here is plain.
import { tf } from '../tensor/backend.js';
import type { DictConfig } from './config.js';
import { kthLargest } from './dictionary.js';
import type { EngineStepResult } from './engine-types.js';
import { ACTIVATIONS } from './activations.js';

export interface Params {
  W_enc: tf.Tensor2D; // [dIn, dSae]
  b_enc: tf.Tensor1D; // [dSae]
  W_dec: tf.Tensor2D; // [dSae, dOut] (W_enc^T when tied: derived, not trained)
  b_dec: tf.Tensor1D; // [dOut]
  log_threshold?: tf.Tensor1D; // JumpReLU
}
export type Grads = Partial<Record<keyof Params, tf.Tensor>>;

export interface StepOptions {
  sparsity: number;
  bandwidth: number;
  /** 1 for latents counted dead (AuxK), or undefined. */
  dead?: Float32Array;
  auxkCoefficient: number;
  auxkK: number;
  anchors?: { enc: tf.Tensor2D; dec: tf.Tensor2D; k: number; weight: number };
}

/** The engine's step result (loss, MSE per token, sparsity and aux terms, mean L0, firing counts) and the gradients. */
export interface StepResult extends EngineStepResult {
  grads: Grads;
}

const mm = (a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D => tf.matMul(a, b);
/** a >= col for a [B, m] and a per-row col [B, 1]: subtract first, since tfjs-wasm compares with column broadcasting ~15x slower. */
const T = (a: tf.Tensor2D) => tf.transpose(a) as tf.Tensor2D;

/** Pre-activations x~ W_enc + b_enc. */
export function preacts(cfg: DictConfig, p: Params, X: tf.Tensor2D): { xt: tf.Tensor2D; pre: tf.Tensor2D } {
  const xt = cfg.applyBDecToInput ? (tf.sub(X, p.b_dec) as tf.Tensor2D) : X;
  return { xt, pre: tf.add(mm(xt, p.W_enc), p.b_enc) as tf.Tensor2D };
}

/**
 * The training-time activation: returns the active mask (1 where a latent passes its pre-activation).
 * BatchTopK and Matryoshka select the top k*B pre-activations of the whole batch.
 */
/**
 * 1 at each row's k largest entries that are positive: exactly k (on ties the lower index, the order tf.topk gives
 * equal values), as torch.topk selects and the native kernels do.
 */
function topkMask(x: tf.Tensor2D, k: number): tf.Tensor2D {
  const [B, m] = x.shape;
  const { values, indices } = tf.topk(x, k);
  const ix = indices.dataSync();
  const xv = x.dataSync();
  tf.dispose([values, indices]);
  const mask = new Float32Array(B * m);
  for (let b = 0; b < B; b++)
    for (let q = 0; q < k; q++) {
      const j = b * m + ix[b * k + q];
      if (xv[j] > 0) mask[j] = 1;
    }
  return tf.tensor2d(mask, [B, m]);
}

export function trainMask(cfg: DictConfig, p: Params, pre: tf.Tensor2D): { mask: tf.Tensor2D; minSelected?: number } {
  const B = pre.shape[0];
  switch (ACTIVATIONS[cfg.activation].selection) {
    case 'relu':
      return { mask: tf.cast(tf.greater(pre, 0), 'float32') as tf.Tensor2D };
    case 'threshold':
      return { mask: tf.cast(tf.greater(pre, tf.exp(p.log_threshold!)), 'float32') as tf.Tensor2D };
    case 'topk':
      return { mask: topkMask(pre, Math.min(cfg.k, cfg.dSae)) };
    case 'batch': {
      const data = pre.dataSync();
      const pos = new Float32Array(data.length);
      let n = 0;
      for (let i = 0; i < data.length; i++) if (data[i] > 0) pos[n++] = data[i];
      const want = Math.min(cfg.k * B, n);
      if (want === 0) return { mask: tf.zerosLike(pre) };
      const kth = kthLargest(pos.subarray(0, n), want);
      return { mask: tf.cast(tf.greaterEqual(pre, kth), 'float32') as tf.Tensor2D, minSelected: kth };
    }
  }
}

/** Inference-time activation mask (thresholds instead of batch statistics). */
export function inferMask(cfg: DictConfig, p: Params, pre: tf.Tensor2D, threshold: number): tf.Tensor2D {
  if (ACTIVATIONS[cfg.activation].inference === 'global') {
    return tf.cast(tf.greater(pre, Math.max(threshold, 0)), 'float32') as tf.Tensor2D;
  }
  return trainMask(cfg, p, pre).mask;
}

/** A rectangle kernel K((z - theta)/eps) / eps: the straight-through estimator's pseudo-derivative. */
function rect(pre: tf.Tensor2D, theta: tf.Tensor1D, eps: number): tf.Tensor2D {
  const u = tf.div(tf.sub(pre, theta), eps);
  return tf.div(tf.cast(tf.logicalAnd(tf.greater(u, -0.5), tf.less(u, 0.5)), 'float32'), eps) as tf.Tensor2D;
}

export function step(cfg: DictConfig, p: Params, X: tf.Tensor2D, Y: tf.Tensor2D, o: StepOptions): StepResult {
  const B = X.shape[0];
  let minSelected: number | undefined;
  const out = tf.tidy(() => {
    const { xt, pre } = preacts(cfg, p, X);
    const m = trainMask(cfg, p, pre);
    minSelected = m.minSelected;
    const mask = m.mask;
    const acts = tf.mul(pre, mask) as tf.Tensor2D;
    const actsT = T(acts);
    const WdecT = T(p.W_dec);
    let gW_dec: tf.Tensor2D, gb_dec: tf.Tensor1D, dacts: tf.Tensor2D, mse: tf.Scalar;

    if (ACTIVATIONS[cfg.activation].nested) {
      // Nested prefixes: L = mean_g (1/B) sum ||b_dec + f[:, :w_g] W_dec[:w_g] - y||^2.
      const widths = cfg.matryoshkaWidths;
      const G = widths.length;
      let recon: tf.Tensor2D = tf.add(tf.zerosLike(Y), p.b_dec) as tf.Tensor2D;
      const resid: tf.Tensor2D[] = [];
      let start = 0;
      for (const w of widths) {
        const part = mm(tf.slice(acts, [0, start], [B, w - start]) as tf.Tensor2D, tf.slice(p.W_dec, [start, 0], [w - start, cfg.dOut]) as tf.Tensor2D);
        recon = tf.add(recon, part) as tf.Tensor2D;
        resid.push(tf.sub(recon, Y) as tf.Tensor2D);
        start = w;
      }
      mse = tf.div(tf.sum(tf.square(resid[G - 1])), B) as tf.Scalar;
      // Suffix sums S_h = sum_{g >= h} dL/dy^_g give each block's gradient.
      const S: tf.Tensor2D[] = new Array(G);
      let acc: tf.Tensor2D | undefined;
      for (let g = G - 1; g >= 0; g--) {
        const Gg = tf.mul(resid[g], 2 / (B * G)) as tf.Tensor2D;
        acc = acc ? (tf.add(acc, Gg) as tf.Tensor2D) : Gg;
        S[g] = acc;
      }
      const dBlocks: tf.Tensor2D[] = [],
        wBlocks: tf.Tensor2D[] = [];
      start = 0;
      widths.forEach((w, g) => {
        const a = tf.slice(actsT, [start, 0], [w - start, B]) as tf.Tensor2D;
        wBlocks.push(mm(a, S[g]));
        dBlocks.push(mm(S[g], tf.slice(WdecT, [0, start], [cfg.dOut, w - start]) as tf.Tensor2D));
        start = w;
      });
      gW_dec = tf.concat(wBlocks, 0) as tf.Tensor2D;
      dacts = tf.concat(dBlocks, 1) as tf.Tensor2D;
      gb_dec = tf.sum(S[0], 0) as tf.Tensor1D;
      const lossMain = tf.div(tf.addN(resid.map((r) => tf.sum(tf.square(r)))), B * G) as tf.Scalar;
      return finish(lossMain);
    }

    const yhat = tf.add(mm(acts, p.W_dec), p.b_dec) as tf.Tensor2D;
    const e = tf.sub(yhat, Y) as tf.Tensor2D;
    mse = tf.div(tf.sum(tf.square(e)), B) as tf.Scalar;
    const G = tf.mul(e, 2 / B) as tf.Tensor2D;
    gW_dec = mm(actsT, G);
    gb_dec = tf.sum(G, 0) as tf.Tensor1D;
    dacts = mm(G, WdecT);
    return finish(mse, e);

    function finish(lossMain: tf.Scalar, e?: tf.Tensor2D) {
      let sparsityLoss: tf.Scalar = tf.scalar(0);
      let auxLoss: tf.Scalar = tf.scalar(0);
      let dpre = tf.mul(dacts, mask) as tf.Tensor2D;
      let gLogTheta: tf.Tensor1D | undefined;
      const term = ACTIVATIONS[cfg.activation].sparsity;
      if (term === 'l1' && o.sparsity > 0) {
        // L1 weighted by decoder norms: lambda/B sum_b sum_i f_bi ||W_dec,i||.
        const norms = tf.norm(p.W_dec, 'euclidean', 1) as tf.Tensor1D;
        sparsityLoss = tf.mul(tf.div(tf.sum(tf.mul(acts, norms)), B), o.sparsity) as tf.Scalar;
        dpre = tf.add(dpre, tf.mul(mask, tf.mul(norms, o.sparsity / B))) as tf.Tensor2D;
        const meanActs = tf.div(tf.sum(acts, 0), B);
        gW_dec = tf.add(gW_dec, tf.mul(tf.reshape(tf.div(tf.mul(meanActs, o.sparsity), tf.add(norms, 1e-12)), [cfg.dSae, 1]), p.W_dec)) as tf.Tensor2D;
      } else if (term === 'l0') {
        // f = z H(z - theta): d f/d theta = -(theta/eps) K; L0 = lambda/B sum H(z - theta): d/d theta = -(lambda/eps) K / B.
        const theta = tf.exp(p.log_threshold!) as tf.Tensor1D;
        const K = rect(pre, theta, o.bandwidth);
        sparsityLoss = tf.mul(tf.div(tf.sum(mask), B), o.sparsity) as tf.Scalar;
        const gTheta = tf.add(tf.mul(tf.sum(tf.mul(dacts, K), 0), tf.neg(theta)), tf.mul(tf.sum(K, 0), -o.sparsity / B)) as tf.Tensor1D;
        gLogTheta = tf.mul(gTheta, theta) as tf.Tensor1D;
      }
      if (o.dead && e && o.auxkCoefficient > 0 && ACTIVATIONS[cfg.activation].auxk) {
        // AuxK: the top k_aux dead pre-activations reconstruct the residual e (detached), normalised by its variance.
        const nDead = o.dead.reduce((a, b) => a + b, 0);
        if (nDead > 0) {
          const kAux = Math.min(o.auxkK, nDead);
          const deadT = tf.tensor1d(o.dead);
          const masked = tf.add(tf.mul(pre, deadT), tf.mul(tf.sub(1, deadT), -1e30)) as tf.Tensor2D;
          const auxMask = topkMask(masked, kAux);
          const auxActs = tf.mul(pre, auxMask) as tf.Tensor2D;
          const target = tf.neg(e) as tf.Tensor2D; // y - y^
          const ehat = mm(auxActs, p.W_dec);
          const diff = tf.sub(ehat, target) as tf.Tensor2D;
          const denom = tf.add(tf.sum(tf.square(tf.sub(target, tf.mean(target, 0)))), 1e-12);
          auxLoss = tf.mul(tf.div(tf.sum(tf.square(diff)), denom), o.auxkCoefficient) as tf.Scalar;
          const Ga = tf.mul(tf.div(diff, denom), 2 * o.auxkCoefficient) as tf.Tensor2D;
          gW_dec = tf.add(gW_dec, mm(T(auxActs), Ga)) as tf.Tensor2D;
          dpre = tf.add(dpre, tf.mul(mm(Ga, WdecT), auxMask)) as tf.Tensor2D;
        }
      }
      const gW_enc0 = mm(T(xt), dpre);
      const gb_enc = tf.sum(dpre, 0) as tf.Tensor1D;
      let gb_decTotal = gb_dec;
      if (cfg.applyBDecToInput) {
        // pre depends on b_dec through x~ = x - b_dec.
        gb_decTotal = tf.sub(gb_dec, tf.reshape(mm(tf.reshape(gb_enc, [1, cfg.dSae]), T(p.W_enc)), [cfg.dIn])) as tf.Tensor1D;
      }
      let gW_enc = gW_enc0;
      let anchorLoss: tf.Scalar = tf.scalar(0);
      if (o.anchors) {
        // lambda (||W_enc[:, :k] - A_p^T||^2 + ||W_dec[:k] - A_r||^2), the paper's eq. 26 in this orientation.
        const { enc, dec, k, weight } = o.anchors;
        const de = tf.sub(tf.slice(p.W_enc, [0, 0], [cfg.dIn, k]), enc) as tf.Tensor2D;
        const dd = tf.sub(tf.slice(p.W_dec, [0, 0], [k, cfg.dOut]), dec) as tf.Tensor2D;
        anchorLoss = tf.mul(tf.add(tf.sum(tf.square(de)), tf.sum(tf.square(dd))), weight) as tf.Scalar;
        gW_enc = tf.add(
          gW_enc,
          tf.pad(tf.mul(de, 2 * weight), [
            [0, 0],
            [0, cfg.dSae - k],
          ]),
        ) as tf.Tensor2D;
        gW_dec = tf.add(
          gW_dec,
          tf.pad(tf.mul(dd, 2 * weight), [
            [0, cfg.dSae - k],
            [0, 0],
          ]),
        ) as tf.Tensor2D;
      }
      const grads: Grads = cfg.tied ? { W_enc: tf.add(gW_enc, T(gW_dec)) as tf.Tensor2D } : { W_enc: gW_enc, W_dec: gW_dec };
      if (!cfg.noBias) {
        grads.b_enc = gb_enc;
        grads.b_dec = gb_decTotal;
      }
      if (gLogTheta) grads.log_threshold = gLogTheta;
      const loss = tf.addN([lossMain, sparsityLoss, auxLoss, anchorLoss]) as tf.Scalar;
      const fired = tf.sum(mask, 0);
      return { grads, loss, mse, sparsityLoss, auxLoss, fired };
    }
  });
  const [loss, mse, sp, aux] = [out.loss, out.mse, out.sparsityLoss, out.auxLoss].map((t) => t.dataSync()[0]);
  const fired = out.fired.dataSync() as Float32Array;
  tf.dispose([out.loss, out.mse, out.sparsityLoss, out.auxLoss, out.fired]);
  const l0 = fired.reduce((a, b) => a + b, 0) / B;
  return { grads: out.grads, loss, mse, sparsityLoss: sp, auxLoss: aux, l0, fired, minSelected: minSelected === undefined ? undefined : [minSelected] };
}
