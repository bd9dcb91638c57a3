// bench:memory (bench/memory.ts): the peak of each 200 ms window, read from /proc and reset after each read, so that
// each million tokens gets its own peak beside the peak so far; and its bad values answered in one line, exit 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { peakSinceLast } from '../bench/proc-memory.js';
import { CLI, ROOT, tmp } from './helpers.js';

const BENCH = join(ROOT, 'dist/bench/memory.js');
const skip = existsSync('/proc/self/clear_refs') ? false : 'needs Linux /proc';

test('peakSinceLast: a freed 160 MB block is in the first read and gone from the next (the reset took effect)', { skip }, async () => {
  // The child touches 160 MB, lets it go (a Buffer this large is mapped whole and unmapped when collected), then idles.
  const child = spawn(
    process.execPath,
    ['--expose-gc', '-e', "let b = Buffer.alloc(160 << 20, 1); b = null; gc(); console.log('freed'); setTimeout(() => {}, 20000);"],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((ok) => child.stdout.on('data', (d) => /freed/.test(String(d)) && ok()));
    const first = peakSinceLast(child.pid!);
    const second = peakSinceLast(child.pid!);
    assert.ok(first !== undefined && second !== undefined);
    assert.ok(first > 160 * 1024, `the first window's peak ${first} KiB holds the 160 MB block`);
    assert.ok(second < first - 120 * 1024, `the second window's peak ${second} KiB is after the reset (first ${first} KiB)`);
  } finally {
    child.kill();
  }
  await new Promise((ok) => child.on('exit', ok));
  assert.equal(peakSinceLast(child.pid!), undefined, 'a process that is gone reads undefined');
});

test('peakSinceLast: a process that has exited but is not yet reaped (a zombie, no memory lines) reads undefined, not NaN', { skip }, async () => {
  // sh starts a short sleep in the background and becomes a long one (exec): the short one, once it exits, is a
  // zombie child of a process that never reaps it.
  const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const pid = Number(await new Promise<string>((ok) => parent.stdout.once('data', (d) => ok(String(d).trim()))));
    await new Promise((ok) => setTimeout(ok, 700));
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /State:\s+Z/, 'the child is a zombie');
    assert.doesNotMatch(status, /VmHWM/);
    assert.equal(peakSinceLast(pid), undefined);
  } finally {
    parent.kill();
  }
});

test('bench:memory: a peak within each million and the peak so far, consistent; bad values exit 2 in one line', { skip }, () => {
  const dir = tmp('sdl-bench-memory-test-');
  const acts = join(dir, 'acts');
  const s = spawnSync(process.execPath, [CLI, 'synth', '-n', '200', '--np', '64', '-N', '40k', '--out', acts], { encoding: 'utf8' });
  assert.equal(s.status, 0, s.stderr);
  const json = join(dir, 'm.json');
  const args = ['--acts', acts, '--latents', '512', '--k', '16', '--batch', '1024', '--tokens', '2M', '--json', json, '--', '--eval-tokens', '1024'];
  const r = spawnSync(process.execPath, [BENCH, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\| 64 x 512 \| 2000000 \|/);
  const m = JSON.parse(readFileSync(json, 'utf8')) as {
    peakWithinMillionMiB: number[];
    peakSoFarMiB: number[];
    endMiB: number;
    boundMiB: number;
    windows: { step: number; hwm: number }[];
    windowCount: number;
  };
  assert.equal(m.peakWithinMillionMiB.length, 2);
  assert.equal(m.peakSoFarMiB.length, 2);
  assert.ok(m.windowCount > 0 && m.windows.length === m.windowCount);
  for (let i = 0; i < 2; i++) assert.ok(m.peakWithinMillionMiB[i] > 0 && m.peakWithinMillionMiB[i] <= m.peakSoFarMiB[i]);
  assert.ok(m.peakSoFarMiB[1] >= m.peakSoFarMiB[0]);
  assert.equal(m.endMiB, Math.max(...m.peakWithinMillionMiB));
  assert.equal(m.endMiB, m.peakSoFarMiB[1]);
  assert.ok(
    m.windows.every((w, i) => i === 0 || w.step >= m.windows[i - 1].step),
    'windows in step order',
  );
  // 1.5 x (3 x (2 x 64 x 512 + 512 + 64) x 4 + 1024 x 64 x 4) bytes
  assert.equal(m.boundMiB, Number(((1.5 * (3 * (2 * 64 * 512 + 576) * 4 + 1024 * 64 * 4)) / (1 << 20)).toFixed(1)));

  // Its own bad value: its one line. The fit's (a folder that is not there): the fit's own line after the command.
  for (const [bad, line] of [
    [['--tokens', 'abc'], /^bench:memory: --tokens must be a number/],
    [['--acts', join(dir, 'nothing-here')], /^sdl: activations folder .*nothing-here not found/],
  ] as const) {
    const b = spawnSync(process.execPath, [BENCH, ...bad], { encoding: 'utf8' });
    assert.equal(b.status, 2, `${bad.join(' ')}: ${b.stderr}`);
    assert.match(b.stderr.trim().split('\n').at(-1)!, line);
  }
});
