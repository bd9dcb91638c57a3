// The TopK family's encoder screened in bfloat16, exact in float32. The encoder GEMM runs in bf16 (AVX512_BF16's
// dot product does twice the float32 FMA's work per instruction) and gives each pre-activation an interval that
// provably holds the float32 GEMM's value: only the latents whose interval can reach the selection are kept (a row's
// top k for TopK; for BatchTopK, those above the floor and then, once the batch is screened, above the k B-th largest
// lower bound), their pre-activations are recomputed in float32 in the GEMM's own order of operations, and the
// selection is made among those. Selections and values are bit-identical to the exact paths' (encode.h).
//
// The interval. With x~, w~ the bf16 roundings of a row x and an encoder column w (residuals r_x = x - x~,
// r_w = w - w~, held exactly in float32), x.w - x~.w~ = x.r_w + r_x.w~, so by Cauchy-Schwarz
//   |x.w - x~.w~| <= |x| |r_w| + |r_x| |w~|,
// and both sums' own float32 rounding is at most gamma_n (|x| |w| + |x~| |w~| + 2 |b|), gamma_n = n u / (1 - n u)
// (u = 2^-24, n = 2 d_in + 8 roundings, the bf16 instruction's two per pair included). The row and column norms are
// computed once per call and rounded up, so an entry's half-width costs two FMAs. The bound is a worst case (about
// 25x the typical error at d_in 768), which keeps 56-100 candidates per row for TopK k 32: the float32 recomputation
// of those (grouped by latent, the batch rows transposed in registers) is what keeps screening from paying below
// d_in 256 (kScreenMinDepth).
#pragma once
#include <cstdint>
#include <vector>

#include "encode.h"
#include "engine.h"
#include "pool.h"

namespace sdl {

// Screened by default (Config::screen 1) from this encoder input width and this many products a row (d_in x latents):
// below them the bf16 GEMM's saving is smaller than the screen's per-entry and per-candidate work. TopK training
// steps, float32 vs screened (tokens/s, Gaussian rows, k 32, 2 runs each, stop 43): 128 x 1,024 283-296k vs
// 224-231k, 192 x 3,072 152-159k vs 135-148k, 256 x 2,048 174-184k vs 151-156k, 256 x 3,072 138k vs 128-144k (even),
// 512 x 2,048 97-99k vs 94-97k (even); 256 x 4,096 106-107k vs 115-116k, 384 x 3,072 90-91k vs 98-100k, 640 x 2,560
// 66-67k vs 71-73k, 512 x 4,096 52-64k vs 57-71k (1.08-1.14x in 7 alternated pairs), 768 x 6,144 25-27k vs 28-33k.
// The batch-wide selections (BatchTopK, Matryoshka) pay from the same sizes since their floor follows the threshold
// (engine.h BatchFloor; at 0.8 x the last threshold they paid only from 320 x 6,144). BatchTopK training steps, stop
// 47, alternated: 256 x 2,048 163-167k vs 146-151k, 256 x 4,096 103-113k vs 109-115k, 384 x 3,072 94-97k vs 93-99k,
// 512 x 2,048 95-96k vs 91-95k, 512 x 4,096 57-59k vs 68-69k; inference at the batch threshold (ms per 4,096 rows,
// medians of 12) 256 x 4,096 39-41 vs 40-43, 384 x 3,072 52-60 vs 45-51, 512 x 4,096 82-85 vs 74-76.
constexpr int kScreenMinDepth = 256;
constexpr long kScreenMinProducts = 1L << 20;

// True when this binary and processor can screen (the AVX-512 build on a processor with AVX512_BF16).
bool screenSupported();

// encodeTopK's selection (encode.h) for rows [0, n): out and aux (when given, with kAux >= 1 and `dead` non-empty)
// are already sized by the caller. Returns false when it cannot screen (no BF16 instructions, a non-finite or huge
// norm, indices past 2^31): the caller then runs the exact path, which writes every row again. `lean` as
// Screen::lean (encode.h).
bool screenTopK(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k, Sparse& out,
                const std::vector<int32_t>& dead, int kAux, Sparse* aux, bool lean);

// encodeAbove's candidates (encode.h: every entry > max(floor, 0), per row block) and AuxK's selection, screened the
// same way; false as screenTopK. For a caller that then selects the batch's keepTop largest (BatchTopK: k B; 0 keeps
// every candidate), `out` may leave out candidates that are provably below that selection, and `out.npos` is not the
// exact positive count but one that gives the same decisions where only min(keepTop, npos) <= out.total is asked:
// the exact count when every entry that might be positive is a candidate, else an upper bound on it. With floor 0
// and keepTop 0 (ReLU's sparse step) every positive entry is a candidate and `out.npos` is the exact count.
bool screenAbove(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, float floor, long keepTop,
                 Candidates& out, const std::vector<int32_t>& dead, int kAux, Sparse* aux, bool lean);

// Bytes of W_enc's bf16 copy the calling thread keeps for its next screened call (0 after a lean call): for tests.
size_t screenCopyBytes();
// The most bytes of screened values any pool thread keeps for the calling thread's screened calls: for tests.
size_t screenChunkBytes();

// Frees what the calling thread keeps between screened calls: W_enc's bf16 copy (38 MB at 768 x 24,576) and the held
// candidates (a lean engine gives them back after its encoder; the next call makes them again).
void screenRelease();

}  // namespace sdl
