// Each feature's nearest features by decoder cosine: the native kernel (nearestRows) where the kernels are built,
// else the TypeScript reference below, which selects the same way from the same blocks (held equal by a test).
import { native, nativeThreads } from '../native/kernels.js';
import { gemm } from '../tensor/linalg.js';
import { topIndices } from './select.js';

export interface Neighbors {
  n: number;
  /** [m, n] neighbour ids, best first (ties: the lower id first); -1 past the last. */
  other: Int32Array;
  cosine: Float32Array;
}

/** Each of the m unit rows' [m, d] n nearest other rows by cosine. */
export function nearestByCosine(unit: Float32Array, m: number, d: number, n: number): Neighbors {
  const mod = native();
  return mod ? { n, ...mod.nearestRows(unit, m, d, n, nativeThreads()) } : nearestByCosineReference(unit, m, d, n);
}

/** The reference: blocks of 256 rows' cosines with every row (memory O(m)), each row's n largest by topIndices. */
export function nearestByCosineReference(unit: Float32Array, m: number, d: number, n: number): Neighbors {
  const other = new Int32Array(m * n).fill(-1),
    cosine = new Float32Array(m * n);
  const blk = 256;
  const C = new Float32Array(Math.min(blk, m) * m);
  for (let i0 = 0; i0 < m; i0 += blk) {
    const rows = Math.min(blk, m - i0);
    gemm(rows, m, d, unit.subarray(i0 * d), d, 1, unit, 1, d, C, m);
    for (let r = 0; r < rows; r++) {
      const row = C.subarray(r * m, (r + 1) * m);
      row[i0 + r] = Number.NEGATIVE_INFINITY; // not its own neighbour
      const o = (i0 + r) * n;
      topIndices(row, n, true).forEach((j, q) => {
        other[o + q] = j;
        cosine[o + q] = row[j];
      });
    }
  }
  return { n, other, cosine };
}
