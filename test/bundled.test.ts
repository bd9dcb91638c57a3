// The bundled model: present, small, its ONNX graph equal to its own tfjs forward pass, its card true.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tf, initBackend } from '../src/tensor/backend.js';
import { loadModel, BUNDLED_MODEL_DIR } from '../src/models/model.js';
import { readLlama2c } from '../src/models/llama2c.js';
import { llamaToLm, lmForward } from '../src/lm/lm.js';
import { createSession, makeFeeds, widenToInt64 } from '../src/onnx/session.js';
import { documents } from '../src/corpus/sources.js';
import { heldoutWindows } from '../src/lm/train-lm.js';
import type { Llama2cTokenizer } from '../src/models/tokenizer.js';

const DIR = join(BUNDLED_MODEL_DIR, 'sdl-tiny');

before(async () => {
  await initBackend('cpu');
});

test('the bundled model is complete and under 20 MB', () => {
  const files = readdirSync(DIR);
  for (const f of ['config.json', 'model.onnx', 'model.bin', 'tokenizer.bin', 'tokenizer.json', 'MODEL_CARD.md', 'model_card.json'])
    assert.ok(files.includes(f), f);
  const size = files.filter((f) => f !== 'training').reduce((a, f) => a + statSync(join(DIR, f)).size, 0);
  assert.ok(size < 20e6, `${size} bytes`);
  const m = loadModel(DIR);
  assert.ok(m.hooks.nLayers >= 8, 'at least 8 layers, so layer 6 is a middle layer');
  assert.equal(m.hooks.points.size, 6 * m.hooks.nLayers);
});

test("the committed ONNX graph gives the same logits as the checkpoint's own tfjs forward pass", async () => {
  const m = loadModel(DIR);
  const w = readLlama2c(new Uint8Array(readFileSync(join(DIR, 'model.bin'))));
  const text = [...documents({ source: 'builtin', split: 'heldout' })][0].text.slice(0, 400);
  const ids = m.tokenizer.encode(text).slice(0, 64);
  const p = llamaToLm(w);
  const ref = tf.tidy(() => lmForward(w.config, p, tf.tensor2d(Int32Array.from(ids), [1, ids.length], 'int32')).dataSync());
  const s = await createSession(m.bytes);
  const out = (await s.run(makeFeeds(m.proto.graph.inputs, Int32Array.from(ids), 1, ids.length))).logits.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i] - ref[i]));
  assert.ok(worst < 1e-3, `max |logit difference| ${worst}`);
});

test('held-out loss recomputed with onnxruntime matches the model card, far below the unigram baseline', async () => {
  const m = loadModel(DIR);
  const card = JSON.parse(readFileSync(join(DIR, 'model_card.json'), 'utf8'));
  const tok = m.tokenizer as Llama2cTokenizer;
  const parts: number[] = [];
  for (const d of documents({ source: 'builtin', split: 'heldout' })) parts.push(...tok.encode(d.text));
  const ctx = card.loss.eval_ctx;
  const windows = heldoutWindows(Int32Array.from(parts), card.loss.eval_windows, ctx);
  const s = await createSession(m.bytes);
  const V = m.vocabSize;
  let nll = 0;
  const n = windows.length / (ctx + 1);
  for (let i = 0; i < n; i++) {
    const w = windows.subarray(i * (ctx + 1), (i + 1) * (ctx + 1));
    const logits = (await s.run(makeFeeds(m.proto.graph.inputs, w.slice(0, ctx), 1, ctx))).logits.data as Float32Array;
    for (let t = 0; t < ctx; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let z = 0;
      for (const v of row) z += Math.exp(v - max);
      nll += -(row[w[t + 1]] - max - Math.log(z));
    }
  }
  const loss = nll / (n * ctx);
  assert.ok(Math.abs(loss - card.loss.heldout_nats) < 2e-3, `onnxruntime ${loss} vs card ${card.loss.heldout_nats}`);
  assert.ok(loss < card.loss.unigram_entropy_nats - 1, `held-out ${loss} vs unigram ${card.loss.unigram_entropy_nats}`);
});

test('int32 feeds widened to int64 word by word equal BigInt conversion, negatives and the extremes included', () => {
  const v = Int32Array.from([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 511, -512, 123456789, -987654321]);
  assert.deepEqual(
    Array.from(widenToInt64(v)),
    Array.from(v, (x) => BigInt(x)),
  );
  assert.equal(widenToInt64(new Int32Array(0)).length, 0);
});
