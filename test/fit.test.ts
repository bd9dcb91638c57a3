// fit end to end on data with known features: recovery, transcoders, crosscoders, resume, bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { featureDirections, sparseFeatures, embed } from '../src/synth/features.js';
import { writeRowsAsShards } from '../src/synth/write.js';
import { fit } from '../src/sdl/trainer.js';
import { openActivations } from '../src/activations/manifest.js';
import { TRAIN_DEFAULTS, type DictConfig } from '../src/sdl/config.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { loadRows, splitRows } from '../src/sdl/data.js';
import { CLI, tmp } from './helpers.js';

/** For each true direction (rows of W [n, d]), the best cosine with any dictionary row of M [m, d]. */
function bestCosines(W: Float32Array, n: number, M: Float32Array, m: number, d: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    let best = -1;
    for (let j = 0; j < m; j++) {
      let dot = 0,
        nn = 0;
      for (let t = 0; t < d; t++) {
        dot += W[i * d + t] * M[j * d + t];
        nn += M[j * d + t] ** 2;
      }
      best = Math.max(best, dot / Math.sqrt(nn));
    }
    return best;
  });
}

function bench(dir: string, n: number, d: number, N: number, seed: number, dOut?: number) {
  const { W } = featureDirections(n, d, 0.3, seed);
  const x = sparseFeatures(N, n, 3 / n, 0.5, 1, seed + 1);
  const sites = [{ name: 'x', width: d, data: embed(x, N, W, n, d) }];
  let Wr: Float32Array | undefined;
  if (dOut) {
    Wr = featureDirections(n, dOut, 0.3, seed + 2).W;
    sites.push({ name: 'y', width: dOut, data: embed(x, N, Wr, n, dOut) });
  }
  writeRowsAsShards(dir, sites, N, { source: 'test', seed, shardTokens: 16384 });
  return { W, Wr };
}

const dict = (o: Partial<DictConfig>): DictConfig => ({
  kind: 'sae',
  activation: 'topk',
  sitesIn: [{ name: 'x', width: 24 }],
  sitesOut: [{ name: 'x', width: 24 }],
  dIn: 24,
  dOut: 24,
  dSae: 128,
  k: 4,
  matryoshkaWidths: [16, 32, 64, 128],
  applyBDecToInput: true,
  noBias: false,
  tied: false,
  ...o,
});
const train = { ...TRAIN_DEFAULTS, batchTokens: 1024, lr: 3e-3, evalTokens: 4096, evalEvery: 200, checkpointEvery: 100000 };

test('a TopK SAE recovers nearly all ground-truth directions (max cosine > 0.95), and the saved folder reloads', async () => {
  const dir = tmp();
  const { W } = bench(join(dir, 'acts'), 40, 24, 60000, 1);
  const r = await fit({
    actsDir: join(dir, 'acts'),
    manifest: openActivations(join(dir, 'acts')),
    dict: dict({}),
    train: { ...train, steps: 600 },
    out: join(dir, 'sae'),
    quiet: true,
  });
  const cos = bestCosines(W, 40, r.dictionary.w.W_dec, 128, 24);
  assert.ok(cos.filter((c) => c > 0.95).length >= 38, `recovered ${cos.filter((c) => c > 0.95).length}/40`);
  assert.ok(r.eval.fvu < 0.2, `FVU ${r.eval.fvu}`);
  assert.ok(Math.abs(r.eval.l0 - 4) < 0.01);
  // The saved dictionary (scales folded in) reproduces the held-out FVU through the CPU reference encoder.
  const loaded = Dictionary.load(join(dir, 'sae'));
  const cfg = JSON.parse(readFileSync(join(dir, 'sae', 'cfg.json'), 'utf8'));
  assert.equal(cfg.architecture, 'topk');
  assert.equal(cfg.k, 4);
  assert.equal(cfg.d_sae, 128);
  const { data } = { data: embed(sparseFeatures(2000, 40, 3 / 40, 0.5, 1, 99), 2000, W, 40, 24) };
  const rec = loaded.decode(loaded.encode(data, 2000), 2000);
  let sse = 0,
    sst = 0;
  const mean = new Float64Array(24);
  for (let i = 0; i < data.length; i++) mean[i % 24] += data[i] / 2000;
  for (let i = 0; i < data.length; i++) {
    sse += (data[i] - rec[i]) ** 2;
    sst += (data[i] - mean[i % 24]) ** 2;
  }
  assert.ok(sse / sst < 0.2, `reloaded FVU ${sse / sst}`);
  assert.ok(existsSync(join(dir, 'sae', 'training_log.jsonl')));
  assert.ok(existsSync(join(dir, 'sae', 'acts_manifest.json')));
});

test('a transcoder recovers the target-side directions; a crosscoder reports per-site FVU', async () => {
  const dir = tmp();
  const { Wr } = bench(join(dir, 'acts'), 40, 24, 60000, 3, 20);
  const m = openActivations(join(dir, 'acts'));
  const tc = await fit({
    actsDir: join(dir, 'acts'),
    manifest: m,
    dict: dict({ kind: 'transcoder', sitesOut: [{ name: 'y', width: 20 }], dOut: 20, applyBDecToInput: false }),
    train: { ...train, steps: 600 },
    out: join(dir, 'tc'),
    quiet: true,
  });
  const cos = bestCosines(Wr!, 40, tc.dictionary.w.W_dec, 128, 20);
  assert.ok(cos.filter((c) => c > 0.95).length >= 36, `transcoder recovered ${cos.filter((c) => c > 0.95).length}/40`);
  const sites = [
    { name: 'x', width: 24 },
    { name: 'y', width: 20 },
  ];
  const cc = await fit({
    actsDir: join(dir, 'acts'),
    manifest: m,
    dict: dict({ kind: 'crosscoder', activation: 'batchtopk', sitesIn: sites, sitesOut: sites, dIn: 44, dOut: 44 }),
    train: { ...train, steps: 300 },
    out: join(dir, 'cc'),
    quiet: true,
  });
  assert.deepEqual(Object.keys(cc.eval.fvuBySite), ['x', 'y']);
  for (const v of Object.values(cc.eval.fvuBySite)) assert.ok(v < 0.5, `crosscoder site FVU ${v}`);
  const saved = JSON.parse(readFileSync(join(dir, 'cc', 'cfg.json'), 'utf8'));
  assert.equal(saved.architecture, 'jumprelu'); // BatchTopK infers with its learned global threshold
  assert.ok(Dictionary.load(join(dir, 'cc')).w.threshold!.every((t) => t > 0));
});

test('held-out metrics are read from the shards a chunk at a time: they equal the saved transcoder evaluated on the last rows of the harvest', async () => {
  const dir = tmp();
  bench(join(dir, 'acts'), 40, 24, 60000, 5, 20);
  const m = openActivations(join(dir, 'acts'));
  // 12,000 held-out rows: the last shard's 10,848 and 1,152 of the one before, read in pieces that do not divide them.
  const evalTokens = 12000;
  const r = await fit({
    actsDir: join(dir, 'acts'),
    manifest: m,
    dict: dict({ kind: 'transcoder', sitesOut: [{ name: 'y', width: 20 }], dOut: 20, applyBDecToInput: false }),
    train: { ...train, steps: 80, evalTokens },
    out: join(dir, 'tc'),
    quiet: true,
  });
  const { held } = splitRows(m, evalTokens);
  assert.equal(held.length, 2, 'the held-out rows span two shards');
  const d = Dictionary.load(join(dir, 'tc'));
  let n = 0,
    sse = 0;
  const sum = new Float64Array(20),
    sum2 = new Float64Array(20);
  for (const range of held) {
    const rows = loadRows(join(dir, 'acts'), m, range, [{ name: 'x', width: 24 }], [{ name: 'y', width: 20 }], true);
    const yhat = d.decode(d.encode(rows.x, rows.n), rows.n);
    for (let i = 0; i < rows.n * 20; i++) {
      sse += (rows.y[i] - yhat[i]) ** 2;
      sum[i % 20] += rows.y[i];
      sum2[i % 20] += rows.y[i] ** 2;
    }
    n += rows.n;
  }
  let sst = 0;
  for (let j = 0; j < 20; j++) sst += sum2[j] - sum[j] ** 2 / n;
  assert.equal(r.eval.tokens, evalTokens);
  assert.ok(Math.abs(r.eval.fvu - sse / sst) < 1e-4 * (sse / sst), `held-out FVU ${r.eval.fvu} vs ${sse / sst} from the saved transcoder`);
  assert.ok(Math.abs(r.eval.mse - sse / n) < 1e-4 * (sse / n), `held-out MSE ${r.eval.mse} vs ${sse / n}`);
});

function sdl(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('a killed fit resumes from its checkpoint and finishes; a killed run never looks finished', async () => {
  const dir = tmp();
  bench(join(dir, 'acts'), 40, 24, 30000, 5);
  const out = join(dir, 'sae');
  const args = [
    CLI,
    'fit',
    '--acts',
    join(dir, 'acts'),
    '--latents',
    '96',
    '--k',
    '4',
    '--batch',
    '512',
    '--steps',
    '400',
    '--checkpoint-every',
    '40',
    '--eval-tokens',
    '2048',
    '--lr',
    '3e-3',
    '--out',
    out,
    '--backend',
    'cpu',
  ];
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  const exited = new Promise((res) => child.on('exit', res));
  for (let i = 0; i < 600 && !existsSync(join(out, 'checkpoint', 'state.json')); i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGKILL');
  await exited;
  assert.ok(existsSync(join(out, 'checkpoint', 'state.json')), 'a checkpoint was written before the kill');
  assert.ok(!existsSync(join(out, 'cfg.json')), 'no cfg.json after a kill');
  const ckptStep = JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')).step;
  assert.ok(ckptStep > 0 && ckptStep < 400);
  const r = sdl(...args.slice(1), '--resume', '--json');
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(res.steps, 400);
  assert.ok(res.eval.fvu < 0.5);
  const log = readFileSync(join(out, 'training_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.ok(log.some((l) => l.step > ckptStep));
  // Resuming with shards of another width is refused.
  bench(join(dir, 'acts2'), 40, 16, 8000, 6);
  const bad = sdl('fit', '--acts', join(dir, 'acts2'), '--latents', '96', '--steps', '10', '--out', out, '--resume', '--backend', 'cpu');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^sdl: the checkpoint in .* d_in 24.*d_in 16/);
});

test('fit refuses bad input with one clear line', () => {
  const dir = tmp();
  bench(join(dir, 'acts'), 20, 12, 4000, 7);
  const tc = sdl('fit', '--acts', join(dir, 'acts'), '--kind', 'transcoder', '--steps', '5', '--out', join(dir, 'o'));
  assert.equal(tc.code, 2);
  assert.match(
    tc.stderr,
    /^sdl: a transcoder needs blocks\.L\.hook_mlp_in and blocks\.L\.hook_mlp_out in the harvest, which has x; harvest with --sites mlp_in,mlp_out\n$/,
  );
  const none = sdl('fit', '--acts', join(dir, 'nope'), '--steps', '5');
  assert.match(none.stderr, /^sdl: activations folder .*nope not found/);
  // An empty shard set: a harvest folder whose manifest lists no shards.
  writeRowsAsShards(join(dir, 'empty'), [{ name: 'x', width: 12, data: new Float32Array(0) }], 0, { source: 'empty', seed: 1 });
  const empty = sdl('fit', '--acts', join(dir, 'empty'), '--steps', '5');
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /^sdl: the harvest in .*empty has no shards \(no tokens\)/);
  // NaN in a shard: named with its shard and row.
  const data = new Float32Array(3000 * 12).map((_, i) => (i === 1234 * 12 + 5 ? NaN : Math.sin(i)));
  writeRowsAsShards(join(dir, 'nan'), [{ name: 'x', width: 12, data }], 3000, { source: 'nan', seed: 1, shardTokens: 1000 });
  const nan = sdl(
    'fit',
    '--acts',
    join(dir, 'nan'),
    '--steps',
    '5',
    '--latents',
    '24',
    '--eval-tokens',
    '100',
    '--batch',
    '64',
    '--out',
    join(dir, 'o2'),
    '--backend',
    'cpu',
  );
  assert.equal(nan.code, 2);
  assert.match(nan.stderr, /^sdl: shard shard-00001\.arrow row 234 has NaN in x/);
  assert.ok(!existsSync(join(dir, 'o2', 'cfg.json')));
  // A loss that diverges stops; a checkpoint from before stays intact and usable.
  const common = [
    '--acts',
    join(dir, 'acts'),
    '--latents',
    '24',
    '--k',
    '4',
    '--batch',
    '64',
    '--eval-tokens',
    '200',
    '--out',
    join(dir, 'o3'),
    '--backend',
    'cpu',
  ];
  const first = sdl('fit', ...common, '--steps', '20', '--checkpoint-every', '5');
  assert.equal(first.code, 0, first.stderr);
  const ckpt = readFileSync(join(dir, 'o3', 'checkpoint', 'state.safetensors'));
  const div = sdl('fit', ...common, '--steps', '40', '--checkpoint-every', '5', '--resume', '--lr', '1e30', '--clip', '0');
  assert.equal(div.code, 2, div.stderr);
  assert.match(
    div.stderr,
    /^sdl: the loss became (NaN|Infinity) at step 16; the last good checkpoint \(step 15\) is in .*; lower --lr and resume with --resume\n$/,
  );
  assert.deepEqual(readFileSync(join(dir, 'o3', 'checkpoint', 'state.safetensors')), ckpt);
  const fresh = sdl(
    'fit',
    ...common.slice(0, -4),
    '--out',
    join(dir, 'o4'),
    '--backend',
    'cpu',
    '--steps',
    '5',
    '--lr',
    '1e30',
    '--clip',
    '0',
    '--lr-warmup',
    '0',
  );
  assert.match(fresh.stderr, /^sdl: the loss became (NaN|Infinity) at step 1; no checkpoint was written yet/);
  assert.ok(!existsSync(join(dir, 'o4', 'cfg.json')));
});

test('--resample revives dead latents on schedule (logged); --anchors pins the first k latents to the anchors', () => {
  const dir = tmp();
  const { W } = bench(join(dir, 'acts'), 20, 16, 20000, 11);
  const out = join(dir, 'rs');
  const r = sdl(
    'fit',
    '--acts',
    join(dir, 'acts'),
    '--activation',
    'relu',
    '--sparsity',
    '5',
    '--latents',
    '128',
    '--batch',
    '512',
    '--steps',
    '300',
    '--lr',
    '1e-2',
    '--resample',
    '50',
    '--dead-window',
    '12800',
    '--eval-tokens',
    '2048',
    '--out',
    out,
    '--backend',
    'cpu',
    '--json',
  );
  assert.equal(r.code, 0, r.stderr);
  const events = readFileSync(join(out, 'training_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((l) => l.resampled);
  assert.ok(events.length >= 2, 'resampling happened at several scheduled steps');
  assert.ok(events.every((e) => e.step % 50 === 0 && e.resampled > 0 && e.step <= 225));
  // Anchors: the first 5 true directions; after training the first 5 encoder columns and decoder rows point along them.
  const anchors = Array.from({ length: 5 }, (_, i) => Array.from(W.subarray(i * 16, (i + 1) * 16)));
  const af = join(dir, 'anchors.json');
  writeFileSync(af, JSON.stringify({ encoder: anchors }));
  const ar = sdl(
    'fit',
    '--acts',
    join(dir, 'acts'),
    '--latents',
    '64',
    '--k',
    '3',
    '--batch',
    '512',
    '--steps',
    '200',
    '--lr',
    '3e-3',
    '--anchors',
    af,
    '--anchor-weight',
    '1',
    '--eval-tokens',
    '2048',
    '--out',
    join(dir, 'fa'),
    '--backend',
    'cpu',
    '--json',
  );
  assert.equal(ar.code, 0, ar.stderr);
  const d = Dictionary.load(join(dir, 'fa'));
  for (let i = 0; i < 5; i++) {
    const row = d.w.W_dec.subarray(i * 16, (i + 1) * 16);
    const cos = row.reduce((s, v, j) => s + v * W[i * 16 + j], 0) / Math.hypot(...row);
    assert.ok(cos > 0.95, `anchored latent ${i}: cosine ${cos}`);
  }
  const bad = sdl('fit', '--acts', join(dir, 'acts'), '--steps', '5', '--anchors', join(dir, 'nope.json'), '--out', join(dir, 'x'));
  assert.match(bad.stderr, /^sdl: anchors file .*nope.json not found/);
});

test('the backend switch: native by default, TensorFlow.js with SDLKIT_NATIVE=off (said on stderr), --backend native refused when off', () => {
  const dir = tmp();
  bench(join(dir, 'acts'), 40, 24, 8192, 3);
  const args = (out: string, extra: string[] = []) => [
    CLI,
    'fit',
    '--acts',
    join(dir, 'acts'),
    '--site',
    'x',
    '--latents',
    '64',
    '--k',
    '4',
    '--steps',
    '20',
    '--batch',
    '512',
    '--eval-tokens',
    '1024',
    '--out',
    join(dir, out),
    '--json',
    ...extra,
  ];
  const nat = spawnSync(process.execPath, args('a'), { encoding: 'utf8' });
  assert.equal(nat.status, 0, nat.stderr);
  assert.match(JSON.parse(nat.stdout).backend, /^native-(avx512|avx2|generic)$/);
  assert.doesNotMatch(nat.stderr, /note:/);
  const off = spawnSync(process.execPath, args('b'), { encoding: 'utf8', env: { ...process.env, SDLKIT_NATIVE: 'off' } });
  assert.equal(off.status, 0, off.stderr);
  assert.equal(JSON.parse(off.stdout).backend, 'wasm');
  assert.match(off.stderr, /note: native kernels disabled by SDLKIT_NATIVE=off; using TensorFlow\.js \(wasm\)/);
  const refused = spawnSync(process.execPath, args('c', ['--backend', 'native']), { encoding: 'utf8', env: { ...process.env, SDLKIT_NATIVE: 'off' } });
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /the native kernels are disabled by SDLKIT_NATIVE=off; use --backend wasm/);
  // Both engines train the same dictionary to a similar held-out FVU from the same seed.
  const fa = JSON.parse(nat.stdout).eval.fvu,
    fb = JSON.parse(off.stdout).eval.fvu;
  assert.ok(Math.abs(fa - fb) < 0.02, `native FVU ${fa} vs wasm ${fb}`);
});

test('a short BatchTopK run infers at the L0 it trained for: its threshold is set from the final weights, not the first steps', async () => {
  const dir = tmp();
  bench(join(dir, 'acts'), 200, 64, 120000, 11);
  const m = openActivations(join(dir, 'acts'));
  for (const activation of ['batchtopk', 'matryoshka'] as const) {
    // 60 steps: the EMA (rate 0.01) alone would keep ~55% of the first batch's threshold.
    const r = await fit({
      actsDir: join(dir, 'acts'),
      manifest: m,
      dict: dict({
        activation,
        sitesIn: [{ name: 'x', width: 64 }],
        sitesOut: [{ name: 'x', width: 64 }],
        dIn: 64,
        dOut: 64,
        dSae: 512,
        k: 16,
        matryoshkaWidths: [64, 512],
      }),
      train: { ...train, steps: 60, lr: 1e-3 },
      out: join(dir, activation),
      quiet: true,
    });
    assert.ok(Math.abs(r.eval.l0 - 16) <= 0.1 * 16, `${activation}: held-out L0 ${r.eval.l0} after 60 steps, trained for 16`);
  }
});
