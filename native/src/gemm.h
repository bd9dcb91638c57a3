// Dense single-precision GEMM, C = A B (+ C), in the BLIS/Goto layout: B is packed once into K-blocks of
// NR-wide panels, each task packs its MC x KC block of A into MR-high panels, and a register-tiled
// microkernel (MR x NR accumulators) runs over them. Operands are strided views, so A^T B, A B^T and
// A^T B^T need no separate transposes.
#pragma once
#include <cstdint>

#include "pool.h"
#include "simd.h"

namespace sdl {

struct View {
  const float* p;
  long rs, cs;  // element (i, j) is p[i * rs + j * cs]
};

// C[M, N] (row stride ldc) = A[M, K] B[K, N] (+ colBias[j] on every row, when given), or C += A B when accumulate.
void gemm(Pool& pool, int M, int N, int K, View A, View B, float* C, long ldc, bool accumulate, const float* colBias = nullptr);

// Receives C = A B (+ colBias) one cache-sized block at a time (see gemmBlocks).
struct BlockSink {
  // Rows [i0, i0 + mc) x columns [j0, j0 + nc), complete over K, in a per-thread buffer with row stride ldc.
  virtual void block(int thread, int i0, int mc, int j0, int nc, const float* C, long ldc) = 0;
  // After the last column block of rows [i0, i0 + mc).
  virtual void rowsDone(int thread, int i0, int mc) = 0;
  // After the last column block of a column chunk when more chunks follow: the rows' state must be kept apart from
  // the thread's, for the next chunk may give these rows to another thread (rowsResume before its first block).
  virtual void rowsPause(int thread, int i0, int mc) = 0;
  virtual void rowsResume(int thread, int i0, int mc) = 0;
  virtual ~BlockSink() = default;
};

// C = A B (+ colBias) without ever holding C: each task takes a block of at most gemmBlockRows() rows and produces
// its columns in ascending blocks, handing each to the sink while it is still in cache (an epilogue, e.g. a TopK
// selection, then reads it from L2 instead of memory). The entries are bit-identical to gemm()'s. With `cols`, the
// product's column j is B's column cols[j] (colBias indexed by j): a subset of the columns, the same values.
// B is packed a column chunk at a time (gemmChunkBytes() of packed B, whole blocks): every row block runs over one
// chunk's columns (rowsPause after it), then over the next (rowsResume first), so the packed copy of B is a chunk,
// not all of W_enc (75 MB at 768 x 24,576). `chunkBudget` (bytes) in place of gemmChunkBytes() when not 0.
void gemmBlocks(Pool& pool, int M, int N, int K, View A, View B, const float* colBias, BlockSink& sink, const int32_t* cols = nullptr,
                size_t chunkBudget = 0);
// Frees the calling thread's packed copies of B (kept between products: a lean engine gives them back after its encoder).
void gemmRelease();
// Frees the calling thread's A panels and C blocks (~0.9 MB a thread at d_in 768), kept between products; a lean engine
// gives them back on every pool thread after its encoder (Pool::each).
void gemmReleaseThread();
// The most bytes of B that gemmBlocks packs at once (the chunk holds at least one column block whatever the setting);
// set returns the previous value. A tuning knob, process-wide: the tests make chunks small to cross many of them.
size_t gemmChunkBytes();
size_t setGemmChunkBytes(size_t bytes);
int gemmDepthBlock();  // depths per packed block: each entry is one FMA chain per block, blocks added in order
int gemmBlockRows();  // the most rows of one block
int gemmBlockCols();  // the most columns of one block

}  // namespace sdl
