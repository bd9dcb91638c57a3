// The bf16-screened TopK encoder (native/src/screen.h) against the exact float32 fused encoder: the same latents
// and bit-identical values on data chosen to break it (exact ties, an outlier dimension, rows of zeros, subnormal
// inputs, rows with fewer than k positives, depths that cross the GEMM's blocks, columns so alike that the bounds
// cannot separate them, values too large to screen), and the same training steps (AuxK on dead latents included)
// for SAEs and cross-layer transcoders, TopK and the batch-wide selections (BatchTopK, Matryoshka). A machine without
// AVX512_BF16 runs the exact path twice; the tests say so.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import type { NativeEngine, NativeForward, NativeModule, NativeStepOptions, NativeTensors } from '../src/native/kernels.js';
import { Rng } from '../src/util/rng.js';
import { nativeSkip, nativeStepFresh, requireNative, sameNativeStep } from './helpers.js';

/** One SAE step of d's shape on fresh buffers (test/helpers.ts). */
const stepFresh = (e: NativeEngine, d: Data, p: NativeTensors, X: Float32Array, opts: NativeStepOptions) =>
  nativeStepFresh(e, { dIn: d.dIn, dOut: d.dIn, dSae: d.m }, p, X, d.n, opts);

const skip = nativeSkip;
let mod: NativeModule;
before(() => {
  if (skip) return;
  const m = (mod = requireNative());
  if (!m.bf16Screen) console.log(`# this processor or build (${m.isa}) has no AVX512_BF16: the screened path is not exercised here`);
});

interface Data {
  dIn: number;
  m: number;
  n: number;
  W_encT: Float32Array;
  b_enc: Float32Array;
  X: Float32Array;
}

function gaussian(dIn: number, m: number, n: number, seed: number, wScale = 0.05): Data {
  const rng = new Rng(seed);
  const W_encT = Float32Array.from({ length: m * dIn }, () => rng.normal() * wScale);
  const b_enc = Float32Array.from({ length: m }, () => rng.normal() * 0.01);
  const X = Float32Array.from({ length: n * dIn }, () => rng.normal());
  return { dIn, m, n, W_encT, b_enc, X };
}

function engine(d: Data, k: number, screen: boolean) {
  return new mod.Engine({
    dIn: d.dIn,
    dOut: d.dIn,
    dSae: d.m,
    activation: 1,
    k,
    applyBDec: false,
    noBias: false,
    tied: false,
    threads: 2,
    screen: screen ? 2 : 0,
  });
}

function params(d: Data): NativeTensors {
  return { W_encT: d.W_encT, b_enc: d.b_enc, W_dec: new Float32Array(d.m * d.dIn), b_dec: new Float32Array(d.dIn) };
}

/** An SAE engine over d's shape (x is input and target, b_dec subtracted first). */
function saeEngine(d: Data, activation: number, k: number, screen?: 0 | 1 | 2, lean = false) {
  return new mod.Engine({
    lean,
    dIn: d.dIn,
    dOut: d.dIn,
    dSae: d.m,
    activation,
    k,
    widths: [200, 900, d.m],
    applyBDec: true,
    noBias: false,
    tied: false,
    threads: 2,
    screen,
  });
}

/** Every row's count, latents and values identical (values bit for bit). */
function sameOutputs(name: string, exact: NativeForward, screened: NativeForward) {
  assert.deepEqual(Array.from(screened.count), Array.from(exact.count), `${name}: counts`);
  assert.deepEqual(Array.from(screened.idx), Array.from(exact.idx), `${name}: latents`);
  assert.deepEqual(
    new Uint32Array(screened.val.buffer, screened.val.byteOffset, screened.val.length),
    new Uint32Array(exact.val.buffer, exact.val.byteOffset, exact.val.length),
    `${name}: value bits`,
  );
}

/** TopK inference, then BatchTopK's (every entry above one threshold: the median of the TopK values), screened and not. */
function sameForward(name: string, d: Data, k: number) {
  const p = params(d);
  const exact = engine(d, k, false).forward(p, d.X, d.n, 0, false);
  sameOutputs(name, exact, engine(d, k, true).forward(p, d.X, d.n, 0, false));
  const sorted = Float32Array.from(exact.val).sort();
  const threshold = sorted.length ? sorted[sorted.length >> 1] : 0;
  const batch = (screen: boolean) =>
    new mod.Engine({ dIn: d.dIn, dOut: d.dIn, dSae: d.m, activation: 2, k, applyBDec: false, noBias: false, tied: false, threads: 2, screen: screen ? 2 : 0 });
  sameOutputs(`${name}, above ${threshold}`, batch(false).forward(p, d.X, d.n, threshold, false), batch(true).forward(p, d.X, d.n, threshold, false));
  return exact;
}

test('bf16-screened TopK encoder = the exact fused encoder, bit for bit, on data chosen to break it', { skip }, () => {
  // d_in 777: odd (a padded bf16 pair), past the bf16 kernel's 512-deep block and three of the float32 GEMM's
  // 256-deep blocks (the recomputation's order), a partial 16-wide tail; 1,500 latents: partial column panels.
  sameForward('gaussian, d_in 777', gaussian(777, 1500, 400, 1), 32);
  sameForward('gaussian, k 1', gaussian(64, 700, 300, 2), 1);

  // Exact ties: every 7th latent copies the previous one's encoder (the lower index must win).
  const ties = gaussian(96, 1100, 350, 3);
  for (let j = 1; j < ties.m; j += 7) {
    ties.W_encT.copyWithin(j * ties.dIn, (j - 1) * ties.dIn, j * ties.dIn);
    ties.b_enc[j] = ties.b_enc[j - 1];
  }
  sameForward('exact ties', ties, 16);

  // An outlier dimension (a "massive activation" 100x the rest), rows of zeros, a row of subnormal values.
  const odd = gaussian(128, 1024, 300, 4);
  for (let i = 0; i < odd.n; i++) odd.X[i * odd.dIn + 3] = 100 + i / 7;
  for (let i = 0; i < odd.n; i += 5) odd.X.fill(0, i * odd.dIn, (i + 1) * odd.dIn);
  for (let q = 0; q < odd.dIn; q++) odd.X[7 * odd.dIn + q] = (q % 3) * 1e-40;
  sameForward('outlier dimension, zero and subnormal rows', odd, 32);

  // Fewer than k positive pre-activations in most rows.
  const few = gaussian(48, 600, 200, 5);
  few.b_enc.fill(-1.2);
  const out = sameForward('fewer positives than k', few, 64);
  assert.ok(
    out.count.some((c) => c < 64),
    'some rows have fewer than k positives',
  );

  // Columns alike to within the bf16 rounding: the bounds cannot narrow the rows, which are redone exactly.
  const alike = gaussian(64, 800, 200, 6);
  const base = alike.W_encT.slice(0, alike.dIn);
  const rng = new Rng(60);
  for (let j = 0; j < alike.m; j++) for (let q = 0; q < alike.dIn; q++) alike.W_encT[j * alike.dIn + q] = base[q] * (1 + 1e-5 * rng.normal());
  alike.b_enc.fill(0.5);
  sameForward('columns alike (rows redone exactly)', alike, 8);

  // TopK's two passes over more than one chunk of latents (9,216 a chunk), ties across the chunks' boundary and
  // a partial last vector: every 5th latent copies the one 9,216 - 5 before it (the lower index must win).
  const chunks = gaussian(40, 9300, 120, 8);
  for (let j = 9216; j < chunks.m; j += 5) {
    chunks.W_encT.copyWithin(j * chunks.dIn, (j - 9211) * chunks.dIn, (j - 9210) * chunks.dIn);
    chunks.b_enc[j] = chunks.b_enc[j - 9211];
  }
  sameForward('two chunks of latents', chunks, 32);
  // A last block of 5 latents: 15 of its 16 vectors hold no latent (the groups past the end).
  sameForward('a last block of 5 latents', gaussian(64, 1029, 150, 9), 32);

  // Errors near the bound, against the two-pass screen's group bounds (k 1). x: 32 entries of 1 + 2^-9 (bf16 rounds
  // them down to 1), then 32 of 1. Latent 0 (A) has 1 + 2^-9 on the first 32: its bf16 value 32 is 0.125 below its
  // float32 value 32.125, the bound allowing ~0.15. Latent 16 (B) has 1 on the last 32 and bias 0.09: exactly 32.09,
  // lower bound ~32.03, above A's bf16 value. Latent 32 (C) has 1 + 3 x 2^-9 on the last 32 (bf16 rounds it up to
  // 1 + 2^-7) and bias -0.08: bf16 32.17, above A's upper bound, float32 32.1075. A is the top 1: kept only if
  // its group's upper bound carries the half-width (B's lower bound is above A's bf16 value) and the row's first
  // tau is a lower bound (C's bf16 value is above A's upper bound). The rest: no weights, bias -10.
  const near = gaussian(64, 300, 4, 10);
  near.W_encT.fill(0);
  near.b_enc.fill(-10);
  for (let i = 0; i < near.n; i++) for (let q = 0; q < 64; q++) near.X[i * 64 + q] = q < 32 ? 1 + 2 ** -9 : 1;
  for (let q = 0; q < 32; q++) {
    near.W_encT[0 * 64 + q] = 1 + 2 ** -9;
    near.W_encT[16 * 64 + 32 + q] = 1;
    near.W_encT[32 * 64 + 32 + q] = 1 + 3 * 2 ** -9;
  }
  near.b_enc[0] = 0;
  near.b_enc[16] = 0.09;
  near.b_enc[32] = -0.08;
  const top = sameForward('errors near the bound', near, 1);
  assert.deepEqual(Array.from(top.idx), [0, 0, 0, 0], "latent 0 is every row's top 1");

  // Values whose bf16 products could overflow: refused before screening, the exact path runs.
  const huge = gaussian(32, 300, 60, 7);
  for (let q = 0; q < huge.dIn; q++) huge.X[5 * huge.dIn + q] = 3e37;
  sameForward('huge values (screening refused)', huge, 8);
});

/** bf16 rounding to nearest even, as the kernel rounds (a float32 in, the rounded float32 out). */
function bf16(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16;
  return f[0];
}

test('bf16 screening on rows built to reverse the bf16 order of two latents: the bound keeps both, the exact values decide', { skip }, () => {
  // Row r pits latent 2r against 2r + 1. w_{2r} is random; w_{2r+1} = bf16(w_{2r}) plus one bf16 step on four
  // coordinates (exactly representable). x (bf16-representable) points along bf16(w_{2r}) and along w_{2r}'s
  // rounding residual, so in bf16 latent 2r + 1 is ahead, while in float32 latent 2r is, by most of the residual
  // term of the bound: a bound even a few times too tight drops latent 2r and the test fails.
  const dIn = 256,
    n = 64,
    m = 2 * n + 200;
  const rng = new Rng(11);
  const W = Float32Array.from({ length: m * dIn }, () => rng.normal());
  const X = new Float32Array(n * dIn);
  for (let r = 0; r < n; r++) {
    const w0 = W.subarray(2 * r * dIn, (2 * r + 1) * dIn),
      w1 = W.subarray((2 * r + 1) * dIn, (2 * r + 2) * dIn);
    const t = Array.from(w0, bf16);
    const res = Array.from(w0, (v, i) => v - t[i]);
    const nt = Math.hypot(...t),
      nr = Math.hypot(...res);
    const x = X.subarray(r * dIn, (r + 1) * dIn);
    for (let i = 0; i < dIn; i++) x[i] = bf16((5 * t[i]) / nt + (5 * res[i]) / nr);
    for (let i = 0; i < dIn; i++) w1[i] = t[i];
    // One bf16 step up on the four coordinates where x is largest and positive.
    const order = Array.from(x.keys()).sort((a, b) => x[b] - x[a]);
    for (const i of order.slice(0, 4)) {
      const f = new Float32Array([t[i]]);
      const u = new Uint32Array(f.buffer);
      u[0] += t[i] >= 0 ? 0x10000 : -0x10000;
      w1[i] = f[0];
    }
    let e0 = 0,
      e1 = 0,
      s0 = 0,
      s1 = 0;
    for (let i = 0; i < dIn; i++) {
      e0 += x[i] * w0[i];
      e1 += x[i] * w1[i];
      s0 += x[i] * t[i];
      s1 += x[i] * bf16(w1[i]);
    }
    assert.ok(e0 > e1 && s1 > s0, `row ${r}: float32 order ${e0} > ${e1} and bf16 order ${s1} > ${s0}`);
  }
  // The other latents far below: small random columns.
  for (let j = 2 * n; j < m; j++) for (let i = 0; i < dIn; i++) W[j * dIn + i] *= 0.05;
  const d: Data = { dIn, m, n, W_encT: W, b_enc: new Float32Array(m), X };
  const exact = sameForward('reversed pairs', d, 1);
  for (let r = 0; r < n; r++) assert.equal(exact.idx[r], 2 * r, `row ${r}: the float32 winner`);
});

test('a screened TopK training step = the exact step: loss, selection, AuxK on dead latents, every gradient', { skip }, () => {
  const d = gaussian(200, 2000, 512, 8, 0.08);
  const k = 16;
  const dead = new Uint8Array(d.m);
  for (let j = 2; j < d.m; j += 3) dead[j] = 1;
  const rng = new Rng(80);
  const p: NativeTensors = {
    W_encT: d.W_encT,
    b_enc: d.b_enc,
    W_dec: Float32Array.from({ length: d.m * d.dIn }, () => rng.normal() * 0.05),
    b_dec: Float32Array.from({ length: d.dIn }, () => rng.normal() * 0.1),
  };
  const opts = { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 24, dead };
  const exact = stepFresh(saeEngine(d, 1, k, 0), d, p, d.X, opts);
  const screened = stepFresh(saeEngine(d, 1, k, 2), d, p, d.X, opts);
  assert.equal(exact.r.selection, 1);
  assert.equal(stepFresh(saeEngine(d, 1, k), d, p, d.X, opts).r.selection, 1, 'by default, d_in 200 is not screened (slower there)');
  // The default's bounds for TopK: from d_in 256 and 2^20 products a row (d_in x latents); below either the float32
  // path is as fast or faster.
  const yes = mod.bf16Screen ? 3 : 1;
  for (const [dIn, m, want] of [
    [255, 8192, 1],
    [256, 4095, 1],
    [256, 4096, yes],
    [320, 3276, 1],
    [320, 3277, yes],
  ] as const) {
    const w = gaussian(dIn, m, 24, 81);
    const pw = { ...params(w), b_dec: new Float32Array(dIn) };
    assert.equal(
      stepFresh(saeEngine(w, 1, 8), w, pw, w.X, { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 }).r.selection,
      want,
      `default at ${dIn} x ${m}`,
    );
  }
  assert.equal(screened.r.selection, mod.bf16Screen ? 3 : 1, 'screened where the processor can');
  assert.ok(exact.r.auxLoss > 0, 'AuxK ran');
  sameNativeStep('topk', screened, exact);
  // Most latents dead, their columns over several of the GEMM's chunks (a 1 MiB budget: 1,024 columns of 200
  // floats, each row's AuxK selection carried from chunk to chunk): still screened, and still the exact step.
  const w = gaussian(200, 6000, 512, 8, 0.08);
  const pw: NativeTensors = {
    W_encT: w.W_encT,
    b_enc: w.b_enc,
    W_dec: Float32Array.from({ length: w.m * w.dIn }, () => rng.normal() * 0.05),
    b_dec: Float32Array.from({ length: w.dIn }, () => rng.normal() * 0.1),
  };
  const manyDead = new Uint8Array(w.m).map((_, j) => (j % 4 ? 1 : 0)); // 4,500 dead: five chunks
  const manyOpts = { ...opts, auxkK: 100, dead: manyDead };
  const before = mod.gemmChunkBytes(1 << 20);
  let screenedMany: ReturnType<typeof stepFresh>, exactMany: ReturnType<typeof stepFresh>;
  try {
    screenedMany = stepFresh(saeEngine(w, 1, k, 2), w, pw, w.X, manyOpts);
    exactMany = stepFresh(saeEngine(w, 1, k, 0), w, pw, w.X, manyOpts);
  } finally {
    mod.gemmChunkBytes(before);
  }
  assert.equal(screenedMany.r.selection, mod.bf16Screen ? 3 : 1, 'three quarters dead: still screened');
  assert.ok(exactMany.r.auxLoss > 0);
  sameNativeStep('topk', screenedMany, exactMany);
  // A lean engine (--low-memory) selects AuxK's latents after the encoder has given its bf16 copy back, and writes
  // AuxK's dL/dpre over the latent ids once grouped: the second step (the copy given back by the first) takes that
  // order for certain. The same step, chunks and all.
  mod.gemmChunkBytes(1 << 20);
  try {
    for (let s = 0; s < 2; s++) {
      const lean = stepFresh(saeEngine(w, 1, k, 2, true), w, pw, w.X, manyOpts);
      assert.equal(lean.r.selection, mod.bf16Screen ? 3 : 1);
      sameNativeStep('topk', lean, exactMany);
    }
  } finally {
    mod.gemmChunkBytes(before);
  }
});

test("a lean engine gives the screen's bf16 copy of W_enc back within its step; any other keeps it for the next", { skip }, (t) => {
  if (!mod.bf16Screen) return t.skip('no AVX512_BF16: nothing is screened');
  // Until stop 44 a screened call took itself to be lean when it found no copy kept, which every engine's first call
  // did: every engine then gave its copy back and made it again each step, with a lean engine's smaller chunks.
  const w = gaussian(64, 1000, 100, 5); // at least the engines' Matryoshka widths (900)
  const pw = { ...params(w), b_dec: new Float32Array(w.dIn) };
  const opts = { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 };
  const copyBytes = (w.dIn / 2) * Math.ceil(w.m / 32) * 32 * 4; // bf16 pairs x latents padded to the 32-wide tile
  // TopK (selection 3: screened), and BatchTopK's first step (4: its floor from the rows' own screened top 2k).
  for (const [lean, activation, selection, want] of [
    [false, 1, 3, copyBytes],
    [true, 1, 3, 0],
    [false, 2, 4, copyBytes],
    [true, 2, 4, 0],
  ] as const) {
    const r = stepFresh(saeEngine(w, activation, 8, 2, lean), w, pw, w.X, opts).r;
    assert.equal(r.selection, selection);
    assert.equal(mod.screenCopyBytes(), want, `${lean ? 'lean' : 'kept'}, activation ${activation}`);
  }
  // TopK's screened values, a chunk of latents at a time: a whole row block's 4,096 here (2.6 MiB a thread), a lean
  // engine's 2,304 (9 blocks of 256, its 1.5 MiB). A lean step after another engine's call (fit's initialisation
  // encodes a sample through an inference engine) holds its own chunk again, not the larger one left behind.
  const w2 = gaussian(64, 4096, 400, 6);
  const pw2 = { ...params(w2), b_dec: new Float32Array(w2.dIn) };
  const rowBlock = 168; // screen.cc's SMC
  for (const [lean, want] of [
    [false, rowBlock * 4096 * 4],
    [true, rowBlock * 9 * 256 * 4],
    [false, rowBlock * 4096 * 4],
  ] as const) {
    assert.equal(stepFresh(saeEngine(w2, 1, 8, 2, lean), w2, pw2, w2.X, opts).r.selection, 3);
    assert.equal(mod.screenChunkBytes(), want, lean ? 'lean' : 'kept');
  }
});

test('a screened cross-layer transcoder step = the exact step (each layer screened, AuxK per layer)', { skip }, () => {
  const L = 3,
    dI = 40,
    dO = 40,
    n = 700,
    B = 300,
    k = 8;
  const rng = new Rng(90);
  const r = (len: number, s: number) => Float32Array.from({ length: len }, () => rng.normal() * s);
  let decRows = 0;
  for (let l = 0; l < L; l++) decRows += n * (L - l) * dO;
  const p = { W_encT: r(L * n * dI, 0.15), b_enc: r(L * n, 0.01), W_dec: r(decRows, 0.05), b_dec: r(L * dO, 0.1) };
  const X = r(B * L * dI, 1),
    Y = r(B * L * dO, 1);
  const dead = new Uint8Array(L * n);
  for (let j = 1; j < L * n; j += 4) dead[j] = 1;
  const run = (screen: boolean) => {
    const e = new mod.Clt({ L, dIn: dI, dOut: dO, n, activation: 1, k, skip: false, threads: 2, screen: screen ? 2 : 0 });
    const g = {
      W_encT: new Float32Array(p.W_encT.length),
      b_enc: new Float32Array(p.b_enc.length),
      W_dec: new Float32Array(p.W_dec.length),
      b_dec: new Float32Array(p.b_dec.length),
    };
    const fired = new Float32Array(L * n);
    const res = e.step(p, g, X, Y, B, { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 12, dead }, fired);
    const fwd = e.forward(p, X, B, undefined, false);
    return { res, g, fired, fwd };
  };
  const exact = run(false);
  const screened = run(true);
  assert.equal(screened.res.selection, mod.bf16Screen ? 3 : 1);
  assert.ok(exact.res.auxLoss > 0, 'AuxK ran');
  for (const f of ['loss', 'mse', 'auxLoss', 'l0', 'nnz'] as const) assert.equal(screened.res[f], exact.res[f], f);
  assert.deepEqual(screened.fired, exact.fired);
  for (const t of ['W_encT', 'b_enc', 'W_dec', 'b_dec'] as const) assert.deepEqual(screened.g[t], exact.g[t], `d${t}`);
  assert.deepEqual(Array.from(screened.fwd.idx), Array.from(exact.fwd.idx), 'inference latents');
  assert.deepEqual(screened.fwd.val, exact.fwd.val, 'inference values');
});

test('screened BatchTopK and Matryoshka steps = the exact fused steps: candidates above the floor, AuxK, the fallback when the threshold falls', {
  skip,
}, () => {
  for (const activation of [2, 4]) {
    const d = gaussian(150, 1800, 400, 12 + activation, 0.08);
    const k = 12;
    const dead = new Uint8Array(d.m);
    for (let j = 4; j < d.m; j += 5) dead[j] = 1;
    const rng = new Rng(120 + activation);
    const p: NativeTensors = {
      W_encT: d.W_encT,
      b_enc: d.b_enc,
      W_dec: Float32Array.from({ length: d.m * d.dIn }, () => rng.normal() * 0.05),
      b_dec: new Float32Array(d.dIn),
    };
    const opts = { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 16, dead };
    const step = (e: NativeEngine, X: Float32Array) => stepFresh(e, d, p, X, opts);
    const same = (name: string, a: ReturnType<typeof step>, b: ReturnType<typeof step>) => sameNativeStep(`${activation} ${name}`, a, b);
    const exact = saeEngine(d, activation, k, 0),
      screened = saeEngine(d, activation, k, 2);
    same('first step (no threshold yet)', step(screened, d.X), step(exact, d.X));
    const a = step(screened, d.X),
      b = step(exact, d.X);
    assert.equal(b.r.selection, 1);
    assert.equal(a.r.selection, mod.bf16Screen ? 3 : 1, 'the second step is screened');
    if (activation === 2) assert.ok(b.r.auxLoss > 0, 'AuxK ran');
    same('fused', a, b);
    const small = d.X.map((v) => v * 0.2);
    const fa = step(screened, small),
      fb = step(exact, small);
    assert.equal(fa.r.selection, 4, "the threshold fell: the rows' floor");
    same('recomputed', fa, fb);
  }
});

test('screened ReLU sparse steps = the exact ones: the positives and their exact count (dense or sparse decided alike), screened only while few fire', {
  skip,
}, () => {
  // ~1.4% of the entries positive (pre-activations ~N(-2.2, 1)); rows scaled by 3 then put ~25% above zero.
  const d = gaussian(150, 1800, 400, 31, 0.08);
  d.b_enc.forEach((_, j) => (d.b_enc[j] = -2.2 + 0.1 * Math.sin(j)));
  const rng = new Rng(131);
  const p: NativeTensors = {
    W_encT: d.W_encT,
    b_enc: d.b_enc,
    W_dec: Float32Array.from({ length: d.m * d.dIn }, () => rng.normal() * 0.05),
    b_dec: new Float32Array(d.dIn),
  };
  const opts = { sparsity: 0.5, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 };
  const step = (e: NativeEngine, X: Float32Array) => stepFresh(e, d, p, X, opts);
  const same = (name: string, a: ReturnType<typeof step>, b: ReturnType<typeof step>) =>
    sameNativeStep(`relu ${name}`, a, b, ['loss', 'mse', 'sparsityLoss', 'l0', 'nnz', 'dense']);
  const exact = saeEngine(d, 0, 0, 0),
    screened = saeEngine(d, 0, 0, 2);
  same('first step (the pre-activations stored)', step(screened, d.X), step(exact, d.X));
  const a = step(screened, d.X),
    b = step(exact, d.X);
  assert.ok(!b.r.dense && b.r.l0 / d.m < 0.02, `few fire (${((100 * b.r.l0) / d.m).toFixed(2)}%)`);
  assert.equal(b.r.selection, 1);
  assert.equal(a.r.selection, mod.bf16Screen ? 3 : 1, 'under 3% firing: screened');
  same('sparse', a, b);
  // The dense-or-sparse decision at the exact count: with the line just above it both stay sparse (an upper bound on
  // the count in its place would send the screened step down the dense path).
  const edge = { ...opts, denseAbove: (b.r.nnz + 0.5) / (d.n * d.m) };
  const ea = stepFresh(screened, d, p, d.X, edge),
    eb = stepFresh(exact, d, p, d.X, edge);
  assert.equal(ea.r.selection, mod.bf16Screen ? 3 : 1);
  assert.ok(!ea.r.dense && !eb.r.dense, 'sparse at the line');
  same('at the dense line', ea, eb);
  // Many more fire: the screened encoder's count is exact, so both go dense (selection 2), the same step.
  const big = d.X.map((v) => v * 3);
  const ba = step(screened, big),
    bb = step(exact, big);
  assert.ok(bb.r.dense, 'the scaled rows take the dense path');
  assert.equal(ba.r.selection, 2);
  same('dense after a screened step', ba, bb);
  // After the dense step the next one stores the pre-activations again (0), and after that a step that fired over
  // 3% (engine.h kScreenReluBelow) is not screened (1).
  same('after the dense step', step(screened, d.X), step(exact, d.X));
  const mid = d.X.map((v) => v * 1.5);
  const m1 = step(screened, mid);
  same('between 3% and 10% firing', m1, step(exact, mid));
  assert.ok(m1.r.l0 / d.m > 0.03 && m1.r.l0 / d.m < 0.1, `between 3% and 10% (${((100 * m1.r.l0) / d.m).toFixed(2)}%)`);
  const m2 = step(screened, mid);
  assert.ok(!m2.r.dense, 'still sparse');
  assert.equal(m2.r.selection, 1, 'the last step fired over 3%: not screened');
});

test('a screened cross-layer BatchTopK step = the exact one', { skip }, () => {
  const L = 2,
    dI = 96,
    n = 800,
    B = 600,
    k = 16;
  const rng = new Rng(130);
  const r = (len: number, s: number) => Float32Array.from({ length: len }, () => rng.normal() * s);
  const p = { W_encT: r(L * n * dI, 0.15), b_enc: r(L * n, 0.01), W_dec: r(n * L * dI + n * dI, 0.05), b_dec: r(L * dI, 0.1) };
  const X = r(B * L * dI, 1);
  const run = (screen: 0 | 2) => {
    const e = new mod.Clt({ L, dIn: dI, dOut: dI, n, activation: 2, k, skip: false, threads: 2, screen });
    const out = [];
    for (let s = 0; s < 2; s++) {
      const g = {
        W_encT: new Float32Array(p.W_encT.length),
        b_enc: new Float32Array(p.b_enc.length),
        W_dec: new Float32Array(p.W_dec.length),
        b_dec: new Float32Array(p.b_dec.length),
      };
      const res = e.step(p, g, X, X, B, { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 }, new Float32Array(L * n));
      out.push({ res, g });
    }
    return out;
  };
  const [, b] = run(0);
  const [, a] = run(2);
  assert.equal(b.res.selection, 1);
  assert.equal(a.res.selection, mod.bf16Screen ? 3 : 1);
  for (const f of ['loss', 'mse', 'l0', 'nnz'] as const) assert.equal(a.res[f], b.res[f], f);
  assert.deepEqual(a.res.minSelected, b.res.minSelected);
  for (const t of ['W_encT', 'b_enc', 'W_dec', 'b_dec'] as const) assert.deepEqual(a.g[t], b.g[t], `d${t}`);
});

test("screened batch-wide selection: rows with more than 1,024 candidates (their lists' arrays given back after the block) and the rows after them = the exact encoder", {
  skip,
}, () => {
  // 12,000 latents: a row may hold up to 1,500 candidates before its block is redone exactly (which skips the
  // trimming). Rows of norm 0.92 to 1.04 x sqrt(d_in) put ~8% to ~11% of their pre-activations above the threshold
  // (~1,000 to ~1,300 candidates), so some rows' lists pass 1,024 entries and are trimmed, and later rows (the other
  // blocks, the second batch) reuse those slots.
  const d = gaussian(32, 12000, 400, 77);
  const rng = new Rng(78);
  const batches = [0, 1].map(() => {
    const X = Float32Array.from({ length: d.n * d.dIn }, () => rng.normal());
    for (let r = 0; r < d.n; r++) {
      const row = X.subarray(r * d.dIn, (r + 1) * d.dIn);
      const scale = ((0.92 + (0.12 * ((r * 7) % d.n)) / d.n) * Math.sqrt(d.dIn)) / Math.hypot(...row);
      for (let c = 0; c < d.dIn; c++) row[c] *= scale;
    }
    return X;
  });
  const threshold = 1.28 * 0.05 * Math.sqrt(d.dIn);
  const p = params(d);
  const batch = (screen: boolean) =>
    new mod.Engine({
      dIn: d.dIn,
      dOut: d.dIn,
      dSae: d.m,
      activation: 2,
      k: 32,
      applyBDec: false,
      noBias: false,
      tied: false,
      threads: 2,
      screen: screen ? 2 : 0,
    });
  const exact = batch(false),
    screened = batch(true);
  for (const [i, X] of batches.entries()) {
    const want = exact.forward(p, X, d.n, threshold, false);
    const counts = Array.from(want.count);
    assert.ok(
      counts.filter((c) => c > 1100).length > 20 && Math.max(...counts) < 1400,
      `batch ${i}: rows of ${Math.min(...counts)}-${Math.max(...counts)} entries`,
    );
    sameOutputs(`batch ${i}`, want, screened.forward(p, X, d.n, threshold, false));
  }
});
