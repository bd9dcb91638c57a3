// The Linear Representation Bench end to end: synth -> fit -> eval --truth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { generateLrb } from '../src/synth/lrb.js';
import { readTruth, recovery, activationPatterns, absorption } from '../src/analysis/truth.js';
import { openActivations } from '../src/activations/manifest.js';
import { CLI, tmp } from './helpers.js';

test('sdl synth writes harvest-format shards and the truth; a TopK SAE fit on them recovers the features', () => {
  const dir = tmp();
  const bench = join(dir, 'lrb');
  const t = generateLrb(bench, { n: 96, np: 40, S: 0.97, M: 0.2, N: 60000, parents: 6, children: 3, seed: 2, shardTokens: 16384 });
  assert.ok(t.interference <= 0.2 + 1e-9, `interference ${t.interference}`);
  const m = openActivations(bench);
  assert.equal(m.tokens, 60000);
  assert.deepEqual(
    m.sites.map((s) => [s.name, s.width]),
    [['x_p', 40]],
  );
  const truth = readTruth(bench);
  assert.equal(truth.W.W_p.length, 96 * 40);
  assert.deepEqual(truth.truth.hierarchy[1], { parent: 4, children: [5, 6, 7] });
  const fit = spawnSync(
    process.execPath,
    [
      CLI,
      'fit',
      '--acts',
      bench,
      '--site',
      'x_p',
      '--latents',
      '192',
      '--k',
      '6',
      '--steps',
      '600',
      '--batch',
      '1024',
      '--lr',
      '3e-3',
      '--out',
      join(dir, 'sae'),
      '--json',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(fit.status, 0, fit.stderr);
  const ev = spawnSync(process.execPath, [CLI, 'eval', join(dir, 'sae'), '--truth', bench, '--using', 'decoder', '--json'], { encoding: 'utf8' });
  assert.equal(ev.status, 0, ev.stderr);
  const r = JSON.parse(ev.stdout);
  assert.ok(r.recovery.mgt > 0.9, `M_GT ${r.recovery.mgt}`);
  assert.ok(r.recovery.mip > 0.95);
  assert.equal(r.patterns.dead + r.patterns.monosemantic + r.patterns.polysemantic, 192);
  assert.equal(r.absorption.parents.length, 6);
  assert.ok(r.absorption.rate >= 0 && r.absorption.rate <= 1);
});

test('recovery metrics: a dictionary made of the true directions scores 100%, and anchored features can be left out', async () => {
  const dir = tmp();
  const t = generateLrb(join(dir, 'lrb'), { n: 20, np: 16, S: 0.9, M: 0.2, N: 100, seed: 1, shardTokens: 100 });
  const truth = readTruth(join(dir, 'lrb'));
  const { Dictionary } = await import('../src/sdl/dictionary.js');
  const n = 20,
    d = 16;
  const W_enc = new Float32Array(d * n),
    W_dec = new Float32Array(truth.W.W_p);
  for (let f = 0; f < n; f++) for (let j = 0; j < d; j++) W_enc[j * n + f] = truth.W.W_p[f * d + j];
  const dict = new Dictionary(
    {
      kind: 'sae',
      activation: 'relu',
      sitesIn: [{ name: 'x_p', width: d }],
      sitesOut: [{ name: 'x_p', width: d }],
      dIn: d,
      dOut: d,
      dSae: n,
      k: 1,
      matryoshkaWidths: [n],
      applyBDecToInput: true,
      noBias: false,
      tied: false,
    },
    { W_enc, b_enc: new Float32Array(n), W_dec, b_dec: new Float32Array(d) },
  );
  const r = recovery(dict, truth, { exclude: [0, 1, 2] });
  assert.equal(r.mgt, 1);
  assert.ok(Math.abs(r.mip - 1) < 1e-6);
  assert.equal(r.features, 17);
  const p = activationPatterns(dict, truth);
  assert.ok(
    p.patterns.every((fs, i) => fs.includes(i)),
    'each latent fires on its own feature',
  );
  assert.equal(absorption(dict, truth).parents.length, 0);
  void t;
});

test('sdl bench lrb runs every method with and without anchoring and writes the table', () => {
  const dir = tmp();
  const out = join(dir, 'table.md');
  const r = spawnSync(
    process.execPath,
    [CLI, 'bench', 'lrb', '--n', '24', '--np', '20', '--latents', '48', '--k', '3', '--N', '4000', '--steps', '15', '--anchors', '3', '--out', out, '--json'],
    { encoding: 'utf8', env: { ...process.env, SDL_CACHE: join(dir, 'cache') } },
  );
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as { method: string; anchoring: boolean; mgt: number[]; mip: number[] }[];
  assert.equal(rows.length, 14);
  assert.deepEqual([...new Set(rows.map((x) => x.method))], ['relu', 'jumprelu', 'topk', 'batchtopk', 'matryoshka', 'transcoder', 'crosscoder']);
  assert.ok(rows.every((x) => x.mip.length === 1 && x.mip[0] > 0 && x.mip[0] <= 1 && x.mgt[0] >= 0 && x.mgt[0] <= 1));
  assert.match(readFileSync(out, 'utf8'), /\| topk \| yes \|/);
});

test('sdl bench resample and sdl bench absorption run their arms and write their tables (and the plot)', () => {
  const dir = tmp();
  const env = { ...process.env, SDL_CACHE: join(dir, 'cache') };
  const out = join(dir, 'resample.md');
  const r = spawnSync(
    process.execPath,
    [
      CLI,
      'bench',
      'resample',
      '--n',
      '24',
      '--np',
      '20',
      '--latents',
      '96',
      '--k',
      '2',
      '--N',
      '4000',
      '--steps',
      '40',
      '--resample-every',
      '10',
      '--dead-window',
      '2000',
      '--batch',
      '256',
      '--out',
      out,
      '--json',
    ],
    { encoding: 'utf8', env },
  );
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout) as { arm: string; curves: { dead: [number, number][] } }[];
  assert.deepEqual(
    res.map((x) => x.arm),
    ['no remedy', 'resampling', 'AuxK'],
  );
  assert.ok(res.every((x) => x.curves.dead.length >= 4));
  assert.match(readFileSync(join(dir, 'resample.svg'), 'utf8'), /^<svg[^>]*>[\s\S]*<path d="M/);
  assert.match(readFileSync(out, 'utf8'), /\| resampling \|/);
  const a = spawnSync(
    process.execPath,
    [
      CLI,
      'bench',
      'absorption',
      '--n',
      '24',
      '--np',
      '20',
      '--parents',
      '3',
      '--children',
      '3',
      '--latents',
      '48',
      '--k',
      '3',
      '--N',
      '4000',
      '--steps',
      '20',
      '--batch',
      '256',
      '--methods',
      'topk,relu',
      '--json',
    ],
    { encoding: 'utf8', env },
  );
  assert.equal(a.status, 0, a.stderr);
  const rows = JSON.parse(a.stdout) as { method: string; rate: number }[];
  assert.deepEqual(
    rows.map((x) => x.method),
    ['topk', 'relu'],
  );
  assert.ok(rows.every((x) => x.rate >= 0 && x.rate <= 1));
  const bad = spawnSync(process.execPath, [CLI, 'bench', 'absorption', '--methods', 'gated'], { encoding: 'utf8', env });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown method 'gated'/);
});
