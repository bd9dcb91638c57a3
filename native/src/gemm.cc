#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "util.h"

namespace sdl {
namespace {

// Depth of a packed block: a KC x NR panel of B stays in L1. On AVX2 the next panel is fetched while the current one
// runs (below), and both fit in L1 at 128 deep (8 KB each): gemmBlocks at 4096 x 768 x 5,376 on a Zen 3 core went
// from 55-64 to 66-71 GFLOP/s (docs/BENCHMARKS.md). AVX-512's panel is twice as wide (32 KB at 256): unchanged there,
// and the generic build gained nothing from either.
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr int KC = 128;
constexpr bool kFetchNextPanel = true;
#else
constexpr int KC = 256;
constexpr bool kFetchNextPanel = false;
#endif
constexpr int MC = MR * 12;  // rows of A per task block (MC x KC floats stay in L2)
constexpr int NC = NR * 48;  // columns per task block
constexpr int kWideMC = (96 * 1024 / KC) / MR * MR;  // rows of A^T per task block: 384 KB of packed A
#if defined(__AVX512F__)
constexpr int kWidestWide = 768;  // the widest B (N) whose A^T tasks take up to kWideMC rows (gemm())
#else
constexpr int kWidestWide = 512;
#endif
// Depths of A^T that packA asks for ahead of the one it copies, and how many it copies at a time from how wide an
// A^T on (below).
constexpr int kPackAhead = 8;
constexpr int kDepthBlock = 8;
constexpr long kDepthBlockFrom = 4096;

using Buffer = AlignedBuffer<float>;

// B packed whole (gemm(), and gemmBlocks when B fits one chunk), per calling thread, kept between products.
thread_local Buffer bWhole;

// Per-thread C blocks of gemm()'s tasks (see there); rows kCPad floats longer than a multiple of NR.
constexpr int kCPad = 16;
Buffer& cBuffer() {
  static thread_local Buffer buf;
  return buf;
}

// gemmBlocks' C blocks, per thread (each pool thread runs its tasks in its own buffer), rows padded as gemm()'s.
Buffer& blocksCBuffer() {
  static thread_local Buffer buf;
  return buf;
}

// Per-thread A-panel buffers (threads are identified by the pool's thread index).
Buffer& aBuffer(int thread) {
  static thread_local Buffer buf;
  (void)thread;
  return buf;
}

// Packing. A panel is W lines (MR rows of A, or NR columns of B) laid out depth by depth: out[p][W], lines past
// `lines` zero. The operands are strided views, so a panel's source is one of two shapes: each line's depths
// contiguous (A row-major, or W_enc^T's columns: the panel is a transpose), or each depth's lines contiguous (A^T,
// B row-major: the panel is a row-by-row copy). With N small (a decoder's or a weight gradient's product, N = d_in)
// every packed entry of A serves only 2 N flops, and a float at a time the packing was a fifth of a dense ReLU step
// at 128 x 1,024 (docs/BENCHMARKS.md).
#if defined(__AVX2__)
// r[i] = row i of an 8 x 8 block; afterwards r[q] = its column q.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// The first w (8, 6 or 4: what W - 8 g can be for MR and NR) lanes of v at d.
inline void storeLanes(float* d, __m256 v, int w) {
  if (w == 8) {
    _mm256_storeu_ps(d, v);
    return;
  }
  _mm_storeu_ps(d, _mm256_castps256_ps128(v));
  if (w == 6) _mm_storel_pi(reinterpret_cast<__m64*>(d + 4), _mm256_extractf128_ps(v, 1));
}
#endif

// Each line's depths contiguous: line(i) points at line i's first depth.
template <int W, class Line>
void packTransposed(Line line, int lines, int kc, float* out) {
  int p0 = 0;
#if defined(__AVX2__)
  static_assert(W % 2 == 0 && (W % 8 == 0 || W % 8 >= 4), "storeLanes stores 8, 6 or 4 lanes");
  // Eight depths at a time: eight lines' vectors (zeros past the last line), transposed, give eight W-wide rows.
  for (; p0 + 8 <= kc; p0 += 8)
    for (int g = 0; g < W; g += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = g + i < lines ? _mm256_loadu_ps(line(g + i) + p0) : _mm256_setzero_ps();
      transpose8(r);
      for (int q = 0; q < 8; q++) storeLanes(out + (long)(p0 + q) * W + g, r[q], W - g < 8 ? W - g : 8);
    }
#endif
  for (int i = 0; i < lines; i++) {
    const float* src = line(i);
    for (int p = p0; p < kc; p++) out[(long)p * W + i] = src[p];
  }
  for (int i = lines; i < W; i++)
    for (int p = p0; p < kc; p++) out[(long)p * W + i] = 0.f;
}

// Depths at stride ds, lines at stride ls (src: line 0 of depth 0).
template <int W>
void packPanel(const float* src, long ls, long ds, int lines, int kc, float* out) {
  if (ds == 1) {
    packTransposed<W>([&](int i) { return src + (long)i * ls; }, lines, kc, out);
    return;
  }
  for (int p = 0; p < kc; p++) {
    const float* s = src + (long)p * ds;
    float* d = out + (long)p * W;
    if (ls == 1 && lines == W) {
      std::memcpy(d, s, sizeof(float) * W);  // a constant size: a few vector moves
      continue;
    }
    int i = 0;
    for (; i < lines; i++) d[i] = s[(long)i * ls];
    for (; i < W; i++) d[i] = 0.f;
  }
}

// One depth of an A^T panel: the first `lines` (MR or fewer) of src's floats into d's MR, zeros past them.
inline void packLine(const float* src, int lines, float* d) {
  if (lines >= MR) {
    std::memcpy(d, src, sizeof(float) * MR);  // a constant size: a few vector moves
    return;
  }
  int i = 0;
  for (; i < lines; i++) d[i] = src[i];
  for (; i < MR; i++) d[i] = 0.f;
}

// Packs rows [i0, i0 + mc) and depths [k0, k0 + kc) of A into MR-high panels: panel r holds a[p][MR].
void packA(const View& A, int i0, int mc, int k0, int kc, float* out) {
  if (A.rs == 1 && A.cs != 1) {
    // A^T (a weight gradient's activations): each depth is a row in memory, read once across all the panels. Panel
    // by panel, every depth would be a new line 4 cs bytes past the last, and at cs a multiple of 1,024 (every
    // dictionary width here) all of a panel's lines fall in one set of L1: each panel fetched them again from L2.
    // Each depth's stretch lies a whole row of A (cs floats, 16-96 KB) past the last, further than the processor's
    // prefetchers follow: the stretch kPackAhead depths on is asked for now, a cache line at a time. The weight
    // gradients' products (A^T B with A [4,096, latents]) 4-7% faster at 512 x 4,096 and 768 x 24,576, 18-28% at
    // 128 x 1,024 (gemm alone, min of 5-7, two threads; docs/BENCHMARKS.md, stop 67).
    if (A.cs >= kDepthBlockFrom) {
      // kDepthBlock depths at a time: their stretches (8 x 1.5 KB at 378 rows) stay in L1 while each panel takes its
      // kDepthBlock x MR floats, contiguous, instead of every panel taking MR floats a depth (27 write streams at
      // once, 56 bytes each a depth). The weight gradients' products at 768 x 24,576 and 512 x 4,096 2-14% faster
      // (gemm alone, five alternated pairs each), 768 x 6,144 the same or faster; narrower A^T keep the loop below,
      // which this one's code, a depth at a time, was a fifth to a third slower than at 64 x 512 and 128 x 1,024
      // (docs/BENCHMARKS.md, stop 68). The same floats in the same places either way.
      const float* const a = A.p + i0;
      const long cs = A.cs;
      for (int p0 = 0; p0 < kc; p0 += kDepthBlock) {
        const int p1 = p0 + kDepthBlock < kc ? p0 + kDepthBlock : kc;
        for (int p = p0; p < p1 && p + kPackAhead < kc; p++) {
          const char* ahead = reinterpret_cast<const char*>(a + (long)(k0 + p + kPackAhead) * cs);
          for (long o = 0; o < (long)mc * (long)sizeof(float); o += 64) __builtin_prefetch(ahead + o, 0, 3);
        }
        for (int ir = 0; ir < mc; ir += MR)
          for (int p = p0; p < p1; p++) packLine(a + (long)(k0 + p) * cs + ir, mc - ir, out + (long)ir * kc + (long)p * MR);
      }
      return;
    }
    for (int p = 0; p < kc; p++) {
      const float* src = A.p + i0 + (long)(k0 + p) * A.cs;
      if (p + kPackAhead < kc) {
        const char* ahead = reinterpret_cast<const char*>(src + (long)kPackAhead * A.cs);
        for (long o = 0; o < (long)mc * (long)sizeof(float); o += 64) __builtin_prefetch(ahead + o, 0, 3);
      }
      for (int ir = 0; ir < mc; ir += MR) packLine(src + ir, mc - ir, out + (long)ir * kc + (long)p * MR);
    }
    return;
  }
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = mc - ir < MR ? mc - ir : MR;
    packPanel<MR>(A.p + (long)(i0 + ir) * A.rs + (long)k0 * A.cs, A.rs, A.cs, mr, kc, out + (long)ir * kc);
  }
}

// Packs depths [k0, k0 + kc) and the NR-wide panel starting at column j0 of B: out[p][NR]. With `cols`, column j
// is B's column cols[j].
void packBPanel(const View& B, int k0, int kc, int j0, int nr, float* out, const int32_t* cols) {
  if (!cols) {
    packPanel<NR>(B.p + (long)k0 * B.rs + (long)j0 * B.cs, B.cs, B.rs, nr, kc, out);
  } else if (B.rs == 1) {
    packTransposed<NR>([&](int j) { return B.p + (long)k0 + (long)cols[j0 + j] * B.cs; }, nr, kc, out);
  } else {
    for (int j = 0; j < nr; j++) {
      const float* src = B.p + (long)k0 * B.rs + (long)cols[j0 + j] * B.cs;
      for (int p = 0; p < kc; p++) out[(long)p * NR + j] = src[(long)p * B.rs];
    }
    for (int j = nr; j < NR; j++)
      for (int p = 0; p < kc; p++) out[(long)p * NR + j] = 0.f;
  }
}

// C tile (mr x nr) = or += a-panel x b-panel over kc.
inline void microkernel(int kc, const float* __restrict a, const float* __restrict b, float* __restrict c, long ldc, int mr, int nr,
                        bool overwrite, const float* bias) {
  vf acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[i][v] = vsplat(0.f);
  for (int p = 0; p < kc; p++) {
    vf bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) bv[v] = vload(b + p * NR + v * VW);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      vf ai = vsplat(a[p * MR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[i][v] += ai * bv[v];
    }
  }
  if (mr == MR && nr == NR) {
    // The whole tile, from registers (the partial path's per-lane reads below would keep acc in memory).
    if (bias) {
      // Only on the first depth block, which overwrites C.
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) {
        vf bv = vload(bias + v * VW);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) acc[i][v] += bv;
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) {
        float* cp = c + i * ldc + v * VW;
        vstore(cp, overwrite ? acc[i][v] : vload(cp) + acc[i][v]);
      }
    return;
  }
  float t[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) vstore(t[i] + v * VW, acc[i][v]);
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      const float x = bias ? t[i][j] + bias[j] : t[i][j];
      float* cp = c + i * ldc + j;
      *cp = overwrite ? x : *cp + x;
    }
}

// One depth block of C[0..mc) x [j0, j0 + nc) (C points at its first entry) from the packed A panels Ap (kc deep)
// and B's K-block Bk: overwritten (plus bias[0..nc) when given) or accumulated. gemm and gemmBlocks both run it.
void tile(int kc, const float* Ap, const float* Bk, int j0, int nc, int mc, float* C, long ldc, bool overwrite, const float* bias) {
  for (int jr = 0; jr < nc; jr += NR) {
    int nr = nc - jr < NR ? nc - jr : NR;
    const float* bp = Bk + (long)((j0 + jr) / NR) * kc * NR;
    // The panel after this one (contiguous in the packing; past a column block's end it is another K-block's, fetched
    // for nothing) is asked into L1 a share per A panel: otherwise the first microkernel on each panel waits on L3
    // for every depth (one cache line of B per depth at NR = 16).
    const float* next = bp + (long)kc * NR;
    const int aPanels = (mc + MR - 1) / MR, share = (kc + aPanels - 1) / aPanels;
    for (int ir = 0; ir < mc; ir += MR) {
      int mr = mc - ir < MR ? mc - ir : MR;
      if (kFetchNextPanel && jr + NR < nc) {
        const int l0 = (ir / MR) * share, l1 = l0 + share < kc ? l0 + share : kc;
        for (int l = l0; l < l1; l++) __builtin_prefetch(next + (long)l * NR, 0, 3);
      }
      microkernel(kc, Ap + (long)ir * kc, bp, C + (long)ir * ldc + jr, ldc, mr, nr, overwrite, bias ? bias + jr : nullptr);
    }
  }
}

// Columns [c0, c0 + cn) of B packed into Bp: K-block kb at Bp + k0 * stride, where stride (returned) is the columns'
// padded width; within it, panel jp (columns c0 + jp NR on) at jp * kc * NR. On the pool, or on this thread alone.
// gemm() packs all of B this way, gemmBlocks a column chunk at a time.
long packColumns(Pool* pool, const View& B, int K, int c0, int cn, float* Bp, const int32_t* cols) {
  const int panels = (cn + NR - 1) / NR, nKBlocks = (K + KC - 1) / KC;
  const long stride = (long)panels * NR;
  auto one = [&](int t) {
    const int kb = t / panels, jp = t % panels;
    const int k0 = kb * KC, kc = K - k0 < KC ? K - k0 : KC;
    const int nr = cn - jp * NR < NR ? cn - jp * NR : NR;
    packBPanel(B, k0, kc, c0 + jp * NR, nr, Bp + (long)k0 * stride + (long)jp * kc * NR, cols);
  };
  if (pool) pool->run(nKBlocks * panels, [&](int t, int) { one(t); });
  else
    for (int t = 0; t < nKBlocks * panels; t++) one(t);
  return stride;
}

// Rows of A per gemm() task: a multiple of MR in [lo, hi] (M rounded up to MR if that is less), the one whose tasks
// (row blocks x column blocks of NC, claimed in order by whichever thread is free, so each goes to the thread with the
// least work so far) leave the threads' work most even, the largest of those within 1% of the best. A fixed height
// left one core idle at the end: a weight gradient at 1,024 latents (M) x d_in 128 in the wide blocks (378 rows) was
// 3 tasks on 2 threads, 646 rows against 378 (ReLU+L1 at 128 x 1,024, 200 steps: 4.08-4.31 -> 3.75-3.91 s, stop 47);
// at 4,096 x 512, 11 tasks (300-304 -> 306-316 GFLOP/s). The row blocks only group the work: every entry is summed
// in the same order whatever their height (a test compares 1, 2 and 3 threads bit for bit).
int balancedRows(int M, int N, int threads, int lo, int hi) {
  const int top = std::min(hi, (M + MR - 1) / MR * MR);
  if (threads <= 1 || top <= lo) return std::max(top, MR);
  std::vector<double> load(threads), span;
  for (int mc = top; mc >= lo; mc -= MR) {
    std::fill(load.begin(), load.end(), 0.0);
    for (int i0 = 0; i0 < M; i0 += mc)
      for (int j0 = 0; j0 < N; j0 += NC) {
        // Work in whole register tiles: a block's last partial panel costs a full one.
        const int rows = std::min(mc, M - i0), cols = std::min(NC, N - j0);
        *std::min_element(load.begin(), load.end()) += (double)((rows + MR - 1) / MR) * ((cols + NR - 1) / NR);
      }
    span.push_back(*std::max_element(load.begin(), load.end()));
  }
  const double least = *std::min_element(span.begin(), span.end());
  int q = 0;
  while (span[q] > least * 1.01) q++;
  return top - q * MR;
}

}  // namespace

void gemm(Pool& pool, int M, int N, int K, View A, View B, float* C, long ldc, bool accumulate, const float* colBias) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) C[(long)i * ldc + j] = (accumulate ? C[(long)i * ldc + j] : 0.f) + (colBias ? colBias[j] : 0.f);
    return;
  }
  const int nKBlocks = (K + KC - 1) / KC;
  float* Bp = bWhole.get((size_t)K * ((N + NR - 1) / NR) * NR);
  const long Npad = packColumns(&pool, B, K, 0, N, Bp, nullptr);
  // Rows of A per task. A^T (a weight gradient's [batch, latents] activations) is packed a row of memory per depth,
  // each task reading its rows' stretch of it: at 72 rows (288 bytes, the next depth 4 cs bytes on) and few columns
  // of B to spread it over (N = d_in 128), the packing was a fifth of a dense ReLU step at 128 x 1,024. There a task
  // takes MC to kWideMC rows (up to an L2's worth of packed A). Measured on a Zen 3 (docs/BENCHMARKS.md): 1,024 x 128
  // x 4,096 ~1.3x faster, 4,096 x 512 x 4,096 ~1.2x, 6,144 x 768 x 4,096 ~1.2x slower, so N = 512 is the widest that
  // gets it, in the height between those that evens the threads' work (balancedRows). Otherwise MC rows: evening the
  // work with heights down to 2/3 MC made ReLU+L1's dense steps at 64 x 512 7% slower (1,311-1,321 -> 1,407-1,415 ms
  // for 200 steps, stop 47), and at 4,096 rows there are 25 or more tasks. With packA fetching the depths ahead
  // (stop 67), the Zen 5 machine's AVX-512 build gains from wide tasks at N = 768 too: 24,576 x 768 x 4,096 468-484
  // against 507-556 ms (min of 4, three rounds), 6,144 x 768 x 4,096 117-120 against 119-130 ms; the other builds
  // keep 512, as measured on the Zen 3.
  const bool wide = A.rs == 1 && A.cs != 1 && N <= kWidestWide;
  const int mcStep = wide ? balancedRows(M, N, pool.size(), MC, kWideMC) : MC;
  const int mBlocks = (M + mcStep - 1) / mcStep, nBlocks = (N + NC - 1) / NC;
  pool.run(mBlocks * nBlocks, [&](int t, int thread) {
    int ib = t / nBlocks, jb = t % nBlocks;
    int i0 = ib * mcStep, mc = M - i0 < mcStep ? M - i0 : mcStep;
    int j0 = jb * NC, nc = N - j0 < NC ? N - j0 : NC;
    float* Ap = aBuffer(thread).get((size_t)mcStep * KC);
    float* Ct = C + (long)i0 * ldc + j0;
    // Over more than one depth block the task's C block is read and written once per block: it is summed in a
    // contiguous per-thread buffer instead, its rows kCPad floats past a multiple of NR (so no two rows are a multiple
    // of 4 KB apart, as C's are at ldc = 768 or 6,144: d_in or the latents), and written to C once. The dense ReLU
    // step's products at 512 and 768 wide ran 4-16% faster, the step 1.15x at 768 x 6,144 (docs/BENCHMARKS.md).
    // The same sums in the same order: when accumulating, the buffer starts as C's block.
    float* Cb = Ct;
    long ldb = ldc;
    if (nKBlocks > 1) {
      ldb = (nc + NR - 1) / NR * NR + kCPad;
      Cb = cBuffer().get((size_t)mc * ldb);
      if (accumulate)
        for (int i = 0; i < mc; i++) std::memcpy(Cb + (long)i * ldb, Ct + (long)i * ldc, sizeof(float) * nc);
    }
    for (int kb = 0; kb < nKBlocks; kb++) {
      int k0 = kb * KC, kc = K - k0 < KC ? K - k0 : KC;
      packA(A, i0, mc, k0, kc, Ap);
      tile(kc, Ap, Bp + (long)k0 * Npad, j0, nc, mc, Cb, ldb, kb == 0 && !accumulate, colBias && kb == 0 ? colBias + j0 : nullptr);
    }
    if (Cb != Ct)
      for (int i = 0; i < mc; i++) std::memcpy(Ct + (long)i * ldc, Cb + (long)i * ldb, sizeof(float) * nc);
  });
}

namespace {
constexpr int BMC = MR * 12;  // rows per gemmBlocks task: the whole K of their packed A stays in L2
constexpr int BNC = NR * 16;  // columns per block handed to the sink: BMC x BNC floats of C stay in L2 too
}  // namespace

// gemmBlocks' packed column chunk, per calling thread (kept between products, as bWhole).
thread_local Buffer bChunk;
// 16 MiB: at d_in 768 a chunk of 5,376 columns (21 column blocks; five chunks for 24,576 latents), which stays in the
// shared L3 while every row block runs over it. Packing all of W_enc at once (75 MB there) was the encoder's largest
// buffer and set fit's peak memory; with chunks the gradient's buffers do (~45 MB with AuxK). Fewer chunks mean fewer
// merges of AuxK's running selection (each row's k_aux so far, once per chunk): 8 MiB cost 4-18% per encoder call
// with a fifth of the latents dead.
std::atomic<size_t> chunkBytes{(size_t)16 << 20};

void gemmRelease() {
  bWhole.release();
  bChunk.release();
}

void gemmReleaseThread() {
  aBuffer(0).release();
  cBuffer().release();
  blocksCBuffer().release();
}

size_t gemmChunkBytes() { return chunkBytes.load(); }
size_t setGemmChunkBytes(size_t bytes) { return chunkBytes.exchange(bytes); }

int gemmDepthBlock() { return KC; }
int gemmBlockRows() { return BMC; }
int gemmBlockCols() { return BNC; }

void gemmBlocks(Pool& pool, int M, int N, int K, View A, View B, const float* colBias, BlockSink& sink, const int32_t* cols, size_t chunkBudget) {
  if (M <= 0 || N <= 0 || K <= 0) throw std::invalid_argument("gemmBlocks: empty product");
  const int nKBlocks = (K + KC - 1) / KC;
  const long ldb = BNC + kCPad;
  // One row block over the columns [c0, c0 + cn) of a packed chunk (stride as packColumns'): its A packed (K-block
  // kb at k0 * BMC; unless packRows is false, when the thread's buffer holds these rows already), then each column
  // block's entries handed to the sink, in gemm()'s order per entry (K-block 0 overwrites, with the bias; later add).
  auto rowBlock = [&](int thread, int i0, int mc, const float* Bc, long stride, int c0, int cn, bool packRows) {
    float* Ap = aBuffer(thread).get((size_t)BMC * K);
    for (int kb = 0; packRows && kb < nKBlocks; kb++) {
      int k0 = kb * KC, kc = K - k0 < KC ? K - k0 : KC;
      packA(A, i0, mc, k0, kc, Ap + (long)k0 * BMC);
    }
    float* Cb = blocksCBuffer().get((size_t)BMC * ldb);
    for (int j0 = c0; j0 < c0 + cn; j0 += BNC) {
      const int nc = c0 + cn - j0 < BNC ? c0 + cn - j0 : BNC;
      for (int kb = 0; kb < nKBlocks; kb++) {
        int k0 = kb * KC, kc = K - k0 < KC ? K - k0 : KC;
        tile(kc, Ap + (long)k0 * BMC, Bc + (long)k0 * stride, j0 - c0, nc, mc, Cb, ldb, kb == 0, colBias && kb == 0 ? colBias + j0 : nullptr);
      }
      sink.block(thread, i0, mc, j0, nc, Cb, ldb);
    }
  };
  if (M <= BMC) {
    // One row block (the screened encoder's exact redo of a block), run here: B is packed a column block at a time,
    // just before use. The panels hold the same numbers in the same order, so every entry is the same. The rows stay
    // on this thread, so the sink is not paused between blocks.
    float* Bc = bChunk.get((size_t)K * BNC);
    for (int c0 = 0; c0 < N; c0 += BNC) {
      const int cn = N - c0 < BNC ? N - c0 : BNC;
      rowBlock(0, 0, M, Bc, packColumns(nullptr, B, K, c0, cn, Bc, cols), c0, cn, c0 == 0);
    }
    sink.rowsDone(0, 0, M);
    return;
  }
  // Chunks of whole column blocks, as wide as the byte budget allows.
  const long perBlock = (long)K * BNC * (long)sizeof(float);
  const int chunk = (int)std::max(1L, (long)((chunkBudget ? chunkBudget : chunkBytes.load()) / (size_t)perBlock)) * BNC;
  const int rowBlocks = (M + BMC - 1) / BMC;
  float* Bc = chunk >= N ? bWhole.get((size_t)K * ((N + NR - 1) / NR) * NR) : bChunk.get((size_t)K * chunk);
  for (int c0 = 0; c0 < N; c0 += chunk) {
    const int cn = N - c0 < chunk ? N - c0 : chunk;
    const long stride = packColumns(&pool, B, K, c0, cn, Bc, cols);
    const bool first = c0 == 0, last = c0 + cn >= N;
    pool.run(rowBlocks, [&](int t, int thread) {
      const int i0 = t * BMC, mc = M - i0 < BMC ? M - i0 : BMC;
      if (!first) sink.rowsResume(thread, i0, mc);
      rowBlock(thread, i0, mc, Bc, stride, c0, cn, true);
      if (last) sink.rowsDone(thread, i0, mc);
      else sink.rowsPause(thread, i0, mc);
    });
  }
}

}  // namespace sdl
