// Dense matrix helpers on row-major Float32Arrays: the GEMM (native where built), transposes, row concatenation.
import { native, nativeThreads } from '../native/kernels.js';

/** C[M, N] = A[M, K] B[K, N] (+ C) on strided views (element (i, j) of A is A[i * ars + j * acs]); native where built. */
export function gemm(
  M: number,
  N: number,
  K: number,
  A: Float32Array,
  ars: number,
  acs: number,
  B: Float32Array,
  brs: number,
  bcs: number,
  C: Float32Array,
  ldc: number,
  accumulate = false,
): void {
  const mod = native();
  if (mod) {
    mod.gemm(M, N, K, A, ars, acs, B, brs, bcs, C, ldc, accumulate, nativeThreads());
    return;
  }
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = accumulate ? C[i * ldc + j] : 0;
      for (let p = 0; p < K; p++) s += A[i * ars + p * acs] * B[p * brs + j * bcs];
      C[i * ldc + j] = s;
    }
  }
}

/** Scales each row of a row-major [rows, cols] matrix to unit Euclidean norm, in place (a decoder's initialisation); returns it. */
export function unitRows(a: Float32Array, rows: number, cols: number): Float32Array {
  for (let j = 0; j < rows; j++) {
    const row = a.subarray(j * cols, (j + 1) * cols);
    const n = Math.hypot(...row);
    row.forEach((v, i) => (row[i] = v / n));
  }
  return a;
}

/** Transposes a row-major [rows, cols] matrix into [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number, out?: Float32Array): Float32Array {
  return transposeRows(a, rows, cols, 0, cols, out);
}

/**
 * Rows [r0, r1) of the transpose of `a` ([rows, cols] row-major), as [r1 - r0, rows]: a transpose written in pieces.
 * Into `out` when given (another array than `a`, at least that long).
 */
export function transposeRows(
  a: Float32Array,
  rows: number,
  cols: number,
  r0: number,
  r1: number,
  out: Float32Array = new Float32Array((r1 - r0) * rows),
): Float32Array {
  if (out.buffer === a.buffer || out.length < (r1 - r0) * rows) throw new Error('transpose: the output overlaps the input or is too short');
  for (let i = 0; i < rows; i++) for (let j = r0; j < r1; j++) out[(j - r0) * rows + i] = a[i * cols + j];
  return out;
}

/** Concatenates rows (each cut to d values) into one row-major [rows, d] matrix. */
export function concatRows(rows: Float32Array[], d: number): Float32Array {
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, i) => out.set(r.subarray(0, d), i * d));
  return out;
}
