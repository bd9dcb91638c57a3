// SAEBench's core metrics on constructed cases with known answers (definitions: docs/metrics.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EvalAccumulator } from '../src/sdl/metrics.js';
import { frontier, type CompareRow } from '../src/analysis/compare.js';
import { CLI, tmp } from './helpers.js';
import { activityScores, hungarianMax, matching, readTruth, type TruthFile } from '../src/analysis/truth.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { makeDictConfig } from '../src/sdl/config.js';
import { Rng } from '../src/util/rng.js';

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);

test('a reconstruction shrunk to half: FVU 0.25, explained variance 0.75, cosine 1, L2 ratio 0.5, relative reconstruction bias 0.5', () => {
  const acc = new EvalAccumulator([{ name: 'x', width: 2 }], 4);
  const y = Float32Array.from([1, 2, -1, -2]); // mean 0
  acc.add(
    y,
    y.map((v) => 0.5 * v),
    2,
    [2, 1, 0, 0],
    3,
  );
  const m = acc.result();
  close(m.fvu, 0.25, 'FVU');
  close(m.explainedVariance, 0.75, 'explained variance');
  close(m.cossim, 1, 'cosine');
  close(m.l2Ratio, 0.5, 'L2 ratio');
  close(m.relativeReconstructionBias, 0.5, 'relative reconstruction bias');
  close(m.l0, 1.5, 'L0');
  close(m.densityStats.over10Percent, 0.5, 'dense share');
  close(m.densityStats.meanLog10Frequency, Math.log10(0.5) / 2, 'mean log10 frequency of live latents');
  assert.equal(m.deadOnEval, 2);
});

test('an orthogonal error: cosine 1/sqrt(2), L2 ratio sqrt(2), bias 2 (the reconstruction overshoots), nothing explained', () => {
  const acc = new EvalAccumulator([{ name: 'x', width: 2 }], 1);
  acc.add(Float32Array.from([1, 0, -1, 0]), Float32Array.from([1, 1, -1, -1]), 2, [2], 2);
  const m = acc.result();
  close(m.cossim, Math.SQRT1_2, 'cosine');
  close(m.l2Ratio, Math.SQRT2, 'L2 ratio');
  close(m.relativeReconstructionBias, 2, 'relative reconstruction bias');
  close(m.explainedVariance, 0, 'explained variance');
});

test('frontier: the dictionaries no other beats at lower L0, in order of L0', () => {
  const pts: [number, number][] = [
    [32, 0.1],
    [16, 0.2],
    [16, 0.25],
    [64, 0.12],
    [64, 0.05],
    [8, 0.4],
  ];
  assert.deepEqual(frontier(pts, 'lower'), [
    [8, 0.4],
    [16, 0.2],
    [32, 0.1],
    [64, 0.05],
  ]);
  assert.deepEqual(frontier(pts, 'higher'), [[8, 0.4]]);
});

test('sdl compare: one row per dictionary (a folder of them expands), the held-out metrics as fit wrote them, the frontier plot; a folder without dictionaries is refused', () => {
  const dir = tmp();
  const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  const acts = join(dir, 'acts');
  assert.equal(sdl('harvest', '--layer', '3', '--sites', 'resid_post', '--tokens', '16k', '--ctx', '64', '--out', acts).status, 0);
  for (const k of [8, 24]) {
    const r = sdl('fit', '--acts', acts, '--latents', '128', '--k', String(k), '--tokens', '64k', '--batch', '1024', '--out', join(dir, 'sweep', `k${k}`));
    assert.equal(r.status, 0, r.stderr);
  }
  const plot = join(dir, 'frontier.svg');
  const r = sdl('compare', join(dir, 'sweep'), '--plot', plot, '--json');
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout).dictionaries as CompareRow[];
  assert.deepEqual(
    rows.map((x) => x.name),
    ['k24', 'k8'],
  );
  for (const row of rows) {
    const ev = JSON.parse(readFileSync(join(row.path, 'eval.json'), 'utf8'));
    assert.equal(row.l0, ev.l0);
    assert.equal(row.fvu, ev.fvu);
    assert.ok(row.cossim! > 0.5 && row.cossim! <= 1, `cosine ${row.cossim}`);
    assert.ok(Math.abs(row.explained_variance! - (1 - row.fvu!)) < 1e-12);
    assert.equal(row.ce_loss_recovered, null, 'not measured until sdl eval runs');
  }
  assert.ok(rows[0].fvu! < rows[1].fvu!, 'k 24 reconstructs better than k 8');
  const svg = readFileSync(plot, 'utf8');
  assert.match(svg, /^<svg/);
  assert.match(svg, /sae\/topk/);
  const table = sdl('compare', join(dir, 'sweep', 'k8'), join(dir, 'sweep', 'k24'));
  assert.match(table.stdout, /^dictionary\s+kind\s+latents\s+L0\s+FVU/);
  assert.match(table.stdout, /k8\s+sae\/topk k8\s+128\s+8\.0/);
  const bad = sdl('compare', acts);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /is neither a dictionary folder nor a folder of dictionaries/);
});

test('hungarianMax finds the best one-to-one assignment (checked against every permutation)', () => {
  const rng = new Rng(3);
  const perms = (a: number[]): number[][] => (a.length <= 1 ? [a] : a.flatMap((x, i) => perms([...a.slice(0, i), ...a.slice(i + 1)]).map((p) => [x, ...p])));
  for (let trial = 0; trial < 20; trial++) {
    const rows = 4,
      cols = 6;
    const S = Array.from({ length: rows * cols }, () => rng.next());
    const got = hungarianMax(rows, cols, (r, c) => S[r * cols + c]);
    assert.equal(new Set(got).size, rows, 'distinct columns');
    let best = -1;
    for (const p of perms([0, 1, 2, 3, 4, 5]))
      best = Math.max(
        best,
        p.slice(0, rows).reduce((a, c, r) => a + S[r * cols + c], 0),
      );
    close(
      Array.from(got).reduce((a, c, r) => a + S[r * cols + c], 0),
      best,
      `trial ${trial}`,
    );
  }
});

test('MCC and uniqueness: 1 for a dictionary holding every true direction once; lower when latents duplicate a feature', () => {
  const n = 6,
    d = 8,
    m = 10;
  const rng = new Rng(1);
  const W_p = Float32Array.from({ length: n * d }, () => rng.normal());
  const truth = { truth: { config: { n } }, W: { W_p } } as unknown as TruthFile;
  const dict = (rowsOf: number[]) => {
    const W_dec = new Float32Array(m * d);
    rowsOf.forEach((f, i) => W_dec.set(W_p.subarray(f * d, (f + 1) * d), i * d));
    for (let i = rowsOf.length; i < m; i++) W_dec[i * d + (i % d)] = 1e-3 * (i + 1); // tiny, near-random extra latents
    const cfg = makeDictConfig({
      kind: 'sae',
      activation: 'topk',
      sitesIn: [{ name: 'x_p', width: d }],
      sitesOut: [{ name: 'x_p', width: d }],
      latents: m,
      k: 2,
    });
    return new Dictionary(cfg, { W_enc: new Float32Array(d * m), b_enc: new Float32Array(m), W_dec, b_dec: new Float32Array(d) });
  };
  const all = matching(dict([5, 3, 1, 0, 2, 4]), truth, 'decoder');
  assert.ok(Math.abs(all.mcc - 1) < 1e-6, `MCC with every feature present: ${all.mcc}`);
  const dup = matching(dict([0, 0, 0, 1, 2, 3]), truth, 'decoder');
  assert.ok(dup.mcc < 0.999, `features 4 and 5 are missing: MCC ${dup.mcc}`);
  assert.ok(dup.uniqueness < all.uniqueness);
});

test('per-latent precision and recall against the regenerated true activations: 1 for a dictionary that reads each feature exactly, low for a wrong matching', () => {
  const dir = join(tmp(), 'bench');
  const r = spawnSync(process.execPath, [CLI, 'synth', '-n', '16', '--np', '16', '-M', '0.02', '--c-min', '0.5', '-S', '0.9', '-N', '6000', '--out', dir], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const t = readTruth(dir);
  assert.ok(t.truth.interference < 0.05, `interference ${t.truth.interference}`);
  const n = 16,
    d = 16;
  const W_p = t.W.W_p;
  const W_enc = new Float32Array(d * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) W_enc[j * n + i] = W_p[i * d + j];
  const cfg = makeDictConfig({ kind: 'sae', activation: 'relu', sitesIn: [{ name: 'x_p', width: d }], sitesOut: [{ name: 'x_p', width: d }], latents: n });
  // b_enc -0.25: interference (< 0.05 per active feature) stays below it, every true magnitude (>= 0.5) above it.
  const dict = new Dictionary(
    { ...cfg, applyBDecToInput: false },
    { W_enc, b_enc: new Float32Array(n).fill(-0.25), W_dec: Float32Array.from(W_p), b_dec: new Float32Array(d) },
  );
  const exact = activityScores(
    dict,
    t,
    dir,
    Int32Array.from({ length: n }, (_, i) => i),
  );
  assert.equal(exact.scored, n);
  // Precision a hair under 1: a large magnitude times the small interference can still cross -0.25.
  assert.ok(exact.precision > 0.99 && exact.recall > 0.999 && exact.f1 > 0.99, JSON.stringify(exact));
  const shifted = activityScores(
    dict,
    t,
    dir,
    Int32Array.from({ length: n }, (_, i) => (i + 1) % n),
  );
  assert.ok(shifted.f1 < 0.3, `a wrong matching scores low: ${JSON.stringify(shifted)}`);
});
