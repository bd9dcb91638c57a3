// Foreign graphs: an onnxruntime-optimized GPT-2 export with fused contrib ops and int32 inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/models/model.js';
import { resolveHooks } from '../src/onnx/hooks.js';
import { Reader, Writer } from '../src/onnx/protobuf.js';
import { encodeValueInfo } from '../src/onnx/proto.js';
import { makeFeeds } from '../src/onnx/session.js';
import { harvest } from '../src/activations/harvest.js';
import { decodeShard } from '../src/activations/shard.js';
import { spawnSync } from 'node:child_process';
import { CLI, GPT2, corpusFile, sharedSkip, tmp } from './helpers.js';

/** Adds graph outputs the long way: rewrite the graph message itself with extra output fields. */
function addOutputsByHand(model: Uint8Array, names: string[]): Uint8Array {
  const r = new Reader(model);
  const w = new Writer();
  while (!r.done()) {
    const start = r.pos;
    const { field, wire } = r.tag();
    if (field !== 7) {
      r.skip(wire);
      w.raw(model.subarray(start, r.pos));
      continue;
    }
    const graph = new Writer().raw(r.bytes());
    for (const n of names) graph.bytes(12, encodeValueInfo({ name: n, elemType: 1 }));
    w.bytes(7, graph.finish());
  }
  return w.finish();
}

test('tiny-random-gpt2: hooks by exporter names agree with the structural resolver; the fused-away hook is named', { skip: sharedSkip }, () => {
  const m = loadModel(GPT2);
  assert.equal(m.hooks.nLayers, 5);
  assert.equal(m.vocabSize, 1000);
  assert.equal(m.hooks.points.get('blocks.2.hook_resid_post')!.tensor, '/transformer/h.2/Add_1_output_0');
  assert.equal(m.hooks.points.get('blocks.2.hook_resid_mid')!.tensor, '/transformer/h.2/Add_output_0');
  const s = resolveHooks(m.proto, { useNames: false });
  for (const name of ['blocks.2.hook_resid_post', 'blocks.2.hook_resid_mid', 'blocks.0.hook_resid_post']) {
    assert.equal(s.points.get(name)?.tensor, m.hooks.points.get(name)!.tensor, name);
  }
  assert.ok(!m.hooks.points.has('blocks.4.hook_resid_post'));
  assert.match(m.hooks.missing.get('blocks.4.hook_resid_post')!, /SkipLayerNormalization.*fused away/);
  assert.equal(m.hooks.points.get('blocks.0.hook_resid_pre')!.tensor, 'EmbedLayerNormalization_0_embedding_sum');
});

test("tiny-random-gpt2: harvested resid_post and resid_mid (and resid_pre, the same tensor as the layer before's resid_post) equal onnxruntime outputs added by hand", {
  skip: sharedSkip,
}, async () => {
  const dir = tmp();
  const corpus = corpusFile(dir, 60);
  const out = join(dir, 'acts');
  const ctx = 32;
  await harvest({
    model: GPT2,
    // blocks.3.hook_resid_pre is blocks.2.hook_resid_post's tensor: fetched once, stored twice (the second batch is
    // written into the shard's buffer by onnxruntime, then copied to the other site).
    hooks: ['blocks.2.hook_resid_post', 'blocks.2.hook_resid_mid', 'blocks.1.hook_attn_out', 'blocks.1.hook_mlp_out', 'blocks.3.hook_resid_pre'],
    corpus,
    split: 'all',
    tokens: 4 * ctx,
    ctx,
    batch: 2,
    dtype: 'f32',
    seed: 0,
    shardTokens: 1024,
    out,
    oovId: 0,
    quiet: true,
  });
  const shard = decodeShard(readFileSync(join(out, 'shard-00000.arrow')));
  assert.equal(shard.rows, 4 * ctx);
  const names = [
    '/transformer/h.2/Add_1_output_0',
    '/transformer/h.2/Add_output_0',
    '/transformer/h.1/Add_output_0',
    '/transformer/h.0/Add_1_output_0',
    '/transformer/h.1/Add_1_output_0',
  ];
  const bytes = addOutputsByHand(new Uint8Array(readFileSync(GPT2)), names);
  const session = await ort.InferenceSession.create(bytes);
  const m = loadModel(GPT2);
  const res = await session.run(makeFeeds(m.proto.graph.inputs, shard.token, 4, ctx));
  const close = (a: Float32Array, b: Float32Array, tol: number) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol);
  assert.ok(close(shard.values.get('blocks.2.hook_resid_post')!, res[names[0]].data as Float32Array, 1e-6));
  assert.ok(close(shard.values.get('blocks.2.hook_resid_mid')!, res[names[1]].data as Float32Array, 1e-6));
  assert.deepEqual(shard.values.get('blocks.3.hook_resid_pre'), shard.values.get('blocks.2.hook_resid_post'));
  // attn_out and mlp_out are differences of consecutive residual sums (the fused bias added back).
  const diff = (a: Float32Array, b: Float32Array) => a.map((v, i) => v - b[i]);
  const mid1 = res[names[2]].data as Float32Array,
    post0 = res[names[3]].data as Float32Array,
    post1 = res[names[4]].data as Float32Array;
  assert.ok(close(shard.values.get('blocks.1.hook_attn_out')!, diff(mid1, post0), 1e-4));
  assert.ok(close(shard.values.get('blocks.1.hook_mlp_out')!, diff(post1, mid1), 1e-4));
});

test('tiny-random-gpt2: two hooks of one tensor are both stored when worker sessions place the batches in the shard, the same bytes as one session', {
  skip: sharedSkip,
}, async () => {
  const dir = tmp();
  const corpus = corpusFile(dir, 200);
  // 16 windows in batches of 2 on two workers: the first four batches are in flight before the widths are known (copied
  // in), the rest are written into the shard by the workers; blocks.3.hook_resid_pre is copied from its twin.
  const run = (out: string, workers: number) =>
    harvest({
      model: GPT2,
      hooks: ['blocks.2.hook_resid_post', 'blocks.3.hook_resid_pre', 'blocks.1.hook_mlp_out'],
      corpus,
      split: 'all',
      tokens: 16 * 32,
      ctx: 32,
      batch: 2,
      dtype: 'f32',
      seed: 0,
      shardTokens: 1024,
      out: join(dir, out),
      oovId: 0,
      workers,
      threads: 2,
      quiet: true,
    });
  const [a, b] = [await run('a', 2), await run('b', 0)];
  assert.equal(a.manifest.tokens, 16 * 32);
  assert.ok(a.manifest.shards.every((s) => /^[0-9a-f]{8}$/.test(s.crc32c ?? '')));
  assert.deepEqual(
    a.manifest.shards.map((s) => s.crc32c),
    b.manifest.shards.map((s) => s.crc32c),
  );
  const shard = decodeShard(readFileSync(join(dir, 'a', 'shard-00000.arrow')));
  assert.deepEqual(shard.values.get('blocks.3.hook_resid_pre'), shard.values.get('blocks.2.hook_resid_post'));
  assert.ok(shard.values.get('blocks.1.hook_mlp_out')!.some((v) => v !== 0));
});

test('tiny-random-gpt2: token ids beyond the 1000-id vocabulary are refused with a clear message', { skip: sharedSkip }, async () => {
  const dir = tmp();
  await assert.rejects(
    harvest({
      model: GPT2,
      hooks: ['blocks.2.hook_resid_post'],
      corpus: corpusFile(dir, 20),
      split: 'all',
      tokens: 64,
      ctx: 32,
      batch: 2,
      dtype: 'f32',
      seed: 0,
      shardTokens: 1024,
      out: join(dir, 'a'),
      quiet: true,
    }),
    /beyond past's vocabulary of 1000 ids \(the tokenizer has 50\d+\); pass --oov-id/,
  );
});

test('GPT-2 byte-level BPE matches known ids', { skip: sharedSkip }, () => {
  const m = loadModel(GPT2);
  assert.deepEqual(m.tokenizer.encode('Hello world', { bos: false }), [15496, 995]);
  const text = "It's a test: don't panic, 1234 times!\n\nNew line.";
  assert.equal(m.tokenizer.decode(m.tokenizer.encode(text, { bos: false })), text);
});

test('sdl inspect lists inputs, ops and every hook (with how it was found); a fused-away hook is a clear error', { skip: sharedSkip }, () => {
  const r = spawnSync(process.execPath, [CLI, 'inspect', GPT2, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(
    j.inputs.map((i: { name: string }) => i.name),
    ['input_ids', 'position_ids', 'attention_mask', 'past_0', 'past_1', 'past_2', 'past_3', 'past_4'],
  );
  assert.equal(j.inputs[0].type, 'int32');
  assert.equal(j.ops['com.microsoft.SkipLayerNormalization'], 10);
  assert.equal(j.layers, 5);
  const h = Object.fromEntries(j.hooks.map((x: { name: string }) => [x.name, x]));
  assert.equal(h['blocks.2.hook_resid_post'].tensor, '/transformer/h.2/Add_1_output_0');
  assert.equal(h['blocks.2.hook_resid_post'].via, 'structure'); // the structure decides; torch names only fill gaps
  assert.equal(h['blocks.2.hook_mlp_in'].via, 'structure');
  assert.match(h['blocks.4.hook_resid_post'].missing, /fused away/);
  const text = spawnSync(process.execPath, [CLI, 'inspect', GPT2], { encoding: 'utf8' });
  assert.match(text.stdout, /blocks\.4\.hook_resid_post\s+-- missing: SkipLayerNormalization node/);
  const dir = tmp();
  const bad = spawnSync(
    process.execPath,
    [CLI, 'harvest', '--model', GPT2, '--layer', '4', '--sites', 'resid_post', '--corpus', corpusFile(dir, 20), '--oov-id', '0', '--out', join(dir, 'o')],
    { encoding: 'utf8' },
  );
  assert.equal(bad.status, 2);
  assert.match(
    bad.stderr,
    /^sdl: blocks\.4\.hook_resid_post does not exist as a tensor in past: SkipLayerNormalization node '[^']+' computes the residual sum of block 4 internally .*; hooks that exist for layer 4: .*blocks\.4\.hook_resid_mid/,
  );
});

test('the whole loop on a foreign model by raw tensor name: harvest --tensor --oov-id, fit (default folder), index, eval, export --splice, search', {
  skip: sharedSkip,
}, () => {
  const dir = tmp();
  const corpus = corpusFile(dir, 80);
  const tensor = '/transformer/h.2/Add_1_output_0';
  const sdl = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, SDL_CACHE: join(dir, 'cache') } });
    assert.equal(r.status, 0, `sdl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  sdl('harvest', '--model', GPT2, '--tensor', tensor, '--oov-id', '0', '--corpus', corpus, '--tokens', '8k', '--ctx', '64', '--out', join(dir, 'acts'));
  const fit = JSON.parse(sdl('fit', '--acts', join(dir, 'acts'), '--latents', '128', '--tokens', '16k', '--json'));
  // The default folder is one folder named after the tensor, not folders along its path.
  assert.equal(dirname(fit.out), join(dir, 'cache', 'dicts'));
  assert.match(basename(fit.out), /transformer_h\.2_Add_1_output_0/);
  sdl('index', fit.out);
  const ev = JSON.parse(sdl('eval', fit.out, '--windows', '8', '--ctx', '32', '--json'));
  assert.ok(ev.ce_loss_recovered > 0.5, `CE loss recovered ${ev.ce_loss_recovered}`);
  sdl('export', fit.out, '--splice', '--out', join(dir, 'spliced.onnx'));
  const s = sdl('search', fit.out, '--text', 'Call me Ishmael.');
  assert.match(s, /me/);
});
