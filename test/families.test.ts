// Five model families in their exporters' layouts (test/fixtures/families, made by make.py with a
// float64 torch reference): every hook sdlkit resolves must be the tensor the reference computes,
// and hooks a layout cannot provide must be reported missing with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { BUNDLED_MODEL_DIR, loadModel } from '../src/models/model.js';
import { SITES, canonical, resolveHooks } from '../src/onnx/hooks.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { DataType, decodeModel } from '../src/onnx/proto.js';
import { createSession, exposeHooks, makeFeeds, runtimeInputs } from '../src/onnx/session.js';
import { readSafetensors } from '../src/tensor/safetensors.js';
import { readManifest } from '../src/activations/manifest.js';
import { decodeShard } from '../src/activations/shard.js';
import { CLI, corpusFile, tmp } from './helpers.js';

export const FAMILIES_DIR = join(dirname(new URL(import.meta.url).pathname), '../../test/fixtures/families');
const FAMILIES = ['gpt2', 'pythia', 'llama', 'gemma2', 'qwen2'];

for (const family of FAMILIES) {
  test(`${family}: every resolved hook equals the float64 reference within 1e-4; impossible hooks are named with the reason`, async () => {
    const dir = join(FAMILIES_DIR, family);
    const meta = JSON.parse(readFileSync(join(dir, 'family.json'), 'utf8')) as { n_layers: number; missing_hooks: Record<string, string> };
    const ref = readSafetensors(join(dir, 'reference.safetensors')).tensors;
    const m = loadModel(join(dir, 'model.onnx'));
    assert.equal(m.hooks.nLayers, meta.n_layers);
    assert.equal(m.tokenizerPath, undefined, 'a bare graph loads without a tokenizer');
    const points = [...m.hooks.points.values()];
    const session = await createSession(exposeHooks(m.bytes, points, new Set(m.proto.graph.outputs.map((o) => o.name))), { threads: 1 });
    const ids = Int32Array.from(ref.ids.data);
    const out: Record<string, ort.Tensor> = await session.run(makeFeeds(runtimeInputs(m.proto), ids, 1, ids.length));
    let checked = 0;
    for (let l = 0; l < meta.n_layers; l++)
      for (const site of SITES) {
        const name = canonical(l, site);
        const p = m.hooks.points.get(name);
        if (name in meta.missing_hooks) {
          assert.ok(!p, `${name} must not resolve (${meta.missing_hooks[name]}), got ${p?.tensor}`);
          assert.match(m.hooks.missing.get(name) ?? '', new RegExp(meta.missing_hooks[name]), `${name} names its reason`);
          continue;
        }
        assert.ok(p, `${name} resolves (missing: ${m.hooks.missing.get(name)})`);
        const got = out[p.tensor].data as Float32Array;
        const want = ref[name].data;
        assert.equal(got.length, want.length, `${name} (${p.tensor}) has ${got.length} values, the reference ${want.length}`);
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
        assert.ok(worst < 1e-4, `${name} -> ${p.tensor} (${p.via}): max |diff| ${worst.toExponential(2)}`);
        checked++;
      }
    assert.equal(checked, meta.n_layers * SITES.length - Object.keys(meta.missing_hooks).length);
  });
}

// The family's tokenizer fixture fits its model's embedding (make.py sizes the vocabulary by it).
const TOKENIZER: Record<string, string> = { gpt2: 'gpt2', pythia: 'gpt2', llama: 'llama2', gemma2: 'gemma3', qwen2: 'qwen3' };

test('every family harvests through the CLI with its Hugging Face tokenizer: feeds, static shapes, fp16 weights, the BOS rule in the manifest', () => {
  const dir = tmp();
  const corpus = corpusFile(dir, 40);
  for (const family of FAMILIES) {
    const model = join(FAMILIES_DIR, family, 'model.onnx');
    const tokenizer = join(FAMILIES_DIR, '../tokenizers', TOKENIZER[family], 'tokenizer.json');
    const out = join(dir, family);
    const batch = family === 'llama' ? '1' : '2'; // the llama export has the static shape [1, 16]
    const args = [CLI, 'harvest', '--model', model, '--tokenizer', tokenizer, '--layers', '0,1', '--sites', 'resid_post,mlp_out', '--corpus', corpus];
    const r = spawnSync(process.execPath, [...args, '--ctx', '16', '--batch', batch, '--tokens', '128', '--out', out, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${family}: ${r.stderr}`);
    const man = readManifest(out)!;
    assert.ok(man.complete);
    assert.equal(man.tokens, 128);
    assert.equal(man.identity.tokenizer.kind, 'hf-BPE');
    const bos = man.identity.tokenizer.bos!;
    assert.ok(bos.token.length > 0 && bos.source.length > 0, `${family} records its BOS rule`);
    assert.ok(man.identity.tokenizer.config_sha256, 'tokenizer_config.json is part of the identity');
    const shard = decodeShard(readFileSync(join(out, man.shards[0].file)));
    for (let w = 0; w < shard.rows / 16; w++) assert.equal(shard.token[w * 16], bos.id, 'every window starts with the BOS');
    assert.deepEqual(
      man.sites.map((s) => s.name),
      ['blocks.0.hook_resid_post', 'blocks.0.hook_mlp_out', 'blocks.1.hook_resid_post', 'blocks.1.hook_mlp_out'],
    );
    if (family === 'llama') {
      const bad = spawnSync(process.execPath, [...args, '--ctx', '32', '--batch', '1', '--tokens', '64', '--out', join(dir, 'bad')], { encoding: 'utf8' });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr.trim(), /^sdl: .*--ctx 32 exceeds model's context length 16|static shape \[1, 16\]; pass --ctx 16 --batch 1/);
      const bad2 = spawnSync(process.execPath, [...args, '--ctx', '16', '--batch', '4', '--tokens', '64', '--out', join(dir, 'bad')], { encoding: 'utf8' });
      assert.equal(bad2.status, 2);
      assert.match(bad2.stderr, /input input_ids has the static shape \[1, 16\]; pass --ctx 16 --batch 1/);
      assert.equal(bad2.stderr.trim().split('\n').length, 1);
    }
  }
});

test("sdl inspect reads a bare graph without a tokenizer and gives the reason a hook cannot exist; an .onnx inside a model folder uses that folder's tokenizer", () => {
  const r = spawnSync(process.execPath, [CLI, 'inspect', join(FAMILIES_DIR, 'pythia/model.onnx'), '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.tokenizer, null);
  const h = Object.fromEntries(j.hooks.map((x: { name: string }) => [x.name, x]));
  assert.match(h['blocks.1.hook_resid_mid'].missing, /parallel attention and MLP/);
  assert.equal(h['blocks.1.hook_attn_out'].via, 'structure');
  const m = loadModel(join(BUNDLED_MODEL_DIR, 'sdl-tiny/model.onnx'));
  assert.equal(m.tokenizer.kind, 'llama2c', "the folder's config.json names tokenizer.bin, though a tokenizer.json sits beside it");
  assert.equal(m.contextLength, 256);
});

test('a parallel block whose two branches cannot be told apart is reported ambiguous, naming both candidates; an input sdlkit cannot feed is named', () => {
  // x -> (MatMul W1 -> Relu -> MatMul W2) and (MatMul W3 -> Tanh -> MatMul W4); y = x + (b1 + b2), twice.
  const g = new GraphBuilder('ambiguous');
  let x = g.op('Gather', [g.f32('emb', new Float32Array(8 * 4).fill(0.1), [8, 4]), g.input('input_ids', DataType.INT64, ['batch', 'seq'])]);
  for (let l = 0; l < 2; l++) {
    const w = (n: string) => g.f32(`${n}_${l}`, new Float32Array(16).fill(0.05), [4, 4]);
    const a = g.op('MatMul', [g.op('Relu', [g.op('MatMul', [x, w('w1')])]), w('w2')]);
    const b = g.op('MatMul', [g.op('Tanh', [g.op('MatMul', [x, w('w3')])]), w('w4')]);
    x = g.op('Add', [x, g.op('Add', [a, b])]);
  }
  g.output(x, DataType.FLOAT);
  const map = resolveHooks(decodeModel(g.toBytes()));
  assert.equal(map.nLayers, 2);
  assert.ok(!map.points.has('blocks.0.hook_attn_out') && !map.points.has('blocks.0.hook_mlp_out'), 'none picked silently');
  assert.match(map.missing.get('blocks.0.hook_attn_out')!, /ambiguous: the two parallel branches of block 0 \(\S+, \S+\) neither contain attention/);
  assert.match(map.missing.get('blocks.1.hook_resid_mid')!, /parallel attention and MLP/);
  assert.ok(map.points.has('blocks.1.hook_resid_post'), 'the residual stream itself is unambiguous');
  assert.throws(
    () =>
      makeFeeds(
        [
          { name: 'input_ids', elemType: DataType.INT64 },
          { name: 'pixel_values', elemType: DataType.FLOAT },
        ],
        new Int32Array(2),
        1,
        2,
      ),
    /model input 'pixel_values' is not one sdlkit can feed/,
  );
});
