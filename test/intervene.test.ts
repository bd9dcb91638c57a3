// Interventions through the spliced graph (sdl run / steer / ablate) on the bundled model: no-op interventions
// give the clean model exactly, ablating a silent feature changes nothing, steering along a feature raises the
// logit of its logit-lens token, and the readout equals the dictionary's encode of harvested activations.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadModel, BUNDLED_MODEL_DIR, type LoadedModel } from '../src/models/model.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { bindModel, checkBinding } from '../src/intervene/bind.js';
import { Intervener } from '../src/intervene/intervener.js';
import { readout, steer, ablate, textWindows } from '../src/intervene/actions.js';
import { findUnembedding, logitLens } from '../src/analysis/logit-lens.js';
import { createSession, hookSubgraph, makeFeeds, runtimeInputs } from '../src/onnx/session.js';
import { generate } from '../src/models/generate.js';
import { densify, encodeSparse } from '../src/sdl/encoder.js';
import { CLI, bundledDictionaries, tinyLlama, tmp } from './helpers.js';

const MODEL = join(BUNDLED_MODEL_DIR, 'sdl-tiny');
const PROMPT = 'The whale swam under the ship, and the captain said that the sea was calm.';
let dir: string, sae: string, transcoder: string, crosscoder: string, model: LoadedModel;

function sdl(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

before(() => {
  dir = tmp();
  ({ sae, transcoder } = bundledDictionaries(dir, '40k'));
  const acts2 = join(dir, 'acts2');
  assert.equal(sdl('harvest', '--layers', '2,6', '--sites', 'resid_post', '--tokens', '24k', '--out', acts2).status, 0);
  crosscoder = join(dir, 'cc');
  const c = sdl(
    'fit',
    '--acts',
    acts2,
    '--kind',
    'crosscoder',
    '--latents',
    '256',
    '--k',
    '8',
    '--batch',
    '1024',
    '--steps',
    '40',
    '--eval-tokens',
    '2048',
    '--out',
    crosscoder,
  );
  assert.equal(c.status, 0, c.stderr);
  model = loadModel(MODEL);
});

async function open(d: string): Promise<Intervener> {
  const dict = Dictionary.load(d);
  return Intervener.create(await bindModel(dict, { dictDir: d, fallback: () => MODEL }), dict);
}

async function cleanLogits(ids: Int32Array): Promise<Float32Array> {
  const s = await createSession(model.bytes);
  const out = await s.run(makeFeeds(runtimeInputs(model.proto), ids, 1, ids.length));
  await s.release();
  return out[model.proto.graph.outputs[0].name].data as Float32Array;
}

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

for (const which of ['sae', 'transcoder'] as const) {
  test(`${which}: add 0 and clamping every feature to its own value give the clean logits and generation`, async () => {
    const iv = await open(which === 'sae' ? sae : transcoder);
    const ids = textWindows(model, PROMPT).windows[0];
    const clean = await cleanLogits(ids);
    const plain = await iv.forward(ids, 1, ids.length);
    assert.ok(maxDiff(plain.logits, clean) < 1e-5, `no intervention: ${maxDiff(plain.logits, clean)}`);
    const add0 = await iv.forward(ids, 1, ids.length, {
      add: new Map([
        [3, 0],
        [17, 0],
      ]),
    });
    assert.ok(maxDiff(add0.logits, clean) < 1e-5, `add 0: ${maxDiff(add0.logits, clean)}`);
    const own = await iv.forward(ids, 1, ids.length, { clampAll: plain.features });
    assert.ok(maxDiff(own.logits, clean) < 1e-5, `clamp to own values: ${maxDiff(own.logits, clean)}`);
    // Generation: steered by add 0 equals the plain model's, token for token, greedy and sampled.
    const s = await createSession(model.bytes);
    for (const temperature of [0, 0.8]) {
      const ref = await generate(model, s, Array.from(ids), { steps: ids.length + 24, temperature, seed: 3 });
      const r = await steer(iv, PROMPT, { add: new Map([[5, 0]]) }, { tokens: 25, temperature, seed: 3 });
      assert.deepEqual(r.steered_ids, ref.slice(ids.length));
      assert.deepEqual(r.unsteered_ids, ref.slice(ids.length));
    }
    await s.release();
    await iv.release();
  });
}

test('crosscoder (layers 2 and 6): features from a clean pass, interventions at both sites; no-ops are exact', async () => {
  const iv = await open(crosscoder);
  assert.equal(iv.dict.cfg.sitesOut.length, 2);
  const ids = textWindows(model, PROMPT).windows[0];
  const clean = await cleanLogits(ids);
  const plain = await iv.forward(ids, 1, ids.length);
  assert.ok(maxDiff(plain.logits, clean) < 1e-5);
  const own = await iv.forward(ids, 1, ids.length, { clampAll: plain.features });
  assert.ok(maxDiff(own.logits, clean) < 1e-5, `clamp to own values: ${maxDiff(own.logits, clean)}`);
  // The readout equals the dictionary's encoding of both sites read from the model.
  const hooks = iv.dict.cfg.sitesIn.map((s) => model.hooks.points.get(s.name)!);
  const sess = await createSession(hookSubgraph(model.bytes, model.proto, hooks));
  const out = await sess.run(makeFeeds(runtimeInputs(model.proto), ids, 1, ids.length));
  await sess.release();
  const T = ids.length,
    D = iv.dict.cfg.dIn,
    x = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    x.set((out[hooks[0].tensor].data as Float32Array).subarray(t * 64, (t + 1) * 64), t * D);
    x.set((out[hooks[1].tensor].data as Float32Array).subarray(t * 64, (t + 1) * 64), t * D + 64);
  }
  const ref = densify(encodeSparse(iv.dict, x, T), iv.dict.cfg.dSae);
  assert.ok(maxDiff(plain.features, ref) < 1e-5);
  // Ablating the strongest feature (error term kept) moves the logits; it writes both sites.
  const m = iv.dict.cfg.dSae;
  let best = 0;
  for (let i = m; i < plain.features.length; i++) if (plain.features[i] > plain.features[best]) best = i;
  const abl = await iv.forward(ids, 1, ids.length, { clamp: new Map([[best % m, 0]]) });
  assert.ok(maxDiff(abl.logits, clean) > 1e-3);
  await iv.release();
});

test("steering by add alone: the lighter shift graph gives the full graph's logits", async () => {
  for (const d of [sae, transcoder, crosscoder]) {
    const iv = await open(d);
    const ids = textWindows(model, PROMPT).windows[0];
    const add = new Map([
      [3, 6],
      [17, -2.5],
    ]);
    const full = await iv.forward(ids, 1, ids.length, { add });
    const fast = await iv.logits(ids, { add });
    assert.ok(maxDiff(full.logits, fast) < 1e-4, `${d}: ${maxDiff(full.logits, fast)}`);
    assert.ok(maxDiff(full.logits, await cleanLogits(ids)) > 1e-3, 'the steering does something');
    await iv.release();
  }
});

test('ablating a feature that never fires on the prompt changes no logit; ablating one that fires does', async () => {
  const iv = await open(sae);
  const ids = textWindows(model, PROMPT).windows[0];
  const r = await iv.forward(ids, 1, ids.length);
  const m = iv.dict.cfg.dSae;
  const fired = new Float32Array(m);
  for (let t = 1; t < ids.length; t++) for (let f = 0; f < m; f++) fired[f] = Math.max(fired[f], r.features[t * m + f]);
  const silent = Array.from(fired.keys()).filter((f) => fired[f] === 0);
  const loud = Array.from(fired.keys()).sort((a, b) => fired[b] - fired[a])[0];
  assert.ok(silent.length > 0, 'some feature is silent on the prompt');
  const off = await iv.forward(ids, 1, ids.length, { clamp: new Map(silent.slice(0, 20).map((f) => [f, 0])) });
  assert.ok(maxDiff(off.logits, r.logits) < 1e-5, `silent ablation moved logits by ${maxDiff(off.logits, r.logits)}`);
  const on = await iv.forward(ids, 1, ids.length, { clamp: new Map([[loud, 0]]) });
  assert.ok(maxDiff(on.logits, r.logits) > 1e-3, 'ablating the strongest feature moves the logits');
  const a = await ablate(iv, [ids], ids.length, [silent[0]], 5);
  assert.equal(a.firing_tokens, 0);
  assert.ok(Math.abs(a.delta_ce) < 1e-5 && a.kl < 1e-6 && a.moved.length === 0, JSON.stringify(a));
  const b = await ablate(iv, [ids], ids.length, [loud], 5);
  assert.ok(b.firing_tokens > 0 && b.kl > 0 && b.moved.length > 0);
  await iv.release();
});

test("adding a feature's direction raises the logit of its logit-lens top token", async () => {
  const iv = await open(sae);
  const u = findUnembedding(model);
  assert.match(u.source, /norm scale/);
  const ids = textWindows(model, PROMPT).windows[0];
  const clean = await iv.forward(ids, 1, ids.length);
  const V = clean.vocab,
    T = ids.length;
  const d = iv.dict.cfg.dOut;
  const report: string[] = [];
  for (const f of [0, 1, 2, 3, 4]) {
    const lens = logitLens(u, iv.dict.w.W_dec.subarray(f * d, (f + 1) * d), 10);
    const top = lens.positive[0].token;
    const steered = await iv.forward(ids, 1, ids.length, { add: new Map([[f, 20]]) });
    // Mean over positions (BOS excluded) of the change in that token's logit, relative to the mean change of all logits.
    let dTop = 0,
      dAll = 0;
    for (let t = 1; t < T; t++) {
      dTop += steered.logits[t * V + top] - clean.logits[t * V + top];
      for (let v = 0; v < V; v++) dAll += (steered.logits[t * V + v] - clean.logits[t * V + v]) / V;
    }
    report.push(`f${f} ${JSON.stringify(model.tokenizer.piece(top))} +${(dTop / (T - 1)).toFixed(2)} vs mean ${(dAll / (T - 1)).toFixed(2)}`);
    assert.ok(dTop > dAll + 1, `feature ${f}: top lens token ${top} moved ${dTop / (T - 1)}, mean ${dAll / (T - 1)}`);
  }
  console.log(`# logit-lens steering (scale 20): ${report.join('; ')}`);
  await iv.release();
});

test('sdl run reads the same features as the dictionary encoding harvested activations', async () => {
  for (const d of [sae, transcoder]) {
    const iv = await open(d);
    const ids = textWindows(model, PROMPT).windows[0];
    const rows = await readout(iv, [ids], { top: 1000 });
    // Harvest's own path: the graph cut to the hook, then the dictionary's encoder.
    const hook = model.hooks.points.get(iv.dict.cfg.sitesIn[0].name)!;
    const s = await createSession(hookSubgraph(model.bytes, model.proto, [hook]));
    const x = (await s.run(makeFeeds(runtimeInputs(model.proto), ids, 1, ids.length)))[hook.tensor].data as Float32Array;
    await s.release();
    const ref = densify(encodeSparse(iv.dict, x, ids.length), iv.dict.cfg.dSae);
    assert.equal(rows.length, ids.length - 1);
    for (const r of rows) {
      const t = r.position + 1;
      const want = Array.from(ref.subarray(t * iv.dict.cfg.dSae, (t + 1) * iv.dict.cfg.dSae).entries()).filter(([, v]) => v > 0);
      assert.equal(r.features.length, want.length, `token ${t}`);
      for (const f of r.features) assert.ok(Math.abs(f.act - ref[t * iv.dict.cfg.dSae + f.feature]) < 1e-4, `token ${t} feature ${f.feature}`);
      assert.ok(r.error >= 0 && r.error < 1);
    }
    await iv.release();
  }
});

test('sdl run / steer / ablate on the command line, and their bad input', () => {
  const run = sdl('run', sae, PROMPT, '--json');
  assert.equal(run.status, 0, run.stderr);
  const rows = JSON.parse(run.stdout);
  assert.ok(rows.length > 10 && rows[0].features.length > 0 && typeof rows[0].next.prob === 'number');
  const st = sdl('steer', sae, '--feature', '3:8,5:-2', '--tokens', '8', 'The ship');
  assert.equal(st.status, 0, st.stderr);
  assert.match(st.stdout, /unsteered: .*\nsteered: /);
  const ab = sdl('ablate', sae, '--features', '3', '--windows', '2', '--ctx', '32', '--json');
  assert.equal(ab.status, 0, ab.stderr);
  assert.equal(JSON.parse(ab.stdout).predictions, 2 * 31);
  const bad: [string[], RegExp][] = [
    [['steer', sae, '--feature', '9999', '--scale', '4', 'hi'], /feature 9999 does not exist: the dictionary has features 0-255/],
    [['steer', sae, '--feature', '3', '--scale', 'abc', 'hi'], /scale of feature 3 must be a number \(got 'abc'\)/],
    [['steer', sae, '--feature', '3', 'hi'], /feature 3 has no scale; pass --scale/],
    [['steer', sae, '--feature', '3', '--scale', '2', ''], /text is empty/],
    [['steer', sae, '--feature', '3', '--scale', '2', 'word '.repeat(400)], /prompt is \d+ tokens but sdl-tiny's context is 256; shorten it/],
    [['run', sae, ''], /text is empty/],
    [['run', sae, 'hi', '--feature', '-1'], /feature -1 does not exist/],
    [['ablate', sae, '--features', 'x'], /cannot read feature 'x'/],
    [['ablate', sae, '--features', '3', '--windows', '0'], /--windows must be a positive integer/],
  ];
  for (const [args, re] of bad) {
    const r = sdl(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  // A long text is read in windows, and says so.
  const long = sdl('run', sae, 'the whale and the ship. '.repeat(120), '--json');
  assert.equal(long.status, 0, long.stderr);
  assert.match(long.stderr, /read in \d+ windows/);
});

test('a dictionary is refused in another model: other weights of the same width, or another width', async () => {
  const dict = Dictionary.load(sae);
  const other = loadModel(tinyLlama(join(tmp(), 'm'), { dim: 64, layers: 8 }));
  await assert.rejects(checkBinding(dict, other), /trained on model sdl-tiny \(sha256 [0-9a-f]{12}…\) but tiny is another model/);
  // Without the recorded hash (an imported dictionary), the width check still holds.
  const anon = new Dictionary(dict.cfg, dict.w, {});
  const narrow = loadModel(tinyLlama(join(tmp(), 'n'), { dim: 16, layers: 8 }));
  await assert.rejects(checkBinding(anon, narrow), /blocks.6.hook_resid_post is 16 wide in tiny but the dictionary expects 64/);
  const r = sdl('run', sae, 'hi', '--model', join(tmp(), 'none'));
  assert.equal(r.status, 2);
});
