// The paper's theory instruments on small dense matrices (float64): the extreme-sparsity loss L~ (eq. 11),
// its block gradients inside a fixed activation pattern, and the constructions of Example 3.5 and
// Theorems 3.3 and 3.6. Matrices are row-major: W_E [nq, np], W_D [nr, nq], W_p [np, n], W_r [nr, n].

export type Mat = { rows: number; cols: number; a: Float64Array };
export const mat = (rows: number, cols: number, a?: ArrayLike<number>): Mat => ({ rows, cols, a: a ? Float64Array.from(a) : new Float64Array(rows * cols) });
const get = (m: Mat, r: number, c: number) => m.a[r * m.cols + c];

/** sigma with sigma(z)_i in {0, z_i}: ReLU, or TopK composed with ReLU (Example 3.5 uses Top-1 after ReLU). */
export type Sigma = (z: Float64Array) => Float64Array;
export const relu: Sigma = (z) => z.map((v) => (v > 0 ? v : 0));
export const topkRelu = (k: number): Sigma => (z) => {
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
  const gD = mat(WD.rows, WD.cols), gE = mat(WE.rows, WE.cols);
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
  const WE = mat(nq, Wp.rows), WD = mat(Wr.rows, nq);
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
