// Ground-truth feature directions and sparse feature activations (the paper's Linear Representation
// Bench, Appendix C): unit directions with bounded pairwise interference, Bernoulli(1 - S) masks and
// c_min + Exp(beta) magnitudes; x_p = W_p x, and x_r = W_r x for transcoder benches.
import { Rng } from '../util/rng.js';
import { gemm } from '../tensor/linalg.js';

/**
 * n unit directions in R^d (rows of [n, d]) pushed to max |<w_i, w_j>| <= M by projected gradient descent on
 * sum_{i<j} relu(|<w_i, w_j>| - M)^2 (stricter than the paper's signed bound, eq. 28; with its margin epsilon = 1e-4). Each step is two GEMMs
 * (the Gram matrix and the gradient C W), so the paper's 1000 directions in 768 dimensions take seconds.
 */
export function featureDirections(n: number, d: number, maxInterference: number, seed: number, iters = 500, lr = 0.05): { W: Float32Array; achieved: number } {
  const rng = new Rng(seed);
  const W = new Float32Array(n * d);
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
  const G = new Float32Array(n * n),
    g = new Float32Array(n * d);
  // The paper's margin epsilon: pairs are pushed below M - eps, so float32 rounding never leaves one over M.
  const target = maxInterference - 1e-4;
  let worst = 1;
  for (let it = 0; it <= iters; it++) {
    gemm(n, n, d, W, d, 1, W, 1, d, G, n); // G = W W^T
    worst = 0;
    let any = false;
    for (let i = 0; i < n; i++) {
      G[i * n + i] = 0;
      for (let k = 0; k < n; k++) {
        if (k === i) continue;
        const a = Math.abs(G[i * n + k]);
        if (a > worst) worst = a;
        // Only pairs over the bound push each other apart: C_ik = 2 (|G_ik| - M) sign(G_ik).
        if (a <= target) G[i * n + k] = 0;
        else {
          G[i * n + k] = 2 * (a - target) * Math.sign(G[i * n + k]);
          any = true;
        }
      }
    }
    if (!any || it === iters) break;
    gemm(n, d, n, G, n, 1, W, d, 1, g, d); // gradient C W
    for (let i = 0; i < W.length; i++) W[i] -= lr * g[i];
    normalize();
  }
  return { W, achieved: worst };
}

export interface SparseSample {
  /** [N, n] feature activations. */
  x: Float32Array;
}

/** Each feature active with probability p (= 1 - S), magnitude c_min + Exp(beta). */
export function sparseFeatures(N: number, n: number, p: number | Float32Array, cMin: number, beta: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(N * n);
  for (let r = 0; r < N; r++)
    for (let i = 0; i < n; i++) {
      const pi = typeof p === 'number' ? p : p[i];
      if (rng.next() < pi) x[r * n + i] = cMin - beta * Math.log(1 - rng.next());
    }
  return x;
}

/** rows [N, n] times directions [n, d] -> [N, d]. */
export function embed(x: Float32Array, N: number, W: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(N * d);
  for (let r = 0; r < N; r++)
    for (let i = 0; i < n; i++) {
      const v = x[r * n + i];
      if (v === 0) continue;
      for (let j = 0; j < d; j++) out[r * d + j] += v * W[i * d + j];
    }
  return out;
}
