// Adam with bias correction, global-norm clipping, and the unit-norm decoder constraint (the gradient
// component along each decoder row removed before the update, rows renormalised after it).
import { tf } from '../tensor/backend.js';
import type { Grads, Params } from './step.js';

export class Adam {
  t = 0;
  readonly m = new Map<string, tf.Tensor>();
  readonly v = new Map<string, tf.Tensor>();
  constructor(
    readonly beta1: number,
    readonly beta2: number,
    readonly eps: number,
  ) {}

  /** Applies one update in place on `p`; returns the pre-clip global gradient norm. */
  update(p: Params, g: Grads, lr: number, clip: number): number {
    this.t++;
    const names = Object.keys(g) as (keyof Params)[];
    const sq = tf.tidy(() => tf.addN(names.map((n) => tf.sum(tf.square(g[n]!)))).dataSync()[0]);
    const norm = Math.sqrt(sq);
    const scale = clip > 0 && norm > clip ? clip / norm : 1;
    const bc1 = 1 - this.beta1 ** this.t,
      bc2 = 1 - this.beta2 ** this.t;
    for (const n of names) {
      const grad = g[n]!;
      const m0 = this.m.get(n) ?? tf.zerosLike(grad);
      const v0 = this.v.get(n) ?? tf.zerosLike(grad);
      const [m1, v1, p1] = tf.tidy(() => {
        const gs = scale === 1 ? grad : tf.mul(grad, scale);
        const m1 = tf.add(tf.mul(m0, this.beta1), tf.mul(gs, 1 - this.beta1));
        const v1 = tf.add(tf.mul(v0, this.beta2), tf.mul(tf.square(gs), 1 - this.beta2));
        const upd = tf.div(tf.div(m1, bc1), tf.add(tf.sqrt(tf.div(v1, bc2)), this.eps));
        return [m1, v1, tf.sub(p[n]!, tf.mul(upd, lr))];
      });
      tf.dispose([m0, v0, p[n]!]);
      this.m.set(n, m1);
      this.v.set(n, v1);
      (p as unknown as Record<string, tf.Tensor>)[n] = p1;
    }
    return norm;
  }

  /** Zeroes the moments of the given decoder rows / encoder columns / biases (after resampling). */
  resetLatents(latents: number[], dSae: number): void {
    if (!latents.length) return;
    const keep = new Float32Array(dSae).fill(1);
    for (const i of latents) keep[i] = 0;
    for (const store of [this.m, this.v]) {
      for (const [n, t] of store) {
        const k = tf.tensor1d(keep);
        const r = tf.tidy(() => {
          if (n === 'W_enc') return tf.mul(t, tf.reshape(k, [1, dSae]));
          if (n === 'W_dec') return tf.mul(t, tf.reshape(k, [dSae, 1]));
          if (n === 'b_enc' || n === 'log_threshold') return tf.mul(t, k);
          return tf.clone(t);
        });
        k.dispose();
        t.dispose();
        store.set(n, r);
      }
    }
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}

/** Removes from each decoder row's gradient its component along the (unit) row. */
export function projectDecoderGrad(W_dec: tf.Tensor2D, g: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.sub(g, tf.mul(tf.sum(tf.mul(g, W_dec), 1, true), W_dec)) as tf.Tensor2D);
}

export function normalizeRows(W: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(W, tf.add(tf.norm(W, 'euclidean', 1, true), 1e-12)) as tf.Tensor2D);
}
