// The paper's theory instruments on small dense matrices (float64): the extreme-sparsity loss L~ (eq. 11),
// its block gradients inside a fixed activation pattern, and the constructions of Example 3.5 and
// Theorems 3.3 and 3.6. Matrices are row-major: W_E [nq, np], W_D [nr, nq], W_p [np, n], W_r [nr, n].

export type Mat = { rows: number; cols: number; a: Float64Array };
export const mat = (rows: number, cols: number, a?: ArrayLike<number>): Mat => ({ rows, cols, a: a ? Float64Array.from(a) : new Float64Array(rows * cols) });
const get = (m: Mat, r: number, c: number) => m.a[r * m.cols + c];

/** sigma with sigma(z)_i in {0, z_i}: ReLU, or TopK composed with ReLU (Example 3.5 uses Top-1 after ReLU). */
export type Sigma = (z: Float64Array) => Float64Array;
export const relu: Sigma = (z) => z.map((v) => (v > 0 ? v : 0));
export const topkRelu =
  (k: number): Sigma =>
  (z) => {
    const r = relu(z);
    const kth = [...r].sort((x, y) => y - x)[k - 1];
    let kept = 0;
    return r.map((v) => (v > 0 && v >= kth && kept++ < k ? v : 0));
  };

/** z_d = sigma(W_E w_p^d) for every feature d: [n][nq]. */
export function codes(WE: Mat, Wp: Mat, sigma: Sigma): Float64Array[] {
  return Array.from({ length: Wp.cols }, (_, d) => {
    const z = new Float64Array(WE.rows);
    for (let i = 0; i < WE.rows; i++) for (let j = 0; j < WE.cols; j++) z[i] += get(WE, i, j) * get(Wp, j, d);
    return sigma(z);
  });
}

/** L~ = sum_d M_d ||w_r^d - W_D sigma(W_E w_p^d)||^2 (eq. 11). */
export function lossTilde(WD: Mat, WE: Mat, Wp: Mat, Wr: Mat, M: ArrayLike<number>, sigma: Sigma): number {
  const Z = codes(WE, Wp, sigma);
  let L = 0;
  Z.forEach((z, d) => {
    for (let r = 0; r < WD.rows; r++) {
      let y = 0;
      for (let i = 0; i < WD.cols; i++) y += get(WD, r, i) * z[i];
      L += M[d] * (get(Wr, r, d) - y) ** 2;
    }
  });
  return L;
}

/** Gradients of L~ in both blocks, inside the current activation pattern (z linear in W_E there, Thm 3.2). */
export function gradTilde(WD: Mat, WE: Mat, Wp: Mat, Wr: Mat, M: ArrayLike<number>, sigma: Sigma): { gD: Mat; gE: Mat } {
  const Z = codes(WE, Wp, sigma);
  const gD = mat(WD.rows, WD.cols),
    gE = mat(WE.rows, WE.cols);
  Z.forEach((z, d) => {
    const e = new Float64Array(WD.rows); // residual w_r^d - W_D z
    for (let r = 0; r < WD.rows; r++) {
      let y = 0;
      for (let i = 0; i < WD.cols; i++) y += get(WD, r, i) * z[i];
      e[r] = get(Wr, r, d) - y;
    }
    for (let r = 0; r < WD.rows; r++) for (let i = 0; i < WD.cols; i++) gD.a[r * WD.cols + i] += -2 * M[d] * e[r] * z[i];
    for (let i = 0; i < WE.rows; i++) {
      if (z[i] === 0) continue; // inactive neurons do not depend on W_E inside the region
      let back = 0;
      for (let r = 0; r < WD.rows; r++) back += get(WD, r, i) * e[r];
      for (let j = 0; j < WE.cols; j++) gE.a[i * WE.cols + j] += -2 * M[d] * back * get(Wp, j, d);
    }
  });
  return { gD, gE };
}

/** Definition 3.1: the features that fire each neuron in isolation; dead / monosemantic / polysemantic. */
export function patternOf(WE: Mat, Wp: Mat, sigma: Sigma): number[][] {
  const Z = codes(WE, Wp, sigma);
  return Array.from({ length: WE.rows }, (_, i) => Z.map((z, d) => (z[i] > 0 ? d : -1)).filter((d) => d >= 0));
}

/** Example 3.5: the 2x2 spurious partial minimum. */
export function example35() {
  const I = mat(2, 2, [1, 0, 0, 1]);
  return { WE: mat(2, 2, [1, 1, 0, 0]), WD: mat(2, 2, [0.5, 0, 0.5, 0]), Wp: I, Wr: I, M: [1, 1], sigma: topkRelu(1) };
}

/** Theorem 3.3: W_D* = [W_r, 0], W_E* = [W_p^T; 0] (zero padding to nq >= n). */
export function theorem33(Wp: Mat, Wr: Mat, nq: number): { WE: Mat; WD: Mat } {
  const n = Wp.cols;
  const WE = mat(nq, Wp.rows),
    WD = mat(Wr.rows, nq);
  for (let d = 0; d < n; d++) {
    for (let j = 0; j < Wp.rows; j++) WE.a[d * Wp.rows + j] = get(Wp, j, d);
    for (let r = 0; r < Wr.rows; r++) WD.a[r * nq + d] = get(Wr, r, d);
  }
  return { WE, WD };
}

/**
 * Theorem 3.6: for a partition pattern realised by W_E (each feature fires exactly one neuron), the decoder of
 * eq. 55 (weighted least squares per neuron, dead neurons zero) makes both block gradients vanish.
 */
export function theorem36Decoder(WE: Mat, Wp: Mat, Wr: Mat, M: ArrayLike<number>, sigma: Sigma): Mat {
  const Z = codes(WE, Wp, sigma);
  const WD = mat(Wr.rows, WE.rows);
  for (let i = 0; i < WE.rows; i++) {
    let den = 0;
    const num = new Float64Array(Wr.rows);
    Z.forEach((z, d) => {
      if (z[i] === 0) return;
      den += M[d] * z[i] * z[i];
      for (let r = 0; r < Wr.rows; r++) num[r] += M[d] * z[i] * get(Wr, r, d);
    });
    if (den > 0) for (let r = 0; r < Wr.rows; r++) WD.a[r * WE.rows + i] = num[r] / den;
  }
  return WD;
}

/** A threshold activation: neuron i passes z_i when z_i > c_i (Theorem 3.8 takes realizability as thresholding). */
export const threshold =
  (c: ArrayLike<number>): Sigma =>
  (z) =>
    z.map((v, i) => (v > c[i] ? v : 0));

/**
 * Theorem 3.8: from an encoder whose threshold pattern is P = (F_1, ..., F_M) (neuron i fires for the sub-concepts
 * of parent i), the construction that splits off one sub-concept of parent i*: the weakest-responding child j*
 * (a_j* = min_j <w_E^i*, w_p^{d_j}>), the parent row scaled by lambda = (c + a_min) / (2 a_min) with its threshold
 * raised to c'' = (c + a_min) / 2 + eps, and a new neuron alpha w_p^{d_j*} with alpha = 2 c'' / (1 + M) and
 * threshold c''. Thresholds are per neuron (as JumpReLU's are); the other neurons keep c.
 */
export function theorem38(
  WE: Mat,
  Wp: Mat,
  children: number[][],
  c: number,
  parent: number,
  maxInterference: number,
  eps = 1e-9,
): { WE: Mat; thresholds: number[]; split: number; a: number[] } {
  const np = Wp.rows;
  const resp = (row: Float64Array | number[], d: number) => {
    let s = 0;
    for (let j = 0; j < np; j++) s += row[j] * get(Wp, j, d);
    return s;
  };
  const rowOf = (i: number) => WE.a.subarray(i * np, (i + 1) * np);
  const a = children[parent].map((d) => resp(rowOf(parent), d));
  let jStar = 0;
  a.forEach((v, j) => {
    if (v < a[jStar]) jStar = j;
  });
  const aMin = a[jStar];
  const lambda = (c + aMin) / (2 * aMin);
  const cpp = (c + aMin) / 2 + eps;
  const alpha = (2 * cpp) / (1 + maxInterference);
  const out = mat(WE.rows + 1, np);
  out.a.set(WE.a);
  for (let j = 0; j < np; j++) out.a[parent * np + j] *= lambda;
  const d = children[parent][jStar];
  for (let j = 0; j < np; j++) out.a[WE.rows * np + j] = alpha * get(Wp, j, d);
  const thresholds = Array.from({ length: WE.rows + 1 }, (_, i) => (i === parent || i === WE.rows ? cpp : c));
  return { WE: out, thresholds, split: d, a };
}

/** Largest off-diagonal inner product of the columns of W_p (the paper's M). */
export function maxInterference(Wp: Mat): number {
  let m = -Infinity;
  for (let a = 0; a < Wp.cols; a++)
    for (let b = a + 1; b < Wp.cols; b++) {
      let s = 0;
      for (let j = 0; j < Wp.rows; j++) s += get(Wp, j, a) * get(Wp, j, b);
      m = Math.max(m, s);
    }
  return m;
}

export interface MonteCarlo31 {
  /** Monte-Carlo estimate of L_SDL and its standard error. */
  L: number;
  se: number;
  /** eq. 11 with M_d = (1 - S) S^(n-1) E[x_d^2 | x_d > 0]. */
  Ltilde: number;
  /** The largest per-sample error seen (the theorem's C, estimated). */
  C: number;
  /** n^2 C (1 - S)^2 (eq. 12). */
  bound: number;
  samples: number;
}

/**
 * Theorem 3.1 by Monte Carlo: samples of the bench distribution (independent features, each active with
 * probability 1 - S at magnitude c_min + Exp(beta)) through a given dictionary, against eq. 11 and the bound of eq. 12.
 * Magnitudes are capped at cap (a bounded distribution keeps the theorem's C finite; positively homogeneous sigma
 * make the single-feature terms exact either way).
 */
export function theorem31(
  WD: Mat,
  WE: Mat,
  Wp: Mat,
  Wr: Mat,
  sigma: Sigma,
  o: { S: number; cMin: number; beta: number; cap: number; samples: number; seed: number },
): MonteCarlo31 {
  const n = Wp.cols;
  let state = o.seed * 2654435761 + 1;
  const rand = () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  const mag = () => Math.min(o.cap, o.cMin - o.beta * Math.log(1 - rand()));
  const p = 1 - o.S;
  let sum = 0,
    sum2 = 0,
    C = 0;
  const x = new Float64Array(n);
  const xp = new Float64Array(Wp.rows),
    xr = new Float64Array(Wr.rows),
    z = new Float64Array(WE.rows);
  for (let s = 0; s < o.samples; s++) {
    let active = 0;
    for (let d = 0; d < n; d++) {
      x[d] = rand() < p ? mag() : 0;
      if (x[d]) active++;
    }
    let e = 0;
    if (active) {
      xp.fill(0);
      xr.fill(0);
      z.fill(0);
      for (let d = 0; d < n; d++)
        if (x[d]) {
          for (let j = 0; j < Wp.rows; j++) xp[j] += x[d] * get(Wp, j, d);
          for (let j = 0; j < Wr.rows; j++) xr[j] += x[d] * get(Wr, j, d);
        }
      for (let i = 0; i < WE.rows; i++) for (let j = 0; j < WE.cols; j++) z[i] += get(WE, i, j) * xp[j];
      const q = sigma(z);
      for (let r = 0; r < WD.rows; r++) {
        let y = 0;
        for (let i = 0; i < WD.cols; i++) y += get(WD, r, i) * q[i];
        e += (xr[r] - y) ** 2;
      }
    }
    sum += e;
    sum2 += e * e;
    C = Math.max(C, e);
  }
  const L = sum / o.samples;
  const se = Math.sqrt(Math.max(0, sum2 / o.samples - L * L) / o.samples);
  // E[m^2] for m = min(cap, c_min + Exp(beta)), by quadrature on the exponential's quantiles.
  let m2 = 0;
  const K = 20000;
  for (let k = 0; k < K; k++) {
    const u = (k + 0.5) / K;
    const m = Math.min(o.cap, o.cMin - o.beta * Math.log(1 - u));
    m2 += (m * m) / K;
  }
  const Md = Array.from({ length: n }, () => p * o.S ** (n - 1) * m2);
  const Ltilde = lossTilde(WD, WE, Wp, Wr, Md, sigma);
  return { L, se, Ltilde, C, bound: n * n * C * p * p, samples: o.samples };
}
