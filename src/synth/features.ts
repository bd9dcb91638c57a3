// Ground-truth feature directions and sparse feature activations (the paper's Linear Representation
// Bench, Appendix C): unit directions with bounded pairwise interference, Bernoulli(1 - S) masks and
// c_min + Exp(beta) magnitudes; x_p = W_p x, and x_r = W_r x for transcoder benches.
import { Rng } from '../util/rng.js';

/** n unit directions in R^d (rows of [n, d]) pushed to max |<w_i, w_j>| <= M by projected gradient descent. */
export function featureDirections(n: number, d: number, maxInterference: number, seed: number, iters = 500, lr = 0.05): { W: Float32Array; achieved: number } {
  const rng = new Rng(seed);
  const W = new Float64Array(n * d);
  for (let i = 0; i < W.length; i++) W[i] = rng.normal();
  const normalize = () => {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += W[i * d + j] ** 2;
      s = Math.sqrt(s) || 1;
      for (let j = 0; j < d; j++) W[i * d + j] /= s;
    }
  };
  normalize();
  const g = new Float64Array(n * d);
  let worst = 1;
  for (let it = 0; it < iters; it++) {
    g.fill(0);
    worst = 0;
    // Penalty sum_{i<j} relu(|G_ij| - M)^2: only pairs over the bound push each other apart.
    for (let i = 0; i < n; i++) for (let k = i + 1; k < n; k++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += W[i * d + j] * W[k * d + j];
      const a = Math.abs(dot);
      if (a > worst) worst = a;
      if (a <= maxInterference) continue;
      const c = 2 * (a - maxInterference) * Math.sign(dot);
      for (let j = 0; j < d; j++) {
        g[i * d + j] += c * W[k * d + j];
        g[k * d + j] += c * W[i * d + j];
      }
    }
    if (worst <= maxInterference) break;
    for (let i = 0; i < W.length; i++) W[i] -= lr * g[i];
    normalize();
  }
  return { W: Float32Array.from(W), achieved: worst };
}

export interface SparseSample {
  /** [N, n] feature activations. */
  x: Float32Array;
}

/** Each feature active with probability p (= 1 - S), magnitude c_min + Exp(beta). */
export function sparseFeatures(N: number, n: number, p: number | Float32Array, cMin: number, beta: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(N * n);
  for (let r = 0; r < N; r++) for (let i = 0; i < n; i++) {
    const pi = typeof p === 'number' ? p : p[i];
    if (rng.next() < pi) x[r * n + i] = cMin - beta * Math.log(1 - rng.next());
  }
  return x;
}

/** rows [N, n] times directions [n, d] -> [N, d]. */
export function embed(x: Float32Array, N: number, W: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(N * d);
  for (let r = 0; r < N; r++) for (let i = 0; i < n; i++) {
    const v = x[r * n + i];
    if (v === 0) continue;
    for (let j = 0; j < d; j++) out[r * d + j] += v * W[i * d + j];
  }
  return out;
}
