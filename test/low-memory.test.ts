// --low-memory (native/src/step.cc's deferRows and Engine::applyRows): the untied TopK family trained without
// W_enc/W_dec gradient buffers, each latent's gradient rows made again from the step's entries in the update. The
// same parameters and Adam moments, bit for bit, as the step writing the gradients followed by the separate
// projection, Adam and renormalisation kernels (given the same clipping scale), and as the trainer's kept engine
// (W_dec's gradient projected and both norms summed as the step finishes each latent's rows, Adam renormalising
// W_dec's rows as it goes), for TopK with AuxK on dead latents, BatchTopK and Matryoshka, with and without b_dec
// applied to the input, with anchors; the same weights through the trainer's engine and `sdl fit`, clipped or not;
// and the cases it cannot serve refused in one line.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import type { NativeModule, NativeStepOptions, NativeTensors } from '../src/native/kernels.js';
import { createEngine } from '../src/sdl/engine.js';
import { TRAIN_DEFAULTS, makeDictConfig, type Activation, type DictConfig } from '../src/sdl/config.js';
import { Rng } from '../src/util/rng.js';
import { unitRows } from '../src/tensor/linalg.js';
import { UserError } from '../src/util/errors.js';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, nativeSkip, requireNative, tmp } from './helpers.js';

const skip = nativeSkip;
let mod: NativeModule;
before(() => {
  if (!skip) mod = requireNative();
});

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

interface Case {
  name: string;
  activation: number; // 1 topk, 2 batchtopk, 4 matryoshka
  applyBDec: boolean;
  dead?: boolean;
  anchors?: boolean;
  /** Both engines lean (Config::lean): the encoder's and the gradient's scratch freed between phases. */
  lean?: boolean;
}

function run(c: Case) {
  const dIn = 48,
    m = 640,
    B = 300,
    k = 8;
  const rng = new Rng(7);
  const W_encT = Float32Array.from({ length: m * dIn }, () => rng.normal() * 0.2);
  const W_dec = Float32Array.from({ length: m * dIn }, () => rng.normal() * 0.2);
  unitRows(W_dec, m, dIn);
  const b_enc = Float32Array.from({ length: m }, () => rng.normal() * 0.01);
  const b_dec = Float32Array.from({ length: dIn }, () => rng.normal() * 0.1);
  const batches = Array.from({ length: 3 }, () => Float32Array.from({ length: B * dIn }, () => rng.normal()));
  const dead = c.dead ? Uint8Array.from({ length: m }, (_, j) => (j % 5 === 0 ? 1 : 0)) : undefined;
  const anchorK = c.anchors ? 6 : 0;
  const anchor = () => Float32Array.from({ length: anchorK * dIn }, () => rng.normal() * 0.1);
  const opts: NativeStepOptions = {
    sparsity: 0,
    bandwidth: 1,
    auxkCoefficient: c.dead ? 1 / 32 : 0,
    auxkK: c.dead ? 16 : 0,
    dead,
    ...(anchorK ? { anchorK, anchorEnc: anchor(), anchorDec: anchor(), anchorWeight: 0.3 } : {}),
  };
  const make = (lean = c.lean) =>
    new mod.Engine({
      lean,
      dIn,
      dOut: dIn,
      dSae: m,
      activation: c.activation,
      k,
      widths: [80, 320, m],
      applyBDec: c.applyBDec,
      noBias: false,
      tied: false,
      threads: 2,
    });
  const state = () => {
    const p: NativeTensors = { W_encT: W_encT.slice(), b_enc: b_enc.slice(), W_dec: W_dec.slice(), b_dec: b_dec.slice() };
    const zeros = () => ({ W_encT: new Float32Array(m * dIn), W_dec: new Float32Array(m * dIn), b_enc: new Float32Array(m), b_dec: new Float32Array(dIn) });
    return { e: make(), p, mo: zeros(), v: zeros() };
  };
  const classic = state(),
    kept = state(),
    deferred = state();
  const [lr, b1, b2, eps] = [3e-3, 0.9, 0.999, 1e-8];
  for (let t = 1; t <= 3; t++) {
    const X = batches[t - 1];
    // The step writing the gradients, then the separate kernels (the trainer's update without --low-memory).
    const g = { W_encT: new Float32Array(m * dIn), b_enc: new Float32Array(m), W_dec: new Float32Array(m * dIn), b_dec: new Float32Array(dIn) };
    const firedA = new Float32Array(m);
    const ra = classic.e.step(classic.p, g, X, X, B, opts, firedA);
    classic.e.projectDecoderGrad(classic.p.W_dec!, g.W_dec);
    const sq = classic.e.sumSquares(g.W_encT) + classic.e.sumSquares(g.W_dec);
    // Kept (the trainer's engine without --low-memory): the gradients written, W_dec's projected and both measured
    // as the step finishes each latent's rows.
    const gk = { W_encT: new Float32Array(m * dIn), b_enc: new Float32Array(m), W_dec: new Float32Array(m * dIn), b_dec: new Float32Array(dIn) };
    const rk = kept.e.step(kept.p, gk, X, X, B, { ...opts, projectDec: true }, new Float32Array(m));
    assert.deepEqual(bits(gk.W_dec), bits(g.W_dec), `${c.name}, step ${t}: W_dec's gradient projected in the step`);
    assert.deepEqual(bits(gk.W_encT), bits(g.W_encT), `${c.name}, step ${t}: W_enc's gradient`);
    // Deferred: no W_enc/W_dec gradients given; the update reads the input rows from the caller's batch, given
    // again (its own array: the engine keeps no copy).
    const gs = { b_enc: new Float32Array(m), b_dec: new Float32Array(dIn) };
    const firedB = new Float32Array(m);
    const Xb = X.slice();
    const rb = deferred.e.step(deferred.p, gs, Xb, Xb, B, { ...opts, deferRows: true, projectDec: true }, firedB);
    const name = `${c.name}, step ${t}`;
    for (const f of ['loss', 'mse', 'auxLoss', 'anchorLoss', 'l0', 'minSelected', 'nnz', 'selection'] as const) assert.equal(rb[f], ra[f], `${name}: ${f}`);
    assert.deepEqual(bits(firedB), bits(firedA), `${name}: fired`);
    assert.deepEqual(bits(gs.b_enc), bits(g.b_enc), `${name}: db_enc`);
    assert.deepEqual(bits(gs.b_dec), bits(g.b_dec), `${name}: db_dec`);
    // The rows' squared norm is the gradients' (summed in another order than sumSquares: equal to rounding), the
    // same sum kept or deferred.
    assert.ok(Math.abs(rb.rowsSq - sq) <= 1e-5 * sq, `${name}: rowsSq ${rb.rowsSq} vs ${sq}`);
    assert.equal(rk.rowsSq, rb.rowsSq, `${name}: rowsSq kept and deferred`);
    if (t === 1) assert.ok(sq > 0, `${name}: the gradients are not zero`);
    // The same clipping scale for both (clip at half the norm: the scale matters).
    const scale = 0.5;
    for (const n of ['W_encT', 'W_dec'] as const) classic.e.adam(classic.p[n]!, g[n], classic.mo[n], classic.v[n], lr, scale, b1, b2, eps, t);
    classic.e.normalizeRows(classic.p.W_dec!, dIn);
    kept.e.adam(kept.p.W_encT, gk.W_encT, kept.mo.W_encT, kept.v.W_encT, lr, scale, b1, b2, eps, t);
    kept.e.adamUnitRows(kept.p.W_dec!, gk.W_dec, kept.mo.W_dec, kept.v.W_dec, lr, scale, b1, b2, eps, t, dIn);
    deferred.e.applyRows(deferred.p, Xb, deferred.mo.W_encT, deferred.v.W_encT, deferred.mo.W_dec, deferred.v.W_dec, lr, scale, b1, b2, eps, t, true);
    for (const n of ['W_encT', 'W_dec'] as const)
      for (const [s, how] of [
        [deferred, 'deferred'],
        [kept, 'kept'],
      ] as const) {
        assert.deepEqual(bits(s.p[n]!), bits(classic.p[n]!), `${name}: ${n}, ${how}`);
        assert.deepEqual(bits(s.mo[n]), bits(classic.mo[n]), `${name}: Adam m of ${n}, ${how}`);
        assert.deepEqual(bits(s.v[n]), bits(classic.v[n]), `${name}: Adam v of ${n}, ${how}`);
      }
    // The small tensors take the usual kernel in all three (their gradients are written either way).
    for (const s of [classic, kept, deferred]) {
      const gg = s === classic ? g : s === kept ? gk : gs;
      s.e.adam(s.p.b_enc, gg.b_enc, s.mo.b_enc, s.v.b_enc, lr, scale, b1, b2, eps, t);
      s.e.adam(s.p.b_dec, gg.b_dec, s.mo.b_dec, s.v.b_dec, lr, scale, b1, b2, eps, t);
    }
  }
  // The parameters moved (a no-op update would pass the comparisons above).
  assert.notDeepEqual(bits(deferred.p.W_encT), bits(W_encT), `${c.name}: W_enc trained`);
  if (c.lean) {
    // Inference after the lean engine gave its scratch back: the same entries and reconstruction as a plain engine's.
    const a = deferred.e.forward(deferred.p, batches[0], B, 0.1, true);
    const b = make(false).forward(deferred.p, batches[0], B, 0.1, true);
    assert.deepEqual(a.idx, b.idx, `${c.name}: lean forward's entries`);
    assert.deepEqual(bits(a.yhat!), bits(b.yhat!), `${c.name}: lean forward's reconstruction`);
  }
}

test('deferred rows: the same parameters and Adam moments as stored gradients, bit for bit', { skip }, () => {
  run({ name: 'TopK, AuxK on dead latents', activation: 1, applyBDec: true, dead: true });
  run({ name: 'TopK, input without b_dec, anchors', activation: 1, applyBDec: false, anchors: true });
  run({ name: 'BatchTopK', activation: 2, applyBDec: true });
  run({ name: 'Matryoshka, AuxK', activation: 4, applyBDec: false, dead: true });
});

test('a lean engine (scratch given back between phases): the same steps, updates and inference, bit for bit', { skip }, () => {
  run({ name: 'lean TopK, AuxK on dead latents', activation: 1, applyBDec: true, dead: true, lean: true });
  run({ name: 'lean BatchTopK, AuxK', activation: 2, applyBDec: true, dead: true, lean: true });
  run({ name: 'lean Matryoshka', activation: 4, applyBDec: false, lean: true });
});

test('deferred rows: refused where they do not apply, and applyRows only once after a deferred step', { skip }, () => {
  const relu = new mod.Engine({ dIn: 8, dOut: 8, dSae: 32, activation: 0, k: 0, applyBDec: true, noBias: false, tied: false, threads: 2 });
  const p: NativeTensors = {
    W_encT: new Float32Array(256).fill(0.1),
    b_enc: new Float32Array(32),
    W_dec: new Float32Array(256).fill(0.1),
    b_dec: new Float32Array(8),
  };
  const X = new Float32Array(8 * 4).fill(1);
  const small = { b_enc: new Float32Array(32), b_dec: new Float32Array(8) };
  const o: NativeStepOptions = { sparsity: 1, bandwidth: 1, auxkCoefficient: 0, auxkK: 0, deferRows: true };
  assert.throws(() => relu.step(p, small, X, X, 4, o, new Float32Array(32)), /deferRows needs an untied TopK/);
  const topk = new mod.Engine({ dIn: 8, dOut: 8, dSae: 32, activation: 1, k: 2, applyBDec: true, noBias: false, tied: false, threads: 2 });
  const m = () => new Float32Array(256);
  assert.throws(() => topk.applyRows(p, X, m(), m(), m(), m(), 1e-3, 1, 0.9, 0.999, 1e-8, 1, true), /applyRows needs a step with deferRows first/);
  const r = topk.step(p, small, X, X, 4, { ...o, noRowsNorm: true }, new Float32Array(32));
  assert.ok(Number.isNaN(r.rowsSq), 'no norm asked for: NaN, not a number that looks measured');
  // The update reads the step's input rows: another array, or the same one changed since, is refused (rows made from
  // them would be another batch's gradient).
  assert.throws(() => topk.applyRows(p, X.slice(), m(), m(), m(), m(), 1e-3, 1, 0.9, 0.999, 1e-8, 1, true), /the X its step was given/);
  X[5] = 2;
  assert.throws(() => topk.applyRows(p, X, m(), m(), m(), m(), 1e-3, 1, 0.9, 0.999, 1e-8, 1, true), /X changed between the step and applyRows/);
  X[5] = 1;
  topk.applyRows(p, X, m(), m(), m(), m(), 1e-3, 1, 0.9, 0.999, 1e-8, 1, true);
  assert.throws(() => topk.applyRows(p, X, m(), m(), m(), m(), 1e-3, 1, 0.9, 0.999, 1e-8, 2, true), /at most once per step/);
  // Gradients without W_enc/W_dec are refused on a step that writes them.
  assert.throws(() => topk.step(p, small, X, X, 4, { ...o, deferRows: false }, new Float32Array(32)), /W_encT/);
});

/** Weights after `steps` trainer-engine steps and updates. */
async function trained(activation: Activation, lowMemory: boolean, clip: number, steps = 4) {
  const dIn = 40,
    dSae = 320,
    B = 256;
  const cfg = makeDictConfig({ kind: 'sae', activation, sitesIn: [{ name: 'x', width: dIn }], latents: dSae, k: 6, matryoshkaWidths: [40, 160, dSae] });

  const rng = new Rng(3);
  const W_enc = Float32Array.from({ length: dIn * dSae }, () => rng.normal() * 0.2);
  const W_dec = Float32Array.from({ length: dSae * dIn }, () => rng.normal() * 0.2);
  const train = { ...TRAIN_DEFAULTS, lr: 2e-3, clipGradNorm: clip, lowMemory };
  const { engine } = await createEngine('native', { cfg, train, weights: { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) } });
  for (let i = 0; i < steps; i++) {
    const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
    engine.step(X, X, B, { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
    engine.update(2e-3, clip);
  }
  const w = engine.weights();
  engine.dispose();
  return w;
}

test('--low-memory through the trainer engine: the same weights, bit for bit, with clipping and without', { skip }, async () => {
  for (const activation of ['topk', 'batchtopk'] as const) {
    const [a, b] = [await trained(activation, false, 0), await trained(activation, true, 0)];
    for (const n of ['W_enc', 'W_dec', 'b_enc', 'b_dec'] as const) assert.deepEqual(bits(b[n]), bits(a[n]), `${activation}, clip 0: ${n}`);
    // Clipping active (a clip far below these gradients' norm): both engines sum the norm over the rows as the step
    // finishes them, in latent order.
    const [c, d] = [await trained(activation, false, 1e-3), await trained(activation, true, 1e-3)];
    for (const n of ['W_enc', 'W_dec', 'b_enc', 'b_dec'] as const) assert.deepEqual(bits(d[n]), bits(c[n]), `${activation}, clipped: ${n}`);
    for (const n of ['W_enc', 'W_dec'] as const) assert.notDeepEqual(bits(c[n]), bits(a[n]), `${activation}: clipping changed ${n}`);
  }
});

test('memory: handed-over initial arrays are trained in place; takeWeights gives them back without copies; the engine refuses use after', {
  skip,
}, async () => {
  const dIn = 40,
    dSae = 320,
    B = 256;
  const cfg = makeDictConfig({ kind: 'sae', activation: 'topk', sitesIn: [{ name: 'x', width: dIn }], latents: dSae, k: 6 });
  const rng = new Rng(5);
  const W_enc = Float32Array.from({ length: dIn * dSae }, () => rng.normal() * 0.2);
  const W_dec = Float32Array.from({ length: dSae * dIn }, () => rng.normal() * 0.2);
  const train = { ...TRAIN_DEFAULTS, lr: 2e-3 };
  const weights = { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) };
  // The same run without handing over: the reference weights.
  const ref = await createEngine('native', { cfg, train, weights: { ...weights, W_enc: W_enc.slice(), W_dec: W_dec.slice() } });
  const { engine } = await createEngine('native', { cfg, train, weights, handOver: true });
  const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
  for (const e of [ref.engine, engine])
    for (let i = 0; i < 3; i++) {
      e.step(X, X, B, { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
      e.update(2e-3, 1);
    }
  const want = ref.engine.weights();
  const got = engine.takeWeights();
  // The decoder trained in the caller's array; the caller's encoder array (W_encT's first Adam moment meanwhile)
  // comes back holding the trained encoder.
  assert.equal(got.W_dec, W_dec);
  assert.equal(got.W_enc, W_enc);
  for (const n of ['W_enc', 'W_dec', 'b_enc', 'b_dec'] as const) assert.deepEqual(bits(got[n]), bits(want[n]), n);
  assert.throws(() => engine.step(X, X, B, { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 }), /gave its weights away/);
  assert.throws(() => engine.weights(), /gave its weights away/);
});

test('--low-memory is refused in one line where no engine can honour it', { skip }, async () => {
  const cfg = (activation: Activation, tied = false): DictConfig =>
    makeDictConfig({ kind: 'sae', activation, sitesIn: [{ name: 'x', width: 8 }], latents: 32, k: 4, matryoshkaWidths: [32], tied });

  const weights = { W_enc: new Float32Array(256), b_enc: new Float32Array(32), W_dec: new Float32Array(256), b_dec: new Float32Array(8) };
  const train = { ...TRAIN_DEFAULTS, lowMemory: true };
  for (const [c, backend] of [
    [cfg('relu'), 'native'],
    [cfg('jumprelu'), undefined],
    [cfg('topk', true), undefined],
    [cfg('topk'), 'cpu'],
  ] as const)
    await assert.rejects(createEngine(backend, { cfg: c, train, weights }), (e: Error) => e instanceof UserError && /--low-memory applies to/.test(e.message));
});

test('sdl fit --low-memory: the same weights file as without it; refused in one line, exit 2, nothing written', { skip }, () => {
  const dir = tmp('sdl-lowmem-');
  const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  const acts = join(dir, 'acts');
  assert.equal(sdl('synth', '-n', '64', '--np', '40', '-N', '12k', '--out', acts).status, 0);
  const common = ['fit', '--acts', acts, '--site', 'x_p', '--latents', '320', '--k', '8', '--batch', '512', '--tokens', '8k', '--lr', '1e-3', '--clip', '0.05'];
  const a = sdl(...common, '--out', join(dir, 'a'));
  const b = sdl(...common, '--low-memory', '--out', join(dir, 'b'));
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  const weights = (d: string) => readFileSync(join(dir, d, 'sae_weights.safetensors'));
  assert.ok(weights('a').equals(weights('b')), 'the same weights, byte for byte');
  const r = sdl(...common, '--activation', 'relu', '--low-memory', '--out', join(dir, 'c'));
  assert.equal(r.status, 2);
  assert.match(r.stderr.trim(), /^[^\n]*--low-memory applies to untied TopK[^\n]*$/);
  assert.ok(!existsSync(join(dir, 'c')), 'nothing written');
});
