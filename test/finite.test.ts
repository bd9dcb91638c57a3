// NaN and infinity counting (native/src/finite.cc against src/util/finite.ts): every kind of non-finite float32, the
// finite extremes beside them, and the vector loop's tails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyCountingNonFinite, countNonFinite, countNonFiniteReference, firstNonFinite } from '../src/util/finite.js';
import { native } from '../src/native/kernels.js';
import { Rng } from '../src/util/rng.js';

const mod = native();

test('countNonFinite: NaN (any payload, either sign) and infinities counted, finite extremes not; native = reference; copying while counting', {
  skip: mod?.countNonFinite && mod.copyCountNonFinite ? false : 'native kernels not built',
}, () => {
  const special = new Uint32Array([0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x7fbfffff, 0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000]);
  const kinds = new Float32Array(special.buffer);
  assert.equal(countNonFiniteReference(kinds), 6);
  assert.equal(mod!.countNonFinite!(kinds), 6);
  const rng = new Rng(3);
  const big = Float32Array.from({ length: 100_003 }, () => rng.normal() * 1e30);
  for (let i = 0; i < 50; i++) big[rng.int(big.length)] = kinds[rng.int(kinds.length)];
  const want = countNonFiniteReference(big);
  assert.ok(want > 0);
  assert.equal(mod!.countNonFinite!(big), want);
  assert.equal(countNonFinite(big), want);
  assert.ok(!Number.isFinite(big[firstNonFinite(big)]) && big.subarray(0, firstNonFinite(big)).every(Number.isFinite));
  for (let off = 0; off < 3; off++)
    for (let n = 0; n <= 40; n++) {
      const a = new Float32Array(n + off).fill(1).subarray(off);
      if (n) a[n - 1] = Number.NaN;
      if (n > 17) a[17] = -Infinity;
      assert.equal(mod!.countNonFinite!(a), countNonFiniteReference(a), `offset ${off}, length ${n}`);
    }
  assert.equal(firstNonFinite(new Float32Array(5)), -1);
  // Copying and counting in one pass: the same bits copied (NaN payloads included), the same count, dst's rest kept.
  const into = new Float32Array(big.length + 3).fill(2);
  assert.equal(copyCountingNonFinite(big, into), want);
  assert.deepEqual(new Uint32Array(into.buffer, 0, big.length), new Uint32Array(big.buffer));
  assert.deepEqual(Array.from(into.subarray(big.length)), [2, 2, 2]);
  for (let n = 0; n <= 40; n++) {
    const a = kinds.subarray(0, Math.min(n, kinds.length));
    const d = new Float32Array(a.length);
    assert.equal(mod!.copyCountNonFinite!(a, d), countNonFiniteReference(a), `copy, length ${a.length}`);
    assert.deepEqual(new Uint32Array(d.buffer), new Uint32Array(a.slice().buffer));
  }
  assert.throws(() => mod!.copyCountNonFinite!(big, new Float32Array(3)), /dst is shorter than src/);
});
