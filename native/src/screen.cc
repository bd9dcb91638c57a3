#include "screen.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "encode.h"
#include "gemm.h"
#include "select.h"
#include "simd.h"
#include "util.h"

#if defined(__AVX512F__) && defined(__x86_64__)
#include <immintrin.h>
#define SDL_SCREEN 1
#endif

namespace sdl {

#ifndef SDL_SCREEN

bool screenSupported() { return false; }
bool screenTopK(Pool&, const float*, long, int, int, int, const float*, const float*, int, Sparse&, const std::vector<int32_t>&, int, Sparse*, bool) {
  return false;
}
bool screenAbove(Pool&, const float*, long, int, int, int, const float*, const float*, float, long, Candidates&, const std::vector<int32_t>&, int, Sparse*,
                 bool) {
  return false;
}
void screenRelease() {}
size_t screenCopyBytes() { return 0; }
size_t screenChunkBytes() { return 0; }

#else

bool screenSupported() {
  static const bool ok = __builtin_cpu_supports("avx512bf16");
  return ok;
}

namespace {

constexpr int SMR = 14;          // rows of the bf16 register tile (14 x 2 accumulators)
constexpr int SNR = 32;          // columns of the bf16 register tile
constexpr int SKC = 512;         // depth of a packed B block (256 bf16 pairs x 32 columns = 32 KB, in L1)
constexpr int SMC = SMR * 12;    // rows per task: their packed A (all of K) stays in L2
constexpr int SNC = SNR * 8;    // columns per block handed to the screen
constexpr double kU = 1.0 / 16777216.0;  // float32's unit roundoff, 2^-24
constexpr float kTiny = 1.0f / 2097152.0f;  // 2^-21 |value| in each half-width: the bound's own float32 roundings
// TopK's two-pass screen keeps a row block's screened values for up to this many bytes of latents at once, per
// thread (a chunk: all of them to 9,216 latents). At 768 x 24,576 the screen's own work beside the bf16 GEMM's was
// 0.29 of it with the whole row block held (17 MB a thread), 0.31 with 6 MiB chunks, 0.38 with 0.7 MB (in L2) and
// 0.37 in one pass.
constexpr size_t kTwoPassBytes = 6u << 20;

// bf16 rounding (to nearest even) of a finite float; subnormal results flush to zero here, so the residual
// records what the instruction (which treats bf16 subnormals as zero) actually multiplies.
inline uint16_t toBf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7FFFu + ((b >> 16) & 1u);
  uint16_t h = (uint16_t)(b >> 16);
  if ((h & 0x7F80u) == 0) h &= 0x8000u;
  return h;
}
inline float fromBf16(uint16_t h) {
  uint32_t b = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
// A double rounded up to the next float at or above it (the bounds only ever grow).
inline float upFloat(double d) {
  float f = (float)d;
  return (double)f >= d ? f : std::nextafter(f, INFINITY);
}

// Per-row candidates of one selection: latent, screened value and half-width, in latent order.
struct List {
  std::vector<int32_t> j;
  std::vector<float> p, e;
  std::vector<float> low;  // min-heap of the k largest lower bounds offered so far
  size_t n = 0, pruneAt = 0;
  int k = 0;
  float tau = -INFINITY;  // once k are offered, the smallest of them: below every top-k member's upper bound
  float tau0 = -INFINITY;  // a lower bound on the k-th largest value found apart from the offers (raise)
  void reset(int want) {
    n = 0;
    k = want;
    low.clear();
    tau = tau0 = -INFINITY;
    pruneAt = (size_t)std::max(2 * want, 64);
  }
  void room(size_t more) {
    if (j.size() < n + more) {
      size_t cap = std::max(2 * j.size(), n + more);
      j.resize(cap);
      p.resize(cap);
      e.resize(cap);
    }
  }
  // A candidate's lower bound: tau rises when it is among the k largest (k values at or above tau exist, so the
  // k-th largest value is at least tau, and a latent whose upper bound is below tau cannot be in the top k).
  void offer(float lo) {
    if ((int)low.size() < k) {
      low.push_back(lo);
      std::push_heap(low.begin(), low.end(), std::greater<float>());
      if ((int)low.size() == k) tau = std::max(tau0, low.front());
    } else if (lo > low.front()) {
      std::pop_heap(low.begin(), low.end(), std::greater<float>());
      low.back() = lo;
      std::push_heap(low.begin(), low.end(), std::greater<float>());
      tau = std::max(tau0, low.front());
    }
  }
  // Gives back a list's arrays when they grew past kKeep entries and past twice the row's own count. A thread's lists
  // are reused row slot by row slot, and each slot's arrays would stay at the most candidates any row in it ever had:
  // a batch-wide selection's lists held ~1.4M entries (17 MB) for rows that average ~175 candidates. The few rows
  // with more grow theirs again. Rows that all list more than kKeep keep theirs: a ReLU step screened at 5.8% of
  // 24,576 latents (~1,400 a row) gave back and grew every row's, and the screen's pass over the bf16 values took
  // 175-190 ms a thread instead of 45-60 (the page faults of memory freed and taken again).
  static constexpr size_t kKeep = 1024;
  void trim() {
    if (j.capacity() <= std::max(kKeep, 2 * n)) return;
    std::vector<int32_t>().swap(j);
    std::vector<float>().swap(p);
    std::vector<float>().swap(e);
  }
  // A lower bound on the k-th largest value found apart from the offers: tau is at least it from now on.
  void raise(float t) {
    tau0 = std::max(tau0, t);
    tau = std::max(tau, tau0);
  }
  // Drops the candidates whose upper bound is below tau.
  void prune() {
    // In place, 16 at a time: a store at w <= i only overwrites entries already read (and the room past n).
    room(16);
    const __m512 tv = _mm512_set1_ps(tau);
    size_t w = 0;
    for (size_t i = 0; i < n; i += 16) {
      const __mmask16 in = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
      const __m512 pv = _mm512_maskz_loadu_ps(in, p.data() + i), ev = _mm512_maskz_loadu_ps(in, e.data() + i);
      const __m512i jv = _mm512_maskz_loadu_epi32(in, j.data() + i);
      const __mmask16 keep = in & _mm512_cmp_ps_mask(_mm512_add_ps(pv, ev), tv, _CMP_GE_OQ);
      _mm512_storeu_si512(j.data() + w, _mm512_maskz_compress_epi32(keep, jv));
      _mm512_storeu_ps(p.data() + w, _mm512_maskz_compress_ps(keep, pv));
      _mm512_storeu_ps(e.data() + w, _mm512_maskz_compress_ps(keep, ev));
      w += __builtin_popcount((unsigned)keep);
    }
    n = w;
    pruneAt = std::max(pruneAt, 2 * n);
  }
};

// bf16Row reads its rows (W_enc's, a panel of them one after another) this many floats ahead: the hardware's own
// prefetching left the packing waiting on memory (768 x 24,576: 15.7 -> 9.0 ms a call, 256 to 2,048 ahead alike).
constexpr int kPackAhead = 1024;
// One row of d floats in bf16: pairs[q] = bf16(v[2q]) | bf16(v[2q + 1]) << 16 (a missing last element is 0), and
// upper bounds on the squared norms of v, of its residual v - bf16(v) (exact in float32) and of bf16(v). The sums
// run in float32 lanes (48 terms each at d_in 768): (1 + 1e-5) covers their rounding.
void bf16Row(const float* v, int d, uint32_t* pairs, double& nv, double& nr, double& nt) {
  const __m512i round = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), expo = _mm512_set1_epi32(0x7F80), sign = _mm512_set1_epi32(0x8000);
  __m512 sv = _mm512_setzero_ps(), sr = sv, st = sv;
  for (int i = 0; i < d; i += 16) {
    const __mmask16 in = d - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - i)) - 1);
    _mm_prefetch((const char*)(v + i + kPackAhead), _MM_HINT_T0);
    const __m512 x = _mm512_maskz_loadu_ps(in, v + i);
    const __m512i b = _mm512_castps_si512(x);
    __m512i h = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(round, _mm512_and_si512(_mm512_srli_epi32(b, 16), one))), 16);
    // bf16 subnormals flush to (signed) zero: what the dot-product instruction multiplies.
    const __mmask16 sub = _mm512_cmpeq_epi32_mask(_mm512_and_si512(h, expo), _mm512_setzero_si512());
    h = _mm512_mask_and_epi32(h, sub, h, sign);
    const __m512 t = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    const __m512 r = _mm512_sub_ps(x, t);
    sv = _mm512_fmadd_ps(x, x, sv);
    sr = _mm512_fmadd_ps(r, r, sr);
    st = _mm512_fmadd_ps(t, t, st);
    const __m256i packed = _mm512_cvtepi32_epi16(h);  // 16 halves = 8 pairs, low half first
    const int np = std::min(8, (d - i + 1) / 2);
    _mm256_mask_storeu_epi32(pairs + i / 2, (__mmask8)((1u << np) - 1), packed);
  }
  auto sum = [](__m512 a) {
    alignas(64) float f[16];
    _mm512_store_ps(f, a);
    double s = 0;
    for (float x : f) s += x;
    return s * (1 + 1e-5);
  };
  nv = sum(sv);
  nr = sum(sr);
  nt = sum(st);
}

// Per pool thread: its packed rows, block of screened values, candidate lists and scratch.
struct Thread {
  AlignedBuffer<uint32_t> a;  // packed rows
  AlignedBuffer<float> c;     // screened values: a chunk's (TopK) or a block's (Above)
  std::vector<float> X, Y, scratch;
  std::vector<float> gmax;  // the two-pass screen: each row's largest screened value per vector of a chunk
  std::vector<float> ups;   // the two-pass screen: a row's groups' upper bounds in a chunk
  std::vector<List> main;
  std::vector<int32_t> pos;
  std::vector<uint32_t> pairs;
};

// Kept by the calling thread between calls (a training step calls once per step): the buffers are reused, not
// allocated and returned to the system every step.
struct Workspace {
  AlignedBuffer<uint32_t> b;  // W_enc in bf16 pairs
  std::vector<float> P, Q, Z, bias, wt;
  std::vector<float> gP, gQ, gZ;  // the two-pass screen: P, Q, Z's largest over each vector's 16 latents
  std::vector<Thread> th;
  // Above: each row block's screened candidates (row r's at [off[r], off[r + 1])), held until the batch's cut is known.
  struct Held {
    std::vector<long> off;
    std::vector<int32_t> j;
    std::vector<float> p, e;  // Above only: screened value and half-width
    std::vector<float> x;     // the float32 values (of those exactHeld computes)
    long sure = 0;            // candidates whose lower bound is above the floor
  };
  std::vector<Held> held;
  // exactHeld's candidates grouped by latent: latent j's at [byLatent[j], byLatent[j + 1]); its counting sort's
  // per-thread counts [T][m + 1] and places [T][m].
  std::vector<long> byLatent, counts, offsets;
  std::vector<int32_t> ordRow;
  std::vector<float*> ordDst;
};

// Kept by each calling thread between its calls.
thread_local Workspace own;

// r[i] = row i of a 16 x 16 block -> r[q] = its column q (unpack 32-bit, unpack 64-bit, then two 128-bit lane shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // u[4a + b] holds, in 128-bit lane L, rows 4a..4a+3 at column 4L + b.
  for (int a = 0; a < 4; a += 2)
    for (int b = 0; b < 4; b++) {
      t[4 * a + b] = _mm512_shuffle_f32x4(u[4 * a + b], u[4 * (a + 1) + b], 0x88);
      t[4 * (a + 1) + b] = _mm512_shuffle_f32x4(u[4 * a + b], u[4 * (a + 1) + b], 0xDD);
    }
  for (int b = 0; b < 4; b++) {
    r[b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0x88);
    r[8 + b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0xDD);
    r[4 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0x88);
    r[12 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0xDD);
  }
}

// Packs W_enc (its transpose's rows are the encoder's columns) into bf16 pair panels and computes the columns'
// bound terms: P = |r_w| + g (|w| + |w~|), Q = (1 + g) |w~|, Z = 2 g |b|, each rounded up.
bool packW(Pool& pool, const float* W_encT, const float* b_enc, int dIn, int m, double g, Workspace& ws, float& wMax) {
  std::vector<float>&P = ws.P, &Q = ws.Q, &Z = ws.Z, &bias = ws.bias, &wt = ws.wt;
  const int kp = (dIn + 1) / 2, nPanels = (m + SNR - 1) / SNR, npad = nPanels * SNR;
  uint32_t* Bp = ws.b.get((size_t)kp * npad);
  P.assign(npad, 0.f);
  Q.assign(npad, 0.f);
  Z.assign(npad, 0.f);
  bias.assign(npad, 0.f);
  wt.assign(npad, 0.f);
  const double slack = 1 + 1e-6;
  // A panel's SNR rows in bf16 pairs, one after another (row c at c x ld), then written into the panel's K-blocks
  // (pair by pair, the SNR columns side by side) 16 x 16 at a time, transposed in registers: a row at a time, each
  // pair was a 4-byte store of its own, 128 bytes from the last.
  const int ld = (kp + 15) / 16 * 16;
  pool.run(nPanels, [&](int jp, int thread) {
    uint32_t* rows = ensure(ws.th[thread].pairs, (size_t)SNR * ld);
    for (int c = 0; c < SNR; c++) {
      const int j = jp * SNR + c;
      uint32_t* pr = rows + (size_t)c * ld;
      double nw = 0, nr = 0, nt = 0;
      if (j < m) bf16Row(W_encT + (long)j * dIn, dIn, pr, nw, nr, nt);
      else std::fill(pr, pr + kp, 0u);
      if (j >= m) continue;
      const double sw = std::sqrt(nw) * slack, sr = std::sqrt(nr) * slack, st = std::sqrt(nt) * slack;
      P[j] = upFloat((sr + g * (sw + st)) * slack);
      Q[j] = upFloat((1 + g) * st * slack);
      const double b = b_enc ? std::fabs((double)b_enc[j]) : 0;
      Z[j] = upFloat((2 * g * b + 1e-30) * slack);
      bias[j] = b_enc ? b_enc[j] : 0.f;
      wt[j] = (float)st;
    }
    for (int k0 = 0; k0 < dIn; k0 += SKC) {
      const int kcp = (std::min(dIn - k0, SKC) + 1) / 2;
      uint32_t* dst = Bp + (long)(k0 / 2) * npad + (long)jp * kcp * SNR;
      for (int p0 = 0; p0 < kcp; p0 += 16) {
        const int np = std::min(16, kcp - p0);
        const __mmask16 in = (__mmask16)((1u << np) - 1);
        for (int c0 = 0; c0 < SNR; c0 += 16) {
          __m512 r[16];
          for (int l = 0; l < 16; l++) r[l] = _mm512_maskz_loadu_ps(in, rows + (size_t)(c0 + l) * ld + k0 / 2 + p0);
          transpose16(r);
          for (int q = 0; q < np; q++) _mm512_storeu_ps(reinterpret_cast<float*>(dst + (long)(p0 + q) * SNR + c0), r[q]);
        }
      }
    }
  });
  wMax = 0;
  for (int j = 0; j < m; j++) {
    if (!std::isfinite(P[j]) || !std::isfinite(Q[j]) || !std::isfinite(Z[j])) return false;
    wMax = std::max(wMax, wt[j]);
  }
  return true;
}

// Rows [i0, i0 + mc) of A into bf16 pair panels (K-block kb at (k0 / 2) * SMC, MR-panel ir at ir * kcp), and each
// row's |x| and |r_x| (rounded up).
void packRows(const float* A, long lda, int i0, int mc, int dIn, uint32_t* Ap, float* X, float* Y, std::vector<uint32_t>& pairs) {
  const int kp = (dIn + 1) / 2;
  uint32_t* pr = ensure(pairs, (size_t)kp + 8);
  for (int r = 0; r < SMC; r++) {
    double nx = 0, nr = 0, nt = 0;
    if (r < mc) bf16Row(A + (long)(i0 + r) * lda, dIn, pr, nx, nr, nt);
    else std::fill(pr, pr + kp, 0u);
    const int ir = r / SMR * SMR, i = r % SMR;
    for (int k0 = 0; k0 < dIn; k0 += SKC) {
      const int kcp = (std::min(dIn - k0, SKC) + 1) / 2;
      uint32_t* dst = Ap + (long)(k0 / 2) * SMC + (long)ir * kcp + i;
      for (int pp = 0; pp < kcp; pp++) dst[(long)pp * SMR] = pr[k0 / 2 + pp];
    }
    if (r < mc) {
      X[r] = upFloat(std::sqrt(nx) * (1 + 1e-6));
      Y[r] = upFloat(std::sqrt(nr) * (1 + 1e-6));
    }
  }
}

// C tile (mr x nr, row stride ldc) = or += the bf16 A panel x B panel over kcp pairs.
__attribute__((target("avx512bf16"))) inline void microkernel(int kcp, const uint32_t* __restrict a, const uint32_t* __restrict b, float* __restrict c,
                                                             long ldc, int mr, int nr, bool overwrite) {
  __m512 acc[SMR][2];
  for (int i = 0; i < SMR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int pp = 0; pp < kcp; pp++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + pp * SNR), b1 = (__m512bh)_mm512_load_si512(b + pp * SNR + 16);
#pragma GCC unroll 14
    for (int i = 0; i < SMR; i++) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[pp * SMR + i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  if (mr == SMR && nr == SNR) {
    for (int i = 0; i < SMR; i++)
      for (int v = 0; v < 2; v++) {
        float* cp = c + i * ldc + v * 16;
        _mm512_storeu_ps(cp, overwrite ? acc[i][v] : _mm512_add_ps(_mm512_loadu_ps(cp), acc[i][v]));
      }
  } else {
    alignas(64) float t[32];
    for (int i = 0; i < mr; i++) {
      _mm512_store_ps(t, acc[i][0]);
      _mm512_store_ps(t + 16, acc[i][1]);
      for (int q = 0; q < nr; q++) c[i * ldc + q] = overwrite ? t[q] : c[i * ldc + q] + t[q];
    }
  }
}

// The float32 pre-activations of one latent (encoder row w, bias b when hasBias) at the rows rows[0..cnt) of A,
// bit-identical to gemm()/gemmBlocks(): each GEMM depth block (gemmDepthBlock(), a multiple of 16) is one FMA chain
// from zero in depth order; the first block adds the bias, later blocks are added to the running value. Sixteen rows
// share a vector: 16 depths of each are loaded and transposed in registers (cheaper than gathering), and the
// latent's weights are broadcast.
constexpr int kExactAhead = 128;
void exactRows(const float* A, long lda, const float* w, float b, bool hasBias, int dIn, const int32_t* rows, int cnt, float* const* dst) {
  const int KC = gemmDepthBlock();
  for (int g0 = 0; g0 < cnt; g0 += 16) {
    const int nl = std::min(16, cnt - g0);
    const float* x[16];
    for (int l = 0; l < 16; l++) x[l] = A + (long)rows[g0 + (l < nl ? l : 0)] * lda;
    __m512 c = _mm512_setzero_ps();
    for (int k0 = 0; k0 < dIn; k0 += KC) {
      const int k1 = std::min(dIn, k0 + KC);
      __m512 acc = _mm512_setzero_ps();
      for (int kk = k0; kk < k1; kk += 16) {
        const int tl = std::min(16, k1 - kk);
        const __mmask16 in = (__mmask16)((1u << tl) - 1);
        __m512 r[16];
        // Sixteen scattered rows read side by side: each one's line kExactAhead floats on is fetched now.
        if (kk + kExactAhead < dIn)
          for (int l = 0; l < 16; l++) __builtin_prefetch(x[l] + kk + kExactAhead, 0, 3);
        for (int l = 0; l < 16; l++) r[l] = _mm512_maskz_loadu_ps(in, x[l] + kk);
        transpose16(r);
        for (int q = 0; q < tl; q++) acc = _mm512_fmadd_ps(r[q], _mm512_set1_ps(w[kk + q]), acc);
      }
      if (k0 == 0) c = hasBias ? _mm512_add_ps(acc, _mm512_set1_ps(b)) : acc;
      else c = _mm512_add_ps(c, acc);
    }
    alignas(64) float t[16];
    _mm512_store_ps(t, c);
    for (int l = 0; l < nl; l++) *dst[g0 + l] = t[l];
  }
}

// The float32 values of the held candidates whose upper bound reaches `cut` (every one for -inf), into each Held's x.
// Grouped by latent, so each encoder row is read once, in latent order, and shared by its candidate rows (a row's
// candidates are scattered over W_enc: gathering their encoder rows row by row cost ~4x more, memory-bound). The
// grouping is a counting sort on the pool, each thread a slice of the row blocks (on one thread it took 50-70 ms of a
// ReLU step screened at 4-5% candidates, 768 x 24,576, beside ~200 ms of float32 values).
void exactHeld(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, float cut,
               const std::vector<uint8_t>& redo, Workspace& ws) {
  const int rowBlocks = (int)redo.size(), T = pool.size();
  auto wanted = [&](const Workspace::Held& h, size_t q) { return h.p.empty() || h.p[q] + h.e[q] >= cut; };
  long* cnt = ensure(ws.counts, (size_t)T * (m + 1));
  std::fill(cnt, cnt + (size_t)T * (m + 1), 0L);
  pool.run(T, [&](int t, int) {
    long* ct = cnt + (size_t)t * (m + 1);
    const auto [t0, t1] = threadRows(rowBlocks, T, t);
    for (long tb = t0; tb < t1; tb++) {
      if (redo[tb]) continue;
      Workspace::Held& h = ws.held[tb];
      h.x.reserve(h.j.size());  // exact, as the other arrays of a Held
      h.x.resize(h.j.size());
      for (size_t q = 0; q < h.j.size(); q++)
        if (wanted(h, q)) ct[h.j[q]]++;
    }
  });
  std::vector<long>& at = ws.byLatent;
  at.resize((size_t)m + 1);
  long* off = ensure(ws.offsets, (size_t)T * m);
  const long total = groupOffsets(cnt, T, m, at.data(), off);
  int32_t* ordRow = ensure(ws.ordRow, (size_t)total + 1);
  float** ordDst = ensure(ws.ordDst, (size_t)total + 1);
  pool.run(T, [&](int t, int) {
    long* fill = off + (size_t)t * m;
    const auto [t0, t1] = threadRows(rowBlocks, T, t);
    for (long tb = t0; tb < t1; tb++) {
      if (redo[tb]) continue;
      Workspace::Held& h = ws.held[tb];
      const int i0 = (int)tb * SMC, mc = std::min(SMC, n - i0);
      for (int r = 0; r < mc; r++)
        for (long q = h.off[r]; q < h.off[r + 1]; q++)
          if (wanted(h, q)) {
            const long e = fill[h.j[q]]++;
            ordRow[e] = i0 + r;
            ordDst[e] = h.x.data() + q;
          }
    }
  });
  pool.rangeDynamic(m, [&](long j0, long j1, int) {
    for (long j = j0; j < j1; j++) {
      const int c = (int)(at[j + 1] - at[j]);
      if (c) exactRows(A, lda, W_encT + j * dIn, b_enc ? b_enc[j] : 0.f, b_enc != nullptr, dIn, ordRow + at[j], c, ordDst + at[j]);
    }
  }, 16);
}

}  // namespace

namespace {

// What a screened encoder selects: each row's top k (into a Sparse, as encodeTopK), or every entry above a floor
// (a batch-wide selection's candidates, as encodeAbove).
struct Target {
  int k = 0;                     // TopK
  Sparse* topk = nullptr;
  float floor = 0;               // Above: entries > max(floor, 0)
  long keepTop = 0;              // Above: the caller selects this many of the batch's largest (0: it needs them all)
  Candidates* above = nullptr;
  bool lean = false;             // Screen::lean (encode.h)
};

// Copies rows [i0, i0 + mc) of an exact encodeTopK / encodeAbove run on those rows alone (rows are independent, so
// their values are the ones the whole batch would get) into the outputs.
void redoExact(Pool& pool, const float* A, long lda, int i0, int mc, int dIn, int m, const float* W_encT, const float* b_enc, const Target& t,
               long& nposHi) {
  if (t.topk) {
    Sparse o;
    encodeTopK(pool, A + (long)i0 * lda, lda, mc, dIn, m, W_encT, b_enc, t.k, o, {}, 0, nullptr, 0);
    for (int r = 0; r < mc; r++) {
      const long row = i0 + r;
      t.topk->start[row] = row * t.k;
      t.topk->count[row] = o.count[r];
      std::copy(o.idx.begin() + (long)r * t.k, o.idx.begin() + (long)r * t.k + o.count[r], t.topk->idx.begin() + row * t.k);
      std::copy(o.val.begin() + (long)r * t.k, o.val.begin() + (long)r * t.k + o.count[r], t.topk->val.begin() + row * t.k);
    }
  } else {
    Candidates c;
    encodeAbove(pool, A + (long)i0 * lda, lda, mc, dIn, m, W_encT, b_enc, t.floor, c, {}, 0, nullptr, 0);
    t.above->blocks[i0 / SMC] = std::move(c.blocks[0]);
    nposHi += c.npos;
  }
}

// AuxK's top kAux among the dead latents, exactly as the float32 path selects it: a float32 GEMM over the dead
// latents' columns alone (the same values entry for entry) with the fused TopK. Screening these would recompute
// ~kAux candidates per row (k_aux is d_in / 2 by default), more than the GEMM over them costs. The GEMM packs the
// dead columns a chunk at a time (gemm.h), each row's running top kAux carried from chunk to chunk by the sink, so
// the packed columns take one chunk (16 MiB) however many latents die, and no second selection is made per chunk
// (it was 12.6 MB at 768 x 24,576 past 4,096 dead, beside the bf16 copy of W_enc). A lean engine's chunk is
// kLeanAuxChunkBytes (or gemmChunkBytes() when smaller): with 16 MiB, AuxK's phase came within ~2.7 MB of the
// encoder's and set the step's peak once latents died (a 10M-token fit at 768 x 24,576: 611.9 MiB against 610.0 with
// 8 MiB; docs/BENCHMARKS.md, stop 48).
constexpr size_t kLeanAuxChunkBytes = (size_t)8 << 20;
void deadTopK(Pool& pool, const float* A, long lda, int n, int dIn, const float* W_encT, const float* b_enc, const std::vector<int32_t>& dead, int kAux,
              Sparse& aux, bool lean) {
  const int nDead = (int)dead.size();
  std::vector<float> bDead(b_enc ? nDead : 0);
  for (int q = 0; q < (int)bDead.size(); q++) bDead[q] = b_enc[dead[q]];
  // Row b's entries at b * kAux (kAux <= nDead: encodeTopK's k is min(k, m)), as the float32 path lays them out.
  encodeTopK(pool, A, lda, n, dIn, nDead, W_encT, b_enc ? bDead.data() : nullptr, kAux, aux, {}, 0, nullptr, 0, dead.data(),
             lean ? std::min(gemmChunkBytes(), kLeanAuxChunkBytes) : 0);
  // Positions among the dead latents made latent ids.
  pool.range(n, [&](long r0, long r1, int) {
    for (long row = r0; row < r1; row++)
      for (int q = 0; q < aux.count[row]; q++) aux.idx[row * kAux + q] = dead[aux.idx[aux.start[row] + q]];
  });
}

// The columns' terms of the half-width (packW) and the bias, indexed by latent.
struct Terms {
  const float *bias, *P, *Q, *Z;
};
// Where a row's list is being appended to (its arrays, with room for 16 entries past n).
struct Out {
  int32_t* j;
  float *p, *e;
  size_t n;
};

// Screens latents [j, j + 16) of a row (lanes `in`; zq their screened values, xv and yv the row's |x| and |r_x|):
// those whose upper bound is positive and reaches tau are appended to the row's list in latent order, and for TopK
// the lower bounds above tau are offered (tv follows the list's tau). Returns the lanes with a positive upper bound.
inline __mmask16 screenVector(const float* zq, const Terms& t, int j, __mmask16 in, __m512 xv, __m512 yv, bool topk, List& L, __m512& tv, Out& o) {
  const __m512 tiny = _mm512_set1_ps(kTiny), zero = _mm512_setzero_ps();
  const __m512 pt = _mm512_add_ps(_mm512_maskz_loadu_ps(in, zq), _mm512_maskz_loadu_ps(in, t.bias + j));
  __m512 e = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(in, t.P + j), _mm512_fmadd_ps(yv, _mm512_maskz_loadu_ps(in, t.Q + j), _mm512_maskz_loadu_ps(in, t.Z + j)));
  e = _mm512_fmadd_ps(tiny, _mm512_abs_ps(pt), e);
  const __m512 up = _mm512_add_ps(pt, e);
  const __mmask16 pos = in & _mm512_cmp_ps_mask(up, zero, _CMP_GT_OQ);
  const __mmask16 keep = pos & _mm512_cmp_ps_mask(up, tv, _CMP_GE_OQ);
  if (!keep) return pos;
  // Compressed in registers and stored whole (a compressing store to memory is microcoded on some processors).
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  _mm512_storeu_si512(o.j + o.n, _mm512_maskz_compress_epi32(keep, _mm512_add_epi32(iota, _mm512_set1_epi32(j))));
  _mm512_storeu_ps(o.p + o.n, _mm512_maskz_compress_ps(keep, pt));
  _mm512_storeu_ps(o.e + o.n, _mm512_maskz_compress_ps(keep, e));
  o.n += __builtin_popcount((unsigned)keep);
  if (!topk) return pos;
  __mmask16 better = keep & _mm512_cmp_ps_mask(_mm512_sub_ps(pt, e), tv, _CMP_GT_OQ);
  if (better) {
    alignas(64) float lv[16];
    _mm512_store_ps(lv, _mm512_sub_ps(pt, e));
    for (; better; better &= better - 1) L.offer(lv[__builtin_ctz((unsigned)better)]);
    tv = _mm512_set1_ps(L.tau);
  }
  return pos;
}

bool screen(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, const Target& tg,
            const std::vector<int32_t>& dead, int kAux, Sparse* aux) {
  if (!screenSupported() || n <= 0 || dIn <= 0 || (long)m * dIn >= (1L << 31) || SMC != gemmBlockRows()) return false;
  const bool topk = tg.topk != nullptr;
  if (topk && tg.k <= 0) return false;
  const int k = tg.k;
  const float floor = std::max(tg.floor, 0.f);
  const bool withAux = aux && kAux > 0 && !dead.empty();
  // AuxK's dead latents take a float32 GEMM of their own here (deadTopK), which the float32 path gets for free (768 x
  // 24,576, k_aux 384, float32 vs screened step: 10% dead 915 / 952 vs 825 / 804 ms, 20% 994 / 965 vs 912 / 870, 50%
  // 1,074 vs 1,105, 90% 1,173 vs 1,387). Screened whatever the number dead all the same: the float32 path then packed
  // all of W_enc (75 MB there) beside the bf16 copy, and fit's memory jumped by that when a third of the latents died
  // (it now packs a 16 MiB column chunk at a time, gemm.h; not measured again on an AVX-512 machine since).
  const double g = (2.0 * dIn + 8) * kU / (1 - (2.0 * dIn + 8) * kU);
  // The calling thread's; a named reference, so the pool's threads (lambdas do not capture thread_locals) use it too.
  Workspace& ws = own;
  if ((int)ws.th.size() < pool.size()) ws.th.resize(pool.size());
  // A lean call gives the bf16 copy back before its float32 recomputation (and its engine, screenRelease, the rest
  // after the step): AuxK's selection then runs last, once the copy is given back (38 MB at 768 x 24,576), so that the
  // encoder's phase holds the copy and nothing of AuxK, and AuxK's phase its dead columns' chunk (16 MiB) and its
  // selection without the copy: the encoder's phase peaks the same whether or not latents have died (the gradient's
  // phase then holds AuxK's working memory: docs/BENCHMARKS.md). Otherwise the copy is kept for the next call, and
  // AuxK's selection runs after the screen all the same, as its result does not depend on when it runs.
  const bool lean = tg.lean;
  float wMax = 0;
  if (!packW(pool, W_encT, b_enc, dIn, m, g, ws, wMax)) return false;
  const std::vector<float>&P = ws.P, &Q = ws.Q, &Z = ws.Z, &bias = ws.bias;
  std::vector<Thread>& th = ws.th;
  const int kp = (dIn + 1) / 2, npad = (m + SNR - 1) / SNR * SNR;
  const uint32_t* Bp = ws.b.p;
  const int rowBlocks = (n + SMC - 1) / SMC;
  // TopK screens in two passes over chunks of the latents (kTwoPassBytes). In one pass the row's tau starts at -inf
  // and rises as the latents go by, so the early blocks keep most of their latents as candidates: at 512 x 4,096
  // (Gaussian rows, k 32) 215 listed and 170 offered a row, for 52 that survive; the first pass's group maxima give
  // each row a tau near its k-th largest before any is listed, and let the second skip the groups below it. The
  // batch-wide selections (a fixed floor, every positive upper bound counted) keep one pass.
  const int nBlocks = (m + SNC - 1) / SNC, nVec = nBlocks * (SNC / 16);
  // A lean engine holds a quarter of that (1.5 MiB a thread: 2,304 latents a chunk), ~3 MB beside the bf16 copy.
  const size_t chunkBytes = lean ? kTwoPassBytes / 4 : kTwoPassBytes;
  const int chunkBlocks = std::min(nBlocks, std::max(1, (int)(chunkBytes / (SMC * SNC * sizeof(float)))));
  if (topk) {
    // Each vector's (16 latents') largest terms of the half-width.
    ws.gP.assign(nVec, 0.f);
    ws.gQ.assign(nVec, 0.f);
    ws.gZ.assign(nVec, 0.f);
    for (int j = 0; j < m; j++) {
      const int g = j / 16;
      ws.gP[g] = std::max(ws.gP[g], P[j]);
      ws.gQ[g] = std::max(ws.gQ[g], Q[j]);
      ws.gZ[g] = std::max(ws.gZ[g], Z[j]);
    }
  }
  std::vector<uint8_t> redo(rowBlocks, 0), refused(rowBlocks, 0);
  std::vector<long> blockPosHi(rowBlocks, 0);
  if (!topk) tg.above->blocks.resize(rowBlocks);  // every block is written below (kept arrays: encodeAbove)
  if ((int)ws.held.size() < rowBlocks) ws.held.resize(rowBlocks);
  // A row's screened sums are bounded by |x~| |w~|; keep them far from float32's overflow so every value is finite.
  const double sumCap = 1e36;

  // A lean call's threads hold its own chunk and no more. Another engine's call on this thread may have left their
  // buffers at a whole chunk (fit's initialisation encodes a sample through an inference engine: 6 MiB a thread at
  // 768 x 24,576), whose touched pages would otherwise stay in every lean step's peak (+9.7 MiB over a 1M-token fit).
  if (lean)
    for (Thread& T : th) {
      if (T.c.n > (size_t)SMC * (topk ? chunkBlocks : 1) * SNC) T.c.release();
      if (T.gmax.size() > (size_t)SMC * chunkBlocks * 16) release(T.gmax), release(T.scratch), release(T.ups);
    }

  pool.run(rowBlocks, [&](int t, int thread) {
    Thread& T = th[thread];
    const int i0 = t * SMC, mc = std::min(SMC, n - i0);
    uint32_t* Ap = T.a.get((size_t)SMC * kp);
    T.X.resize(SMC);
    T.Y.resize(SMC);
    packRows(A, lda, i0, mc, dIn, Ap, T.X.data(), T.Y.data(), T.pairs);
    for (int r = 0; r < mc; r++)
      if (!std::isfinite(T.X[r]) || !std::isfinite(T.Y[r]) || ((double)T.X[r] + T.Y[r]) * wMax > sumCap) {
        refused[t] = 1;
        return;
      }
    T.main.resize(SMC);
    for (int r = 0; r < mc; r++) {
      T.main[r].reset(k);
      if (!topk) {
        T.main[r].tau = floor;  // fixed: every entry whose upper bound passes the floor is a candidate
        T.main[r].pruneAt = SIZE_MAX;
      }
    }
    long posHi = 0;  // entries whose upper bound is positive: at least the batch's positive count
    // TopK's two passes keep a chunk's screened values (block b's at column (b - b0) x SNC of C), Above's one pass a
    // block of them at a time.
    const long ldc = topk ? (long)chunkBlocks * SNC : SNC;
    float* C = T.c.get((size_t)SMC * ldc);
    const __m512 tiny = _mm512_set1_ps(kTiny), zero = _mm512_setzero_ps();
    // The screened values of latents [j0, j0 + nc) at rows [i0, i0 + mc) into Cb (row stride ldc).
    auto gemmBlock = [&](int j0, int nc, float* Cb) {
      for (int k0 = 0; k0 < dIn; k0 += SKC) {
        const int kcp = (std::min(dIn - k0, SKC) + 1) / 2;
        const uint32_t* Bk = Bp + (long)(k0 / 2) * npad;
        const uint32_t* Ak = Ap + (long)(k0 / 2) * SMC;
        for (int jr = 0; jr < nc; jr += SNR) {
          const int nr = std::min(SNR, nc - jr);
          const uint32_t* bp = Bk + (long)((j0 + jr) / SNR) * kcp * SNR;
          for (int ir = 0; ir < mc; ir += SMR)
            microkernel(kcp, Ak + (long)ir * kcp, bp, Cb + (long)ir * ldc + jr, ldc, std::min(SMR, mc - ir), nr, k0 == 0);
        }
      }
    };
    // Above, in one pass a block at a time: every latent whose upper bound passes the floor is a candidate, and
    // every positive upper bound is counted.
    auto aboveBlock = [&](int j0, int nc, const float* Cb) {
      // Everything the loop reads, in locals: its stores are through may-alias vector types, after which the
      // compiler would reload each pointer (through the lambda's captures) and the lists' fields every iteration.
      const Terms terms{bias.data(), P.data(), Q.data(), Z.data()};
      long blockPos = 0;
      for (int r = 0; r < mc; r++) {
        const float* z = Cb + (long)r * SNC;
        const __m512 xv = _mm512_set1_ps(T.X[r]), yv = _mm512_set1_ps(T.Y[r]);
        List& L = T.main[r];
        __m512 tv = _mm512_set1_ps(L.tau);
        L.room(nc + 16);
        Out o{L.j.data(), L.p.data(), L.e.data(), L.n};
        for (int q = 0; q < nc; q += 16) {
          const __mmask16 in = nc - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nc - q)) - 1);
          blockPos += __builtin_popcount((unsigned)screenVector(z + q, terms, j0 + q, in, xv, yv, false, L, tv, o));
        }
        L.n = o.n;
      }
      posHi += blockPos;
    };
    if (!topk) {
      for (int j0 = 0; j0 < m; j0 += SNC) {
        const int nc = std::min(SNC, m - j0);
        gemmBlock(j0, nc, C);
        aboveBlock(j0, nc, C);
      }
    } else {
      // TopK in two passes over chunks of the latents (all of them where a row block's screened values fit
      // kTwoPassBytes). First pass: the chunk's screened values, and each row's largest screened value in each 16
      // latents (a vector, a group), taken while the block is still in cache.
      //
      // Second pass, row by row. A group's bounds come from its largest screened value and the largest P, Q, Z among
      // its latents, computed operation for operation as screenVector computes a latent's: float rounding is
      // monotone, so the group's lower bound is at most the lower bound of the latent holding that value, and its
      // upper bound (widened by 2^-20 of |value| + half-width) at least every one of its latents' upper bounds. The
      // row's tau rises to the k-th largest lower bound of the chunk's groups: the groups are disjoint, so k latents
      // have lower bounds at or above it, the row's k-th largest float32 value is too, and a latent whose upper bound
      // is below it cannot be among the top k. A group whose upper bound is below the row's tau (or not positive) is
      // passed over without reading its values.
      const int chunkVec = chunkBlocks * 16;
      float* gm = ensure(T.gmax, (size_t)SMC * chunkVec);
      float* lows = ensure(T.scratch, 3 * (size_t)chunkVec + 48);
      float* ups = ensure(T.ups, (size_t)chunkVec);
      const Terms terms{bias.data(), P.data(), Q.data(), Z.data()};
      const __m512 widen = _mm512_set1_ps(1.0f / 1048576.0f);
      for (int b0 = 0; b0 < nBlocks; b0 += chunkBlocks) {
        const int b1 = std::min(nBlocks, b0 + chunkBlocks), nv = (b1 - b0) * 16;
        for (int b = b0; b < b1; b++) {
          const int j0 = b * SNC, nc = std::min(SNC, m - j0);
          gemmBlock(j0, nc, C + (long)(b - b0) * SNC);
          const float* bj = bias.data() + j0;
          for (int r = 0; r < mc; r++) {
            const float* z = C + (long)r * ldc + (long)(b - b0) * SNC;
            float* g = gm + (long)r * chunkVec + (b - b0) * 16;
            for (int q = 0; q < nc; q += 16) {
              const __mmask16 in = nc - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nc - q)) - 1);
              g[q / 16] = _mm512_mask_reduce_max_ps(in, _mm512_add_ps(_mm512_maskz_loadu_ps(in, z + q), _mm512_maskz_loadu_ps(in, bj + q)));
            }
            for (int q = (nc + 15) / 16; q < 16; q++) g[q] = -INFINITY;  // past the last latent: no latent, no candidate
          }
        }
        const float *gP = ws.gP.data() + b0 * 16, *gQ = ws.gQ.data() + b0 * 16, *gZ = ws.gZ.data() + b0 * 16;
        for (int r = 0; r < mc; r++) {
          const __m512 xv = _mm512_set1_ps(T.X[r]), yv = _mm512_set1_ps(T.Y[r]);
          const float* g = gm + (long)r * chunkVec;
          for (int q = 0; q < nv; q += 16) {
            const __m512 pt = _mm512_loadu_ps(g + q);
            __m512 e = _mm512_fmadd_ps(xv, _mm512_loadu_ps(gP + q), _mm512_fmadd_ps(yv, _mm512_loadu_ps(gQ + q), _mm512_loadu_ps(gZ + q)));
            e = _mm512_fmadd_ps(tiny, _mm512_abs_ps(pt), e);
            _mm512_storeu_ps(lows + q, _mm512_sub_ps(pt, e));
            // Widened by 2^-20 of its terms' size: a member below the largest value has its own rounding (its
            // half-width's |pt| term is its own), a few units of 2^-24 of that size either way.
            _mm512_storeu_ps(ups + q, _mm512_fmadd_ps(widen, _mm512_add_ps(_mm512_abs_ps(pt), e), _mm512_add_ps(pt, e)));
          }
          List& L = T.main[r];
          if (nv >= k) L.raise(kthLargestInPlace(lows, nv, k, lows + nv + 16));
          const float* z = C + (long)r * ldc;
          __m512 tv = _mm512_set1_ps(L.tau);
          // The groups to visit are scattered over the chunk's values (out of L2 at larger sizes): the next block's,
          // by the tau known now (it only rises), are fetched while this block's are screened.
          auto toVisit = [&](int b) { return _mm512_cmp_ps_mask(_mm512_loadu_ps(ups + (b - b0) * 16), _mm512_max_ps(tv, zero), _CMP_GE_OQ); };
          for (__mmask16 f = toVisit(b0); f; f &= f - 1) _mm_prefetch((const char*)(z + __builtin_ctz((unsigned)f) * 16), _MM_HINT_T0);
          for (int b = b0; b < b1; b++) {
            const int j0 = b * SNC, nc = std::min(SNC, m - j0);
            L.room(nc + 16);
            Out o{L.j.data(), L.p.data(), L.e.data(), L.n};
            __mmask16 visit = toVisit(b);
            if (b + 1 < b1)
              for (__mmask16 f = toVisit(b + 1); f; f &= f - 1)
                _mm_prefetch((const char*)(z + (long)(b + 1 - b0) * SNC + __builtin_ctz((unsigned)f) * 16), _MM_HINT_T0);
            for (; visit; visit &= visit - 1) {
              const int q = __builtin_ctz((unsigned)visit) * 16;
              const __mmask16 in = nc - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nc - q)) - 1);
              screenVector(z + (long)(b - b0) * SNC + q, terms, j0 + q, in, xv, yv, true, L, tv, o);
            }
            L.n = o.n;
            if (L.n >= L.pruneAt) L.prune();
          }
        }
      }
    }
    // Each row: the last pruning, then the float32 values of the survivors; TopK takes the top k among them
    // (topkRow: the same rule, ties to the lower latent, as the exact path), Above keeps those above the floor. A
    // block the bounds could not narrow is redone exactly: TopK's when a row keeps too many, Above's when its rows
    // do on average (a ReLU batch at 1% firing has rows with over 12% of the latents positive in every block).
    const long cap = std::max(4 * k + 256, m / 8);
    long listed = 0;
    for (int r = 0; r < mc; r++) {
      if (topk) T.main[r].prune();
      listed += (long)T.main[r].n;
      if (topk ? (long)T.main[r].n > cap : listed > cap * mc) {
        redo[t] = 1;
        return;
      }
    }
    blockPosHi[t] = posHi;
    // Held until the batch is screened: the float32 values are computed grouped by latent (exactHeld), and for
    // Above which candidates need them depends on the whole batch (below).
    Workspace::Held& h = ws.held[t];
    h.off.assign(mc + 1, 0);
    h.j.clear();
    h.p.clear();
    h.e.clear();
    h.sure = 0;
    // Reserved to the exact count: growing by appends would double the capacity, which a Held keeps for the rest of
    // the run (BatchTopK at 768 x 24,576: ~1.3M entries of capacity for ~0.7M candidates, 10 MB).
    size_t total = 0;
    for (int r = 0; r < mc; r++) total += T.main[r].n;
    h.j.reserve(total);
    if (!topk) {
      h.p.reserve(total);
      h.e.reserve(total);
    }
    for (int r = 0; r < mc; r++) {
      const List& L = T.main[r];
      h.j.insert(h.j.end(), L.j.begin(), L.j.begin() + L.n);
      if (!topk) {
        h.p.insert(h.p.end(), L.p.begin(), L.p.begin() + L.n);
        h.e.insert(h.e.end(), L.e.begin(), L.e.begin() + L.n);
        for (size_t q = 0; q < L.n; q++) h.sure += L.p[q] - L.e[q] > floor;
      }
      h.off[r + 1] = (long)h.j.size();
      T.main[r].trim();
    }
  });
  if (std::find(refused.begin(), refused.end(), 1) != refused.end()) return false;
  // A lean engine gives the bf16 copy back now, before exactHeld's arrays are made: nothing below reads it, and
  // the copy (38 MB at 768 x 24,576) beside them made the step's peak, which then grew with the candidates that
  // survive the screen (20 bytes each held at once there; their number per row rises as the weights train).
  if (lean) ws.b.release();
  // Above's cut. When at least keepTop candidates are surely above the floor, the caller's selection (the batch's
  // keepTop largest) lies at or above the keepTop-th largest lower bound `cut`, and only candidates whose upper bound
  // reaches it need float32 values: the rest are below the selection, and the caller's decisions (total >= min(k B,
  // npos), then the keepTop-th largest) come out the same without them. Otherwise every candidate is computed and
  // kept above the floor, as the exact path keeps them.
  float cut = -INFINITY;
  if (!topk) {
    long sure = 0;
    for (int t = 0; t < rowBlocks; t++)
      if (!redo[t]) sure += ws.held[t].sure;
    if (tg.keepTop > 0 && sure >= tg.keepTop && std::find(redo.begin(), redo.end(), 1) == redo.end()) {
      // The lower bounds, each row block's at its offset, on both threads; then the keepTop-th largest by radix
      // select on both threads. More than keepTop of them are positive (sure counts those above the floor, >= 0), so
      // it is the keepTop-th largest positive one. std::nth_element on one thread took 2.5% of a BatchTopK step's
      // samples at 768 x 6,144 (and the other core waited).
      std::vector<size_t> at(rowBlocks + 1, 0);
      for (int t = 0; t < rowBlocks; t++) at[t + 1] = at[t] + ws.held[t].p.size();
      std::vector<float> lows(at[rowBlocks]);  // exact: the step's largest transient array
      pool.run(rowBlocks, [&](int t, int) {
        const Workspace::Held& h = ws.held[t];
        float* o = lows.data() + at[t];
        for (size_t q = 0; q < h.p.size(); q++) o[q] = h.p[q] - h.e[q];
      });
      cut = kthLargestPositive(pool, lows.data(), (long)lows.size(), tg.keepTop);
    }
  }
  exactHeld(pool, A, lda, n, dIn, m, W_encT, b_enc, cut, redo, ws);
  // Each row's selection from its candidates' float32 values: TopK's top k (topkRow: the same rule, ties to the
  // lower latent, as the exact path), Above's entries above the floor, in latent order.
  pool.run(rowBlocks, [&](int t, int thread) {
    if (redo[t]) return;
    Thread& T = th[thread];
    const Workspace::Held& h = ws.held[t];
    const int i0 = t * SMC, mc = std::min(SMC, n - i0);
    if (topk) {
      Sparse& o = *tg.topk;
      for (int r = 0; r < mc; r++) {
        const long row = i0 + r;
        const int cnt = (int)(h.off[r + 1] - h.off[r]);
        T.scratch.resize(5 * (size_t)cnt + 160);
        T.pos.resize(k + 16);
        const int got = topkRow(h.x.data() + h.off[r], cnt, k, T.pos.data(), o.val.data() + row * k, T.scratch.data());
        int32_t* ix = o.idx.data() + row * k;
        for (int q = 0; q < got; q++) ix[q] = h.j[h.off[r] + T.pos[q]];
        o.start[row] = row * k;
        o.count[row] = got;
      }
      return;
    }
    Candidates::Block& blk = tg.above->blocks[t];
    blk.off.assign(mc + 1, 0);
    blk.idx.clear();
    blk.val.clear();
    for (int r = 0; r < mc; r++) {
      for (long q = h.off[r]; q < h.off[r + 1]; q++)
        if (h.p[q] + h.e[q] >= cut && h.x[q] > floor) {
          blk.idx.push_back(h.j[q]);
          blk.val.push_back(h.x[q]);
        }
      blk.off[r + 1] = (long)blk.idx.size();
    }
  });
  // Row blocks whose candidates stayed too many (bounds too wide for their data) run the exact fused encoder.
  long nposHi = 0;
  for (int t = 0; t < rowBlocks; t++) {
    if (redo[t])
      redoExact(pool, A, lda, t * SMC, std::min(SMC, n - t * SMC), dIn, m, W_encT, b_enc, tg, nposHi);
    else
      nposHi += blockPosHi[t];
  }
  if (withAux) {
    if (lean) screenRelease();
    deadTopK(pool, A, lda, n, dIn, W_encT, b_enc, dead, kAux, *aux, lean);
    if (lean) gemmRelease();
  }
  if (!topk) {
    // Candidates' count, and a positive count that gives the caller the decisions the exact count would: the
    // exact count is between the candidates (all positive) and nposHi, and only min(k B, npos) <= total matters.
    Candidates& c = *tg.above;
    c.total = 0;
    for (auto& b : c.blocks) c.total += (long)b.val.size();
    // With the floor at 0 and no cut (ReLU), every entry that might be positive was a candidate: the count is exact.
    c.npos = floor == 0.f && tg.keepTop == 0 ? c.total : c.total >= nposHi ? c.total : nposHi;
  }
  return true;
}

}  // namespace

bool screenTopK(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, int k, Sparse& out,
                const std::vector<int32_t>& dead, int kAux, Sparse* aux, bool lean) {
  Target t;
  t.lean = lean;
  t.k = k;
  t.topk = &out;
  return screen(pool, A, lda, n, dIn, m, W_encT, b_enc, t, dead, kAux, aux);
}

bool screenAbove(Pool& pool, const float* A, long lda, int n, int dIn, int m, const float* W_encT, const float* b_enc, float floor, long keepTop,
                 Candidates& out, const std::vector<int32_t>& dead, int kAux, Sparse* aux, bool lean) {
  Target t;
  t.lean = lean;
  t.floor = floor;
  t.keepTop = keepTop;
  t.above = &out;
  return screen(pool, A, lda, n, dIn, m, W_encT, b_enc, t, dead, kAux, aux);
}

size_t screenCopyBytes() { return own.b.n * sizeof(uint32_t); }

size_t screenChunkBytes() {
  size_t most = 0;
  for (const Thread& T : own.th) most = std::max(most, T.c.n * sizeof(float));
  return most;
}

void screenRelease() {
  own.b.release();
  release(own.held);
  release(own.byLatent);
  release(own.counts);
  release(own.offsets);
  release(own.ordRow);
  release(own.ordDst);
}

#endif

}  // namespace sdl
