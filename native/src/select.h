// Selection: the k largest entries of a row (TopK), the k-th largest positive value of a whole batch
// (BatchTopK), and small sorts, on (value, index) pairs held in separate arrays.
#pragma once
#include <cstdint>
#include <vector>

#include "pool.h"

namespace sdl {

// Reorders (val, idx) so that the first k entries are the k largest values (in no particular order).
void partitionTopK(float* val, int32_t* idx, int n, int k);

// The k-th largest of v[0..n) (1 <= k <= n), without data-dependent branches. v has room for n + 16 floats and is
// overwritten; `work` holds >= 2n + 32 floats.
float kthLargestInPlace(float* v, int n, int k, float* work);

// Sorts (idx, val) pairs by ascending idx (n is small: k entries of one row).
void sortByIndex(int32_t* idx, float* val, int n);

// Appends (j0 + j, z[j]) for j in [0, m) with z[j] > t (strict) or >= t, and always z[j] > 0, in index order;
// returns the count. ci/cv need 16 entries of slack.
int collect(const float* z, int m, float t, bool strict, int j0, int32_t* ci, float* cv);

// Keeps, in place and in their order, the k (< n) largest of the candidates (ties: the earlier first) and returns
// the k-th largest value. `work` holds >= 3n + 64 floats.
float keepTopK(int32_t* ci, float* cv, int n, int k, float* work);

// A lower bound on the k-th largest of z[0..m) (the k-th largest maximum of 4k strided groups; 0 when m is under
// 8k or k >= m): only values >= it can be among the top k. `work` holds >= 3 x 4k + 64 floats.
float topkFloor(const float* z, int m, int k, float* work);

// Top-k of z[0..m) among values > 0, sorted by index; returns how many (<= k). `scratch` holds >= 5m + 128 floats.
int topkRow(const float* z, int m, int k, int32_t* idx, float* val, float* scratch);

// The want-th largest value among the positive entries of z[0..n) (want >= 1, at most their count).
float kthLargestPositive(Pool& pool, const float* z, long n, long want);
// The same over the concatenation of several spans of values.
struct FloatSpan {
  const float* p;
  long n;
};
float kthLargestPositive(Pool& pool, const std::vector<FloatSpan>& parts, long want);

// Number of positive entries of z[0..n).
long countPositive(Pool& pool, const float* z, long n);

}  // namespace sdl
