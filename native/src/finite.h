// How many of n floats are NaN or infinite: the harvest refuses a model's non-finite hook values as each batch lands,
// and training refuses rows holding them. The TypeScript reference is src/util/finite.ts; a test holds the two equal.
#pragma once
#include <cstddef>

namespace sdl {

size_t countNonFinite(const float* p, size_t n);

// Copies n floats and counts the NaN or infinite ones in the same pass: a forward worker places a batch's hooks in
// the shard with it, so checking them costs no second read.
size_t copyCountNonFinite(const float* src, float* dst, size_t n);

}  // namespace sdl
