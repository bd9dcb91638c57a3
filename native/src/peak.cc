#include "peak.h"

#include <chrono>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sdl {

#if defined(__x86_64__)
namespace {

// 24 accumulators: more than latency x issue width on current processors (4-6 cycles x 2 per cycle), so the chains
// never wait for each other. The asm barrier keeps the compiler from folding the loop.
constexpr int kChains = 24;

__attribute__((target("avx512f"))) double fma512(long iters) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 x = _mm512_set1_ps(1.0001f);
  const __m512 y = _mm512_set1_ps(0.9999f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; i++) acc[i] = _mm512_fmadd_ps(x, y, acc[i]);
    asm volatile("" : "+v"(x));
  }
  float s = 0;
  for (auto& a : acc) s += _mm512_reduce_add_ps(a);
  asm volatile("" ::"x"(s));
  return (double)iters * kChains * 16 * 2;
}

__attribute__((target("avx2,fma"))) double fma256(long iters) {
  __m256 acc[kChains];
  for (auto& a : acc) a = _mm256_setzero_ps();
  __m256 x = _mm256_set1_ps(1.0001f);
  const __m256 y = _mm256_set1_ps(0.9999f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; i++) acc[i] = _mm256_fmadd_ps(x, y, acc[i]);
    asm volatile("" : "+x"(x));
  }
  alignas(32) float f[8];
  float s = 0;
  for (auto& a : acc) {
    _mm256_store_ps(f, a);
    for (float v : f) s += v;
  }
  asm volatile("" ::"x"(s));
  return (double)iters * kChains * 8 * 2;
}

__attribute__((target("avx512f,avx512bf16"))) double dotBf16(long iters) {
  __m512 acc[kChains];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80);  // (1, 1) in bf16
  const __m512bh y = (__m512bh)_mm512_set1_epi32(0x3F803F80);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    asm volatile("" : "+v"(x));
  }
  float s = 0;
  for (auto& a : acc) s += _mm512_reduce_add_ps(a);
  asm volatile("" ::"x"(s));
  return (double)iters * kChains * 32 * 2;  // 16 lanes x 2 products, each a multiply and an add
}

// FLOP/s of `kernel` on `threads` threads at once: a short calibration, then ~`seconds` of it on every thread.
double rate(double (*kernel)(long), int threads, double seconds) {
  using clock = std::chrono::steady_clock;
  long iters = 1 << 14;
  for (;;) {
    const auto t0 = clock::now();
    kernel(iters);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    if (s > 0.01 || iters > (1L << 40)) {
      iters = (long)(iters * seconds / s) + 1;
      break;
    }
    iters *= 4;
  }
  std::vector<double> flops(threads), secs(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++)
    pool.emplace_back([&, t] {
      const auto t0 = clock::now();
      flops[t] = kernel(iters);
      secs[t] = std::chrono::duration<double>(clock::now() - t0).count();
    });
  for (auto& p : pool) p.join();
  double sum = 0;
  for (int t = 0; t < threads; t++) sum += flops[t] / secs[t];
  return sum / 1e9;
}

}  // namespace

PeakRates instructionPeak(int threads, double seconds) {
  __builtin_cpu_init();
  PeakRates r;
  if (__builtin_cpu_supports("avx512f")) r.fp32 = rate(fma512, threads, seconds);
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) r.fp32 = rate(fma256, threads, seconds);
  if (__builtin_cpu_supports("avx512bf16")) r.bf16 = rate(dotBf16, threads, seconds);
  return r;
}

#else

PeakRates instructionPeak(int, double) { return {}; }

#endif

}  // namespace sdl
