// The processor's own ceiling on the kernels' arithmetic: multiply-adds in registers only (no memory traffic), many
// independent chains, one thread per core. bench/fit.ts reports the rates beside its GEMM rates, so a training rate
// can be read against what the instructions allow at all (docs/BENCHMARKS.md).
#pragma once

namespace sdl {

struct PeakRates {
  double fp32 = 0;  // GFLOP/s of float32 FMA (the widest this processor has: 512-bit, else 256-bit; 0 without FMA)
  double bf16 = 0;  // GFLOP/s of AVX512_BF16's dot product (each pair of products and its add count 4 FLOP); 0 without it
};

// Runs `threads` threads together, each ~`seconds` per instruction kind; rates summed over the threads.
PeakRates instructionPeak(int threads, double seconds);

}  // namespace sdl
