// Half precision: the TypeScript reference against IEEE 754's definition, and the native F16C/AVX-512 conversion
// (native/src/half.cc) against the reference, bit for bit: every half, float32 patterns at every exponent with the
// rounding ties of every shift, NaN payloads, and the vector loops' tails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f16ToF32, f16ToF32Reference, f32ToF16, f32ToF16Reference, fromHalf, toHalf } from '../src/util/f16.js';
import { native } from '../src/native/kernels.js';
import { Rng } from '../src/util/rng.js';

const mod = native();
const skip = mod?.f32ToF16 && mod.f16ToF32 ? false : 'native kernels not built';
const bitsOf = (f: Float32Array) => new Uint32Array(f.buffer, f.byteOffset, f.length);
const floatsOf = (bits: Uint32Array) => new Float32Array(bits.buffer, bits.byteOffset, bits.length);

test('the reference: known halves, ties to even, overflow, subnormals, signed zero, NaN made quiet with its payload', () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff], // the largest half
    [65519.99, 0x7bff],
    [65520, 0x7c00], // halfway to 2^16: ties to even rounds up to Inf
    [1e6, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // the smallest normal
    [2 ** -24, 0x0001], // the smallest subnormal
    [2 ** -25, 0x0000], // halfway to it: ties to even (0)
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway between 1 and 2 subnormal steps: to even (2)
    [1 + 2 ** -11, 0x3c00], // halfway between 1 and its successor: to even
    [1 + 3 * 2 ** -11, 0x3c02],
    [-0, 0x8000],
    [1e-10, 0x0000],
  ];
  for (const [v, h] of cases) assert.equal(toHalf(v), h, `toHalf(${v})`);
  const nan = new Uint32Array([0x7f800001, 0xffbfffff, 0x7f802000]);
  const nanHalves = new Uint16Array(3);
  assert.equal(f32ToF16Reference(floatsOf(nan), nanHalves), 0, 'NaN is not an overflow');
  assert.deepEqual(Array.from(nanHalves), [0x7e00, 0xffff, 0x7e01]);
  // Finite values too large for a half are counted (they become infinities); infinities themselves are not.
  const edge = new Float32Array([65504, 65519.99, 65520, -70000, 3e38, Infinity, -Infinity, 1]);
  const edgeHalves = new Uint16Array(edge.length);
  assert.equal(f32ToF16Reference(edge, edgeHalves), 3);
  assert.deepEqual(Array.from(edgeHalves), [0x7bff, 0x7bff, 0x7c00, 0xfc00, 0x7c00, 0x7c00, 0xfc00, 0x3c00]);
  // Every half's value by the definition; every non-NaN half rounds back to itself.
  for (let h = 0; h < 0x10000; h++) {
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    const s = h & 0x8000 ? -1 : 1;
    const want = e === 0x1f ? (m ? Number.NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    assert.ok(Object.is(fromHalf(h), want), `fromHalf(${h.toString(16)})`);
    if (!(e === 0x1f && m)) assert.equal(toHalf(want), h);
  }
  // NaN halves widen with their payload and the quiet bit (as vcvtph2ps does).
  assert.deepEqual(Array.from(bitsOf(f16ToF32Reference(new Uint16Array([0x7c01, 0xfe00, 0x7dff])))), [0x7fc02000, 0xffc00000, 0x7fffe000]);
});

test('native float16 conversion = the reference, bit for bit', { skip }, () => {
  // Every half, widened.
  const halves = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
  const wide = new Float32Array(0x10000);
  mod!.f16ToF32!(halves, wide);
  assert.deepEqual(bitsOf(wide), bitsOf(f16ToF32Reference(halves)));

  // Float32 patterns: both signs, every exponent, mantissas around every rounding position (the tie, one below, one
  // above, for every shift from the normal halves' 13 to the subnormals' 24), and random ones.
  const pats: number[] = [];
  const rng = new Rng(7);
  for (let sign = 0; sign < 2; sign++)
    for (let exp = 0; exp < 256; exp++) {
      const base = ((sign << 31) | (exp << 23)) >>> 0;
      const near = exp >= 98 && exp <= 143; // where halves are: every shift's ties
      for (let s = 13; s <= (near ? 24 : 13); s++)
        for (let j = 0; j < 2 ** (23 - s); j += Math.max(1, (2 ** (23 - s)) >>> 9)) {
          const tie = j * 2 ** s + 2 ** (s - 1);
          for (const d of [-1, 0, 1]) pats.push((base | ((tie + d) & 0x7fffff)) >>> 0);
        }
      for (let i = 0; i < 512; i++) pats.push((base | rng.int(0x800000)) >>> 0);
    }
  for (let i = 0; i < 200_000; i++) pats.push(rng.int(2 ** 16) * 2 ** 16 + rng.int(2 ** 16));
  const src = floatsOf(Uint32Array.from(pats));
  const got = new Uint16Array(src.length);
  const want = new Uint16Array(src.length);
  const overflows = f32ToF16Reference(src, want);
  assert.ok(overflows > 1000, `${overflows} overflows among the patterns`);
  assert.equal(mod!.f32ToF16!(src, got), overflows, 'the same overflow count');
  for (let i = 0; i < src.length; i++)
    if (got[i] !== want[i]) assert.fail(`f32 bits ${pats[i].toString(16)}: native ${got[i].toString(16)}, reference ${want[i].toString(16)}`);

  // The vector loops' tails and unaligned starts; dst longer than src keeps its other entries.
  for (let off = 0; off < 3; off++)
    for (let n = 0; n <= 40; n++) {
      const s = src.subarray(1000 + off, 1000 + off + n);
      const d = new Uint16Array(n + 2).fill(0xabcd);
      const r = new Uint16Array(n);
      assert.equal(mod!.f32ToF16!(s, d), f32ToF16Reference(s, r), `overflows, offset ${off}, length ${n}`);
      assert.deepEqual(Array.from(d), [...r, 0xabcd, 0xabcd], `f32ToF16, offset ${off}, length ${n}`);
      const h = halves.subarray(31000 + off, 31000 + off + n);
      const w = new Float32Array(n + 1).fill(7);
      mod!.f16ToF32!(h, w);
      assert.deepEqual(Array.from(w), [...f16ToF32Reference(h), 7], `f16ToF32, offset ${off}, length ${n}`);
    }
  // The exported functions (native past a few dozen values) give the reference's bits.
  const viaExport = new Uint16Array(src.length);
  assert.equal(f32ToF16(src, viaExport), overflows);
  assert.deepEqual(viaExport, want);
  assert.deepEqual(bitsOf(f16ToF32(halves)), bitsOf(wide));
  assert.throws(() => mod!.f32ToF16!(src, new Uint16Array(3)), /dst is shorter than src/);
  assert.throws(() => mod!.f16ToF32!(halves, new Uint16Array(0x10000) as unknown as Float32Array), /wrong array types/);
});
