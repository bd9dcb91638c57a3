// Cross-layer and skip transcoders: the TypeScript reference step against finite differences of an independent
// float64 objective (written here from the definition, dense and masked), the native step against the reference
// (every activation, skip, AuxK), a one-layer CLT against the transcoder kernels, inference, and the dense/compact
// round trip every other command relies on.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import type { NativeModule } from '../src/native/kernels.js';
import { nativeSkip, requireNative } from './helpers.js';
import { cltReferenceForward, cltReferenceStep, type CltStepOptions } from '../src/sdl/clt-reference.js';
import { type CltParams, type CltShape, cltFromDense, cltToDense, decOffset } from '../src/sdl/clt.js';
import { makeDictConfig, type Activation } from '../src/sdl/config.js';
import { ACTIVATIONS } from '../src/sdl/activations.js';
import { Rng } from '../src/util/rng.js';

const skipNative = nativeSkip;
let mod: NativeModule;
before(() => {
  if (!skipNative) mod = requireNative();
});

function randomParams(s: CltShape, rng: Rng, act: Activation): CltParams {
  const { L, dI, dO, n } = s;
  const r = (len: number, scale: number) => Float32Array.from({ length: len }, () => rng.normal() * scale);
  return {
    W_encT: r(L * n * dI, 0.4),
    b_enc: r(L * n, 0.1),
    W_dec: r(decOffset(s, L), 0.3),
    b_dec: r(L * dO, 0.2),
    ...(act === 'jumprelu' ? { log_threshold: Float32Array.from({ length: L * n }, () => Math.log(0.3 + 0.4 * rng.next())) } : {}),
    ...(s.skip ? { W_skip: r(L * dI * dO, 0.2) } : {}),
  };
}

const zerosLike = (p: CltParams): CltParams =>
  Object.fromEntries(Object.entries(p).map(([k, v]) => [k, new Float32Array((v as Float32Array).length)])) as unknown as CltParams;

/**
 * The CLT objective from its definition, in float64 with dense masked matrices: y^_t = b_dec^t + x_t W_skip^t +
 * sum_{l <= t} f_l W_dec^{l->t}, f_l = sigma(x_l W_enc^l + b_enc^l) with sigma ReLU or per-layer TopK, loss = mean over
 * rows of ||y^ - y||^2 + lambda sum_j f_j ||W_dec,j|| (ReLU). Shares no code with the step it checks.
 */
function objective64(
  s: CltShape,
  act: 'relu' | 'topk',
  k: number,
  p: Record<string, Float64Array>,
  X: Float32Array,
  Y: Float32Array,
  B: number,
  lambda: number,
): number {
  const { L, dI, dO, n } = s;
  let loss = 0;
  for (let b = 0; b < B; b++) {
    const y = new Float64Array(L * dO);
    for (let t = 0; t < L; t++)
      for (let c = 0; c < dO; c++) {
        let v = p.b_dec[t * dO + c];
        if (s.skip) for (let a = 0; a < dI; a++) v += X[b * L * dI + t * dI + a] * p.W_skip[(t * dI + a) * dO + c];
        y[t * dO + c] = v;
      }
    for (let l = 0; l < L; l++) {
      const pre = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let v = p.b_enc[l * n + i];
        for (let a = 0; a < dI; a++) v += X[b * L * dI + l * dI + a] * p.W_encT[(l * n + i) * dI + a];
        pre[i] = v;
      }
      let keep = new Set<number>();
      if (act === 'relu') keep = new Set([...pre.keys()].filter((i) => pre[i] > 0));
      else
        keep = new Set(
          [...pre.keys()]
            .filter((i) => pre[i] > 0)
            .sort((a, c) => pre[c] - pre[a])
            .slice(0, k),
        );
      for (const i of keep) {
        const off = decOffsetPlain(s, l) + i * (L - l) * dO;
        let norm = 0;
        for (let q = 0; q < (L - l) * dO; q++) {
          y[l * dO + q] += pre[i] * p.W_dec[off + q];
          norm += p.W_dec[off + q] ** 2;
        }
        if (act === 'relu') loss += (lambda / B) * pre[i] * Math.sqrt(norm);
      }
    }
    for (let t = 0; t < L * dO; t++) loss += (y[t] - Y[b * L * dO + t]) ** 2 / B;
  }
  return loss;
}

function decOffsetPlain(s: CltShape, l: number): number {
  let off = 0;
  for (let j = 0; j < l; j++) off += s.n * (s.L - j) * s.dO;
  return off;
}

/** Asserts a native gradient equals the reference within 1e-4 of the reference's scale; returns that scale. */
function closeGradients(a: Float32Array, b: Float32Array, what: string): number {
  let worst = 0,
    scale = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.ok(worst <= 1e-4 * Math.max(1, scale), `${what}: worst difference ${worst} (scale ${scale})`);
  return scale;
}

function data(s: CltShape, B: number, rng: Rng): { X: Float32Array; Y: Float32Array } {
  return {
    X: Float32Array.from({ length: B * s.L * s.dI }, () => rng.normal()),
    Y: Float32Array.from({ length: B * s.L * s.dO }, () => rng.normal()),
  };
}

for (const [act, skip] of [
  ['relu', false],
  ['relu', true],
  ['topk', false],
  ['topk', true],
] as const) {
  test(`CLT reference gradients equal finite differences of the float64 objective (${act}${skip ? ', skip' : ''})`, () => {
    const s: CltShape = { L: 3, dI: 4, dO: 3, n: 5, skip };
    const rng = new Rng(act === 'relu' ? 3 : 4);
    const p = randomParams(s, rng, act);
    const B = 6,
      k = 2,
      lambda = act === 'relu' ? 0.3 : 0;
    const { X, Y } = data(s, B, rng);
    const g = zerosLike(p);
    const o: CltStepOptions = { sparsity: lambda, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 };
    const r = cltReferenceStep(s, act, k, p, g, X, Y, B, o);
    const p64 = Object.fromEntries(Object.entries(p).map(([key, v]) => [key, Float64Array.from(v as Float32Array)])) as Record<string, Float64Array>;
    const f0 = objective64(s, act, k, p64, X, Y, B, lambda);
    assert.ok(Math.abs(r.loss - f0) < 1e-4 * Math.max(1, f0), `loss ${r.loss} vs objective ${f0}`);
    const h = 1e-4;
    let checked = 0;
    for (const name of ['W_encT', 'b_enc', 'W_dec', 'b_dec', ...(skip ? ['W_skip'] : [])] as const) {
      const P = p64[name],
        G = g[name as keyof CltParams]!;
      for (let t = 0; t < 12; t++) {
        const i = Math.floor(rng.next() * P.length);
        const old = P[i];
        P[i] = old + h;
        const up = objective64(s, act, k, p64, X, Y, B, lambda);
        P[i] = old - h;
        const down = objective64(s, act, k, p64, X, Y, B, lambda);
        P[i] = old;
        const fd = (up - down) / (2 * h);
        assert.ok(Math.abs(fd - G[i]) < 2e-3 * Math.max(1, Math.abs(fd)), `${name}[${i}]: finite difference ${fd}, gradient ${G[i]}`);
        checked++;
      }
    }
    assert.ok(checked >= 48);
  });
}

test('the causal mask: a layer-l feature writes nothing before layer l, and reads only layer l', () => {
  const s: CltShape = { L: 3, dI: 2, dO: 2, n: 2, skip: true };
  const rng = new Rng(5);
  const p = randomParams(s, rng, 'relu');
  const { X } = data(s, 1, rng);
  const base = cltReferenceForward(s, 'relu', 1, p, X, 1);
  // Changing layer 2's input moves no output of layers 0-1; changing layer 0's moves every layer.
  const X2 = X.slice();
  X2[2 * s.dI] += 3;
  const moved2 = cltReferenceForward(s, 'relu', 1, p, X2, 1).yhat;
  for (let c = 0; c < 2 * s.dO; c++) assert.equal(moved2[c], base.yhat[c]);
  const dense = cltToDense(s, p);
  for (let j = 0; j < s.L * s.n; j++) {
    const l = Math.floor(j / s.n);
    for (let c = 0; c < l * s.dO; c++) assert.equal(dense.W_dec[j * s.L * s.dO + c], 0);
    for (let r = 0; r < s.L * s.dI; r++) if (Math.floor(r / s.dI) !== l) assert.equal(dense.W_enc[r * s.L * s.n + j], 0);
  }
  // Dense -> compact -> dense is exact.
  const back = cltFromDense(s, { ...dense, b_enc: p.b_enc, b_dec: p.b_dec });
  for (const key of ['W_encT', 'W_dec', 'W_skip'] as const) assert.deepEqual(back[key], p[key]);
});

// denseAbove 2: the sparse path always; 0: the dense (GEMM) path whenever anything fires.
const nativeCases: { act: Activation; skip: boolean; aux: boolean; denseAbove?: number }[] = [
  { act: 'topk', skip: false, aux: true },
  { act: 'topk', skip: true, aux: false },
  { act: 'batchtopk', skip: false, aux: true },
  { act: 'relu', skip: true, aux: false, denseAbove: 2 },
  { act: 'relu', skip: true, aux: false, denseAbove: 0 },
  { act: 'relu', skip: false, aux: false, denseAbove: 0 },
  { act: 'jumprelu', skip: false, aux: false, denseAbove: 2 },
  { act: 'jumprelu', skip: true, aux: false, denseAbove: 0 },
];
for (const c of nativeCases)
  test(`native CLT step equals the reference (${c.act}${c.skip ? ', skip' : ''}${c.aux ? ', AuxK' : ''}${c.denseAbove === 0 ? ', dense path' : c.denseAbove ? ', sparse path' : ''})`, {
    skip: skipNative,
  }, () => {
    const s: CltShape = { L: 4, dI: 12, dO: 10, n: 24, skip: c.skip };
    const rng = new Rng(11);
    const p = randomParams(s, rng, c.act);
    const B = 37,
      k = 3;
    const { X, Y } = data(s, B, rng);
    const dead = c.aux ? Uint8Array.from({ length: s.L * s.n }, (_, j) => (j % 3 === 0 ? 1 : 0)) : undefined;
    const o: CltStepOptions = { sparsity: c.act === 'relu' ? 0.2 : c.act === 'jumprelu' ? 0.1 : 0, bandwidth: 0.5, auxkCoefficient: 1 / 32, auxkK: 4, dead };
    const gRef = zerosLike(p);
    const ref = cltReferenceStep(s, c.act, k, p, gRef, X, Y, B, o);
    const e = new mod.Clt({ L: s.L, dIn: s.dI, dOut: s.dO, n: s.n, activation: ACTIVATIONS[c.act].nativeCode, k, skip: s.skip, threads: 2 });
    const gNat = zerosLike(p);
    const fired = new Float32Array(s.L * s.n);
    const r = e.step(p as Required<CltParams>, gNat as Required<CltParams>, X, Y, B, { ...o, denseAbove: c.denseAbove ?? 0.07 }, fired);
    if (c.denseAbove !== undefined) assert.equal(r.dense, c.denseAbove === 0 ? 1 : 0, 'the path asked for ran');
    const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
    near(r.loss, ref.loss, 'loss');
    near(r.mse, ref.mse, 'mse');
    near(r.auxLoss, ref.auxLoss, 'aux');
    near(r.sparsityLoss, ref.sparsityLoss, 'sparsity');
    assert.equal(r.l0, ref.l0);
    assert.deepEqual(Array.from(fired), Array.from(ref.fired));
    if (c.act === 'batchtopk') for (let l = 0; l < s.L; l++) near(r.minSelected[l], ref.minSelected[l], `kth ${l}`);
    if (c.aux) assert.ok(ref.auxLoss > 0, 'AuxK ran');
    for (const key of Object.keys(p) as (keyof CltParams)[]) assert.ok(closeGradients(gNat[key]!, gRef[key]!, `d${key}`) > 0, `d${key} is not all zero`);
    if (c.denseAbove === 0) {
      // After a sparse step, which gives back the dense path's arrays, the same engine takes them again: the same step.
      const sparse = e.step(p as Required<CltParams>, zerosLike(p) as Required<CltParams>, X, Y, B, { ...o, denseAbove: 2 }, new Float32Array(s.L * s.n));
      assert.equal(sparse.dense, 0);
      const gAgain = zerosLike(p);
      const again = e.step(p as Required<CltParams>, gAgain as Required<CltParams>, X, Y, B, { ...o, denseAbove: 0 }, new Float32Array(s.L * s.n));
      assert.equal(again.loss, r.loss);
      for (const key of Object.keys(p) as (keyof CltParams)[]) assert.deepEqual(gAgain[key], gNat[key], `dense again: d${key}`);
    }
    // Inference: same features and reconstructions.
    const theta =
      c.act === 'batchtopk' ? new Float32Array(s.L * s.n).fill(0.5) : c.act === 'jumprelu' ? Float32Array.from(p.log_threshold!, Math.exp) : undefined;
    const fr = cltReferenceForward(s, c.act, k, p, X, B, theta);
    const fn = e.forward(p as Required<CltParams>, X, B, theta, true);
    assert.deepEqual(Array.from(fn.count), Array.from(fr.count));
    assert.deepEqual(Array.from(fn.idx), Array.from(fr.idx));
    for (let i = 0; i < fr.yhat.length; i++) near(fn.yhat![i], fr.yhat[i], `yhat[${i}]`);
    if (c.act === 'topk') for (let b = 0; b < B; b++) assert.equal(fn.count[b], s.L * k, 'k per layer');
  });

test('a one-layer CLT is a transcoder: same loss and gradients as the transcoder kernels', { skip: skipNative }, () => {
  for (const act of ['topk', 'relu'] as const) {
    const s: CltShape = { L: 1, dI: 12, dO: 9, n: 30, skip: false };
    const rng = new Rng(21);
    const p = randomParams(s, rng, act);
    const B = 33;
    const { X, Y } = data(s, B, rng);
    const o = { sparsity: act === 'relu' ? 0.2 : 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 };
    const clt = new mod.Clt({ L: 1, dIn: s.dI, dOut: s.dO, n: s.n, activation: ACTIVATIONS[act].nativeCode, k: 4, skip: false, threads: 2 });
    const g1 = zerosLike(p);
    const r1 = clt.step(p as Required<CltParams>, g1 as Required<CltParams>, X, Y, B, o, new Float32Array(s.n));
    const tc = new mod.Engine({
      dIn: s.dI,
      dOut: s.dO,
      dSae: s.n,
      activation: ACTIVATIONS[act].nativeCode,
      k: 4,
      applyBDec: false,
      noBias: false,
      tied: false,
      threads: 2,
    });
    const g2 = { W_encT: new Float32Array(s.n * s.dI), b_enc: new Float32Array(s.n), W_dec: new Float32Array(s.n * s.dO), b_dec: new Float32Array(s.dO) };
    const r2 = tc.step({ W_encT: p.W_encT, b_enc: p.b_enc, W_dec: p.W_dec, b_dec: p.b_dec }, g2, X, Y, B, { ...o, denseAbove: 2 }, new Float32Array(s.n));
    assert.ok(Math.abs(r1.loss - r2.loss) < 1e-5 * Math.max(1, r2.loss), `${act}: loss ${r1.loss} vs ${r2.loss}`);
    for (const key of ['W_encT', 'b_enc', 'W_dec', 'b_dec'] as const)
      for (let i = 0; i < g2[key].length; i++) assert.ok(Math.abs(g1[key]![i] - g2[key][i]) < 1e-5, `${act} d${key}[${i}]: ${g1[key]![i]} vs ${g2[key][i]}`);
  }
});

test('CLT configs are refused in one line when the layers do not fit together', () => {
  const sites = (kind: string, widths: number[]) => widths.map((width, l) => ({ name: `blocks.${l}.hook_${kind}`, width }));
  assert.throws(
    () =>
      makeDictConfig({
        kind: 'clt',
        activation: 'topk',
        sitesIn: sites('mlp_in', [64, 64, 32]),
        sitesOut: sites('mlp_out', [64, 64, 64]),
        latentsPerLayer: 16,
        k: 4,
      }),
    /a CLT needs one width across its layers: blocks\.2\.hook_mlp_in is 32 wide/,
  );
  assert.throws(
    () => makeDictConfig({ kind: 'clt', activation: 'topk', sitesIn: sites('mlp_in', [64, 64]), sitesOut: sites('mlp_out', [64]), latentsPerLayer: 16, k: 4 }),
    /a CLT reads and writes the same layers: 2 input sites but 1 output sites/,
  );
  assert.throws(
    () => makeDictConfig({ kind: 'clt', activation: 'topk', sitesIn: sites('mlp_in', [8, 8]), sitesOut: sites('mlp_out', [8, 8]), latents: 33, k: 4 }),
    /do not split evenly over its 2 layers/,
  );
});

test('native CLT TopK selected inside each layer’s encoder GEMM: blocks crossed, exact ties, AuxK, equal to the reference', { skip: skipNative }, () => {
  // 700 latents per layer (two 512-wide GEMM column blocks, the second partial) x 200 rows (two 168-row blocks); the
  // second half of each layer's encoder copies the first, so every pre-activation has an exact twin in the other block.
  const s: CltShape = { L: 2, dI: 16, dO: 8, n: 700, skip: false };
  const rng = new Rng(5);
  const p = randomParams(s, rng, 'topk');
  for (let l = 0; l < s.L; l++)
    for (let i = 350; i < 700; i++) {
      const j = l * s.n + i,
        twin = l * s.n + i - 350;
      p.W_encT.copyWithin(j * s.dI, twin * s.dI, (twin + 1) * s.dI);
      p.b_enc[j] = p.b_enc[twin];
    }
  const B = 200;
  const { X, Y } = data(s, B, rng);
  const dead = Uint8Array.from({ length: s.L * s.n }, (_, j) => (j % 3 === 0 ? 1 : 0));
  for (const k of [1, 6]) {
    const o: CltStepOptions = { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 8, dead };
    const gRef = zerosLike(p);
    const ref = cltReferenceStep(s, 'topk', k, p, gRef, X, Y, B, o);
    const e = new mod.Clt({ L: s.L, dIn: s.dI, dOut: s.dO, n: s.n, activation: ACTIVATIONS.topk.nativeCode, k, skip: false, threads: 2 });
    const gNat = zerosLike(p);
    const fired = new Float32Array(s.L * s.n);
    const r = e.step(p as Required<CltParams>, gNat as Required<CltParams>, X, Y, B, { ...o, denseAbove: 0.07 }, fired);
    const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `k ${k} ${what}: ${a} vs ${b}`);
    near(r.loss, ref.loss, 'loss');
    near(r.auxLoss, ref.auxLoss, 'aux');
    assert.ok(ref.auxLoss > 0, 'AuxK ran');
    assert.equal(r.l0, ref.l0);
    assert.deepEqual(Array.from(fired), Array.from(ref.fired), `k ${k}: fired`);
    for (const key of ['W_encT', 'b_enc', 'W_dec', 'b_dec'] as const) closeGradients(gNat[key]!, gRef[key]!, `k ${k} d${key}`);
    const fr = cltReferenceForward(s, 'topk', k, p, X, B, undefined);
    const fn = e.forward(p as Required<CltParams>, X, B, undefined, true);
    assert.deepEqual(Array.from(fn.idx), Array.from(fr.idx), `k ${k}: inference selection`);
    for (let i = 0; i < fr.yhat.length; i++) near(fn.yhat![i], fr.yhat[i], `yhat[${i}]`);
  }
});

test('native CLT BatchTopK selected inside each layer’s encoder GEMM (above its last threshold, or a floor from the rows’ top 2k): bit-equal to the stored path, also when the thresholds fall', {
  skip: skipNative,
}, () => {
  const s: CltShape = { L: 2, dI: 16, dO: 8, n: 700, skip: true };
  const rng = new Rng(9);
  const p = randomParams(s, rng, 'batchtopk');
  const B = 200,
    k = 4;
  const { X, Y } = data(s, B, rng);
  const dead = Uint8Array.from({ length: s.L * s.n }, (_, j) => (j % 5 === 0 ? 1 : 0));
  const o = { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 6, dead, denseAbove: 0.07 };
  const engine = () => new mod.Clt({ L: s.L, dIn: s.dI, dOut: s.dO, n: s.n, activation: ACTIVATIONS.batchtopk.nativeCode, k, skip: true, threads: 2 });
  const run = (e: ReturnType<typeof engine>, x: Float32Array, storedFallback = false) => {
    const g = zerosLike(p);
    const fired = new Float32Array(s.L * s.n);
    const r = e.step(p as Required<CltParams>, g as Required<CltParams>, x, Y, B, { ...o, storedFallback }, fired);
    return { r, g, fired };
  };
  const same = (a: ReturnType<typeof run>, b: ReturnType<typeof run>, what: string) => {
    for (const key of ['loss', 'mse', 'auxLoss', 'l0', 'nnz'] as const) assert.equal(a.r[key], b.r[key], `${what}: ${key}`);
    assert.deepEqual(Array.from(a.r.minSelected), Array.from(b.r.minSelected), `${what}: thresholds`);
    assert.deepEqual(a.fired, b.fired, `${what}: fired`);
    for (const key of Object.keys(p) as (keyof CltParams)[]) assert.deepEqual(a.g[key], b.g[key], `${what}: d${key}`);
  };
  const stored = run(engine(), X, true);
  assert.equal(stored.r.selection, 0, 'with storedFallback, the first step stores the pre-activations');
  const e = engine();
  const first = run(e, X);
  const second = run(e, X);
  assert.equal(first.r.selection, 4, "the first step has no thresholds: floors from each layer's rows' own top 2k");
  assert.equal(second.r.selection, 1, 'the second step selects inside the encoder GEMMs above the last thresholds');
  assert.ok(first.r.auxLoss > 0, 'AuxK ran');
  same(first, stored, 'rows floor vs stored');
  same(second, stored, 'fused vs stored');
  // And both equal the reference step.
  const gRef = zerosLike(p);
  const ref = cltReferenceStep(s, 'batchtopk', k, p, gRef, X, Y, B, o);
  assert.ok(Math.abs(second.r.loss - ref.loss) <= 1e-4 * Math.abs(ref.loss), `loss ${second.r.loss} vs reference ${ref.loss}`);
  assert.deepEqual(Array.from(second.fired), Array.from(ref.fired));
  // Inputs scaled down: the thresholds fall below the floor; the rows' floors take over, and equal the stored path.
  const small = X.map((v) => v * 0.2);
  const fallen = run(e, small);
  assert.equal(fallen.r.selection, 4, "the thresholds fell: the rows' floors");
  const e2 = engine();
  run(e2, X, true);
  const fallenStored = run(e2, small, true);
  assert.equal(fallenStored.r.selection, 2, 'with storedFallback, recomputed from stored pre-activations');
  same(fallen, fallenStored, 'rows floor vs stored after the thresholds fell');
});
