// The llama2.c importer against a real pretrained model (stories260K) and its float64 reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { importLlama2c } from '../src/models/import-llama2c.js';
import { loadModel } from '../src/models/model.js';
import { createSession, exposeHooks, makeFeeds } from '../src/onnx/session.js';
import { generate } from '../src/models/generate.js';
import { resolveHooks } from '../src/onnx/hooks.js';
import { readLlama2c, writeLlama2c } from '../src/models/llama2c.js';
import { STORIES, sharedSkip, tmp } from './helpers.js';

interface Reference {
  ids: number[];
  argmax_next: number[];
  logits_last: number[];
  activations: Record<string, number[][]>;
}

test('stories260K: import, tokenizer, every hook within 1e-4 of the float64 reference, logits and argmax', { skip: sharedSkip }, async () => {
  const dir = join(tmp(), 'stories260K');
  importLlama2c(join(STORIES, 'stories260K.bin'), join(STORIES, 'tok512.bin'), dir);
  const m = loadModel(dir);
  const ref = JSON.parse(readFileSync(join(STORIES, 'reference.json'), 'utf8')) as Reference;
  const prompt = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.';
  assert.deepEqual(m.tokenizer.encode(prompt), ref.ids);
  assert.equal(m.tokenizer.decode(ref.ids), prompt);
  assert.equal(m.hooks.nLayers, 5);
  const hooks = [...m.hooks.points.values()];
  assert.equal(hooks.length, 30);
  const s = await createSession(exposeHooks(m.bytes, hooks, new Set(['logits'])));
  const out = await s.run(makeFeeds(m.proto.graph.inputs, Int32Array.from(ref.ids), 1, ref.ids.length));
  let worst = 0;
  for (const [name, rows] of Object.entries(ref.activations)) {
    const got = out[m.hooks.points.get(name)!.tensor].data as Float32Array;
    const want = rows.flat();
    assert.equal(got.length, want.length, name);
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  }
  assert.ok(worst < 1e-4, `worst hook error ${worst}`);
  const logits = out.logits.data as Float32Array;
  const V = 512,
    T = ref.ids.length;
  for (let t = 0; t < T; t++) {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[t * V + v] > logits[t * V + best]) best = v;
    assert.equal(best, ref.argmax_next[t], `argmax at ${t}`);
  }
  for (let v = 0; v < V; v++) assert.ok(Math.abs(logits[(T - 1) * V + v] - ref.logits_last[v]) < 1e-4);
});

test('stories260K: greedy generation from BOS reproduces llama2.c run.c exactly', { skip: sharedSkip }, async () => {
  const dir = join(tmp(), 'stories260K');
  importLlama2c(join(STORIES, 'stories260K.bin'), join(STORIES, 'tok512.bin'), dir);
  const m = loadModel(dir);
  const s = await createSession(m.bytes);
  const ids = await generate(m, s, [m.tokenizer.bosId], { steps: 256, temperature: 0 });
  const want = readFileSync(join(STORIES, 'greedy-256.txt'), 'utf8');
  assert.equal(`${m.tokenizer.decode(ids)}\n`, want);
});

test('the structural hook resolver finds the same hooks as the pinned names on an imported model', { skip: sharedSkip }, () => {
  const dir = join(tmp(), 'stories260K');
  importLlama2c(join(STORIES, 'stories260K.bin'), join(STORIES, 'tok512.bin'), dir);
  const m = loadModel(dir);
  const structural = resolveHooks(m.proto, { useNames: false });
  assert.equal(structural.nLayers, 5);
  const identityInput = new Map(m.proto.graph.nodes.filter((n) => n.opType === 'Identity').map((n) => [n.outputs[0], n.inputs[0]]));
  const root = (t: string) => {
    while (identityInput.has(t)) t = identityInput.get(t)!;
    return t;
  };
  for (const [name, p] of m.hooks.points) {
    const q = structural.points.get(name);
    assert.ok(q, `${name} found by structure`);
    assert.equal(root(q.tensor), root(p.tensor), name);
  }
});

test('llama2.c checkpoints round-trip through writeLlama2c, and bad checkpoints are refused', { skip: sharedSkip }, () => {
  const buf = new Uint8Array(readFileSync(join(STORIES, 'stories260K.bin')));
  const w = readLlama2c(buf);
  assert.deepEqual(writeLlama2c(w), buf);
  assert.throws(() => readLlama2c(buf.subarray(0, buf.length - 4)), /truncated or not a llama2.c/);
  assert.throws(() => readLlama2c(new TextEncoder().encode('not a checkpoint at all, really not')), /valid llama2.c header/);
});
