// Dense single-precision GEMM, C = A B (+ C), in the BLIS/Goto layout: B is packed once into K-blocks of
// NR-wide panels, each task packs its MC x KC block of A into MR-high panels, and a register-tiled
// microkernel (MR x NR accumulators) runs over them. Operands are strided views, so A^T B, A B^T and
// A^T B^T need no separate transposes.
#pragma once
#include "pool.h"
#include "simd.h"

namespace sdl {

struct View {
  const float* p;
  long rs, cs;  // element (i, j) is p[i * rs + j * cs]
};

// C[M, N] (row stride ldc) = A[M, K] B[K, N] (+ colBias[j] on every row, when given), or C += A B when accumulate.
void gemm(Pool& pool, int M, int N, int K, View A, View B, float* C, long ldc, bool accumulate, const float* colBias = nullptr);

}  // namespace sdl
