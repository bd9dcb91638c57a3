// The TopK encoder fused with its GEMM. pre = x~ W_enc + b_enc is produced in cache-sized blocks (gemmBlocks) and
// each row keeps its k largest positive entries as the blocks pass, so the [rows, latents] pre-activations are
// never stored: at 24,576 latents and a batch of 4,096 that is 403 MB less memory and one write and one read of
// it less per step. The selection equals topkRow's (ties: the lower index first; entries sorted by index).
#pragma once
#include <cstdint>
#include <vector>

#include "engine.h"
#include "gemm.h"
#include "util.h"

namespace sdl {

// Rows of A [n][dIn] (row stride lda: a CLT reads one layer's slice of each row) through W_encT [m][dIn] and b_enc:
// out gets row b's top-k at b * k (start, count, idx, val sized here). When `dead` (ascending latent indices) is
// non-empty and aux is given, aux gets each row's top-kAux positive pre-activations among the dead latents, at
// b * kAux (AuxK's selection).
// `screen` (Config::screen): 1 screens the selection in bf16 where that is faster (screen.h: the same result), 2
// wherever the processor can. Returns whether it was screened. With `cols` (exact path only), latent j is W_encT's
// row cols[j] and b_enc holds their biases in that order: a top k among a subset of latents, indices into it.
bool encodeTopK(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k, Sparse& out,
                const std::vector<int32_t>& dead, int kAux, Sparse* aux, Screen screen, const int32_t* cols = nullptr, size_t chunkBudget = 0);

// The fused encoder for BatchTopK: collects each row's entries above `floor` (and AuxK's dead-latent top-kAux, as
// encodeTopK does; rows of A at stride lda) without storing the pre-activations. When at least as many candidates as the batch selects were
// found, the batch's k-th largest is among them and the selection is exact; otherwise the caller recomputes.
// `screen` as encodeTopK's; a screened call may leave out candidates below the batch's keepTop largest, and its
// out.npos stands in for the positive count (see screenAbove). Returns whether it was screened.
bool encodeAbove(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, float floor, Candidates& out,
                 const std::vector<int32_t>& dead, int kAux, Sparse* aux, Screen screen, long keepTop = 0);

// A floor for a batch-wide selection of `want` entries with no threshold to go by: the want-th largest of the rows'
// own top k2 (their union holds `want` entries at or above it, so the batch's want-th largest is too), or -1 when the
// rows hold fewer than `want` positive entries between them. `rows` is scratch.
float rowsTopFloor(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k2, long want, Sparse& rows,
                   Screen screen);

// Gives back the fused selections' per-thread arrays, kept from call to call otherwise (a lean engine, between the
// phases of a step: AuxK's top k_aux in the dead latents' selection holds 2.8 MB a thread at k_aux 384).
void encodeRelease(Pool& pool);

// Fills sp with rows [0, B): each(b, f) calls f(latent, value) for row b's entries in order. Two passes (count, then
// fill) so each row writes its own slice in parallel. Used to turn encodeAbove's candidates into a selection.
template <class Each>
void fillSparse(Pool& pool, int B, Sparse& sp, Each&& each) {
  pool.range(B, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++) {
      int n = 0;
      each(b, [&](int32_t, float) { n++; });
      sp.count[b] = n;
    }
  });
  long total = 0;
  for (int b = 0; b < B; b++) { sp.start[b] = total; total += sp.count[b]; }
  ensureGrowing(sp.idx, (size_t)total + 1);
  ensureGrowing(sp.val, (size_t)total + 1);
  pool.range(B, [&](long b0, long b1, int) {
    for (long b = b0; b < b1; b++) {
      long s = sp.start[b];
      each(b, [&](int32_t j, float v) { sp.idx[s] = j; sp.val[s] = v; s++; });
    }
  });
}

}  // namespace sdl
