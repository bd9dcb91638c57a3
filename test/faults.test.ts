// Fault injection: a table of bad inputs across every command (each must end with exit 2, exactly one line on
// stderr, no stack frame, and nothing written that looks finished), SIGKILL at seeded random moments of harvest,
// fit and index, two writers on one folder, and a full or read-only file system where this machine can mount one.
// A new command adds its rows here.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { CLI, corpusFile, tinyLlama, tmp } from './helpers.js';
import { Rng } from '../src/util/rng.js';

const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
let dir: string, acts: string, dict: string;

/** The shared test dictionary's training arguments (a resume of it must use the same ones). */
const dictFit = () => ['fit', '--acts', acts, '--latents', '128', '--k', '8', '--batch', '512', '--steps', '30', '--eval-tokens', '2048'];

before(() => {
  dir = tmp('sdl-faults-');
  acts = join(dir, 'acts');
  const h = sdl('harvest', '--layer', '6', '--tokens', '16k', '--ctx', '64', '--out', acts);
  assert.equal(h.status, 0, h.stderr);
  dict = join(dir, 'dict');
  const f = sdl(...dictFit(), '--checkpoint-every', '10', '--out', dict);

  assert.equal(f.status, 0, f.stderr);
  assert.equal(sdl('index', dict).status, 0);
  tinyLlama(join(dir, 'other'), { dim: 64, layers: 8 }); // another model of the same width
  tinyLlama(join(dir, 'narrow'), { dim: 16, layers: 8 }); // a narrower one
  // Embeddings ~1e5 (the residual stream past float16's range), and NaN embeddings (every hook NaN).
  tinyLlama(join(dir, 'loud'), { dim: 16, layers: 2, edit: (w) => w.tok_embeddings.forEach((v, i, a) => (a[i] = v * 1e5)) });
  tinyLlama(join(dir, 'nan'), { dim: 16, layers: 2, edit: (w) => w.tok_embeddings.fill(Number.NaN) });
  // Damaged copies of the harvest and of the dictionary.
  const copy = (from: string, name: string) => {
    const to = join(dir, name);
    cpSync(from, to, { recursive: true });
    return to;
  };
  truncateSync(join(copy(acts, 'acts-trunc'), 'shard-00000.arrow'), 5000);
  const flipped = join(copy(acts, 'acts-flip'), 'shard-00000.arrow');
  const b = readFileSync(flipped);
  b[b.length - 4000] ^= 0x40; // a float inside the data: still a valid Arrow file, another checksum
  writeFileSync(flipped, b);
  const wide = join(copy(acts, 'acts-width'), 'manifest.json');
  writeFileSync(wide, readFileSync(wide, 'utf8').replace(/"width": 64/g, '"width": 32'));
  truncateSync(join(copy(dict, 'dict-trunc'), 'sae_weights.safetensors'), 1000);
  writeFileSync(join(copy(dict, 'dict-badcfg'), 'cfg.json'), '{"d_in": 64, ');
  const edited = join(copy(dict, 'dict-edited'), 'cfg.json');
  writeFileSync(edited, readFileSync(edited, 'utf8').replace('"dSae": 128', '"dSae": -1'));
  rmSync(join(copy(dict, 'dict-noindex'), 'index.sqlite'));
  writeFileSync(join(dir, 'afile'), 'not a folder');
  mkdirSync(join(dir, 'adir'));
  corpusFile(dir, 10);
});

/** [name, arguments, what stderr must say, a path that must not exist afterwards]. `@` stands for the test folder. */
const ROWS: [string, string[], RegExp, string?][] = [
  // Output paths
  ['harvest --out is a file', ['harvest', '--layer', '6', '--tokens', '4k', '--out', '@/afile'], /output folder .*afile is an existing file/],
  ['fit --out is a file', ['fit', '--acts', '@/acts', '--steps', '5', '--out', '@/afile'], /output folder .*afile is an existing file/],
  ['export onnx --out is a folder', ['export', '@/dict', '--format', 'onnx', '--out', '@/adir'], /output file .*adir is an existing folder/],
  ['export saelens --out is a file', ['export', '@/dict', '--format', 'saelens', '--out', '@/afile'], /output folder .*afile is an existing file/],
  ['export --splice --out is a folder', ['export', '@/dict', '--format', 'onnx', '--splice', '--out', '@/adir'], /output file .*adir is an existing folder/],
  ['synth --out is a file', ['synth', '--n', '16', '--np', '8', '--N', '1000', '--out', '@/afile'], /output folder .*afile is an existing file/],
  ['import saelens --out is a file', ['import', 'saelens', '@/dict-saelens-missing', '--out', '@/afile'], /not found|no such|is not/i],
  ['out under a file', ['fit', '--acts', '@/acts', '--steps', '5', '--out', '@/afile/sub'], /afile is a file, not a folder/],
  // Damaged inputs
  [
    'truncated shard (fit)',
    ['fit', '--acts', '@/acts-trunc', '--steps', '5', '--out', '@/o-trunc'],
    /shard .*shard-00000\.arrow does not match the checksum/,
    '@/o-trunc/cfg.json',
  ],
  [
    'truncated shard, --no-verify (fit)',
    ['fit', '--acts', '@/acts-trunc', '--steps', '5', '--no-verify', '--out', '@/o-trunc2'],
    /shard .*shard-00000\.arrow is not a readable Arrow file/,
    '@/o-trunc2/cfg.json',
  ],
  [
    'changed shard bytes (fit)',
    ['fit', '--acts', '@/acts-flip', '--steps', '5', '--out', '@/o-flip'],
    /does not match the checksum in its manifest/,
    '@/o-flip/cfg.json',
  ],
  ['changed shard bytes (index)', ['index', '@/dict', '--acts', '@/acts-flip', '--force'], /does not match the checksum in its manifest/],
  [
    'manifest claims another width',
    ['fit', '--acts', '@/acts-width', '--steps', '5', '--no-verify', '--out', '@/o-width'],
    /holds blocks\.6\.hook_resid_post 64 wide but the manifest says 32/,
    '@/o-width/cfg.json',
  ],
  ['truncated weights (eval)', ['eval', '@/dict-trunc'], /sae_weights\.safetensors is truncated/],
  ['truncated weights (export)', ['export', '@/dict-trunc', '--out', '@/x.onnx'], /sae_weights\.safetensors is truncated/, '@/x.onnx'],
  ['invalid cfg.json (export)', ['export', '@/dict-badcfg', '--out', '@/y.onnx'], /cfg\.json is not valid JSON/, '@/y.onnx'],
  ['invalid cfg.json (index)', ['index', '@/dict-badcfg'], /cfg\.json is not valid JSON/],
  ['invalid cfg.json (run)', ['run', '@/dict-badcfg', 'hello'], /cfg\.json is not valid JSON/],
  ['edited cfg.json (eval)', ['eval', '@/dict-edited'], /dSae is -1, not a positive integer/],
  ['truncated weights (import saelens)', ['import', 'saelens', '@/dict-trunc', '--out', '@/imp'], /truncated|not a SAELens|cfg/i, '@/imp/cfg.json'],
  // Wrong model or width
  ['eval in another model of the same width', ['eval', '@/dict', '--model', '@/other/model'], /trained on model sdl-tiny .* but tiny is another model/],
  ['export --splice into another model', ['export', '@/dict', '--splice', '--model', '@/other/model', '--out', '@/s.onnx'], /another model/, '@/s.onnx'],
  ['run in a narrower model', ['run', '@/dict', 'hello', '--model', '@/narrow/model'], /another model/],
  ['steer in another model', ['steer', '@/dict', '--feature', '1', '--scale', '2', 'hi', '--model', '@/other/model'], /another model/],
  // Option values
  ['fit --lr -1', ['fit', '--acts', '@/acts', '--lr', '-1', '--out', '@/o-lr'], /--lr must be a positive number \(got -1\)/, '@/o-lr/cfg.json'],
  ['fit --batch 0', ['fit', '--acts', '@/acts', '--batch', '0', '--out', '@/o-b'], /--batch must be a positive integer/],
  ['fit --k 0', ['fit', '--acts', '@/acts', '--k', '0', '--out', '@/o-k'], /--k must be an integer between 1 and the number of latents/],
  ['fit --expansion 0', ['fit', '--acts', '@/acts', '--expansion', '0', '--out', '@/o-e'], /--expansion must be a positive number \(got 0\)/],
  ['fit --lr-decay 2', ['fit', '--acts', '@/acts', '--lr-decay', '2', '--out', '@/o-d'], /--lr-decay must be between 0 and 1/],
  ['fit --eval-tokens 1', ['fit', '--acts', '@/acts', '--eval-tokens', '1', '--steps', '3', '--out', '@/o-ev'], /FVU needs at least 2/, '@/o-ev/cfg.json'],
  ['harvest --ctx -3', ['harvest', '--layer', '6', '--ctx', '-3', '--out', '@/h1'], /--ctx must be an integer of at least 2 \(got -3\)/, '@/h1'],
  ['harvest --shard-tokens 0', ['harvest', '--layer', '6', '--shard-tokens', '0', '--out', '@/h2'], /--shard-tokens must be a positive integer/, '@/h2'],
  ['harvest --layer 99', ['harvest', '--layer', '99', '--out', '@/h3'], /layer 99 does not exist/, '@/h3'],
  ['harvest missing corpus', ['harvest', '--layer', '6', '--corpus', '@/nope.txt', '--out', '@/h4'], /nope\.txt/, '@/h4'],
  ['eval --windows 0', ['eval', '@/dict', '--windows', '0'], /--windows must be a positive integer/],
  ['eval --batch 0', ['eval', '@/dict', '--batch', '0'], /--batch must be a positive integer/],
  ['eval --ctx 1', ['eval', '@/dict', '--ctx', '1'], /--ctx must be an integer of at least 2/],
  ['synth --n 0', ['synth', '--n', '0', '--out', '@/syn1'], /--n must be a positive integer/, '@/syn1'],
  ['synth --M -1', ['synth', '--M', '-1', '--out', '@/syn2'], /--M must be in \(0, 1\]/, '@/syn2'],
  ['bench lrb --k 0 (before training)', ['bench', 'lrb', '--k', '0', '--steps', '2'], /--k must be a positive integer/],
  ['theory --seed -1', ['theory', '--seed', '-1'], /--seed must be a non-negative integer/],
  ['index --top-k 0', ['index', '@/dict', '--top-k', '0'], /--top-k must be a positive integer/],
  ['features --limit 0', ['features', '@/dict', '--limit', '0'], /--limit must be a positive integer/],
  ['feature abc', ['feature', '@/dict', 'abc'], /a feature id is a non-negative integer \(got 'abc'\)/],
  ['feature out of range', ['feature', '@/dict', '999'], /feature 999 does not exist; the dictionary has features 0-127/],
  ['sql that writes', ['sql', '@/dict', 'delete from features'], /read-only SELECT/],
  [
    'sql that runs forever',
    ['sql', '@/dict', 'with recursive c(x) as (select 1 union all select x+1 from c) select count(*) from c', '--timeout', '1'],
    /ran longer than 1 s and was stopped/,
  ],
  ['features without an index', ['features', '@/dict-noindex'], /has no feature index; run 'sdl index/],
  ['steer --scale abc', ['steer', '@/dict', '--feature', '3', '--scale', 'abc', 'hi'], /must be a number \(got 'abc'\)/],
  ['run empty text', ['run', '@/dict', ''], /the text is empty/],
  ['ablate --features x', ['ablate', '@/dict', '--features', 'x'], /cannot read feature 'x'/],
  [
    'fit --out given twice (yargs would pass an array)',
    ['fit', '--acts', '@/acts', '--out', '@/twice-a', '--out', '@/twice-b'],
    /--out was given 2 times .*; give it once/,
    '@/twice-b',
  ],
  [
    'harvest --layer given twice',
    ['harvest', '--layer', '2', '--layer', '4', '--out', '@/h-twice'],
    /--layer was given 2 times \(2, 4\); give it once/,
    '@/h-twice',
  ],
  [
    'fit --low-memory=maybe (yargs would read it as false)',
    ['fit', '--acts', '@/acts', '--low-memory=maybe', '--out', '@/lowmem-maybe'],
    /--low-memory is a switch/,
    '@/lowmem-maybe',
  ],
  [
    'fit --low-memory with ReLU',
    ['fit', '--acts', '@/acts', '--activation', 'relu', '--low-memory', '--out', '@/lowmem-relu'],
    /--low-memory applies to untied TopK/,
    '@/lowmem-relu',
  ],
  // Runs that would record a false history
  [
    'fit --resume with another --k',
    ['fit', '--acts', '@/acts', '--latents', '128', '--k', '4', '--batch', '512', '--steps', '30', '--eval-tokens', '2048', '--out', '@/dict', '--resume'],
    /was made with other settings \(k: 8 -> 4/,
  ],
  [
    'fit --resume with another --seed',
    [
      'fit',
      '--acts',
      '@/acts',
      '--latents',
      '128',
      '--k',
      '8',
      '--batch',
      '512',
      '--steps',
      '30',
      '--eval-tokens',
      '2048',
      '--seed',
      '5',
      '--out',
      '@/dict',
      '--resume',
    ],
    /other settings \(seed: 0 -> 5\)/,
  ],
  [
    'fit --resume without a checkpoint',
    ['fit', '--acts', '@/acts', '--steps', '5', '--out', '@/fresh', '--resume'],
    /no checkpoint in .*fresh.* to resume from/,
    '@/fresh/cfg.json',
  ],
  [
    'a second fit into a finished dictionary',
    ['fit', '--acts', '@/acts', '--latents', '128', '--k', '8', '--steps', '5', '--out', '@/dict'],
    /already holds a dictionary; pass --force/,
  ],
  ['fit --acts missing', ['fit', '--acts', '@/nope', '--steps', '5'], /activations folder .*nope not found/],
  // Values far out of range, found by running every numeric option of every command with abc, -1, 0, 0.5, 1e12,
  // NaN, Infinity and '' (each was an internal error, a timer warning, or a count silently rounded)
  [
    'fit --latents past the machine',
    ['fit', '--acts', '@/acts', '--latents', '1e12', '--steps', '5', '--out', '@/o-huge'],
    /1000000000000 latents x \(d_in 64 \+ d_out 64\): W_enc and W_dec would take 512\.0 TB and this machine has .* of memory; lower --latents/,
    '@/o-huge',
  ],
  [
    'fit --matryoshka-widths for TopK',
    ['fit', '--acts', '@/acts', '--matryoshka-widths', 'abc', '--steps', '5', '--out', '@/o-mw'],
    /--matryoshka-widths is for --activation matryoshka \(got --activation topk\)/,
    '@/o-mw',
  ],
  ['fit --batch 0.5', ['fit', '--acts', '@/acts', '--batch', '0.5', '--out', '@/o-half'], /--batch must be a whole count .*got '0\.5'/, '@/o-half'],
  [
    'harvest --threads 1e12',
    ['harvest', '--layer', '6', '--threads', '1e12', '--out', '@/h-thr'],
    /--threads 1000000000000 is more than sdlkit runs \(at most 256/,
    '@/h-thr',
  ],
  [
    'harvest --oov-id past the vocabulary',
    ['harvest', '--layer', '6', '--tokens', '4k', '--oov-id', '99999', '--out', '@/h-oov'],
    /--oov-id 99999 is not a token of .*ids 0-\d+/,
    '@/h-oov',
  ],
  ['search --limit abc', ['search', '@/dict', '--token', ' the', '--limit', 'abc'], /--limit must be a positive integer \(got NaN\)/],
  ['search --limit -1 (SQLite: no limit)', ['search', '@/dict', '--token', ' the', '--limit', '-1'], /--limit must be a positive integer \(got -1\)/],
  ['sql --timeout past a timer', ['sql', '@/dict', 'select 1', '--timeout', '1e12'], /--timeout must be a positive number of seconds up to 2147483/],
  ['eval --windows past the corpus', ['eval', '@/dict', '--windows', '1e12'], /the corpus gave only \d+ windows of 128 tokens; lower --windows/],
  ['eval --ctx past the model', ['eval', '@/dict', '--ctx', '1e12'], /--ctx 1000000000000 exceeds .*context length/],
  ['ablate --ctx past the model', ['ablate', '@/dict', '--features', '3', '--ctx', '100000'], /--ctx 100000 exceeds .*context length/],
  [
    'harvest --dtype f16 of activations past float16',
    ['harvest', '--model', '@/loud/model', '--corpus', '@/corpus.txt', '--layer', '1', '--tokens', '1k', '--dtype', 'f16', '--out', '@/h-loud'],
    /blocks\.1\.hook_resid_post holds \d+ value\(s\) beyond float16's range \(\|x\| > 65504\), which an f16 shard would store as infinity; harvest with --dtype f32/,
    '@/h-loud/shard-00000.arrow',
  ],
  [
    'harvest of a model that gives NaN',
    ['harvest', '--model', '@/nan/model', '--corpus', '@/corpus.txt', '--layer', '1', '--tokens', '1k', '--out', '@/h-nan'],
    /the model gave NaN or Inf for blocks\.1\.hook_resid_post \(shard 0, row 0\); check the model/,
    '@/h-nan/shard-00000.arrow',
  ],
  ['harvest --layers backwards', ['harvest', '--layers', '3-1', '--out', '@/h-back'], /the range 3-1 runs backwards; write it as 1-3/, '@/h-back'],
  ['run --file is a folder', ['run', '@/dict', '--file', '@/adir'], /text file .*adir is a folder; pass a text file/],
  ['dashboard of a harvest (no note first)', ['dashboard', '@/acts', '--out', '@/dash-acts'], /acts is not a dictionary folder/, '@/dash-acts'],
  [
    'model train --heads 3 at --dim 64',
    ['model', 'train', '--heads', '3', '--out', '@/lm-heads'],
    /--dim 64 must split into --heads 3 heads of an even width/,
    '@/lm-heads',
  ],
  [
    'synth --np past the machine',
    ['synth', '--n', '16', '--np', '1e12', '--N', '1000', '--out', '@/s-huge'],
    /their directions would take .* and this machine has/,
    '@/s-huge',
  ],
];

test(`${ROWS.length} bad inputs: exit 2, one line, no stack, nothing that looks finished`, () => {
  assert.ok(ROWS.length >= 40);
  const at = (s: string) => s.replace(/^@/, dir);
  const weights = readFileSync(join(dir, 'dict', 'sae_weights.safetensors'));
  for (const [name, args, re, mustNotExist] of ROWS) {
    const r = sdl(...args.map(at));
    const lines = r.stderr.trim().split('\n');
    assert.equal(r.status, 2, `${name}: exit ${r.status}, stderr ${r.stderr}`);
    assert.equal(lines.length, 1, `${name}: ${lines.length} lines on stderr:\n${r.stderr}`);
    assert.match(lines[0], /^sdl: /, name);
    assert.doesNotMatch(r.stderr, /\n\s+at |internal error/, name);
    assert.match(lines[0], re, `${name}: ${lines[0]}`);
    if (mustNotExist) assert.ok(!existsSync(at(mustNotExist)), `${name}: ${at(mustNotExist)} was written`);
  }
  // The refused runs left the dictionary they were pointed at as it was.
  assert.deepEqual(readFileSync(join(dir, 'dict', 'sae_weights.safetensors')), weights);
  assert.equal(readFileSync(join(dir, 'afile'), 'utf8'), 'not a folder');
});

/**
 * Runs `args` once per kill point, killing the run once `progress()` (read every 10 ms) reaches the point's `at`
 * and then its `jitterMs` more; then once more to the end. The moments follow the work done, not the clock, so a
 * machine that speeds up or slows down mid-test still gets every kill in before the run could finish.
 */
async function killAndFinish(
  args: string[],
  points: { at: number; jitterMs: number }[],
  progress: () => number,
  resume: () => string[] = () => [],
  afterKill?: () => void,
): Promise<number> {
  let kills = 0;
  for (const { at, jitterMs } of points) {
    const child = spawn(process.execPath, [CLI, ...args, ...resume()], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b) => (err += b));
    let timer: NodeJS.Timeout | undefined;
    const poll = setInterval(() => {
      if (timer || progress() < at) return;
      timer = setTimeout(() => child.kill('SIGKILL'), jitterMs);
    }, 10);
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    clearInterval(poll);
    clearTimeout(timer);
    if (code === null) {
      kills++;
      afterKill?.();
    } else assert.equal(code, 0, err);
  }
  const r = spawnSync(process.execPath, [CLI, ...args, ...resume()], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return kills;
}

/**
 * `n` seeded kill points: the i-th at a random place in the i-th of `n` equal parts of [lo, hi) of the work (so they
 * rise), each then delayed by a random 0-`maxJitterMs` ms so that a kill lands anywhere in a step or a write.
 */
const seeded = (seed: number, n: number, lo: number, hi: number, maxJitterMs: number) => {
  const rng = new Rng(seed);
  const part = (hi - lo) / n;
  return Array.from({ length: n }, (_, i) => ({ at: lo + part * (i + rng.next()), jitterMs: maxJitterMs * rng.next() }));
};

/** The step of the last checkpoint written in `out` (0 before the first). */
const checkpointStep = (out: string) => {
  try {
    return (JSON.parse(readFileSync(join(out, 'checkpoint', 'state.json'), 'utf8')) as { step: number }).step;
  } catch {
    return 0; // none yet, or (between a write and its rename) not there for an instant
  }
};

test('fit killed 5 times at seeded random moments, resumed each time: the same weights as an unbroken run', async () => {
  const base = [
    'fit',
    '--acts',
    acts,
    '--latents',
    '512',
    '--k',
    '8',
    '--batch',
    '512',
    '--steps',
    '1500',
    '--eval-tokens',
    '2048',
    '--checkpoint-every',
    '10',
    '--resample',
    '100',
  ];
  const whole = sdl(...base, '--out', join(dir, 'fit-whole'));
  assert.equal(whole.status, 0, whole.stderr);
  const out = join(dir, 'fit-killed');
  // --resume once a checkpoint exists (a run killed before its first checkpoint simply starts again).
  const kills = await killAndFinish(
    [...base, '--out', out],
    seeded(11, 5, 0, 1200, 50),
    () => checkpointStep(out),
    () => (existsSync(join(out, 'checkpoint', 'state.json')) ? ['--resume'] : []),
    () => {
      assert.ok(!existsSync(join(out, 'cfg.json')), 'a killed fit never leaves a cfg.json');
    },
  );
  assert.equal(kills, 5);
  assert.deepEqual(readFileSync(join(out, 'sae_weights.safetensors')), readFileSync(join(dir, 'fit-whole', 'sae_weights.safetensors')));
  const log = readFileSync(join(out, 'training_log.jsonl'), 'utf8');
  assert.ok((log.match(/"event":"resume"/g) ?? []).length >= 1, 'resumes are logged');
});

test('fit --low-memory killed 3 times, resumed each time: the same weights as an unbroken --low-memory run', async () => {
  // The deferred update (no gradient buffers) between a step and its update is the state a kill can interrupt. One
  // run, not a learning-rate race: a race's members checkpoint beside `out`, so out/checkpoint (the kill points'
  // progress) appeared only as the run ended, and the kills landed in its last milliseconds or, on a fast machine, after it.
  const base = [
    'fit',
    '--acts',
    acts,
    '--latents',
    '512',
    '--k',
    '8',
    '--batch',
    '512',
    '--steps',
    '800',
    '--eval-tokens',
    '2048',
    '--checkpoint-every',
    '10',
    '--lr',
    '0.004',
  ];
  const whole = sdl(...base, '--low-memory', '--out', join(dir, 'lowmem-whole'));
  assert.equal(whole.status, 0, whole.stderr);
  const out = join(dir, 'lowmem-killed');
  const kills = await killAndFinish(
    [...base, '--low-memory', '--out', out],
    seeded(12, 3, 0, 640, 50),
    () => checkpointStep(out),
    () => (existsSync(join(out, 'checkpoint', 'state.json')) ? ['--resume'] : []),
  );
  assert.equal(kills, 3);
  assert.deepEqual(readFileSync(join(out, 'sae_weights.safetensors')), readFileSync(join(dir, 'lowmem-whole', 'sae_weights.safetensors')));
});

test('harvest killed 5 times at seeded random moments ends byte-identical to an unbroken harvest', async () => {
  const base = ['harvest', '--layer', '6', '--tokens', '400k', '--shard-tokens', '8192'];
  const whole = sdl(...base, '--out', join(dir, 'h-whole'));
  assert.equal(whole.status, 0, whole.stderr);
  const shards = readdirSync(join(dir, 'h-whole')).filter((f) => f.endsWith('.arrow'));
  const out = join(dir, 'h-killed');
  const finished = () => (existsSync(out) ? readdirSync(out).filter((f) => f.endsWith('.arrow')).length : 0);
  // Kill points by shards finished (49 in all), the last at 80% of them: a kill never finds the harvest done.
  const kills = await killAndFinish([...base, '--out', out], seeded(12, 5, 0, 0.8 * shards.length, 100), finished);
  assert.equal(kills, 5);
  assert.deepEqual(
    readdirSync(out).filter((f) => f.endsWith('.arrow')),
    shards,
  );
  for (const f of shards) assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(dir, 'h-whole', f)), f);
  assert.ok(!readdirSync(out).some((f) => /\.tmp-|^\.lock$/.test(f)), 'no temporary files or lock left');
});

test('index killed 5 times at seeded random moments: the index is always the old one, whole; then the new one', async () => {
  const path = join(dict, 'index.sqlite');
  const identity = () => {
    const db = new Database(path, { readonly: true });
    assert.equal((db.prepare('pragma integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
    const v = (db.prepare("select value from dictionary where key = 'index_identity'").get() as { value: string }).value;
    db.close();
    return v;
  };
  // The index has no progress to watch: its kills fall 20-80% of the way through an unbroken run timed here first
  // (fixed delays of 150-600 ms outlasted the whole run on a faster machine, and the kill never came). The timed run
  // keeps 6 examples a feature, so that the killed runs' 7 make another index.
  const t0 = performance.now();
  assert.equal(sdl('index', dict, '--force', '--top-k', '6').status, 0);
  const whole = performance.now() - t0;
  const old = identity();
  const delays = seeded(13, 5, 0.2 * whole, 0.8 * whole, 0).map(({ at }) => ({ at: 0, jitterMs: at }));
  const kills = await killAndFinish(
    ['index', dict, '--force', '--top-k', '7'],
    delays,
    () => 0,
    undefined,
    () => assert.equal(identity(), old),
  );
  assert.ok(kills >= 5, `${kills} kills`);
  assert.notEqual(identity(), old, 'the finished run replaced the index');
  assert.ok(!readdirSync(dict).some((f) => f.includes('.tmp-')), 'temporary files of the killed runs are gone');
});

test("two fits into one folder: the second is refused while the first runs; a dead owner's lock is taken over", async () => {
  const out = join(dir, 'locked');
  const args = ['fit', '--acts', acts, '--latents', '128', '--batch', '256', '--steps', '3000', '--eval-tokens', '2048', '--out', out];
  const first = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !existsSync(join(out, '.lock')); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(existsSync(join(out, '.lock')));
  const second = sdl(...args.slice(0, -6), '--steps', '5', '--eval-tokens', '2048', '--out', out);
  assert.equal(second.status, 2);
  assert.match(second.stderr, /^sdl: .*locked is being written by another sdl fit \(process \d+\); wait for it or choose another --out\n$/);
  first.kill('SIGKILL');
  await new Promise((r) => first.on('exit', r));
  const third = sdl(...args.slice(0, -6), '--steps', '5', '--eval-tokens', '2048', '--out', out);
  assert.equal(third.status, 0, third.stderr);
  assert.ok(!existsSync(join(out, '.lock')), 'the lock is released at exit');
});

/** A small tmpfs, where this machine lets the test mount one (root on Linux); else the reason to skip. */
function mountTmpfs(path: string, opts: string): string | undefined {
  mkdirSync(path, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', path], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'cannot mount a tmpfs here (needs root on Linux)';
  }
}

test('a full disk and a read-only file system: one line, exit 2, nothing half-written', (t) => {
  const full = join(dir, 'full'),
    ro = join(dir, 'ro');
  const why = mountTmpfs(full, 'size=1200k');
  if (why) return t.skip(why);
  try {
    // The checkpoint and weights of a 4096-latent dictionary do not fit in 1.2 MB.
    const f = sdl(
      'fit',
      '--acts',
      acts,
      '--latents',
      '4096',
      '--k',
      '8',
      '--batch',
      '256',
      '--steps',
      '20',
      '--checkpoint-every',
      '10',
      '--eval-tokens',
      '2048',
      '--out',
      join(full, 'd'),
    );
    assert.equal(f.status, 2, f.stderr);
    assert.match(f.stderr, /(^|\n)sdl: cannot write .*: the disk is full; free space or write elsewhere \(--out\)\n$/);
    assert.ok(!existsSync(join(full, 'd', 'cfg.json')));
    assert.ok(
      !readdirSync(join(full, 'd'))
        .concat(existsSync(join(full, 'd', 'checkpoint')) ? readdirSync(join(full, 'd', 'checkpoint')) : [])
        .some((x) => x.includes('.tmp-')),
      'no temporary files left',
    );
    const h = sdl('harvest', '--layer', '6', '--tokens', '16k', '--out', join(full, 'h'));
    assert.equal(h.status, 2, h.stderr);
    // Progress lines may come first; the run ends with one line saying what happened.
    assert.match(h.stderr, /(^|\n)sdl: cannot write .*shard-\d+\.arrow: the disk is full; free space or write elsewhere \(--out\)\n$/);
    assert.ok(!readdirSync(join(full, 'h')).some((x) => x.includes('.tmp-')), 'no half-written shard left');
    const e = sdl('export', dict, '--format', 'onnx', '--out', join(full, 'big', 'dictionary.onnx'));
    // A small dictionary fits: the export succeeds or says the disk is full, never a stack trace.
    assert.ok(e.status === 0 || /disk is full/.test(e.stderr), e.stderr);
  } finally {
    spawnSync('umount', [full]);
  }
  const whyRo = mountTmpfs(ro, 'size=1m,ro');
  if (whyRo) return t.skip(whyRo);
  try {
    const f = sdl('fit', '--acts', acts, '--steps', '5', '--out', join(ro, 'd'));
    assert.equal(f.status, 2);
    assert.match(f.stderr, /^sdl: cannot write under .*ro \(read-only or no permission\); choose another --out\n$/);
    const i = sdl('index', dict, '--force', '--acts', acts);
    assert.equal(i.status, 0, 'the dictionary folder itself is writable');
  } finally {
    spawnSync('umount', [ro]);
  }
  assert.ok(statSync(dir).isDirectory());
});

test('no silent fallbacks: each one either works or says so', () => {
  // An index whose harvest model has gone: built, and the note says what it lacks.
  const moved = join(dir, 'acts-moved');
  cpSync(acts, moved, { recursive: true });
  const man = join(moved, 'manifest.json');
  writeFileSync(man, readFileSync(man, 'utf8').replace(/"model_path": "[^"]*"/, `"model_path": "${join(dir, 'gone', 'model.onnx')}"`));
  const dictCopy = join(dir, 'dict-moved');
  cpSync(dict, dictCopy, { recursive: true });
  const ix = sdl('index', dictCopy, '--acts', moved, '--force', '--no-verify');
  assert.equal(ix.status, 0, ix.stderr);
  assert.match(ix.stderr, /note: the harvest's model .*gone.* is gone: the index holds token ids without their text, and no absorption scores/);
  // A JumpReLU dictionary without its threshold tensor is refused, never thresholded at 0.
  const jr = join(dir, 'jr');
  assert.equal(sdl('fit', '--acts', acts, '--activation', 'jumprelu', '--latents', '64', '--steps', '5', '--eval-tokens', '2048', '--out', jr).status, 0);
  const st = readFileSync(join(jr, 'sae_weights.safetensors'));
  const n = Number(st.readBigUInt64LE(0));
  const header = JSON.parse(st.subarray(8, 8 + n).toString('utf8'));
  delete header.threshold;
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(join(jr, 'sae_weights.safetensors'), Buffer.concat([len, Buffer.from(json), st.subarray(8 + n)]));
  const e = sdl('export', jr, '--out', join(dir, 'jr.onnx'));
  assert.equal(e.status, 2);
  assert.match(e.stderr, /^sdl: this jumprelu dictionary has no threshold tensor, which its inference needs; fit or import it again\n$/);
  // A checkpoint without an Adam moment is refused on --resume.
  const ck = join(dir, 'dict', 'checkpoint', 'state.safetensors');
  const c = readFileSync(ck);
  const cn = Number(c.readBigUInt64LE(0));
  const ch = JSON.parse(c.subarray(8, 8 + cn).toString('utf8'));
  delete ch['adam_v.W_enc'];
  let cj = JSON.stringify(ch);
  cj += ' '.repeat(Math.max(0, cn - cj.length));
  assert.equal(cj.length, cn, 'the edited header keeps its length');
  const damaged = join(dir, 'dict-ckpt');
  cpSync(dict, damaged, { recursive: true });
  const edited = Buffer.concat([c.subarray(0, 8), Buffer.from(cj), c.subarray(8 + cn)]);
  writeFileSync(join(damaged, 'checkpoint', 'state.safetensors'), edited);
  const resumeArgs = [...dictFit(), '--out', damaged, '--resume'];
  // Tensors that are not the ones state.json recorded are refused as such...
  const mismatch = sdl(...resumeArgs);
  assert.equal(mismatch.status, 2, mismatch.stderr);
  assert.match(mismatch.stderr, /^sdl: the checkpoint in .* has no tensors file matching its state\.json; it is damaged: start again without --resume\n$/);
  // ...and with the recorded checksum made to match, the missing moment itself is named.
  const statePath = join(damaged, 'checkpoint', 'state.json');
  const stateJson = JSON.parse(readFileSync(statePath, 'utf8'));
  stateJson.tensors_sha256 = createHash('sha256').update(edited).digest('hex');
  writeFileSync(statePath, JSON.stringify(stateJson));
  const r = sdl(...resumeArgs);

  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^sdl: the checkpoint .*state\.safetensors lacks adam_v\.W_enc; it is damaged: start again without --resume\n$/);
  // An unknown SDLKIT_NATIVE value is named, and the run says which engine it used instead.
  const nat = spawnSync(process.execPath, [CLI, 'fit', '--acts', acts, '--latents', '64', '--steps', '3', '--eval-tokens', '2048', '--out', join(dir, 'nat')], {
    encoding: 'utf8',
    env: { ...process.env, SDLKIT_NATIVE: 'avx' },
  });
  assert.equal(nat.status, 0, nat.stderr);
  assert.match(nat.stderr, /note: native kernels not loaded: SDLKIT_NATIVE=avx is not one of off, generic, avx2, avx512; using TensorFlow\.js/);
  // Bad values of the kernels' tuning variables are refused before anything is written.
  for (const [name, value, message] of [
    ['SDLKIT_SCREEN', '3', "SDLKIT_SCREEN must be 0, 1 or 2, got '3'; unset it to screen where it is faster"],
    [
      'SDLKIT_DENSE_ABOVE',
      'half',
      "SDLKIT_DENSE_ABOVE must be a fraction in (0, 1], got 'half'; unset it for the measured default (0.1; for ReLU decoders 0.125 over 1 MiB, 0.15 over 16 MiB, 0.165 over 32 MiB)",
    ],
  ]) {
    const out = join(dir, name);
    const r = spawnSync(process.execPath, [CLI, 'fit', '--acts', acts, '--latents', '64', '--steps', '3', '--out', out], {
      encoding: 'utf8',
      env: { ...process.env, [name]: value },
    });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, `sdl: ${message}\n`);
    assert.equal(existsSync(out), false);
  }
});
