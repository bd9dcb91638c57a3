// bench:harvest (bench/harvest.ts): a small run's table row, whose CPU figures (every thread of the process, per
// million tokens) hang together: the harvest's extra is its CPU over the bare passes around it; bad values exit 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { ROOT, tmp } from './helpers.js';

const BENCH = join(ROOT, 'dist/bench/harvest.js');
const MODEL = join(ROOT, 'models/sdl-tiny');

test('bench:harvest: one repeat on the bundled model gives its row, with CPU seconds per million tokens that add up', () => {
  const r = spawnSync(process.execPath, [BENCH, '--model', MODEL, '--tokens', '16384', '--repeats', '1', '--bare', 'harvest'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[1], /CPU s per 1M tokens: bare; harvest; harvest's extra, paired \|$/);
  const cells = lines[3].split('|').map((c) => c.trim());
  assert.equal(cells[1], MODEL);
  // "bare (min-max); harvest (min-max); extra (min-max)": one repeat, so the harvest's and the extra's spread is one value.
  const m = /^([\d.]+) \(([\d.]+)-([\d.]+)\); ([\d.]+) \(([\d.]+)-([\d.]+)\); (-?[\d.]+) \((-?[\d.]+)-(-?[\d.]+)\)$/.exec(cells[9]);
  assert.ok(m, `the CPU cell: ${cells[9]}`);
  const [bare, bareLo, bareHi, harvest, , , extra] = m.slice(1).map(Number);
  assert.ok(bare > 0 && harvest > 0, `${bare} and ${harvest} CPU s per 1M tokens`);
  assert.ok(bareLo <= bare && bare <= bareHi);
  // The bare passes before and after the harvest: their median is their mean, and the extra is the harvest's CPU over it.
  assert.ok(Math.abs(extra - (harvest - bare)) <= 0.011, `extra ${extra} = harvest ${harvest} - bare ${bare}`);
  // The harvest does the forward's work and more (it tokenizes, places, checks and writes): it cannot take less CPU
  // than a tenth of the bare pass, whatever the machine's noise.
  assert.ok(harvest > 0.1 * bare);
});

test('bench:harvest: a bad option is one line and exit 2', () => {
  const r = spawnSync(process.execPath, [BENCH, '--model', MODEL, '--tokens', '16384', '--format', 'csv'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /--format csv: give arrow \(default\) or parquet/);
});

test('bench:harvest --token-cache warm: the harvests read their windows from a cache of the bench own, removed at the end', () => {
  const temp = tmp();
  const r = spawnSync(process.execPath, [BENCH, '--model', MODEL, '--tokens', '16384', '--repeats', '1', '--bare', 'harvest', '--token-cache', 'warm'], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, TMPDIR: temp },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /f32 arrow shards; windows from the token cache \+ write; layout\)/);
  assert.deepEqual(
    readdirSync(temp).filter((f) => f.startsWith('bench-cache-')),
    [],
  );
  const bad = spawnSync(process.execPath, [BENCH, '--model', MODEL, '--token-cache', 'hot'], { encoding: 'utf8', cwd: ROOT });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^sdl: --token-cache hot: give cold \(default\) or warm\n$|--token-cache hot: give cold \(default\) or warm/);
});
