// How many of n floats are NaN or infinite: the harvest refuses a model's non-finite hook values as each batch lands,
// and training refuses rows holding them. The TypeScript reference is src/util/finite.ts; a test holds the two equal.
#pragma once
#include <cstddef>

namespace sdl {

size_t countNonFinite(const float* p, size_t n);

}  // namespace sdl
