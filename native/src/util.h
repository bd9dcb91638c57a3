// Small helpers shared by the engine's translation units.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace sdl {

// Resizes to n, growing the capacity to exactly n when it must grow. std::vector::resize past the capacity doubles
// it (libstdc++: max(2 size, n)): a buffer whose size creeps up from step to step (AuxK's arrays while the dead
// latents number fewer than k_aux, the batch-wide rules' candidate blocks) would keep up to twice what it uses.
template <class V>
void resizeExact(V& v, size_t n) {
  if (n > v.capacity()) v.reserve(n);
  v.resize(n);
}

template <class T>
T* ensure(std::vector<T>& v, size_t n) {
  if (v.size() < n) resizeExact(v, n);
  return v.data();
}

// A 64-byte-aligned buffer that only grows: packing and screening buffers kept between calls.
template <class T>
struct AlignedBuffer {
  T* p = nullptr;
  size_t n = 0;
  T* get(size_t want) {
    if (want > n) {
      free(p);
      p = nullptr;
      if (posix_memalign(reinterpret_cast<void**>(&p), 64, (want ? want : 1) * sizeof(T)) != 0) throw std::bad_alloc();
      n = want;
    }
    return p;
  }
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
  ~AlignedBuffer() { free(p); }
};

// Per-thread partial sums, padded apart so threads do not share cache lines.
struct Partials {
  explicit Partials(int threads, int width = 1) : w(width), v((size_t)threads * stride(width), 0.0) {}
  static size_t stride(int width) { return ((size_t)width + 7) / 8 * 8 + 8; }
  double* at(int thread) { return v.data() + (size_t)thread * stride(w); }
  double total(int i = 0) const {
    double s = 0;
    for (size_t t = 0; t < v.size() / stride(w); t++) s += v[t * stride(w) + i];
    return s;
  }
  int w;
  std::vector<double> v;
};

// Asks for rows idx[0..n) of a row-major matrix (width floats each) to be brought into cache: for rows scattered
// over a matrix larger than the cache, fetched one row of work ahead of their use.
inline void prefetchRows(const float* M, int width, const int32_t* idx, int n) {
  for (int q = 0; q < n; q++) {
    const char* r = reinterpret_cast<const char*>(M + (long)idx[q] * width);
    for (long o = 0; o < (long)width * 4; o += 64) __builtin_prefetch(r + o, 0, 2);
  }
}

// The straight-through estimator's rectangle kernel K((z - theta) / eps) / eps.
inline float rect(float z, float theta, float eps) {
  float u = (z - theta) / eps;
  return (u > -0.5f && u < 0.5f) ? 1.f / eps : 0.f;
}

}  // namespace sdl
