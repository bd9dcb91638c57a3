// C[M, N] = A[M, K] B[K, N] (+ C) on strided views: element (i, j) of A is A[i * ars + j * acs]. The native
// GEMM where it is built (both cores, AVX-512/AVX2), else a plain loop.
import { native, nativeThreads } from '../native/kernels.js';

export function gemm(M: number, N: number, K: number, A: Float32Array, ars: number, acs: number, B: Float32Array, brs: number, bcs: number, C: Float32Array, ldc: number, accumulate = false): void {
  const mod = native();
  if (mod) return mod.gemm(M, N, K, A, ars, acs, B, brs, bcs, C, ldc, accumulate, nativeThreads());
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = accumulate ? C[i * ldc + j] : 0;
      for (let p = 0; p < K; p++) s += A[i * ars + p * acs] * B[p * brs + j * bcs];
      C[i * ldc + j] = s;
    }
  }
}
