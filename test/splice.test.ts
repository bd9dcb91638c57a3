// Splicing dictionaries into a model: perfect reconstruction recovers all the loss, the zero dictionary none,
// and the spliced model equals a manual two-stage computation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../src/models/model.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import type { DictConfig } from '../src/sdl/config.js';
import { spliceEval, evalWindows } from '../src/eval/splice-eval.js';
import { spliceModel } from '../src/export/splice.js';
import { createSession, exposeHooks, makeFeeds } from '../src/onnx/session.js';
import { Rng } from '../src/util/rng.js';
import { tinyLlama, tmp } from './helpers.js';

const site = 'blocks.0.hook_resid_post';
const cfg = (dSae: number, activation: DictConfig['activation'] = 'relu'): DictConfig => ({
  kind: 'sae',
  activation,
  sitesIn: [{ name: site, width: 16 }],
  sitesOut: [{ name: site, width: 16 }],
  dIn: 16,
  dOut: 16,
  dSae,
  k: 4,
  matryoshkaWidths: [dSae],
  applyBDecToInput: true,
  noBias: false,
  tied: false,
});

/** relu(x) - relu(-x) = x: a dictionary that reconstructs exactly. */
function identityDict(): Dictionary {
  const d = 16,
    m = 32;
  const W_enc = new Float32Array(d * m),
    W_dec = new Float32Array(m * d);
  for (let i = 0; i < d; i++) {
    W_enc[i * m + i] = 1;
    W_enc[i * m + d + i] = -1;
    W_dec[i * d + i] = 1;
    W_dec[(d + i) * d + i] = -1;
  }
  return new Dictionary(cfg(m), { W_enc, b_enc: new Float32Array(m), W_dec, b_dec: new Float32Array(d) });
}

test('CE recovered is 1 and KL 0 for a perfect dictionary; 0 for the zero dictionary', async () => {
  const m = loadModel(tinyLlama(join(tmp(), 'm')));
  const windows = evalWindows(m, 6, 32);
  const perfect = await spliceEval(m, identityDict(), windows, 32, 4);
  assert.ok(Math.abs(perfect.ce_loss_recovered - 1) < 1e-4, `recovered ${perfect.ce_loss_recovered}`);
  assert.ok(perfect.kl_spliced < 1e-6 && perfect.fvu < 1e-8 && Math.abs(perfect.delta_ce) < 1e-5);
  assert.ok(perfect.ce_zero_ablation > perfect.ce_clean, 'ablating the residual stream hurts');
  const zero = new Dictionary(cfg(8), {
    W_enc: new Float32Array(16 * 8),
    b_enc: new Float32Array(8),
    W_dec: new Float32Array(8 * 16),
    b_dec: new Float32Array(16),
  });
  const z = await spliceEval(m, zero, windows, 32, 4);
  assert.ok(Math.abs(z.ce_loss_recovered) < 1e-4, `recovered ${z.ce_loss_recovered}`);
  assert.ok(Math.abs(z.kl_spliced - z.kl_zero_ablation) < 1e-5);
});

test("the spliced model's logits equal a manual two-stage computation", async () => {
  const m = loadModel(tinyLlama(join(tmp(), 'm')));
  const rng = new Rng(4);
  const r = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 0.4);
  const dict = new Dictionary(cfg(24, 'topk'), { W_enc: r(16 * 24), b_enc: r(24), W_dec: r(24 * 16), b_dec: r(16) });
  const ctx = 20,
    B = 2;
  const ids = evalWindows(m, B, ctx);
  const hook = m.hooks.points.get(site)!;
  // Stage 1: the clean activations at the hook.
  const s1 = await createSession(exposeHooks(m.bytes, [hook], new Set(['logits'])));
  const acts = (await s1.run(makeFeeds(m.proto.graph.inputs, ids, B, ctx)))[hook.tensor].data as Float32Array;
  // The dictionary in JS, position 0 kept.
  const replaced = acts.slice();
  for (let b = 0; b < B; b++) {
    const rows = acts.subarray((b * ctx + 1) * 16, (b + 1) * ctx * 16);
    replaced.set(dict.decode(dict.encode(rows, ctx - 1), ctx - 1), (b * ctx + 1) * 16);
  }
  // Stage 2: the rest of the model, fed the replaced activations.
  const s2 = await createSession(spliceModel(m.bytes, m.proto, hook.tensor, { kind: 'input', name: 'replacement', width: 16 }));
  const ort = await import('onnxruntime-node');
  const two = (await s2.run({ ...makeFeeds(m.proto.graph.inputs, ids, B, ctx), replacement: new ort.Tensor('float32', replaced, [B, ctx, 16]) })).logits
    .data as Float32Array;
  const sp = await createSession(spliceModel(m.bytes, m.proto, hook.tensor, { kind: 'dictionary', dict, input: hook.tensor }));
  const one = (await sp.run(makeFeeds(m.proto.graph.inputs, ids, B, ctx))).logits.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < one.length; i++) worst = Math.max(worst, Math.abs(one[i] - two[i]));
  assert.ok(worst < 1e-4, `max logit difference ${worst}`);
  const clean = (await s1.run(makeFeeds(m.proto.graph.inputs, ids, B, ctx))).logits.data as Float32Array;
  assert.ok(
    clean.some((v, i) => Math.abs(v - one[i]) > 1e-3),
    'the splice changes the logits',
  );
});

test('crosscoders are evaluated in two stages: every site replaced at once; a perfect crosscoder recovers all the loss', async () => {
  const m = loadModel(tinyLlama(join(tmp(), 'm')));
  const sites = [
    { name: 'blocks.0.hook_resid_post', width: 16 },
    { name: 'blocks.1.hook_resid_mid', width: 16 },
  ];
  const d = 32,
    k = 64;
  const W_enc = new Float32Array(d * k),
    W_dec = new Float32Array(k * d);
  for (let i = 0; i < d; i++) {
    W_enc[i * k + i] = 1;
    W_enc[i * k + d + i] = -1;
    W_dec[i * d + i] = 1;
    W_dec[(d + i) * d + i] = -1;
  }
  const cfgX: DictConfig = {
    kind: 'crosscoder',
    activation: 'relu',
    sitesIn: sites,
    sitesOut: sites,
    dIn: d,
    dOut: d,
    dSae: k,
    k: 4,
    matryoshkaWidths: [k],
    applyBDecToInput: true,
    noBias: false,
    tied: false,
  };
  const windows = evalWindows(m, 4, 32);
  const perfect = await spliceEval(m, new Dictionary(cfgX, { W_enc, b_enc: new Float32Array(k), W_dec, b_dec: new Float32Array(d) }), windows, 32, 2);
  assert.ok(Math.abs(perfect.ce_loss_recovered - 1) < 1e-4 && perfect.kl_spliced < 1e-6, `recovered ${perfect.ce_loss_recovered}, KL ${perfect.kl_spliced}`);
  const zero = await spliceEval(
    m,
    new Dictionary(cfgX, { W_enc: new Float32Array(d * k), b_enc: new Float32Array(k), W_dec: new Float32Array(k * d), b_dec: new Float32Array(d) }),
    windows,
    32,
    2,
  );
  assert.ok(Math.abs(zero.ce_loss_recovered) < 1e-4, `recovered ${zero.ce_loss_recovered}`);
});
