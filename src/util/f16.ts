// IEEE half precision (binary16) conversion: --dtype f16 shards, F16 safetensors and ONNX initializers, float16
// model outputs. Round to nearest even, subnormals kept, NaN payloads carried as the F16C instructions carry them
// (quiet bit set, the top payload bits kept); a finite value too large for a half is counted, for the caller to
// refuse (it would be stored as an infinity). The arrays go through the native build's F16C/AVX-512 conversion
// (native/src/half.cc) when it is loaded; the functions here are its reference, and a test holds the two equal bit
// for bit over every half and a sweep of float32 patterns. bfloat16 (BF16 safetensors) is widened at the end.
import { NATIVE_MIN_LENGTH, native } from '../native/kernels.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The half nearest `v` (ties to even), as its 16 bits. */
export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 | (mant >>> 13) : 0x7c00); // NaN (made quiet) / Inf
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> 0
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

/** The float32 bits of half `h` (exact: every half is a float32). */
function halfBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant ? 0x400000 | (mant << 13) : 0)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  let e = -14;
  while (!(mant & 0x400)) {
    mant <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

export function fromHalf(h: number): number {
  u32[0] = halfBits(h);
  return f32[0];
}

/** The smallest float32 magnitude that rounds to a half's infinity (ties to even: 65520 is halfway past 65504). */
const HALF_OVERFLOW = 65520;

/**
 * src rounded to halves into dst's first src.length entries; returns how many finite values were too large for a
 * half (each became an infinity), for the caller to refuse.
 */
export function f32ToF16Reference(src: Float32Array, dst: Uint16Array): number {
  let over = 0;
  for (let i = 0; i < src.length; i++) {
    const a = Math.abs(src[i]);
    if (a >= HALF_OVERFLOW && a < Infinity) over++;
    dst[i] = toHalf(src[i]);
  }
  return over;
}

export function f16ToF32Reference<D extends Float32Array<ArrayBufferLike> = Float32Array>(src: Uint16Array, dst: D = new Float32Array(src.length) as D): D {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = halfBits(src[i]);
  return dst;
}

/** As f32ToF16Reference, natively where the build is loaded. */
export function f32ToF16(src: Float32Array, dst: Uint16Array): number {
  const convert = src.length >= NATIVE_MIN_LENGTH ? native()?.f32ToF16 : undefined;
  return convert ? convert(src, dst) : f32ToF16Reference(src, dst);
}

export function f16ToF32<D extends Float32Array<ArrayBufferLike> = Float32Array>(src: Uint16Array, dst: D = new Float32Array(src.length) as D): D {
  const convert = src.length >= NATIVE_MIN_LENGTH ? native()?.f16ToF32 : undefined;
  if (!convert) return f16ToF32Reference(src, dst);
  convert(src, dst);
  return dst;
}

/** bfloat16 (a float32's upper 16 bits) -> float32: exact, every bit pattern kept. */
export function bf16ToF32<D extends Float32Array<ArrayBufferLike> = Float32Array>(src: Uint16Array, dst: D = new Float32Array(src.length) as D): D {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return dst;
}
