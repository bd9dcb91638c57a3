// `sdl fit --sweep`: many dictionaries from one stream, each equal to its solo run; bad members refused before
// anything trains; a killed sweep resumes and leaves finished members untouched.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, tmp } from './helpers.js';
import type { SweepRecord } from '../src/sdl/sweep.js';
import { parseSweep } from '../src/sdl/sweep.js';

const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
let dir: string;
let acts: string;

before(() => {
  dir = tmp('sdl-sweep-');
  acts = join(dir, 'acts');
  const h = sdl('harvest', '--layer', '6', '--tokens', '32k', '--ctx', '64', '--out', acts);
  assert.equal(h.status, 0, h.stderr);
});

const weights = (d: string) => readFileSync(join(d, 'sae_weights.safetensors'));

test('--sweep is the cross product; every member is a normal dictionary equal bit for bit to its solo run (same seed)', () => {
  assert.deepEqual(parseSweep('k=8,16 latents=64,128'), [
    { k: 8, latents: 64 },
    { k: 8, latents: 128 },
    { k: 16, latents: 64 },
    { k: 16, latents: 128 },
  ]);
  const out = join(dir, 'sweep');
  const common = ['--acts', acts, '--tokens', '64k', '--batch', '1024', '--eval-tokens', '2048'];
  const r = sdl('fit', ...common, '--sweep', 'k=8,16 latents=64,128', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /note: some members are a short run \(\d+ steps, under 1000\)/, 'a budget too small for a good dictionary is said');
  const rec = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepRecord;
  assert.deepEqual(
    rec.members.map((m) => [m.name, m.status]),
    [
      ['k8-latents64', 'finished'],
      ['k8-latents128', 'finished'],
      ['k16-latents64', 'finished'],
      ['k16-latents128', 'finished'],
    ],
  );
  for (const [k, latents] of [
    [16, 128],
    [8, 64],
  ]) {
    const solo = join(dir, `solo-k${k}-${latents}`);
    // A solo fit without --lr races learning rates; members take the rule's rate, as --no-lr-race does.
    const s = sdl('fit', ...common, '--k', String(k), '--latents', String(latents), '--no-lr-race', '--out', solo);
    assert.equal(s.status, 0, s.stderr);
    const member = join(out, `k${k}-latents${latents}`);
    assert.ok(weights(solo).equals(weights(member)), `k${k}-latents${latents}: the member's weights equal its solo run's`);
    const ev = (d: string) => JSON.parse(readFileSync(join(d, 'eval.json'), 'utf8')).fvu;
    assert.equal(ev(member), ev(solo));
  }
  // Members are ordinary dictionaries: compare reads the sweep folder.
  const c = sdl('compare', out, '--json');
  assert.equal(c.status, 0, c.stderr);
  assert.equal(JSON.parse(c.stdout).dictionaries.length, 4);
});

test('a sweep file mixes kinds and activations on one harvest', () => {
  const file = join(dir, 'mixed.json');
  writeFileSync(
    file,
    JSON.stringify([
      { name: 'sae-topk', k: 16, latents: 128 },
      { name: 'tc-relu', kind: 'transcoder', layer: 6, activation: 'relu', sparsity: 1, latents: 128 },
      { name: 'sae-batchtopk', activation: 'batchtopk', k: 16, latents: 128 },
    ]),
  );
  const out = join(dir, 'mixed');
  const r = sdl('fit', '--acts', acts, '--tokens', '32k', '--batch', '1024', '--eval-tokens', '2048', '--sweep-file', file, '--out', out, '--json');
  assert.equal(r.status, 0, r.stderr);
  const rec = JSON.parse(r.stdout) as SweepRecord;
  assert.ok(rec.members.every((m) => m.status === 'finished' && m.result!.fvu < 1));
  const cfg = JSON.parse(readFileSync(join(out, 'tc-relu', 'cfg.json'), 'utf8'));
  assert.equal(cfg.sdlkit.dict.kind, 'transcoder');
  assert.equal(cfg.sdlkit.dict.sitesIn[0].name, 'blocks.6.hook_mlp_in');
});

test('bad members are refused in one line naming the member and the setting, before anything trains', () => {
  const cases: [string[], RegExp][] = [
    [['--sweep', 'k=8,9999 latents=64'], /sweep member k9999-latents64: .*k/],
    [['--sweep', 'k=8 colour=red'], /--sweep: 'colour' is not an option a sweep member can set/],
    [['--sweep', 'k=8,x'], /--sweep: k=x is not a number/],
    [['--sweep', 'batch=512,1024'], /sweep member batch1024 sets batchTokens to 1024 but batch512 to 512; members share one data stream/],
    [['--sweep', 'kind=transcoder layer=6,3'], /sweep member kind_transcoder-layer3: .*layer 3|sweep member kindtranscoder-layer3: /],
  ];
  for (const [args, re] of cases) {
    const out = join(dir, `bad-${Math.random().toString(36).slice(2)}`);
    const r = sdl('fit', '--acts', acts, '--tokens', '8k', ...args, '--out', out);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!existsSync(out) || !readdirSync(out).some((f) => existsSync(join(out, f, 'cfg.json'))), 'nothing trained');
  }
});

test('a sweep killed mid-way resumes: finished members untouched, the rest continue from their checkpoints to the same result', async () => {
  const file = join(dir, 'kill.json');
  writeFileSync(
    file,
    JSON.stringify([
      { name: 'short', k: 8, latents: 64, steps: 6 },
      { name: 'long', k: 16, latents: 128, steps: 120 },
    ]),
  );
  const args = ['fit', '--acts', acts, '--batch', '512', '--eval-tokens', '2048', '--checkpoint-every', '10', '--sweep-file', file];
  const whole = join(dir, 'kill-whole');
  assert.equal(sdl(...args, '--out', whole).status, 0);
  const out = join(dir, 'kill');
  const child = spawn(process.execPath, [CLI, ...args, '--out', out], { stdio: 'ignore' });
  const state = join(out, 'long', 'checkpoint', 'state.json');
  const t0 = Date.now();
  while (!existsSync(state) && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  assert.ok(existsSync(join(out, 'short', 'cfg.json')), 'the short member had finished before the kill');
  assert.ok(!existsSync(join(out, 'long', 'cfg.json')), 'the long one had not');
  const shortTime = statSync(join(out, 'short', 'sae_weights.safetensors')).mtimeMs;
  const again = sdl(...args, '--out', out);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /holds a sweep; pass --resume to finish it/);
  const r = sdl(...args, '--out', out, '--resume');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(statSync(join(out, 'short', 'sae_weights.safetensors')).mtimeMs, shortTime, 'the finished member was not touched');
  assert.ok(weights(join(out, 'long')).equals(weights(join(whole, 'long'))), 'the resumed member ends where an unbroken sweep does');
  const rec = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepRecord;
  assert.ok(rec.members.every((m) => m.status === 'finished'));
});

test('a TopK fit without --lr races three rates on one stream and keeps the lowest held-out FVU, equal bit for bit to a solo fit at that rate', () => {
  const out = join(dir, 'raced');
  const common = ['--acts', acts, '--latents', '64', '--k', '8', '--steps', '40', '--batch', '512', '--eval-tokens', '2048'];
  const r = sdl('fit', ...common, '--out', out, '--json');
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(res.lr_race.length, 3);
  const rec = JSON.parse(readFileSync(join(out, 'cfg.json'), 'utf8')).sdlkit.lr_race;
  const best = rec.race.reduce((a: { fvu: number }, b: { fvu: number }) => (b.fvu < a.fvu ? b : a));
  assert.equal(rec.chosen, best.lr, 'the lowest held-out FVU wins');
  assert.deepEqual(
    rec.race.map((x: { lr: number }) => x.lr / rec.rule_lr).map((m: number) => Math.round(m * 100) / 100),
    [0.5, 2, 4],
  );
  assert.ok(Math.abs(res.eval.fvu - best.fvu) < 1e-12);
  assert.ok(!existsSync(`${out}.lr-race`), 'the losers are removed');
  const solo = join(dir, 'raced-solo');
  assert.equal(sdl('fit', ...common, '--lr', String(rec.chosen), '--out', solo).status, 0);
  assert.ok(weights(out).equals(weights(solo)));
  // --no-lr-race and the activations with a sparsity term train one run at the rule's rate.
  for (const extra of [['--no-lr-race'], ['--activation', 'relu']]) {
    const one = sdl('fit', ...common, ...extra, '--out', join(dir, `one-${extra.join('')}`), '--json');
    assert.equal(one.status, 0, one.stderr);
    assert.equal(JSON.parse(one.stdout).lr_race, null);
  }
  // An existing dictionary is replaced only with --force, before anything trains.
  const again = sdl('fit', ...common, '--out', out);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /already holds a dictionary; pass --force/);
});

test('a learning-rate race killed mid-way resumes to the same dictionary as an unbroken race; a single run resumes as a single run', async () => {
  const args = ['fit', '--acts', acts, '--latents', '64', '--k', '8', '--steps', '120', '--batch', '512', '--eval-tokens', '2048', '--checkpoint-every', '10'];
  const whole = join(dir, 'race-whole');
  assert.equal(sdl(...args, '--out', whole).status, 0);
  const out = join(dir, 'race-kill');
  const child = spawn(process.execPath, [CLI, ...args, '--out', out], { stdio: 'ignore' });
  const t0 = Date.now();
  const someCheckpoint = () =>
    existsSync(`${out}.lr-race`) && readdirSync(`${out}.lr-race`).some((m) => existsSync(join(`${out}.lr-race`, m, 'checkpoint', 'state.json')));
  while (!someCheckpoint() && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  assert.ok(!existsSync(join(out, 'cfg.json')), 'a killed race leaves no finished-looking dictionary');
  const r = sdl(...args, '--out', out, '--resume');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(weights(out).equals(weights(whole)), 'the resumed race picks the same rate and ends at the same weights');
  assert.ok(!existsSync(`${out}.lr-race`));
  // A run trained with --lr resumes as that run, not as a race.
  const single = join(dir, 'single');
  assert.equal(sdl(...args, '--lr', '2e-3', '--out', single).status, 0);
  const again = sdl(...args, '--out', single, '--resume', '--json');
  assert.equal(again.status, 0, again.stderr);
  assert.equal(JSON.parse(again.stdout).lr_race, null);
});
