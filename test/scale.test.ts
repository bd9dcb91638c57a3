// Partitioned harvest: parts run at once into one folder, `sdl merge` joins them into exactly the whole run's
// harvest; a killed part restarts and finishes only its own shards; bad merges write nothing.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, tmp } from './helpers.js';

const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
const JOB = ['harvest', '--layer', '3', '--sites', 'resid_post,mlp_out', '--tokens', '48k', '--ctx', '64', '--shard-tokens', '4k'];
let dir: string;
let whole: string;

const run = (args: string[]) =>
  new Promise<number>((ok) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
    c.on('exit', (code) => ok(code ?? -1));
  });
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8'));

before(() => {
  dir = tmp('sdl-scale-');
  whole = join(dir, 'whole');
  const r = sdl(...JOB, '--out', whole);
  assert.equal(r.status, 0, r.stderr);
});

test('three parts at once into one folder, merged, hold exactly the whole run: the same shards byte for byte, the same manifest', async () => {
  const out = join(dir, 'parts');
  const codes = await Promise.all([0, 1, 2].map((i) => run([...JOB, '--part', `${i}/3`, '--out', out])));
  assert.deepEqual(codes, [0, 0, 0]);
  assert.ok(!existsSync(join(out, 'manifest.json')), 'parts alone are not a harvest');
  assert.equal(sdl('fit', '--acts', out, '--steps', '2').status, 2, 'fit refuses an unmerged folder');
  const m = sdl('merge', out, '--out', out, '--json');
  assert.equal(m.status, 0, m.stderr);
  const a = json(join(whole, 'manifest.json')),
    b = json(join(out, 'manifest.json'));
  assert.equal(b.identity_sha256, a.identity_sha256, 'the merged harvest is the whole job');
  assert.deepEqual(b.shards, a.shards);
  assert.equal(b.tokens, a.tokens);
  assert.ok(b.complete);
  for (const s of a.shards) assert.ok(readFileSync(join(whole, s.file)).equals(readFileSync(join(out, s.file))), `${s.file} is byte-identical`);
  const fit = sdl('fit', '--acts', out, '--steps', '5', '--latents', '64', '--eval-tokens', '2048', '--out', join(dir, 'd'));
  assert.equal(fit.status, 0, fit.stderr);
});

test('a part killed with SIGKILL and started again finishes its own shards only', async () => {
  const out = join(dir, 'killed');
  assert.equal(sdl(...JOB, '--part', '1/2', '--out', out).status, 0);
  const other = Object.fromEntries(
    readdirSync(out)
      .filter((f) => f.endsWith('.arrow'))
      .map((f) => [f, statSync(join(out, f)).mtimeMs]),
  );
  const child = spawn(process.execPath, [CLI, ...JOB, '--part', '0/2', '--out', out], { stdio: 'ignore' });
  const t0 = Date.now();
  while (!existsSync(join(out, 'manifest.part-0-of-2.json')) && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 150));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  assert.equal(sdl(...JOB, '--part', '0/2', '--out', out).status, 0);
  for (const [f, t] of Object.entries(other)) assert.equal(statSync(join(out, f)).mtimeMs, t, `part 1's ${f} untouched`);
  const p0 = json(join(out, 'manifest.part-0-of-2.json'));
  assert.ok(p0.complete);
  assert.ok(
    p0.shards.every((s: { file: string }) => Number(/(\d+)/.exec(s.file)![1]) % 2 === 0),
    'part 0 holds the even shards',
  );
  assert.equal(sdl('merge', out, '--out', join(dir, 'killed-merged')).status, 0);
  assert.deepEqual(json(join(dir, 'killed-merged', 'manifest.json')).shards, json(join(whole, 'manifest.json')).shards);
});

test('merging parts of two jobs, a missing part or a doubled part fails in one line and writes nothing', () => {
  const a = join(dir, 'job-a'),
    b = join(dir, 'job-b'),
    c = join(dir, 'job-a-again');
  for (const [out, part, extra] of [
    [a, '0/2', []],
    [c, '0/2', []],
    [b, '1/2', ['--seed', '7']],
  ] as [string, string, string[]][])
    assert.equal(sdl(...JOB, ...extra, '--part', part, '--out', out).status, 0);
  const cases: [string[], RegExp][] = [
    [[a, b], /belongs to another harvest job/],
    [[a], /part 1\/2 missing/],
    [[a, c], /part 0\/2 is given twice/],
  ];
  for (const [parts, re] of cases) {
    const out = join(dir, `merged-${parts.length}-${Math.random().toString(36).slice(2)}`);
    const r = sdl('merge', ...parts, '--out', out);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(!existsSync(out), 'nothing written');
  }
});

test('Parquet shards: harvest --format parquet = sdl convert of the Arrow harvest, byte for byte, and back; fit reads both alike; sdl query runs read-only SQL', async () => {
  const pq = join(dir, 'pq'),
    conv = join(dir, 'conv'),
    back = join(dir, 'back');
  assert.equal(sdl(...JOB, '--format', 'parquet', '--out', pq).status, 0);
  assert.equal(sdl('convert', whole, '--format', 'parquet', '--out', conv).status, 0);
  assert.equal(sdl('convert', conv, '--format', 'arrow', '--out', back).status, 0);
  const a = json(join(whole, 'manifest.json')),
    p = json(join(pq, 'manifest.json')),
    c = json(join(conv, 'manifest.json'));
  assert.deepEqual(c.shards, p.shards, 'converting gives the Parquet harvest');
  assert.equal(c.identity_sha256, p.identity_sha256);
  assert.ok(p.shards[0].file.endsWith('.parquet'));
  for (const s of a.shards) assert.ok(readFileSync(join(whole, s.file)).equals(readFileSync(join(back, s.file))), `${s.file} round-trips`);
  assert.deepEqual(json(join(back, 'manifest.json')).identity_sha256, a.identity_sha256);
  // The same training on either format: the same dictionary.
  const fit = (acts: string, out: string) =>
    sdl('fit', '--acts', acts, '--site', 'blocks.3.hook_resid_post', '--steps', '10', '--latents', '64', '--eval-tokens', '2048', '--out', out);
  assert.equal(fit(whole, join(dir, 'fa')).status, 0);
  assert.equal(fit(pq, join(dir, 'fp')).status, 0);
  assert.ok(readFileSync(join(dir, 'fa', 'sae_weights.safetensors')).equals(readFileSync(join(dir, 'fp', 'sae_weights.safetensors'))));
  // SQL over the Parquet shards.
  const q = sdl('query', pq, 'select count(*) as n, max("window") as w, count(distinct doc) as docs from activations', '--json');
  assert.equal(q.status, 0, q.stderr);
  const [row] = JSON.parse(q.stdout);
  assert.equal(Number(row.n), p.tokens);
  const tokens = sdl('query', pq, 'select token, count(*) as n from activations where pos > 0 group by token order by n desc, token limit 1', '--json');
  assert.equal(tokens.status, 0, tokens.stderr);
  const sites = JSON.parse(sdl('query', pq, 'select name, width from sites order by name', '--json').stdout);
  assert.deepEqual(
    sites.map((s: { name: string }) => s.name),
    ['blocks.3.hook_mlp_out', 'blocks.3.hook_resid_post'],
  );
  // A dictionary: its feature index's tables, and its (Parquet) harvest.
  assert.equal(sdl('index', join(dir, 'fp')).status, 0);
  const feats = sdl('query', join(dir, 'fp'), 'select count(*) as n, sum(dead) as dead from features', '--json');
  assert.equal(feats.status, 0, feats.stderr);
  assert.equal(Number(JSON.parse(feats.stdout)[0].n), 64);
  const joined = sdl('query', join(dir, 'fp'), 'select count(*) as n from activations a join tokens t on t.id = a.token', '--json');
  assert.equal(joined.status, 0, joined.stderr);
  assert.equal(Number(JSON.parse(joined.stdout)[0].n), p.tokens);
  const other = join(dir, 'pq-other');
  assert.equal(sdl(...JOB.map((a) => (a === '48k' ? '16k' : a)), '--format', 'parquet', '--out', other).status, 0);
  const wrong = sdl('query', join(dir, 'fp'), '--acts', other, 'select count(*) from features');
  assert.equal(wrong.status, 2, 'another harvest is never joined to this index');
  assert.match(wrong.stderr, /holds other rows than the harvest .* was trained and indexed on/);
  assert.equal(sdl('index', join(dir, 'fa')).status, 0);
  const arrowDict = sdl('query', join(dir, 'fa'), 'select count(*) from activations');
  assert.equal(arrowDict.status, 2);
  assert.match(arrowDict.stderr, /holds Arrow shards, which DuckDB cannot read here; convert it/);
  for (const [harvest, sql, re] of [
    [pq, "copy (select 1) to 'x.csv'", /read-only: give one SELECT/],
    [pq, 'drop view activations', /read-only/],
    [pq, 'select nope from activations', /DuckDB could not run the query|not valid SQL/],
    [whole, 'select 1', /holds Arrow shards.*sdl convert/],
  ] as [string, string, RegExp][]) {
    const r = sdl('query', harvest, sql);
    assert.equal(r.status, 2, `${sql}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
});
