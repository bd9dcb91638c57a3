#include "half.h"

#include <cmath>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace sdl {

namespace {

// The scalar forms (the generic build, and the tails): the same bits as the instructions.
uint16_t toHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xFFu;
  uint32_t mant = x & 0x7FFFFFu;
  if (exp == 0xFF) return (uint16_t)(sign | (mant ? 0x7E00u | (mant >> 13) : 0x7C00u));
  const int e = (int)exp - 127 + 15;
  if (e >= 0x1F) return (uint16_t)(sign | 0x7C00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;  // a carry into the exponent is still the right rounding
  return (uint16_t)(sign | h);
}

float fromHalf(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu, x;
  if (exp == 0x1F) {
    x = sign | 0x7F800000u | (mant ? 0x400000u | (mant << 13) : 0);
  } else if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      int e = -14;
      while (!(mant & 0x400u)) mant <<= 1, e--;
      x = sign | ((uint32_t)(e + 127) << 23) | ((mant & 0x3FFu) << 13);
    }
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace

size_t f32ToF16(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0, over = 0;
#if defined(__AVX512F__)
  const __m512 lo = _mm512_set1_ps(65520.f), inf = _mm512_set1_ps(INFINITY);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(src + i), a = _mm512_abs_ps(v);
    over += __builtin_popcount(_mm512_cmp_ps_mask(a, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(a, inf, _CMP_LT_OQ));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#elif defined(__F16C__)
  const __m256 lo = _mm256_set1_ps(65520.f), inf = _mm256_set1_ps(INFINITY), sign = _mm256_set1_ps(-0.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i), a = _mm256_andnot_ps(sign, v);
    over += __builtin_popcount(_mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(a, lo, _CMP_GE_OQ), _mm256_cmp_ps(a, inf, _CMP_LT_OQ))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; i++) {
    const float a = std::fabs(src[i]);
    over += a >= 65520.f && a < INFINITY;
    dst[i] = toHalf(src[i]);
  }
  return over;
}

void f16ToF32(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; i++) dst[i] = fromHalf(src[i]);
}

}  // namespace sdl
