// The native kernels against the TensorFlow.js reference (whose gradients step.test.ts checks against finite
// differences): the same loss and gradients for every activation and option, on both the sparse and the dense
// path; the GEMM on strided views; inference; and whole training runs through the Engine interface.
// The native kernels are part of the product: these tests fail when they are not built (SDLKIT_NATIVE=off
// skips them on purpose).
import { test, before } from 'node:test';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { tf, initBackend } from '../src/tensor/backend.js';
import { step, type Params } from '../src/sdl/step.js';
import type { Activation, DictConfig } from '../src/sdl/config.js';
import { TRAIN_DEFAULTS } from '../src/sdl/config.js';
import type { IndexStatsConfig, IndexStatsLike, NativeModule, NativeTensors } from '../src/native/kernels.js';
import type { EngineWeights } from '../src/sdl/engine.js';
import { transpose, concatRows, unitRows } from '../src/tensor/linalg.js';
import { TfEngine } from '../src/sdl/engine-tf.js';
import { NativeTrainEngine, denseAbove, nativeEngineOptions } from '../src/sdl/engine-native.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { encodeSparse, SparseBuffers } from '../src/sdl/encoder.js';
import { Rng } from '../src/util/rng.js';
import { decodeSafetensors, encodeSafetensors, tensorData } from '../src/tensor/safetensors.js';
import { nativeSkip, nativeStepFresh, requireNative, sameNativeStep, smallDict } from './helpers.js';
import { nearestByCosine, nearestByCosineReference } from '../src/index/neighbors.js';
import { INNER_EDGES } from '../src/index/quantiles.js';
import { ExampleStore } from '../src/index/examples.js';
import { topIndices } from '../src/index/select.js';
import { contextTexts, contextTextsReference } from '../src/index/context-text.js';

const skip = nativeSkip;
let mod: NativeModule;

before(async () => {
  await initBackend('cpu');
  if (skip) return;
  const m = (mod = requireNative());
  // A run for one build (the test at the end) must be testing that build.
  const want = process.env.SDLKIT_NATIVE;
  if (want) assert.equal(m.isa, want);
});

const config = (activation: Activation, o: Partial<DictConfig> = {}): DictConfig =>
  smallDict(activation, { dIn: 12, dSae: 40, k: 4, widths: (m) => [5, 17, m] }, o);

interface Case {
  cfg: DictConfig;
  sparsity: number;
  dead?: Uint8Array;
  auxkK?: number;
  anchorK?: number;
  denseAbove?: number;
  /** The sparse path's decoder pass in blocks of this many latents (0: where it pays, -1: a row at a time). */
  decodeBlock?: number;
  /** Its gradient rows in blocks of this many batch rows (0: where it pays, -1: every entry of a latent at once). */
  rowBlock?: number;
  B?: number;
  /** Latents [dSae - tied, dSae) copy the encoder of latents [0, tied): exact ties in the selection. */
  tied?: number;
}

function randomWeights(cfg: DictConfig, rng: Rng): EngineWeights {
  const r = (n: number, s: number) => Float32Array.from({ length: n }, () => rng.normal() * s);
  const w: EngineWeights = { W_enc: r(cfg.dIn * cfg.dSae, 0.5), b_enc: r(cfg.dSae, 0.3), W_dec: r(cfg.dSae * cfg.dOut, 0.5), b_dec: r(cfg.dOut, 0.3) };
  if (cfg.tied) w.W_dec = transpose(w.W_enc, cfg.dIn, cfg.dSae);
  if (cfg.noBias) {
    w.b_enc.fill(0);
    w.b_dec.fill(0);
  }
  if (cfg.activation === 'jumprelu') w.log_threshold = Float32Array.from({ length: cfg.dSae }, () => Math.log(0.3 + 0.5 * rng.next()));
  return w;
}

/** Makes latent dSae - n + j's encoder (W_enc column, b_enc) a copy of latent j's, for j < n. */
function duplicateEncoders(w: EngineWeights, cfg: DictConfig, n: number) {
  const { dIn, dSae } = cfg;
  for (let j = 0; j < n; j++) {
    const t = dSae - n + j;
    w.b_enc[t] = w.b_enc[j];
    for (let i = 0; i < dIn; i++) w.W_enc[i * dSae + t] = w.W_enc[i * dSae + j];
  }
}

/** Encoder biases at minus the 97th percentile of x W_enc (every 4th row): about 3% of entries fire, ReLU's sparse path. */
function sparseReluBias(w: EngineWeights, cfg: DictConfig, X: Float32Array, B: number) {
  const { dIn, dSae } = cfg;
  const pre: number[] = [];
  for (let b = 0; b < B; b += 4)
    for (let j = 0; j < dSae; j++) {
      let z = 0;
      for (let i = 0; i < dIn; i++) z += (X[b * dIn + i] - w.b_dec[i]) * w.W_enc[i * dSae + j];
      pre.push(z);
    }
  pre.sort((a, b) => a - b);
  w.b_enc.fill(-pre[Math.floor(0.97 * pre.length)]);
}

function close(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol = 2e-4) {
  assert.equal(got.length, want.length, `${name}: length`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol * Math.max(1, scale), `${name}[${i}]: native ${got[i]} vs tfjs ${want[i]} (scale ${scale})`);
  }
}

/** The native engine for a dictionary config, on two threads. */
function nativeEngine(cfg: DictConfig) {
  return new mod.Engine(nativeEngineOptions(cfg, 2));
}

/** Runs one step natively and with step.ts on the same inputs, and compares every output. */
function compare(name: string, c: Case, seed = 1) {
  const { cfg } = c;
  const { dIn, dOut, dSae } = cfg;
  const B = c.B ?? 50;
  const rng = new Rng(seed);
  const w = randomWeights(cfg, rng);
  if (c.tied) duplicateEncoders(w, cfg, c.tied);
  const X = Float32Array.from({ length: B * dIn }, () => rng.normal() * 1.5);
  const Y = cfg.kind === 'transcoder' ? Float32Array.from({ length: B * dOut }, () => rng.normal()) : X;
  const anchorK = c.anchorK ?? 0;
  const aEnc = Array.from({ length: anchorK }, () => Float32Array.from({ length: dIn }, () => rng.normal()));
  const aDec = Array.from({ length: anchorK }, () => Float32Array.from({ length: dOut }, () => rng.normal()));
  const opts = { sparsity: c.sparsity, bandwidth: 0.7, auxkCoefficient: 1 / 32, auxkK: c.auxkK ?? 0 };

  // TensorFlow.js reference.
  const p: Params = {
    W_enc: tf.tensor2d(w.W_enc, [dIn, dSae]),
    b_enc: tf.tensor1d(w.b_enc),
    W_dec: cfg.tied ? (tf.transpose(tf.tensor2d(w.W_enc, [dIn, dSae])) as tf.Tensor2D) : tf.tensor2d(w.W_dec, [dSae, dOut]),
    b_dec: tf.tensor1d(w.b_dec),
  };
  if (w.log_threshold) p.log_threshold = tf.tensor1d(w.log_threshold);
  const anchors = anchorK
    ? {
        enc: tf.tensor2d(transpose(concatRows(aEnc, dIn), anchorK, dIn), [dIn, anchorK]),
        dec: tf.tensor2d(concatRows(aDec, dOut), [anchorK, dOut]),
        k: anchorK,
        weight: 0.3,
      }
    : undefined;
  const ref = step(cfg, p, tf.tensor2d(X, [B, dIn]), tf.tensor2d(Y, [B, dOut]), { ...opts, dead: c.dead ? Float32Array.from(c.dead) : undefined, anchors });

  // Native.
  const e = nativeEngine(cfg);
  const W_encT = transpose(w.W_enc, dIn, dSae);
  const np: NativeTensors = { W_encT, b_enc: w.b_enc, W_dec: cfg.tied ? W_encT : w.W_dec, b_dec: w.b_dec, log_threshold: w.log_threshold };
  const ng: NativeTensors = {
    W_encT: new Float32Array(dSae * dIn).fill(NaN),
    b_enc: new Float32Array(dSae),
    W_dec: cfg.tied ? undefined : new Float32Array(dSae * dOut).fill(NaN),
    b_dec: new Float32Array(dOut),
    log_threshold: w.log_threshold ? new Float32Array(dSae) : undefined,
  };
  const fired = new Float32Array(dSae);
  const r = e.step(
    np,
    ng,
    X,
    Y,
    B,
    {
      ...opts,
      dead: c.dead,
      anchorK,
      anchorEnc: concatRows(aEnc, dIn),
      anchorDec: concatRows(aDec, dOut),
      anchorWeight: 0.3,
      denseAbove: c.denseAbove ?? 0.05,
      decodeBlock: c.decodeBlock ?? 0,
      rowBlock: c.rowBlock ?? 0,
    },
    fired,
  );

  const tol = 1e-4 * Math.max(1, Math.abs(ref.loss));
  assert.ok(Math.abs(r.loss - ref.loss) <= tol, `${name}: loss native ${r.loss} vs tfjs ${ref.loss}`);
  assert.ok(Math.abs(r.mse - ref.mse) <= 1e-4 * Math.max(1, ref.mse), `${name}: mse ${r.mse} vs ${ref.mse}`);
  assert.ok(
    Math.abs(r.sparsityLoss - ref.sparsityLoss) <= 1e-4 * Math.max(1, ref.sparsityLoss),
    `${name}: sparsity loss ${r.sparsityLoss} vs ${ref.sparsityLoss}`,
  );
  assert.ok(Math.abs(r.auxLoss - ref.auxLoss) <= 1e-4 * Math.max(1, ref.auxLoss), `${name}: aux loss ${r.auxLoss} vs ${ref.auxLoss}`);
  assert.ok(Math.abs(r.l0 - ref.l0) < 1e-6, `${name}: L0 ${r.l0} vs ${ref.l0}`);
  close(`${name} fired`, fired, ref.fired, 0);
  if (ref.minSelected !== undefined)
    assert.ok(Math.abs(r.minSelected - ref.minSelected[0]) < 1e-6, `${name}: min selected ${r.minSelected} vs ${ref.minSelected}`);
  const gEnc = transpose(ng.W_encT, dSae, dIn);
  close(`${name} dW_enc`, gEnc, ref.grads.W_enc!.dataSync());
  if (!cfg.tied) close(`${name} dW_dec`, ng.W_dec!, ref.grads.W_dec!.dataSync());
  if (!cfg.noBias) {
    close(`${name} db_enc`, ng.b_enc, ref.grads.b_enc!.dataSync());
    close(`${name} db_dec`, ng.b_dec, ref.grads.b_dec!.dataSync());
  }
  if (cfg.activation === 'jumprelu') close(`${name} dlog_threshold`, ng.log_threshold!, ref.grads.log_threshold!.dataSync());
  tf.dispose([...Object.values(p), ...Object.values(ref.grads)] as tf.Tensor[]);
  return r;
}

test('native step = tfjs step: every activation, sparse path', { skip }, () => {
  for (const act of ['relu', 'topk', 'batchtopk', 'jumprelu', 'matryoshka'] as const) {
    const r = compare(act, { cfg: config(act), sparsity: act === 'relu' ? 0.7 : act === 'jumprelu' ? 0.4 : 0, denseAbove: 1.1 });
    assert.equal(r.dense, 0, `${act} took the sparse path`);
  }
});

test('native step = tfjs step: the sparse path with its decoder pass a block of latents at a time, and its gradient rows a block of batch rows', {
  skip,
}, () => {
  for (const act of ['relu', 'topk', 'jumprelu'] as const) {
    for (const rowBlock of [-1, 7]) {
      // Both blocked, ReLU and TopK without AuxK make dL/dact latent by latent with the gradient rows (Engine::step).
      const r = compare(`${act} blocked${rowBlock > 0 ? ', rows too' : ''}`, {
        cfg: config(act),
        sparsity: act === 'topk' ? 0 : 0.5,
        denseAbove: 1.1,
        decodeBlock: 7,
        rowBlock,
      });
      assert.equal(r.dense, 0, `${act} took the sparse path`);
    }
  }
  // ReLU 256 wide: dL/dact made in the same pass over the dL/dy^ rows as the gradient rows (an SAE; a transcoder
  // into 256 from 20, whose encoder rows are 20 wide).
  for (const [dIn, dOut] of [
    [256, 256],
    [20, 256],
  ]) {
    for (const rowBlock of [-1, 7]) {
      const r = compare(`relu ${dIn} -> ${dOut}, dL/dact with the gradient rows${rowBlock > 0 ? ', rows blocked' : ''}`, {
        cfg: config('relu', { dIn, dOut, dSae: 48 }),
        sparsity: 0.5,
        denseAbove: 1.1,
        rowBlock,
      });
      assert.equal(r.dense, 0, 'the sparse path');
      assert.equal(r.dotsFused, 1, 'dL/dact made with the gradient rows');
    }
  }
});

test("native sparse step's decoder pass and gradient rows in blocks = a row and a latent at a time, to the bit: every block size, AuxK's residual, L1, JumpReLU's window, tied", {
  skip,
}, () => {
  const B = 120;
  // [activation, tied, anchored latents (fixed slices for the anchors' loss)]
  for (const [act, tied, anchorK] of [
    ['relu', false, 0],
    ['relu', true, 0],
    ['relu', false, 12],
    ['jumprelu', false, 0],
    ['topk', false, 0],
  ] as const) {
    const cfg = config(act, { dIn: 20, dSae: 300, k: 60, tied });
    const { dIn, dSae } = cfg;
    const name = `${act}${tied ? ' tied' : ''}${anchorK ? ' anchored' : ''}`;
    const rng = new Rng(91);
    const w = randomWeights(cfg, rng);
    const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
    const W_encT = transpose(w.W_enc, dIn, dSae);
    const np: NativeTensors = { W_encT, b_enc: w.b_enc, W_dec: tied ? W_encT : w.W_dec, b_dec: w.b_dec, log_threshold: w.log_threshold };
    // TopK with latents counted dead: AuxK reads the residual rows the blocked decoder pass writes.
    const dead = act === 'topk' ? Uint8Array.from({ length: dSae }, (_, j) => (j % 5 === 0 ? 1 : 0)) : undefined;
    const opts = {
      sparsity: act === 'topk' ? 0 : 0.4,
      bandwidth: 0.7,
      auxkCoefficient: 1 / 32,
      auxkK: act === 'topk' ? 16 : 0,
      dead,
      anchorK,
      anchorEnc: Float32Array.from({ length: anchorK * dIn }, () => rng.normal()),
      anchorDec: Float32Array.from({ length: anchorK * dIn }, () => rng.normal()),
      anchorWeight: 0.3,
      denseAbove: 1.1,
    };
    const run = (blocks: { decodeBlock: number; rowBlock: number }) => {
      const r = nativeStepFresh(nativeEngine(cfg), cfg, np, X, B, { ...opts, ...blocks });
      if (tied) r.g.W_dec = new Float32Array(0); // a tied step writes W_enc's gradient alone
      return r;
    };
    const unblocked = run({ decodeBlock: -1, rowBlock: -1 });
    assert.equal(unblocked.r.dense, 0, `${name}: the sparse path`);
    assert.ok(unblocked.r.l0 > 20, `${name}: tens of entries a row (L0 ${unblocked.r.l0})`);
    if (act === 'topk') assert.ok(unblocked.r.auxLoss > 0, 'AuxK ran');
    else assert.ok(unblocked.r.sparsityLoss > 0, `${name}: a sparsity loss`);
    const fields = ['loss', 'mse', 'sparsityLoss', 'auxLoss', 'l0', 'nnz', 'dense'] as const;
    // One latent (one batch row) a block, blocks that leave a partial one at the end, one block holding all, past it.
    for (const decodeBlock of [1, 7, 64, dSae, 5000])
      sameNativeStep(`${name}, decoder blocks of ${decodeBlock}`, run({ decodeBlock, rowBlock: -1 }), unblocked, fields);
    // Gradient rows in blocks of batch rows (a step with AuxK entries sums each latent's at once whatever is asked).
    for (const rowBlock of [1, 7, 50, B, 500])
      sameNativeStep(`${name}, gradient row blocks of ${rowBlock}`, run({ decodeBlock: 7, rowBlock }), unblocked, fields);
  }
});

test("native ReLU step with dL/dact made in the gradient rows' pass over dL/dy^ = a dot product an entry apart, to the bit: a row and a latent at a time and blocked, L1, anchors", {
  skip,
}, () => {
  const B = 96;
  for (const anchorK of [0, 12]) {
    // d_out 256: whole blocks of the pass's columns on every instruction set (256, 64 or 32 floats).
    const cfg = config('relu', { dIn: 256, dSae: 300 });
    const { dIn, dSae } = cfg;
    const rng = new Rng(17);
    const w = randomWeights(cfg, rng);
    const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
    const np: NativeTensors = { W_encT: transpose(w.W_enc, dIn, dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
    const opts = {
      sparsity: 0.4,
      bandwidth: 1,
      auxkCoefficient: 0,
      auxkK: 0,
      anchorK,
      anchorEnc: Float32Array.from({ length: anchorK * dIn }, () => rng.normal()),
      anchorDec: Float32Array.from({ length: anchorK * dIn }, () => rng.normal()),
      anchorWeight: 0.3,
      denseAbove: 1.1,
    };
    const run = (o: { decodeBlock: number; rowBlock: number; dotsApart?: boolean }) => nativeStepFresh(nativeEngine(cfg), cfg, np, X, B, { ...opts, ...o });
    const apart = run({ decodeBlock: -1, rowBlock: -1, dotsApart: true });
    const name = anchorK ? 'anchored' : 'relu';
    assert.equal(apart.r.dense, 0, `${name}: the sparse path`);
    assert.equal(apart.r.dotsFused, 0, `${name}: dotsApart makes dL/dact apart`);
    assert.ok(apart.r.l0 > 20, `${name}: tens of entries a row (L0 ${apart.r.l0})`);
    assert.ok(apart.r.sparsityLoss > 0, `${name}: a sparsity loss`);
    const fields = ['loss', 'mse', 'sparsityLoss', 'l0', 'nnz', 'dense'] as const;
    // A row and a latent at a time; the decoder pass in blocks (dL/dact then waits for the latents' pass either way);
    // the gradient rows in blocks of one batch row, of some, of all, and past it.
    for (const [decodeBlock, rowBlock] of [
      [-1, -1],
      [7, -1],
      [7, 1],
      [64, 50],
      [dSae, B],
      [5000, 500],
    ]) {
      const fused = run({ decodeBlock, rowBlock });
      assert.equal(fused.r.dotsFused, 1, `${name}: decoder blocks ${decodeBlock}, row blocks ${rowBlock}: dL/dact made with the gradient rows`);
      sameNativeStep(`${name}: decoder blocks ${decodeBlock}, row blocks ${rowBlock}`, fused, apart, fields);
    }
  }
});

test("ReLU's dense line: 16.5% firing for decoders over 32 MiB, 15% over 16 MiB, 12.5% over 1 MiB, 0.1 for smaller ones and for JumpReLU; SDLKIT_DENSE_ABOVE overrides", () => {
  const saved = process.env.SDLKIT_DENSE_ABOVE;
  try {
    delete process.env.SDLKIT_DENSE_ABOVE;
    assert.equal(denseAbove({ activation: 'relu', dSae: 4096, dOut: 512 }), 0.125);
    assert.equal(denseAbove({ activation: 'relu', dSae: 24576, dOut: 768 }), 0.165);
    assert.equal(denseAbove({ activation: 'relu', dSae: 8192, dOut: 1024 }), 0.15, 'exactly 32 MiB is not over it');
    assert.equal(denseAbove({ activation: 'relu', dSae: 6144, dOut: 768 }), 0.15);
    assert.equal(denseAbove({ activation: 'relu', dSae: 4096, dOut: 1024 }), 0.125, 'exactly 16 MiB is not over it');
    assert.equal(denseAbove({ activation: 'relu', dSae: 1024, dOut: 256 }), 0.1, 'exactly 1 MiB is not over it');
    assert.equal(denseAbove({ activation: 'relu', dSae: 1024, dOut: 128 }), 0.1);
    assert.equal(denseAbove({ activation: 'jumprelu', dSae: 24576, dOut: 768 }), 0.1);
    assert.equal(denseAbove(), 0.1);
    process.env.SDLKIT_DENSE_ABOVE = '0.3';
    assert.equal(denseAbove({ activation: 'relu', dSae: 4096, dOut: 512 }), 0.3);
    process.env.SDLKIT_DENSE_ABOVE = '0';
    assert.throws(() => denseAbove({ activation: 'relu', dSae: 4096, dOut: 512 }), /SDLKIT_DENSE_ABOVE must be a fraction in \(0, 1\]/);
  } finally {
    if (saved === undefined) delete process.env.SDLKIT_DENSE_ABOVE;
    else process.env.SDLKIT_DENSE_ABOVE = saved;
  }
});

test("the native engine's ReLU step takes the path its dense line gives: sparse at ~11% firing with a 2 MiB decoder, dense with a 64 KiB one or the line at 0.1", {
  skip,
}, () => {
  const saved = process.env.SDLKIT_DENSE_ABOVE;
  try {
    for (const [dIn, dSae, line, wantDense] of [
      [512, 1024, '', false],
      [512, 1024, '0.1', true],
      [64, 256, '', true],
    ] as const) {
      if (line) process.env.SDLKIT_DENSE_ABOVE = line;
      else delete process.env.SDLKIT_DENSE_ABOVE;
      const cfg = config('relu', { dIn, dSae });
      const rng = new Rng(5);
      // Unit encoder rows and b_enc -1.23 over standard normal rows: each pre-activation ~ N(-1.23, 1), ~11% positive.
      const W_dec = unitRows(
        Float32Array.from({ length: dSae * dIn }, () => rng.normal()),
        dSae,
        dIn,
      );
      const weights = { W_enc: transpose(W_dec, dSae, dIn), b_enc: new Float32Array(dSae).fill(-1.23), W_dec, b_dec: new Float32Array(dIn) };
      const e = new NativeTrainEngine(mod, { cfg, train: TRAIN_DEFAULTS, weights });
      const B = 256;
      const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
      const r = e.step(X, X, B, { sparsity: 1, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
      e.dispose();
      const firing = r.l0 / dSae;
      assert.ok(firing > 0.1 && firing < 0.125, `${dIn} x ${dSae}: ${firing} of the entries fired, not between the two lines`);
      assert.equal(r.dense, wantDense, `${dIn} x ${dSae}, SDLKIT_DENSE_ABOVE '${line}': the dense path ${r.dense ? 'ran' : 'did not run'}`);
    }
  } finally {
    if (saved === undefined) delete process.env.SDLKIT_DENSE_ABOVE;
    else process.env.SDLKIT_DENSE_ABOVE = saved;
  }
});

test('native step = tfjs step: ReLU and JumpReLU on the dense (GEMM) path, at sizes that leave partial register tiles', { skip }, () => {
  for (const act of ['relu', 'jumprelu'] as const) {
    for (const [dIn, dSae, B] of [
      [12, 40, 50],
      [33, 97, 301],
    ]) {
      const r = compare(`${act} dense ${dIn}x${dSae}`, { cfg: config(act, { dIn, dSae }), sparsity: 0.5, denseAbove: 0, B });
      assert.equal(r.dense, 1, `${act} took the dense path`);
    }
  }
});

test('native step = tfjs step: transcoder, tied, no-bias, AuxK on dead latents, anchoring', { skip }, () => {
  compare('transcoder relu', { cfg: config('relu', { dIn: 12, dOut: 9, kind: 'transcoder', applyBDecToInput: false }), sparsity: 0.3 });
  compare('transcoder topk', { cfg: config('topk', { dIn: 12, dOut: 9, kind: 'transcoder', applyBDecToInput: false }), sparsity: 0 });
  compare('tied topk', { cfg: config('topk', { tied: true }), sparsity: 0 });
  compare('tied relu dense', { cfg: config('relu', { tied: true }), sparsity: 0.3, denseAbove: 0 });
  compare('no-bias relu', { cfg: config('relu', { noBias: true, applyBDecToInput: false }), sparsity: 0.2 });
  const dead = new Uint8Array(40);
  for (const j of [1, 4, 6, 9, 20, 33, 39]) dead[j] = 1;
  compare('auxk topk', { cfg: config('topk'), sparsity: 0, dead, auxkK: 3 }, 3);
  compare('auxk batchtopk', { cfg: config('batchtopk'), sparsity: 0, dead, auxkK: 2 }, 4);
  compare('anchors topk', { cfg: config('topk'), sparsity: 0, anchorK: 3 });
  compare('anchors relu dense', { cfg: config('relu'), sparsity: 0.4, anchorK: 2, denseAbove: 0 });
});

test('native TopK selection on wide rows (the chunk-maximum filter) keeps exactly the k largest', { skip }, () => {
  // 2k chunks of 16 or more: the filtered path; compare with the tfjs step on every output.
  compare('topk wide', { cfg: config('topk', { dIn: 16, dSae: 1024, k: 8 }), sparsity: 0, B: 64 }, 7);
  compare('topk wide, k = 1', { cfg: config('topk', { dIn: 16, dSae: 512, k: 1 }), sparsity: 0, B: 64 }, 8);
  compare('batchtopk wide', { cfg: config('batchtopk', { dIn: 16, dSae: 1024, k: 8 }), sparsity: 0, B: 64 }, 9);
});

test('native TopK fused into the encoder GEMM: many row and column blocks, partial tiles, exact ties, AuxK across blocks', { skip }, () => {
  // 1,100 latents span three column blocks (the last partial) and 400 rows three row blocks of the fused encoder;
  // the last 500 latents copy the first 500 encoders, so every pre-activation has an exact twin in another block
  // and the k-th largest is often a tie (the lower index must win, as in tf.topk).
  const dead = new Uint8Array(1100);
  for (let j = 3; j < 1100; j += 7) dead[j] = 1;
  for (const k of [1, 8, 40])
    compare(`fused topk k=${k}`, { cfg: config('topk', { dIn: 20, dSae: 1100, k }), sparsity: 0, B: 400, tied: 500, dead, auxkK: 6 }, 40 + k);
  compare(
    'fused topk transcoder',
    { cfg: config('topk', { dIn: 20, dOut: 9, dSae: 700, k: 8, kind: 'transcoder', applyBDecToInput: false }), sparsity: 0, B: 200, tied: 300 },
    12,
  );
});

test('native fused encoder over column chunks (W_enc packed a chunk at a time, rows paused and resumed): bit-equal to one chunk, and to tfjs', {
  skip,
}, () => {
  // 1,100 latents are one chunk at the default budget and five (one column block each) at 1 byte: TopK with AuxK on
  // dead latents in every chunk, BatchTopK's batch-wide candidates (second step: selected inside the GEMM) and
  // ReLU's positive entries (encodeAbove) must not depend on where the chunks end. Exact ties cross chunks.
  const before = mod.gemmChunkBytes();
  assert.ok(before >= 1 << 20, `default chunk budget ${before}`);
  try {
    for (const act of ['topk', 'batchtopk', 'relu'] as const) {
      const cfg = config(act, { dIn: 20, dSae: 1100, k: 8 });
      const rng = new Rng(91);
      const w = randomWeights(cfg, rng);
      duplicateEncoders(w, cfg, 500);
      const B = 400;
      const X = Float32Array.from({ length: B * cfg.dIn }, () => rng.normal() * 1.5);
      if (act === 'relu') sparseReluBias(w, cfg, X, B);
      const dead = new Uint8Array(cfg.dSae);
      for (let j = 1; j < cfg.dSae; j += 4) dead[j] = 1;
      const aux = act === 'relu' ? 0 : 1 / 32;
      const opts = { sparsity: 0.2, bandwidth: 1, auxkCoefficient: aux, auxkK: aux ? 60 : 0, dead, anchorK: 0, anchorWeight: 0, denseAbove: 0.07 };
      const np: NativeTensors = { W_encT: transpose(w.W_enc, cfg.dIn, cfg.dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
      // Then a batch with more entries above the floor and one with fewer: the chunks' kept arrays (encodeAbove's
      // parts, reused from call to call) grow, then hold more than the call fills.
      const batches = [X, X, X.map((v) => v * 1.15), X.map((v) => v * 0.85)];
      const steps = (bytes: number) => {
        mod.gemmChunkBytes(bytes);
        const e = nativeEngine(cfg);
        return batches.map((x) => nativeStepFresh(e, cfg, np, x, B, opts));
      };
      const one = steps(1 << 30);
      const many = steps(1);
      assert.equal(many[1].r.selection, 1, `${act}: the second step selects inside the GEMM`);
      if (act === 'relu') for (const s of [2, 3]) assert.equal(many[s].r.selection, 1, `relu step ${s + 1} selects inside the GEMM`);
      if (aux) assert.ok(many[1].r.auxLoss > 0, `${act}: AuxK ran`);
      for (const s of [0, 1, 2, 3]) sameNativeStep(`${act} step ${s + 1}, five chunks vs one`, many[s], one[s]);
    }
    mod.gemmChunkBytes(1);
    const dead = new Uint8Array(1100);
    for (let j = 3; j < 1100; j += 7) dead[j] = 1;
    compare('fused topk over five chunks', { cfg: config('topk', { dIn: 20, dSae: 1100, k: 8 }), sparsity: 0, B: 400, tied: 500, dead, auxkK: 6 }, 48);
  } finally {
    mod.gemmChunkBytes(before);
  }
});

test('native BatchTopK and Matryoshka selected inside the encoder GEMM once they have a threshold: bit-equal to the unfused step, recomputed when the threshold falls', {
  skip,
}, () => {
  for (const act of ['batchtopk', 'matryoshka'] as const) fusedBatchCase(act);
});

function fusedBatchCase(act: 'batchtopk' | 'matryoshka') {
  const cfg = config(act, { dIn: 20, dSae: 1100, k: 8, matryoshkaWidths: [100, 500, 1100] });
  const { dIn, dSae } = cfg;
  const B = 400;
  const rng = new Rng(77);
  const w = randomWeights(cfg, rng);
  duplicateEncoders(w, cfg, 500);
  const X = Float32Array.from({ length: B * dIn }, () => rng.normal() * 1.5);
  const dead = new Uint8Array(dSae);
  for (let j = 5; j < dSae; j += 9) dead[j] = 1;
  const opts = { sparsity: 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 6, dead, anchorK: 0, anchorWeight: 0, denseAbove: 0.07 };
  const engine = () => nativeEngine(cfg);
  const np: NativeTensors = { W_encT: transpose(w.W_enc, dIn, dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
  const run = (e: ReturnType<typeof engine>, x: Float32Array, storedFallback = false) => nativeStepFresh(e, cfg, np, x, B, { ...opts, storedFallback });
  const same = (name: string, a: ReturnType<typeof run>, b: ReturnType<typeof run>) => sameNativeStep(`${act} ${name}`, a, b);
  const stored = run(engine(), X, true);
  assert.equal(stored.r.selection, 0, `${act}: with storedFallback, the first step stores the pre-activations`);
  const e = engine();
  const first = run(e, X);
  assert.equal(first.r.selection, 4, `${act}: the first step has no threshold: a floor from the rows' own top 2k`);
  same('first step, rows floor vs stored', first, stored);
  const second = run(e, X);
  assert.equal(second.r.selection, 1, `${act}: the second step selects inside the GEMM above the last threshold's floor`);
  same('fused vs stored', second, stored);
  if (act === 'batchtopk') assert.ok(first.r.auxLoss > 0, 'AuxK ran');
  // Inputs scaled down: the batch threshold falls far below the floor under the last one.
  const small = X.map((v) => v * 0.2);
  const fell = run(e, small);
  assert.equal(fell.r.selection, 4, `${act}: too few candidates: the rows' floor`);
  const e2 = engine();
  run(e2, X, true);
  const fellStored = run(e2, small, true);
  assert.equal(fellStored.r.selection, 2, `${act}: with storedFallback, recomputed from stored pre-activations`);
  same(`${act} rows floor vs stored after the threshold fell`, fell, fellStored);
}

test("native BatchTopK's floor follows how far the threshold fell lately: tight after steady steps, wider after a fall; each step bit-equal to the stored path", {
  skip,
}, () => {
  const cfg = config('batchtopk', { dIn: 20, dSae: 1100, k: 8 });
  const { dIn, dSae } = cfg;
  const B = 400;
  const rng = new Rng(78);
  const w = randomWeights(cfg, rng);
  // No biases: the pre-activations scale with the inputs, so scaling them by 0.95 lowers the threshold ~5%.
  w.b_enc.fill(0);
  w.b_dec.fill(0);
  const X = Float32Array.from({ length: B * dIn }, () => rng.normal() * 1.5);
  const opts = { sparsity: 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0, dead: new Uint8Array(dSae), anchorK: 0, anchorWeight: 0, denseAbove: 0.07 };
  const np: NativeTensors = { W_encT: transpose(w.W_enc, dIn, dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
  const e = nativeEngine(cfg);
  const scaled = (f: number) => X.map((v) => v * f);
  // Each step against a fresh engine that stores the pre-activations (the unfused selection).
  const step = (name: string, x: Float32Array, selection: number) => {
    const got = nativeStepFresh(e, cfg, np, x, B, opts);
    assert.equal(got.r.selection, selection, `${name}: selection`);
    sameNativeStep(name, got, nativeStepFresh(nativeEngine(cfg), cfg, np, x, B, { ...opts, storedFallback: true }));
    return got.r.minSelected;
  };
  const t0 = step('first step: no threshold yet', X, 4);
  for (let s = 0; s < 5; s++) step(`steady step ${s + 1}`, X, 1);
  // Five equal thresholds: the floor is 0.97 of the last, and a 5% fall goes under it (the fixed 0.8 took it).
  const t1 = step('a 5% fall after steady steps: the rows floor', scaled(0.95), 4);
  assert.ok(t1 < 0.97 * t0 && t1 > 0.8 * t0, `the threshold fell from ${t0} to ${t1}`);
  // That fall is now in the window: the floor is 0.03 under it, and the same fall again is found above it.
  step('the same fall again: above the widened floor', scaled(0.95 * 0.95), 1);
  // Sixteen steady steps later the fall has left the window, and the floor is tight again.
  for (let s = 0; s < 16; s++) nativeStepFresh(e, cfg, np, scaled(0.95 * 0.95), B, opts);
  step('a 5% fall once the window holds only steady steps', scaled(0.95 * 0.95 * 0.95), 4);
});

test('native GEMM on strided views equals a float64 product in every entry, with and without accumulation', { skip }, () => {
  const rng = new Rng(11);
  // Partial register tiles (M not a multiple of 6 or 14, N of 16 or 32), depths not a multiple of 8 (the vector
  // packing's step) or of a depth block (over one, each task's C block is summed in a padded buffer), and A^T wide
  // enough for the wide row blocks (1,700 rows over 2 threads), and tall enough for several row blocks of either kind;
  // N = 600 takes the wide blocks on AVX-512 (up to 768 there) and MC rows elsewhere; A^T 4,201 wide is packed 8
  // depths at a time (from 4,096 wide), its depths' last block short and its last panel partial.
  for (const [M, N, K] of [
    [1, 1, 1],
    [15, 33, 7],
    [70, 45, 300],
    [200, 130, 513],
    [1700, 40, 67],
    [900, 70, 600],
    [400, 600, 260],
    [4201, 20, 300],
  ]) {
    for (const [ta, tb] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ]) {
      const A = Float32Array.from({ length: M * K }, () => rng.normal());
      const Bm = Float32Array.from({ length: K * N }, () => rng.normal());
      // A(i, p) is A[i*K + p] or, transposed storage, A[p*M + i]; likewise B.
      const [ars, acs] = ta ? [1, M] : [K, 1];
      const [brs, bcs] = tb ? [1, K] : [N, 1];
      // C's rows 3 floats longer than N: the entries past N are not C's and must come back untouched.
      const ldc = N + 3;
      const C0 = Float32Array.from({ length: M * ldc }, () => rng.normal());
      for (const acc of [false, true]) {
        const C = C0.slice();
        mod.gemm(M, N, K, A, ars, acs, Bm, brs, bcs, C, ldc, acc, 2);
        // On 1 and 3 threads A^T's row blocks have other heights (chosen for even work): the same bits.
        for (const threads of [1, 3]) {
          const Ct = C0.slice();
          mod.gemm(M, N, K, A, ars, acs, Bm, brs, bcs, Ct, ldc, acc, threads);
          assert.deepEqual(Ct, C, `gemm ${M}x${N}x${K} ta=${ta} tb=${tb} acc=${acc}: ${threads} threads vs 2`);
        }
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < N; j++) {
            let s = acc ? C0[i * ldc + j] : 0;
            for (let p = 0; p < K; p++) s += A[i * ars + p * acs] * Bm[p * brs + j * bcs];
            if (!(Math.abs(C[i * ldc + j] - s) <= 1e-4 * Math.sqrt(K) * 4))
              assert.fail(`gemm ${M}x${N}x${K} ta=${ta} tb=${tb} acc=${acc} C[${i},${j}] = ${C[i * ldc + j]}, want ${s}`);
          }
          for (let j = N; j < ldc; j++) if (C[i * ldc + j] !== C0[i * ldc + j]) assert.fail(`gemm ${M}x${N}x${K} wrote C[${i},${j}], past its ${N} columns`);
        }
      }
    }
  }
});

test('native forward = Dictionary.encode/decode for every activation; a reconstruction written into a given array is the same', { skip }, () => {
  const cases: [Activation, number, number, number][] = [
    ['relu', 300, 37, 0],
    ['topk', 300, 37, 0],
    ['batchtopk', 300, 37, 0],
    ['jumprelu', 300, 37, 0],
    ['matryoshka', 300, 37, 0],
    // The fused TopK encoder over several row and column blocks, with exact ties across blocks.
    ['topk', 1100, 400, 500],
  ];
  for (const [act, dSae, n, dup] of cases) {
    const cfg = config(act, { dIn: 10, dSae, k: act === 'topk' && dup ? 16 : 4 });
    const rng = new Rng(21);
    const w = randomWeights(cfg, rng);
    if (dup) duplicateEncoders(w, cfg, dup);
    const threshold = act === 'batchtopk' || act === 'matryoshka' ? 0.4 : 0;
    const thVec = act === 'jumprelu' ? Float32Array.from(w.log_threshold!, Math.exp) : threshold ? new Float32Array(cfg.dSae).fill(threshold) : undefined;
    const d = new Dictionary(cfg, { W_enc: w.W_enc, b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec, threshold: thVec });
    const X = Float32Array.from({ length: n * cfg.dIn }, () => rng.normal() * 1.5);
    const e = nativeEngine(cfg);
    const out = e.forward(
      { W_encT: transpose(w.W_enc, cfg.dIn, cfg.dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec, log_threshold: w.log_threshold },
      X,
      n,
      threshold,
      true,
    );
    const want = d.encode(X, n);
    const got = new Float32Array(n * cfg.dSae);
    let s = 0;
    for (let b = 0; b < n; b++) for (let q = 0; q < out.count[b]; q++, s++) got[b * cfg.dSae + out.idx[s]] = out.val[s];
    close(`${act} features`, got, want, 1e-5);
    close(`${act} reconstruction`, out.yhat!, d.decode(want, n), 1e-5);
    // Into a reused array (an evaluation's chunks): written there, bit-equal, the rest of the array untouched.
    const into = new Float32Array(n * cfg.dOut + 7).fill(-3);
    const p = { W_encT: transpose(w.W_enc, cfg.dIn, cfg.dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec, log_threshold: w.log_threshold };
    const again = e.forward(p, X, n, threshold, into.subarray(0, n * cfg.dOut));
    assert.equal(again.yhat!.buffer, into.buffer, act);
    assert.deepEqual(into.subarray(0, n * cfg.dOut), out.yhat, act);
    assert.deepEqual(into.subarray(n * cfg.dOut), new Float32Array(7).fill(-3), act);
    assert.deepEqual(again.idx, out.idx, act);
    assert.throws(() => e.forward(p, X, n, threshold, new Float32Array(n * cfg.dOut - 1)), /yhat/);
  }
});

test('encodeSparse into kept buffers (a pass over chunks) = into new arrays; the buffers reused while they fit, grown when not', { skip }, () => {
  for (const act of ['relu', 'topk'] as Activation[]) {
    const cfg = config(act, { dIn: 10, dSae: 300, k: 4 });
    const rng = new Rng(5);
    const w = randomWeights(cfg, rng);
    const d = new Dictionary(cfg, { W_enc: w.W_enc, b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec });
    const buffers = new SparseBuffers();
    // 40 rows; the same again; its first 25 (no more entries than the first: they fit); 90 new rows (more: they grow).
    const first = Float32Array.from({ length: 40 * cfg.dIn }, () => rng.normal());
    const chunks = [first, first.slice(), first.slice(0, 25 * cfg.dIn), Float32Array.from({ length: 90 * cfg.dIn }, () => rng.normal())];
    let held: ArrayBufferLike | undefined;
    chunks.forEach((x, c) => {
      const n = x.length / cfg.dIn;
      const want = encodeSparse(d, x, n);
      const got = encodeSparse(d, x, n, buffers);
      assert.equal(got.rows, n);
      assert.deepEqual(got.start, want.start, `${act} chunk ${c}`);
      assert.deepEqual(got.idx, want.idx, `${act} chunk ${c}`);
      assert.deepEqual(got.val, want.val, `${act} chunk ${c}`);
      // Chunks 1 and 2 need no more room than chunk 0: written into the same memory.
      if (c === 1 || c === 2) assert.ok(got.idx.buffer === held && got.val.buffer === buffers.into.val?.buffer, `${act} chunk ${c} reuses the arrays`);
      if (c === 3) assert.ok(got.idx.buffer !== held, `${act}: a chunk with more entries gets larger arrays`);
      held = got.idx.buffer;
    });
    // The larger arrays are kept for what follows.
    const again = encodeSparse(d, chunks[0], 40, buffers);
    assert.ok(again.idx.buffer === held, act);
    assert.deepEqual(again.idx, encodeSparse(d, chunks[0], 40).idx, act);
  }
});

test('native and tfjs engines train alike: 30 steps of Adam with clipping, unit-norm decoder, AuxK', { skip }, () => {
  for (const act of ['topk', 'relu'] as const) {
    const cfg = config(act, { dIn: 16, dSae: 64 });
    const rng = new Rng(31);
    const w = randomWeights(cfg, rng);
    unitRows(w.W_dec, cfg.dSae, cfg.dOut); // unit decoder rows to start from, as the trainer's initialisation gives
    const train = { ...TRAIN_DEFAULTS, clipGradNorm: 1 };
    const a = new TfEngine('cpu', { cfg, train, weights: w });
    const b = new NativeTrainEngine(mod, { cfg, train, weights: w });
    const B = 128;
    const X = new Float32Array(B * cfg.dIn);
    const dead = new Uint8Array(cfg.dSae);
    for (let j = 0; j < 10; j++) dead[j * 3] = 1;
    let la = 0,
      lb = 0;
    for (let s = 0; s < 30; s++) {
      for (let i = 0; i < X.length; i++) X[i] = rng.normal();
      const o = { sparsity: act === 'relu' ? 1 : 0, bandwidth: 1, auxkCoefficient: 1 / 32, auxkK: 4, dead: act === 'topk' ? dead : undefined };
      la = a.step(X, X, B, o).loss;
      lb = b.step(X, X, B, o).loss;
      a.update(1e-2, 1);
      b.update(1e-2, 1);
    }
    assert.ok(Math.abs(la - lb) <= 1e-3 * Math.abs(la), `${act}: final loss tfjs ${la} vs native ${lb}`);
    const wa = a.weights(),
      wb = b.weights();
    close(`${act} trained W_enc`, wb.W_enc, wa.W_enc, 1e-3);
    close(`${act} trained W_dec`, wb.W_dec, wa.W_dec, 1e-3);
    // Checkpoint state round-trips between engines, through the file (W_enc and its moments written transposed in blocks).
    const st = decodeSafetensors(encodeSafetensors(b.saveState())).tensors;
    const c = new TfEngine('cpu', { cfg, train, weights: w });
    c.loadState(st, b.adamT);
    close(`${act} state W_enc`, c.weights().W_enc, wb.W_enc, 0);
    close(`${act} adam m`, tensorData(c.saveState()['adam_m.W_enc']), st['adam_m.W_enc'].data, 0);
    close(`${act} adam v`, tensorData(b.saveState()['adam_v.W_enc']), st['adam_v.W_enc'].data, 0);
    a.dispose();
    c.dispose();
  }
});

test('native IndexStats = the TypeScript accumulator: counts, sums, maxima, histogram, tokens, co-occurrence, top-K and quantile examples', {
  skip,
}, async () => {
  const { JsIndexStats } = await import('../src/index/stats.js');
  const rng = new Rng(41);
  const m = 70,
    V = 13,
    n = 400;
  const edges = Float32Array.from({ length: 21 }, (_, i) => 10 ** (-3 + (i * 6) / 20));
  // Two quantile examples per band: most bands see more firings than that, so the reservoirs draw.
  const cfg = { m, vocab: V, topK: 5, radius: 3, cooccurrence: 6, edges, perBand: 2, bandEdges: INNER_EDGES };
  const a = new JsIndexStats(cfg),
    b = new mod.IndexStats({ ...cfg, threads: 2 });
  for (let chunk = 0; chunk < 3; chunk++) {
    const start = new Int32Array(n + 1);
    const idx: number[] = [],
      val: number[] = [];
    for (let r = 0; r < n; r++) {
      // Mostly short rows, every third up to 40 latents (the native search for a context row's latent compares 8 at a time).
      const lat = [...new Set(Array.from({ length: rng.int(r % 3 === 0 ? 40 : 6) }, () => rng.int(m)))].sort((x, y) => x - y);
      for (const l of lat) {
        idx.push(l);
        // Now and then a value seen before: equal activations rank by the slot they were kept in.
        val.push(r % 11 === 0 ? 60 : Math.exp(rng.normal() * 2));
      }
      start[r + 1] = idx.length;
    }
    const token = Int32Array.from({ length: n }, () => rng.int(V + 2) - 1); // includes ids outside the vocabulary
    const window = Int32Array.from({ length: n }, (_, r) => Math.floor(r / 17));
    const doc = Int32Array.from({ length: n }, (_, r) => chunk * 100 + Math.floor(r / 40));
    const pos = Int32Array.from({ length: n }, (_, r) => r % 17);
    for (const s of [a, b]) s.add(start, Int32Array.from(idx), Float32Array.from(val), token, window, doc, pos);
  }
  const ra = a.result(),
    rb = b.result();
  for (const k of ['count', 'max', 'hist', 'qSeen'] as const) assert.deepEqual(Array.from(rb[k]), Array.from(ra[k]), k);
  const [ca, cb] = [a.cooccurrence(), b.cooccurrence()];
  assert.equal(cb.tokens, 3 * n);
  assert.deepEqual([Array.from(cb.other), Array.from(cb.count)], [Array.from(ca.other), Array.from(ca.count)], 'co-occurrence');
  // Per (token, feature): firings at even places, summed activations at odd ones.
  const half = (a: Float32Array, p: number) => a.filter((_, e) => e % 2 === p);
  assert.deepEqual(Array.from(half(rb.tok, 0)), Array.from(half(ra.tok, 0)), 'token firings');
  assert.ok(half(ra.tok, 0).some((c) => c > 1));
  // The reservoirs drew: some band saw more firings than it keeps; and some feature's top K was replaced.
  assert.ok(ra.qSeen.some((c) => c > 2));
  assert.ok(ra.count.some((c) => c > cfg.topK));
  close('sum', rb.sum, ra.sum, 1e-9);
  close('token sums', half(rb.tok, 1), half(ra.tok, 1), 1e-6);
  // The example lists, example by example in order: feature, band, the row's fields and the context.
  const examples = (l: typeof ra.examples) => {
    const out: string[] = [];
    let i = 0;
    for (let q = 0; q < l.slots.length; q++) {
      while (l.off[i + 1] <= q) i++;
      const s = l.slots[q],
        w = l.store.width,
        len = l.store.ctxLen[s];
      const st = l.store;
      out.push(
        JSON.stringify([i, l.band?.[q], st.act[s], st.doc[s], st.window[s], st.pos[s], st.token[s], st.ctxStart[s], len]) +
          JSON.stringify([Array.from(st.ctxTok.subarray(s * w, s * w + len)), Array.from(st.ctxAct.subarray(s * w, s * w + len))]),
      );
    }
    return out;
  };
  const [ta, tb] = [examples(ra.examples), examples(rb.examples)];
  assert.ok(ta.length > 0 && new Set(ta.map((e) => e.slice(0, e.indexOf(',')))).size > 10);
  // Some feature's list holds equal activations (ranked by slot).
  const { off, store } = ra.examples;
  assert.ok(
    Array.from({ length: m }, (_, i) => i).some((i) => {
      for (let q = off[i] + 1; q < off[i + 1]; q++) if (store.act[ra.examples.slots[q]] === store.act[ra.examples.slots[q - 1]]) return true;
      return false;
    }),
  );
  assert.deepEqual(tb, ta, 'top examples');
  const [qa, qb] = [examples(ra.quantiles), examples(rb.quantiles)];
  assert.ok(qa.length > 0);
  assert.deepEqual(qb, qa, 'quantile examples');
});

test("co-occurrence at 9,000 latents (past the m x m counters of old) and at 70,000 (ids past 16 bits): each feature's most co-occurring, exact against pair counting, over the rows kept", async () => {
  await cooccurrenceCase(9000);
  // Hot latents above 65,535: the native kept ids in 32 bits.
  await cooccurrenceCase(70000);
});

async function cooccurrenceCase(m: number) {
  const { JsIndexStats } = await import('../src/index/stats.js');
  const rng = new Rng(77);
  const n = 300,
    top = 4;
  // Rows of a few hot latents (many ties among their counts) and scattered others, latents increasing.
  const start = new Int32Array(n + 1);
  const idx: number[] = [];
  for (let r = 0; r < n; r++) {
    const hot = Array.from({ length: rng.int(5) }, () => m - 1 - 100 * rng.int(12));
    const cold = Array.from({ length: rng.int(4) }, () => rng.int(m));
    idx.push(...[...new Set([...hot, ...cold])].sort((x, y) => x - y));
    start[r + 1] = idx.length;
  }
  const ids = Int32Array.from(idx);
  const zeros = new Int32Array(n);
  /** Brute force over the first `rows` rows: every pair of each row counted both ways, each feature's list sorted. */
  const expected = (rows: number) => {
    const pairs = new Map<number, Map<number, number>>();
    for (let r = 0; r < rows; r++)
      for (let a = start[r]; a < start[r + 1]; a++)
        for (let b = start[r]; b < start[r + 1]; b++) {
          if (a === b) continue;
          const row = pairs.get(ids[a]) ?? new Map<number, number>();
          row.set(ids[b], (row.get(ids[b]) ?? 0) + 1);
          pairs.set(ids[a], row);
        }
    const other = new Int32Array(m * top).fill(-1),
      count = new Uint32Array(m * top);
    for (const [i, row] of pairs) {
      const best = [...row].sort((x, y) => y[1] - x[1] || x[0] - y[0]).slice(0, top);
      best.forEach(([j, c], q) => {
        other[i * top + q] = j;
        count[i * top + q] = c;
      });
    }
    return { other: Array.from(other), count: Array.from(count) };
  };
  const want = expected(n);
  // Ties were broken: some feature's list holds equal counts.
  assert.ok(want.count.some((c, q) => q % top > 0 && c > 0 && c === want.count[q - 1]));
  // A cap that falls inside the second of two chunks: whole rows up to it, the rest uncounted.
  const cap = Math.floor(start[n] * 0.7);
  let kept = 0;
  while (start[kept + 1] <= cap) kept++;
  const capped = expected(kept);
  assert.notDeepEqual(capped.count, want.count);
  const half = n / 2;
  const chunk = (c: number) => ({
    s: Int32Array.from(start.subarray(c * half, (c + 1) * half + 1), (v) => v - start[c * half]),
    i: ids.subarray(start[c * half], start[(c + 1) * half]),
  });
  const makers: [string, (c: IndexStatsConfig) => IndexStatsLike][] = [['TypeScript', (c) => new JsIndexStats(c)]];
  if (!skip) {
    makers.push(['native', (c) => new mod.IndexStats({ ...c, threads: 2 })]);
    // Rows grouped a few features at a time (blocks of at most 7 entries; a hot feature, with more, alone in its own).
    makers.push(['native, blocks of 7', (c) => new mod.IndexStats({ ...c, threads: 2, cooccurrenceBlock: 7 })]);
  }
  for (const [name, make] of makers)
    for (const [maxEntries, exp, rows] of [
      [undefined, want, n],
      [cap, capped, kept],
    ] as const) {
      const cfg = {
        m,
        vocab: 0,
        topK: 0,
        radius: 0,
        cooccurrence: top,
        cooccurrenceMaxEntries: maxEntries,
        edges: new Float32Array(0),
        perBand: 0,
        bandEdges: INNER_EDGES,
      };
      const st = make(cfg);
      for (const c of [0, 1]) {
        const { s, i } = chunk(c);
        st.add(s, i, new Float32Array(i.length).fill(1), zeros.subarray(0, half), zeros.subarray(0, half), zeros.subarray(0, half), zeros.subarray(0, half));
      }
      const got = st.cooccurrence();
      assert.equal(got.tokens, rows, `${name} rows counted (cap ${maxEntries})`);
      assert.deepEqual({ other: Array.from(got.other), count: Array.from(got.count) }, exp, `${name}, ${m} latents (cap ${maxEntries})`);
    }
}

test('native ReLU keeps its positive entries inside the encoder GEMM once a step went sparse: bit-equal to the stored path, dense again when many fire; sparse steps give back the [B, d_sae] arrays', {
  skip,
}, () => {
  const cfg = config('relu', { dIn: 20, dSae: 1100 });
  const { dIn, dSae } = cfg;
  const B = 400;
  const rng = new Rng(78);
  const w = randomWeights(cfg, rng);
  const X = Float32Array.from({ length: B * dIn }, () => rng.normal());
  sparseReluBias(w, cfg, X, B);
  const opts = { sparsity: 0.3, bandwidth: 1, auxkCoefficient: 0, auxkK: 0, anchorK: 0, anchorWeight: 0, denseAbove: 0.07 };
  const np: NativeTensors = { W_encT: transpose(w.W_enc, dIn, dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
  const run = (e: ReturnType<typeof nativeEngine>, x: Float32Array) => nativeStepFresh(e, cfg, np, x, B, opts);
  const same = (name: string, a: ReturnType<typeof run>, b: ReturnType<typeof run>) =>
    sameNativeStep(name, a, b, ['loss', 'mse', 'sparsityLoss', 'l0', 'nnz', 'dense']);
  const e = nativeEngine(cfg);
  const BM4 = B * dSae * 4;
  // Inputs scaled up: many entries fire, the dense path (its activations and dL/dpre, [B, d_sae] each).
  const big = X.map((v) => v * 12);
  const dense0 = run(e, big);
  assert.equal(dense0.r.dense, 1);
  assert.equal(dense0.r.denseBytes, 2 * BM4, 'the dense path holds the activations and dL/dpre');
  const first = run(e, X);
  assert.equal(first.r.selection, 0);
  assert.equal(first.r.dense, 0, 'few entries fire: the sparse path');
  assert.ok(first.r.l0 > 1, `some entries fire (L0 ${first.r.l0})`);
  assert.equal(first.r.denseBytes, 0, 'a sparse step gives back the [B, d_sae] arrays');
  same('sparse after dense vs a fresh engine', first, run(nativeEngine(cfg), X));
  const second = run(e, X);
  assert.equal(second.r.selection, 1, 'the next step keeps the positive entries inside the GEMM');
  assert.equal(second.r.denseBytes, 0);
  same('fused vs stored', second, first);
  // The next fused step refills the candidate arrays the last one left (kept across steps), with fewer entries.
  const fewer = X.map((v) => v * 0.8);
  const third = run(e, fewer);
  assert.equal(third.r.selection, 1);
  assert.ok(third.r.nnz < second.r.nnz, `fewer entries fire (${third.r.nnz} vs ${second.r.nnz})`);
  same('fused over kept arrays vs stored', third, run(nativeEngine(cfg), fewer));
  // Many entries fire again: the step computes the pre-activations after all and goes dense, its arrays taken again.
  const dense = run(e, big);
  assert.equal(dense.r.selection, 2);
  assert.equal(dense.r.dense, 1);
  assert.equal(dense.r.denseBytes, 2 * BM4);
  same('dense again vs a fresh engine', dense, run(nativeEngine(cfg), big));
  same('dense again vs the first dense step', dense, dense0);
  // JumpReLU's sparse steps give back the dense path's arrays but keep its pre-activations (its window reads them).
  const jcfg = config('jumprelu', { dIn: 20, dSae: 1100 });
  const jnp: NativeTensors = { ...np, log_threshold: new Float32Array(dSae).fill(Math.log(0.05)) };
  const jopts = { ...opts, bandwidth: 0.001 };
  const jrun = (en: ReturnType<typeof nativeEngine>, x: Float32Array) => nativeStepFresh(en, jcfg, jnp, x, B, jopts);
  const je = nativeEngine(jcfg);
  const jDense = jrun(je, big);
  assert.equal(jDense.r.dense, 1);
  assert.equal(jDense.r.denseBytes, 3 * BM4, 'pre-activations, activations and dL/dpre');
  const jSparse = jrun(je, X);
  assert.equal(jSparse.r.dense, 0);
  assert.equal(jSparse.r.denseBytes, BM4, 'the pre-activations alone');
  same('JumpReLU sparse after dense vs a fresh engine', jSparse, jrun(nativeEngine(jcfg), X));
  const jAgain = jrun(je, big);
  assert.equal(jAgain.r.denseBytes, 3 * BM4);
  same('JumpReLU dense again vs the first dense step', jAgain, jDense);
});

test('native nearest neighbours = the TypeScript reference: ids and cosines bit-equal, exact ties, blocks of 256 rows, fewer rows than neighbours', {
  skip,
}, () => {
  const rng = new Rng(11);
  for (const [m, d, n] of [
    [600, 24, 10],
    [5, 8, 10],
  ]) {
    const unit = new Float32Array(m * d);
    for (let i = 0; i < m * d; i++) unit[i] = rng.normal();
    // Rows 3, 300 and 301 repeat row 7: exact ties at the top of row 7's list, broken by the lower id.
    for (const r of [3, 300, 301]) if (r < m) unit.copyWithin(r * d, 7 * d, 8 * d);
    for (let i = 0; i < m; i++) {
      const row = unit.subarray(i * d, (i + 1) * d);
      const norm = Math.hypot(...row);
      for (let j = 0; j < d; j++) row[j] /= norm;
    }
    const got = nearestByCosine(unit, m, d, n);
    const want = nearestByCosineReference(unit, m, d, n);
    assert.deepEqual(got.other, want.other, `${m} rows: ids`);
    assert.deepEqual(got.cosine, want.cosine, `${m} rows: cosines`);
    if (m > 301) assert.deepEqual(Array.from(got.other.subarray(7 * n, 7 * n + 3)), [3, 300, 301]);
    if (m < n) assert.equal(got.other[n - 1], -1, 'past the last neighbour');
  }
});

test('native fused encoder: a product of one row block (B packed a column block at a time) gives the same entries as the same rows in a larger batch', {
  skip,
}, () => {
  // d_in 300 (two depth blocks) and 1,100 latents (three column blocks): the rows' entries must not depend on the batch.
  for (const act of ['topk', 'relu', 'batchtopk'] as Activation[]) {
    const cfg = config(act, { dIn: 300, dSae: 1100, k: 12 });
    const rng = new Rng(5);
    const w = randomWeights(cfg, rng);
    const p = { W_encT: transpose(w.W_enc, cfg.dIn, cfg.dSae), b_enc: w.b_enc, W_dec: w.W_dec, b_dec: w.b_dec };
    const n = 400,
      few = 90;
    const X = Float32Array.from({ length: n * cfg.dIn }, () => rng.normal());
    const e = nativeEngine(cfg);
    const all = e.forward(p, X, n, 0.5, false);
    const part = e.forward(p, X.subarray(0, few * cfg.dIn), few, 0.5, false);
    const entries = (f: typeof all, rows: number) => {
      const out: [number, number][] = [];
      let s = 0;
      for (let b = 0; b < rows; b++) for (let q = 0; q < f.count[b]; q++, s++) out.push([b * cfg.dSae + f.idx[s], f.val[s]]);
      return out;
    };
    const want = entries(all, few);
    assert.ok(want.length > few, `${act}: entries to compare`);
    assert.deepEqual(entries(part, few), want, `${act}: the first ${few} rows alone`);
  }
});

test("native rowsLargest = topIndices (the logit lens's most raised and lowered tokens): ties to the lower index, NaN, rows shorter than n", { skip }, () => {
  const rng = new Rng(17);
  for (const [rows, cols, n] of [
    [40, 512, 10],
    [7, 70, 10],
    [5, 6, 10],
  ]) {
    // Values on a coarse grid (many exact ties), a few NaN and infinities.
    const C = Float32Array.from({ length: rows * cols }, () => Math.round(rng.normal() * 4) / 2);
    for (let q = 0; q < rows * cols; q += 37) C[q] = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY][q % 3];
    for (const negate of [false, true]) {
      const got = mod.rowsLargest(C, rows, cols, n, negate, 2);
      for (let r = 0; r < rows; r++) {
        const row = C.subarray(r * cols, (r + 1) * cols);
        const want = topIndices(negate ? row.map((v) => -v) : row, n, true);
        const ids = Array.from(got.index.subarray(r * n, (r + 1) * n));
        assert.deepEqual(ids, [...want, ...Array(n - want.length).fill(-1)], `${rows}x${cols} row ${r}${negate ? ', negated' : ''}`);
        want.forEach((j, q) => assert.ok(Object.is(got.value[r * n + q], negate ? -row[j] : row[j])));
      }
    }
  }
});

test('native example contexts = the TypeScript text: tokens and activations rounded to 1e-4, halves, -0, huge and non-finite values', { skip }, () => {
  const width = 17,
    slots = 3000;
  const rng = new Rng(5);
  const store = new ExampleStore(width, slots);
  store.alloc(slots);
  const special = [
    0,
    -0,
    5e-5,
    -5e-5,
    0.00015,
    -0.00015,
    0.5,
    99999.99995,
    1e10,
    1e11 + 0.5,
    -1e13,
    1e21,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
  ];
  for (let s = 0; s < slots; s++) {
    store.ctxLen[s] = s % (width + 1); // 0 to width values, an empty context among them
    for (let c = 0; c < width; c++) {
      store.ctxTok[s * width + c] = Math.floor((rng.next() - 0.1) * 300000); // a few negative ids: printed as they are
      // Float32 activations over 12 orders of magnitude, both signs; every 50th slot carries the special values.
      store.ctxAct[s * width + c] = s % 50 === 7 ? special[c % special.length] : (rng.next() - 0.3) * Math.exp(rng.next() * 28 - 14);
    }
  }
  // Slots out of order and repeated, as the lists give them.
  const order = Int32Array.from({ length: 5000 }, () => Math.floor(rng.next() * slots));
  const got = contextTexts(store.parts(), order);
  const want = contextTextsReference(store.parts(), order);
  assert.deepEqual(got.tokens, want.tokens);
  assert.deepEqual(got.acts, want.acts);
  assert.ok(
    got.acts.some((a) => a.includes('e+')),
    'a value past 1e11 went through the TypeScript path',
  );
  assert.deepEqual(contextTexts(store.parts(), new Int32Array(0)), { tokens: [], acts: [] });
  assert.throws(() => mod.contextTexts(store.ctxTok, store.ctxAct, store.ctxLen, width, Int32Array.of(slots)), /out of range/);
});

test("native probeGradient = the TypeScript reference (the absorption probes' sigmoid step), a class without positives zero", { skip }, async () => {
  const { probeGradient } = await import('../src/analysis/absorption.js');
  const rng = new Rng(93);
  const n = 700,
    C = 26;
  const L = Float32Array.from({ length: n * C }, () => rng.normal() * 3);
  const b = Float64Array.from({ length: C }, () => rng.normal());
  const y = Int32Array.from({ length: n }, () => rng.int(C - 1)); // class 25 has no positives
  const pos = new Float64Array(C);
  for (const c of y) pos[c]++;
  const wPos = Float64Array.from(pos, (p) => (p ? n / (2 * p) : 0)),
    wNeg = Float64Array.from(pos, (p) => (p ? n / (2 * (n - p)) : 0));
  const Ga = new Float32Array(n * C).fill(7),
    Gb = new Float32Array(n * C).fill(7);
  const ga = new Float64Array(C).fill(0.5),
    gb = new Float64Array(C).fill(0.5);
  probeGradient(L, b, pos, wPos, wNeg, y, Ga, ga);
  mod.probeGradient(L, b, pos, wPos, wNeg, y, Gb, gb);
  // std::exp and Math.exp may differ in the last bit: each entry equal to 1e-6 of itself, the sums to 1e-12.
  for (let q = 0; q < n * C; q++) assert.ok(Math.abs(Gb[q] - Ga[q]) <= 1e-6 * Math.abs(Ga[q]), `G[${q}]: ${Gb[q]} vs ${Ga[q]}`);
  for (let c = 0; c < C; c++) assert.ok(Math.abs(gb[c] - ga[c]) <= 1e-12 * Math.max(1, Math.abs(ga[c])), `gb[${c}]: ${gb[c]} vs ${ga[c]}`);
  for (let r = 0; r < n; r++) assert.equal(Gb[r * C + 25], 0, 'no positives: zero gradient');
  assert.ok(
    ga.some((v) => v !== 0.5),
    'the sums were added to',
  );
});

test('every build this processor can run (generic, AVX2, AVX-512) passes these tests, not only the fastest one loaded', { skip }, () => {
  // Each build has its own vector code (select.cc's compress steps, the GEMM's register tile, the CRC-32C, float16
  // and non-finite kernels): run this file and those kernels' tests again with each of the others forced. The runs
  // it starts name their build, so they do not start more.
  if (process.env.SDLKIT_NATIVE) return;
  const f = mod.cpuFeatures();
  const runs = { generic: true, avx2: f.avx2 && f.fma, avx512: f.avx512 };
  const others = (Object.keys(runs) as (keyof typeof runs)[]).filter((isa) => runs[isa] && isa !== mod.isa);
  // x86 machines load a vector build and run at least the generic one here; elsewhere generic is the only build.
  if (mod.isa !== 'generic') assert.ok(others.includes('generic'));
  for (const isa of others) {
    // Without the runner's NODE_TEST_CONTEXT the child reports in TAP on its stdout, not to this runner.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const files = [import.meta.url, ...['f16', 'finite', 'checksum'].map((n) => new URL(`./${n}.test.js`, import.meta.url).href)].map((u) => fileURLToPath(u));
    const r = spawnSync(process.execPath, ['--test', ...files], { encoding: 'utf8', env: { ...env, SDLKIT_NATIVE: isa } });
    assert.equal(r.status, 0, `the ${isa} build: ${r.stdout.slice(-3000)}${r.stderr.slice(-1000)}`);
    assert.match(r.stdout, /# pass [1-9]/);
    assert.match(r.stdout, /# fail 0/);
  }
});

test('instructionPeak: the multiply-add rates the benchmarks read their ceiling from, bf16 exactly where the screen can run', { skip }, () => {
  const f = mod.cpuFeatures();
  // The rates are timed: the best of five short runs of each, interleaved, so that a run the other tests' threads
  // preempted does not decide (one run each, beside a CI's other test files, once read bf16 at 0.63x fp32).
  const r = { fp32: 0, bf16: 0 };
  for (let i = 0; i < 5; i++) {
    const once = mod.instructionPeak(1, 0.02);
    r.fp32 = Math.max(r.fp32, once.fp32);
    r.bf16 = Math.max(r.bf16, once.bf16);
  }
  // Any processor with FMA does billions a second; without FMA (or off x86) there is no rate to report.
  if (f.fma || f.avx512) assert.ok(r.fp32 > 1, `fp32 ${r.fp32}`);
  else assert.equal(r.fp32, 0);
  // Where this build screens the TopK encoder in bf16 the processor has the dot product, and it does twice an
  // FMA's products per instruction of the same width (so well over the FMA's rate; 0 where it is missing).
  if (mod.bf16Screen) assert.ok(r.bf16 > 1.2 * r.fp32, `bf16 ${r.bf16} vs fp32 ${r.fp32}`);
  assert.ok(r.bf16 === 0 || r.bf16 > r.fp32, `bf16 ${r.bf16} vs fp32 ${r.fp32}`);
  assert.throws(() => mod.instructionPeak(0, 0.02), /threads must be an integer from 1 to 256/);
  assert.throws(() => mod.instructionPeak(1, 0), /seconds must be in/);
});

test('adviseHuge: huge pages under a large array keep its contents; small arrays are left alone', { skip }, () => {
  const thp = (() => {
    try {
      return readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    } catch {
      return '[never]';
    }
  })();
  assert.equal(mod.adviseHuge(new Float32Array(1 << 18)), 0, 'a 1 MiB array is not advised');
  // 24 MiB written before the advice: MADV_COLLAPSE remakes touched pages, which must keep every value.
  const a = Float32Array.from({ length: 6 << 20 }, (_, i) => Math.sin(i));
  const before = a.slice();
  const advised = mod.adviseHuge(a);
  // Whole 2 MiB pages inside the array: at least 20 of its 24 MiB whatever its start's alignment (a kernel with THP
  // off may accept the advice or refuse it).
  if (!thp.includes('[never]')) {
    assert.ok(advised >= 20 << 20 && advised <= a.byteLength && advised % (2 << 20) === 0, `advised ${advised} bytes`);
  }
  assert.deepEqual(a, before, 'contents unchanged');
  assert.throws(() => mod.adviseHuge(new Uint8Array(8 << 20) as unknown as Float32Array), /Float32Array/);
});

test("detach: an ArrayBuffer's memory freed at once, its views emptied; shared memory refused", { skip }, () => {
  const buf = new ArrayBuffer(1 << 20);
  const view = new Float32Array(buf);
  view[3] = 7;
  assert.equal(mod.detach!(buf), true);
  assert.equal(buf.byteLength, 0, 'detached');
  assert.equal(view.length, 0, 'its views see nothing');
  assert.equal(mod.detach!(buf), false, 'already detached');
  // A harvest's shard buffers are shared by the forward's threads: never detached.
  assert.throws(() => mod.detach!(new SharedArrayBuffer(64) as unknown as ArrayBuffer), /an ArrayBuffer/);
  assert.throws(() => mod.detach!(new Float32Array(4) as unknown as ArrayBuffer), /an ArrayBuffer/);
  // Freed now, not at a collection: the process's count of array buffer memory falls by the buffer's size at once.
  const big = new ArrayBuffer(64 << 20);
  new Uint8Array(big).fill(1);
  const held = process.memoryUsage().arrayBuffers;
  mod.detach!(big);
  const freed = held - process.memoryUsage().arrayBuffers;
  assert.ok(freed >= 64 << 20, `${freed} bytes of array buffers freed`);
});
