#include "finite.h"

#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace sdl {

// A float is NaN or infinite exactly when its exponent bits are all ones.
constexpr uint32_t kExp = 0x7F800000u;

size_t countNonFinite(const float* p, size_t n) {
  size_t i = 0, bad = 0;
#if defined(__AVX512F__)
  const __m512i e = _mm512_set1_epi32((int)kExp);
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_loadu_si512(p + i);
    bad += __builtin_popcount(_mm512_cmpeq_epi32_mask(_mm512_and_si512(b, e), e));
  }
#elif defined(__AVX2__)
  const __m256i e = _mm256_set1_epi32((int)kExp);
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    bad += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, e), e))));
  }
#endif
  for (; i < n; i++) {
    uint32_t b;
    std::memcpy(&b, p + i, 4);
    bad += (b & kExp) == kExp;
  }
  return bad;
}

size_t copyCountNonFinite(const float* src, float* dst, size_t n) {
  size_t i = 0, bad = 0;
#if defined(__AVX512F__)
  const __m512i e = _mm512_set1_epi32((int)kExp);
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_loadu_si512(src + i);
    _mm512_storeu_si512(dst + i, b);
    bad += __builtin_popcount(_mm512_cmpeq_epi32_mask(_mm512_and_si512(b, e), e));
  }
#elif defined(__AVX2__)
  const __m256i e = _mm256_set1_epi32((int)kExp);
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), b);
    bad += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, e), e))));
  }
#endif
  for (; i < n; i++) {
    uint32_t b;
    std::memcpy(&b, src + i, 4);
    std::memcpy(dst + i, &b, 4);
    bad += (b & kExp) == kExp;
  }
  return bad;
}

}  // namespace sdl
