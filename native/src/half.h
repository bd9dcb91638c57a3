// float32 <-> IEEE 754 binary16 (float16: `--dtype f16` shards, F16 safetensors, float16 model outputs). Round to
// nearest even, subnormals kept, NaN payloads as the F16C instructions carry them (quiet bit set, the top payload
// bits kept). The TypeScript reference is src/util/f16.ts; a test holds the two equal bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sdl {

// Returns how many finite values were too large for a half (|x| >= 65520, rounded to infinity): a caller storing
// activations or weights as float16 refuses them rather than write infinities.
size_t f32ToF16(const float* src, uint16_t* dst, size_t n);
void f16ToF32(const uint16_t* src, float* dst, size_t n);

}  // namespace sdl
