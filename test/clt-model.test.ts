// Cross-layer and skip transcoders on the bundled model, through the CLI: harvest every layer in one pass, fit,
// the replacement model (every MLP output replaced at once, checked against the dictionary's own decode of the
// replacement model's inputs), eval, per-layer transcoders stacked into the same replacement model, the index's
// per-layer decoder norms, the circuit-tracer and SAELens layouts, and the bad inputs.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CLI, tmp } from './helpers.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { decodeSparse, encodeSparse } from '../src/sdl/encoder.js';
import { stackTranscoders } from '../src/sdl/stack.js';
import { loadModel, siteHook } from '../src/models/model.js';
import { spliceMany } from '../src/export/splice.js';
import { appendToGraph } from '../src/onnx/proto.js';
import { createSession, makeFeeds, runtimeInputs } from '../src/onnx/session.js';
import { readSafetensors } from '../src/tensor/safetensors.js';
import { evalWindows } from '../src/eval/splice-eval.js';

const dir = tmp('sdl-clt-');
const acts = join(dir, 'acts');

function sdl(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}
function ok(...args: string[]): string {
  const r = sdl(...args);
  assert.equal(r.status, 0, `sdl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const small = ['--batch', '512', '--eval-tokens', '2048', '--lr', '4e-3'];

before(() => {
  ok('harvest', '--layers', 'all', '--sites', 'mlp_in,mlp_out', '--tokens', '40k', '--out', acts);
});

test('harvest --layers all gives every layer of the model; fit --kind clt trains per-layer TopK features over all of them', () => {
  const m = JSON.parse(readFileSync(join(acts, 'manifest.json'), 'utf8'));
  assert.equal(m.sites.length, 16, 'mlp_in and mlp_out of 8 layers');
  const out = join(dir, 'clt');
  ok('fit', '--acts', acts, '--kind', 'clt', '--latents-per-layer', '64', '--k', '8', '--steps', '60', ...small, '--out', out);
  const d = Dictionary.load(out);
  assert.equal(d.cfg.kind, 'clt');
  assert.equal(d.cfg.dSae, 8 * 64);
  // The weights file holds the compact blocks (circuit-tracer's shapes), not the dense zero blocks.
  const st = readSafetensors(join(out, 'sae_weights.safetensors')).tensors;
  assert.deepEqual(st.W_enc.shape, [8, 64, 64]);
  assert.deepEqual(st['W_dec.0'].shape, [64, 8, 64]);
  assert.deepEqual(st['W_dec.7'].shape, [64, 1, 64]);
  const ev = JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8'));
  assert.ok(ev.fvu < 0.7, `held-out FVU ${ev.fvu} after 60 steps (starts near 1)`);
  assert.equal(Object.keys(ev.fvuBySite).length, 8);
  // k per layer: every token has exactly 8 features in each layer.
  const x = new Float32Array(10 * d.cfg.dIn).map((_, i) => Math.sin(i * 0.37) * 2);
  const f = encodeSparse(d, x, 10);
  for (let r = 0; r < 10; r++) {
    const perLayer = new Array(8).fill(0);
    for (let q = f.start[r]; q < f.start[r + 1]; q++) perLayer[Math.floor(f.idx[q] / 64)]++;
    assert.ok(
      perLayer.every((c) => c <= 8),
      `row ${r}: ${perLayer}`,
    );
  }
  // The TypeScript reference inference agrees with the native one.
  const ref = d.encode(x, 10);
  for (let r = 0; r < 10; r++) for (let q = f.start[r]; q < f.start[r + 1]; q++) assert.ok(Math.abs(ref[r * d.cfg.dSae + f.idx[q]] - f.val[q]) < 1e-4);
});

test("the replacement model: each spliced MLP output equals the CLT's decode of the replacement model's own inputs", async () => {
  const d = Dictionary.load(join(dir, 'clt'));
  const model = await loadModel(join(process.cwd(), 'models/sdl-tiny'));
  const ins = d.cfg.sitesIn.map((s) => siteHook(model, s.name)!),
    outs = d.cfg.sitesOut.map((s) => siteHook(model, s.name)!);
  const spliced = spliceMany(
    model.bytes,
    outs.map((h, l) => ({ target: h.tensor, rep: { kind: 'clt-layer' as const, dict: d, layer: l, input: ins[l].tensor } })),
  );
  const replaced = outs.map((_, l) => `sdlkit/s${l}/spliced`);
  const session = await createSession(appendToGraph(spliced, { outputs: [...ins.map((h) => h.tensor), ...replaced].map((name) => ({ name, elemType: 0 })) }));
  const ctx = 24;
  const ids = evalWindows(model, 2, ctx);
  const r = await session.run(makeFeeds(runtimeInputs(model.proto), ids, 2, ctx));
  const rows = 2 * ctx;
  const x = new Float32Array(rows * d.cfg.dIn);
  for (let t = 0; t < rows; t++) ins.forEach((h, l) => x.set((r[h.tensor].data as Float32Array).subarray(t * 64, (t + 1) * 64), t * d.cfg.dIn + l * 64));
  const want = decodeSparse(d, encodeSparse(d, x, rows), x);
  let worst = 0;
  for (let t = 0; t < rows; t++) {
    if (t % ctx === 0) continue; // position 0 keeps the model's own value
    replaced.forEach((name, l) => {
      const got = (r[name].data as Float32Array).subarray(t * 64, (t + 1) * 64);
      for (let c = 0; c < 64; c++) worst = Math.max(worst, Math.abs(got[c] - want[t * d.cfg.dOut + l * 64 + c]));
    });
  }
  assert.ok(worst < 2e-3, `largest difference ${worst}`);
  await session.release();
});

test('sdl eval on a CLT reports the replacement model and FVU per layer; per-layer transcoders stack into the same replacement model', () => {
  const outText = ok('eval', join(dir, 'clt'), '--windows', '4', '--ctx', '64');
  assert.match(outText, /CLT replacing .*blocks\.7\.hook_mlp_out at once/);
  assert.match(outText, /FVU per layer: L0 [\d.]+, L1/);
  const rec = Number(/CE loss recovered (-?[\d.]+)%/.exec(outText)![1]);
  assert.ok(rec > 0 && rec <= 100, `CE loss recovered ${rec}%`);
  for (const l of [2, 3])
    ok(
      'fit',
      '--acts',
      acts,
      '--kind',
      'transcoder',
      '--layer',
      String(l),
      '--latents',
      '64',
      '--k',
      '8',
      '--steps',
      '30',
      ...small,
      '--out',
      join(dir, `tc${l}`),
    );
  const tcs = [2, 3].map((l) => Dictionary.load(join(dir, `tc${l}`)));
  const stack = stackTranscoders(tcs);
  // The stack's features and reconstructions are each transcoder's, side by side.
  const x = new Float32Array(6 * 128).map((_, i) => Math.cos(i * 0.21) * 1.5);
  const fs = encodeSparse(stack, x, 6);
  const rs = decodeSparse(stack, fs, x);
  tcs.forEach((tc, l) => {
    const xl = new Float32Array(6 * 64);
    for (let r = 0; r < 6; r++) xl.set(x.subarray(r * 128 + l * 64, r * 128 + (l + 1) * 64), r * 64);
    const f = encodeSparse(tc, xl, 6);
    const rec = decodeSparse(tc, f);
    for (let r = 0; r < 6; r++) {
      const mine = Array.from(fs.idx.subarray(fs.start[r], fs.start[r + 1])).filter((j) => Math.floor(j / 64) === l);
      assert.deepEqual(
        mine.map((j) => j - l * 64),
        Array.from(f.idx.subarray(f.start[r], f.start[r + 1])),
      );
      for (let c = 0; c < 64; c++) assert.ok(Math.abs(rs[r * 128 + l * 64 + c] - rec[r * 64 + c]) < 1e-4);
    }
  });
  assert.match(
    ok('eval', join(dir, 'tc2'), join(dir, 'tc3'), '--windows', '2', '--ctx', '32'),
    /2 transcoders replacing blocks\.2\.hook_mlp_out, blocks\.3\.hook_mlp_out at once/,
  );
});

test('run, steer and ablate take a CLT (features from the clean pass; the change lands at every layer the features write)', () => {
  const clt = join(dir, 'clt');
  assert.match(ok('run', clt, 'Once upon a time there was a cat'), /" c"|"at"/);
  const steered = ok('steer', clt, '--feature', '3', '--scale', '20', '--tokens', '8', 'Once upon a time');
  const [unsteered, withFeature] = ['unsteered', 'steered'].map((w) => new RegExp(`^${w}: +(".*")`, 'm').exec(steered)?.[1]);
  assert.ok(unsteered && withFeature, steered);
  assert.match(ok('ablate', clt, '--features', '3,4', 'Once upon a time there was a cat'), /CE/);
});

test('sdl index stores each CLT feature’s decoder norm per target layer (none before its own layer)', () => {
  ok('index', join(dir, 'clt'));
  const db = new Database(join(dir, 'clt', 'index.sqlite'), { readonly: true });
  const rows = db.prepare('select feature, site, norm from site_norms').all() as { feature: number; site: number; norm: number }[];
  const whole = (db.prepare('select decoder_norm from features where id = 0').get() as { decoder_norm: number }).decoder_norm;
  db.close();
  assert.ok(rows.length > 0);
  for (const r of rows) assert.ok(r.site >= Math.floor(r.feature / 64), `feature ${r.feature} (layer ${Math.floor(r.feature / 64)}) writes site ${r.site}`);
  // A layer-0 feature writes all 8 layers; its per-layer norms make up its whole decoder row's norm.
  const f0 = rows.filter((r) => r.feature === 0);
  assert.equal(f0.length, 8);
  assert.ok(Math.abs(Math.hypot(...f0.map((r) => r.norm)) - whole) < 1e-4 * whole, `${Math.hypot(...f0.map((r) => r.norm))} vs ${whole}`);
});

test('a BatchTopK CLT exports in circuit-tracer’s layout; its reconstruction recomputed from those files the way circuit-tracer does equals sdlkit’s', () => {
  const out = join(dir, 'clt-btk');
  ok('fit', '--acts', acts, '--kind', 'clt', '--activation', 'batchtopk', '--latents-per-layer', '32', '--k', '4', '--steps', '40', ...small, '--out', out);
  const ct = join(dir, 'ct');
  ok('export', out, '--format', 'circuit-tracer', '--out', ct);
  assert.match(
    readFileSync(join(ct, 'config.yaml'), 'utf8'),
    /model_kind: cross_layer_transcoder\nfeature_input_hook: hook_mlp_in\nfeature_output_hook: hook_mlp_out/,
  );
  const d = Dictionary.load(out);
  const L = 8,
    n = 32,
    D = 64;
  const enc = Array.from({ length: L }, (_, i) => readSafetensors(join(ct, `W_enc_${i}.safetensors`)).tensors);
  const dec = Array.from({ length: L }, (_, i) => readSafetensors(join(ct, `W_dec_${i}.safetensors`)).tensors[`W_dec_${i}`]);
  assert.deepEqual(enc[0].W_enc_0.shape, [n, D]);
  assert.deepEqual(dec[2].shape, [n, L - 2, D]);
  const rows = 5;
  const x = new Float32Array(rows * L * D).map((_, i) => Math.sin(i * 0.13) * 2);
  const want = decodeSparse(d, encodeSparse(d, x, rows), x);
  // circuit-tracer: f_i = JumpReLU(x_i W_enc_i^T + b_enc_i; threshold_i); y_t = b_dec_t + sum_{i <= t} f_i W_dec_i[:, t - i].
  for (let r = 0; r < rows; r++)
    for (let t = 0; t < L; t++)
      for (let c = 0; c < D; c++) {
        let y = enc[t][`b_dec_${t}`].data[c];
        for (let i = 0; i <= t; i++)
          for (let j = 0; j < n; j++) {
            let pre = enc[i][`b_enc_${i}`].data[j];
            for (let a = 0; a < D; a++) pre += x[r * L * D + i * D + a] * enc[i][`W_enc_${i}`].data[j * D + a];
            if (!(pre > enc[i][`threshold_${i}`].data[j] && pre > 0)) continue;
            y += pre * dec[i].data[(j * (L - i) + (t - i)) * D + c];
          }
        assert.ok(Math.abs(y - want[r * L * D + t * D + c]) < 1e-3, `row ${r} layer ${t} col ${c}: ${y} vs ${want[r * L * D + t * D + c]}`);
      }
});

test('a skip transcoder trains, saves W_skip, and exports as SAELens skip_transcoder with W_skip [d_out, d_in]', () => {
  const out = join(dir, 'skip');
  ok(
    'fit',
    '--acts',
    acts,
    '--kind',
    'transcoder',
    '--layer',
    '6',
    '--skip',
    '--activation',
    'relu',
    '--latents',
    '64',
    '--steps',
    '40',
    ...small,
    '--out',
    out,
  );
  const d = Dictionary.load(out);
  assert.ok(d.cfg.skip && d.w.W_skip?.some((v) => v !== 0), 'a learned, non-zero W_skip');
  ok('export', out, '--format', 'saelens', '--out', join(dir, 'skip-sl'));
  const cfg = JSON.parse(readFileSync(join(dir, 'skip-sl', 'cfg.json'), 'utf8'));
  assert.equal(cfg.architecture, 'skip_transcoder');
  const st = readSafetensors(join(dir, 'skip-sl', 'sae_weights.safetensors')).tensors;
  assert.deepEqual(st.W_skip.shape, [64, 64]);
  assert.equal(st.W_skip.data[1 * 64 + 0], d.w.W_skip![0 * 64 + 1], 'transposed: SAELens stores [d_out, d_in]');
  assert.match(ok('eval', out, '--windows', '2', '--ctx', '32'), /CE loss recovered/);
});

test('bad CLT inputs: one line naming the problem, exit 2, nothing written', () => {
  const bad = (args: string[], re: RegExp) => {
    const r = sdl(...args);
    assert.equal(r.status, 2, `sdl ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  };
  const out = join(dir, 'never');
  bad(
    ['fit', '--acts', acts, '--kind', 'clt', '--layers', '2,9', '--out', out],
    /needs blocks\.L\.hook_mlp_in and blocks\.L\.hook_mlp_out for layer 9; the harvest has both for layers 0, 1, 2, 3, 4, 5, 6, 7/,
  );
  bad(['fit', '--acts', acts, '--kind', 'clt', '--input', 'resid_mid', '--out', out], /hook_resid_mid .*harvest with --layers all --sites resid_mid,mlp_out/);
  bad(['fit', '--acts', acts, '--kind', 'clt', '--activation', 'matryoshka', '--out', out], /a CLT trains with --activation topk, batchtopk, jumprelu, relu/);
  bad(
    ['fit', '--acts', acts, '--kind', 'clt', '--latents-per-layer', '16', '--k', '32', '--out', out],
    /--k is per layer .* at most --latents-per-layer \(16\)/,
  );
  bad(['fit', '--acts', acts, '--kind', 'sae', '--skip', '--out', out], /--skip is for transcoders and CLTs/);
  bad(['fit', '--acts', acts, '--kind', 'sae', '--latents-per-layer', '64', '--out', out], /are for --kind clt/);
  bad(['export', join(dir, 'clt'), '--format', 'saelens', '--out', out], /a CLT has no SAELens equivalent; export it with --format circuit-tracer/);
  bad(['export', join(dir, 'clt'), '--format', 'circuit-tracer', '--out', out], /TopK CLT has no equivalent there/);
  bad(['export', join(dir, 'tc2'), '--format', 'circuit-tracer', '--out', out], /writes cross-layer transcoders; this is a transcoder/);
  bad(['eval', join(dir, 'tc2'), join(dir, 'clt')], /only transcoders stack into a replacement model/);
  bad(['eval', join(dir, 'tc2'), join(dir, 'tc2')], /two of the transcoders write blocks\.2\.hook_mlp_out; give one per layer/);
  assert.ok(!existsSync(out));
});

test('on a CLT bench (features written to their own and every later layer) the CLT recovers each target layer’s directions', () => {
  const bench = join(dir, 'bench');
  ok('synth', '--layers', '3', '--n', '96', '--np', '16', '--S', '0.96', '--M', '0.6', '--N', '150k', '--out', bench);
  const out = join(dir, 'bench-clt');
  ok(
    'fit',
    '--acts',
    bench,
    '--kind',
    'clt',
    '--latents-per-layer',
    '48',
    '--k',
    '3',
    '--tokens',
    '600k',
    '--batch',
    '512',
    '--eval-tokens',
    '4096',
    '--out',
    out,
  );
  const per = JSON.parse(ok('eval', out, '--truth', bench, '--tau', '0.9', '--json')).layers as { layer: number; pairs: number; mgt: number; mcc: number }[];
  assert.deepEqual(
    per.map((r) => r.pairs),
    [32, 64, 96],
  );
  for (const r of per) assert.ok(r.mgt > 0.9 && r.mcc > 0.9, `layer ${r.layer}: M_GT ${r.mgt}, MCC ${r.mcc}`);
  // A single-site dictionary on a CLT bench, and a CLT on a single-site bench: one line each, naming what fits.
  const mixed = sdl('eval', join(dir, 'tc2'), '--truth', bench);
  assert.equal(mixed.status, 2);
  assert.match(mixed.stderr, /is a CLT bench .* measured per target layer on a CLT \(sdl fit --kind clt\); this is a transcoder\n$/);
  const flat = join(dir, 'flat');
  ok('synth', '--n', '32', '--np', '16', '--N', '5k', '--out', flat);
  const other = sdl('eval', out, '--truth', flat);
  assert.equal(other.status, 2);
  assert.match(other.stderr, /a CLT is measured against a CLT bench \(sdl synth --layers L\)/);
});

test('a BatchTopK CLT resumed from its checkpoint ends bit-for-bit where the unbroken run ended (per-layer thresholds included)', () => {
  const args = [
    'fit',
    '--acts',
    acts,
    '--kind',
    'clt',
    '--activation',
    'batchtopk',
    '--latents-per-layer',
    '32',
    '--k',
    '4',
    '--steps',
    '40',
    '--checkpoint-every',
    '20',
    ...small,
  ];
  const a = join(dir, 'resume-a'),
    b = join(dir, 'resume-b');
  ok(...args, '--out', a);
  cpSync(a, b, { recursive: true });
  rmSync(join(b, 'cfg.json'));
  assert.equal(JSON.parse(readFileSync(join(b, 'checkpoint', 'state.json'), 'utf8')).thresholds.length, 8);
  ok(...args, '--out', b, '--resume');
  assert.ok(readFileSync(join(a, 'sae_weights.safetensors')).equals(readFileSync(join(b, 'sae_weights.safetensors'))));
});
