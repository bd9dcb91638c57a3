// Small helpers shared by the engine's translation units.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include <sys/mman.h>

namespace sdl {

// Blocks of 4 MiB and more start on a 2 MiB boundary with transparent huge pages asked for (madvise: this kernel's
// default mode). A lean engine (Config::lean) gives such buffers back and takes them again every step: on this VM a
// first touch of 75 MB cost 57-69 ms in 4 KiB pages and 11-12 ms in 2 MiB ones (and its munmap 9-11 vs 0.5 ms).
constexpr size_t kHugeFrom = (size_t)4 << 20;
inline void* allocLarge(size_t bytes, size_t align) {
  void* p = nullptr;
  const bool huge = bytes >= kHugeFrom;
  if (posix_memalign(&p, huge ? (size_t)2 << 20 : align, bytes ? bytes : 1) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, (bytes + 4095) & ~(size_t)4095, MADV_HUGEPAGE);  // advice only: a refusal changes nothing
#endif
  return p;
}

// Transparent huge pages asked for over the whole 2 MiB pages inside memory allocated elsewhere (the parameters,
// gradients and Adam moments are JavaScript's typed arrays): pages not touched yet fault in huge, and MADV_COLLAPSE
// (Linux 6.1 and later) remakes the ones already touched. Advice only: a kernel without either leaves the pages as
// they were, and the arrays work the same. Returns the bytes advised (0 below 4 MiB or when refused).
inline size_t adviseHuge(void* p, size_t bytes) {
  if (bytes < kHugeFrom) return 0;
  constexpr uintptr_t H = (uintptr_t)2 << 20;
  const uintptr_t a = ((uintptr_t)p + H - 1) & ~(H - 1), e = ((uintptr_t)p + bytes) & ~(H - 1);
  if (e <= a) return 0;
#ifdef MADV_HUGEPAGE
  if (madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE) != 0) return 0;
  constexpr int kCollapse = 25;  // MADV_COLLAPSE, which older C libraries do not name
  madvise(reinterpret_cast<void*>(a), e - a, kCollapse);
  return e - a;
#else
  return 0;
#endif
}

// std::vector's allocator for the engine's large per-step buffers (allocLarge).
template <class T>
struct LargeAlloc {
  using value_type = T;
  LargeAlloc() = default;
  template <class U>
  LargeAlloc(const LargeAlloc<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(allocLarge(n * sizeof(T), alignof(T) < 16 ? 16 : alignof(T))); }
  void deallocate(T* p, size_t) { free(p); }
  template <class U>
  bool operator==(const LargeAlloc<U>&) const { return true; }
  template <class U>
  bool operator!=(const LargeAlloc<U>&) const { return false; }
};
template <class T>
using LargeVector = std::vector<T, LargeAlloc<T>>;

// Resizes to n, growing the capacity to exactly n when it must grow. std::vector::resize past the capacity doubles
// it (libstdc++: max(2 size, n)): a buffer whose size creeps up from step to step (AuxK's arrays while the dead
// latents number fewer than k_aux, the batch-wide rules' candidate blocks) would keep up to twice what it uses.
template <class V>
void resizeExact(V& v, size_t n) {
  if (n > v.capacity()) v.reserve(n);
  v.resize(n);
}

template <class T, class A>
T* ensure(std::vector<T, A>& v, size_t n) {
  if (v.size() < n) resizeExact(v, n);
  return v.data();
}

// ensure for a scratch buffer whose size moves from step to step (the sparse path's per-entry arrays: a ReLU step's
// count of active entries changes with every batch): when it must grow again it takes an eighth more than asked and
// does not copy what it held, so a count that wanders up does not reallocate, and fault in fresh pages, every other
// step (25-35 ms a step at 768 x 6,144 and 5% firing). The first allocation is exact.
// resizeGrowing: resizes to n (shrinking too: for arrays whose size is the count they hold, refilled every step with
// about as many entries as the last), the capacity grown that way when it must grow.
template <class T, class A>
void resizeGrowing(std::vector<T, A>& v, size_t n) {
  if (n > v.capacity() && v.capacity() > 0) {
    v.clear();
    v.reserve(n + n / 8);
  }
  v.resize(n);
}
template <class T, class A>
T* ensureGrowing(std::vector<T, A>& v, size_t n) {
  if (v.size() < n) resizeGrowing(v, n);
  return v.data();
}

// Empties v and gives its memory back (clear() keeps the capacity).
template <class T, class A>
void release(std::vector<T, A>& v) {
  std::vector<T, A>().swap(v);
}

// A 64-byte-aligned buffer that only grows: packing and screening buffers kept between calls.
template <class T>
struct AlignedBuffer {
  T* p = nullptr;
  size_t n = 0;
  T* get(size_t want) {
    if (want > n) {
      release();  // before allocating: if allocLarge throws, n must not still claim the freed block
      p = static_cast<T*>(allocLarge((want ? want : 1) * sizeof(T), 64));
      n = want;
    }
    return p;
  }
  // Gives the memory back (a lean engine between the phases of a step; the next get allocates it again).
  void release() {
    free(p);
    p = nullptr;
    n = 0;
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

// The straight-through estimator's rectangle kernel K((z - theta) / eps) / eps.
inline float rect(float z, float theta, float eps) {
  float u = (z - theta) / eps;
  return (u > -0.5f && u < 0.5f) ? 1.f / eps : 0.f;
}

// Thread t's slice [b0, b1) of B rows split into T near-equal slices in order (empty past the end): the fixed
// slices whose per-thread sums are added in thread order, so a result does not depend on which thread ran first.
inline std::pair<long, long> threadRows(long B, int T, int t) {
  const long per = (B + T - 1) / T, b0 = per * t, b1 = b0 + per < B ? b0 + per : B;
  return {b0, b1 > b0 ? b1 : b0};
}

// A counting sort's places: from counts [T][m + 1] (entries of latent j counted by thread t), each latent's list start
// (colStart [m + 1]: the lists one after another) and each thread's place in it (off [T][m]: threads in order within a
// list). Returns the total.
inline long groupOffsets(const long* counts, int T, int m, long* colStart, long* off) {
  long run = 0;
  for (int j = 0; j < m; j++) {
    colStart[j] = run;
    for (int t = 0; t < T; t++) {
      off[(size_t)t * m + j] = run;
      run += counts[(size_t)t * (m + 1) + j];
    }
  }
  colStart[m] = run;
  return run;
}

// A float kept in an int32 slot whose int is no longer read (AuxK's dL/dpre over its latent ids), by its bits:
// memcpy rather than a pointer cast, which the compiler's aliasing rules do not allow.
inline void putFloatBits(int32_t* slot, float v) { std::memcpy(slot, &v, sizeof v); }
inline float floatBits(const int32_t* slot) {
  float v;
  std::memcpy(&v, slot, sizeof v);
  return v;
}

}  // namespace sdl
