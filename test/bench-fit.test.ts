// bench:fit's --plot (bench/fit.ts): a ReLU+L1 run drawn as an SVG whose lines are the run's own steps, and the
// option's bad uses answered in one line, exit 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tmp } from './helpers.js';

const BENCH = join(ROOT, 'dist/bench/fit.js');

/** The y coordinates of an SVG path `M x,y L x,y ...`, in drawing order. */
const pathYs = (d: string) => [...d.matchAll(/[ML][\d.]+,([\d.]+)/g)].map((m) => Number(m[1]));

test('bench:fit --plot draws a ReLU+L1 run: its time so far rises step by step, each step and its firing drawn', () => {
  const prefix = join(tmp('sdl-bench-fit-'), 'run');
  const steps = 30;
  const r = spawnSync(
    process.execPath,
    [BENCH, '--sizes', '64', '--activations', 'relu', '--relu-steps', String(steps), '--repeats', '1', '--peers', 'none', '--plot', prefix],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const file = `${prefix}-64x512-r1.svg`;
  assert.ok(existsSync(file), r.stdout);
  assert.match(r.stdout, new RegExp(`wrote ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  const svg = readFileSync(file, 'utf8');
  for (const title of ['Time so far', 'Each step', 'Latents firing']) assert.match(svg, new RegExp(`>${title}<`));
  // No peer ran: no peer lines, and none of the 2.5x line.
  assert.doesNotMatch(svg, /PyTorch dense|2\.5x the dense peer/);
  const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1]);
  // Time so far (one point a step; SVG y grows downwards, so a rising line has falling y), the dense and the sparse
  // steps (together one point a step), the firing.
  const [cumulative, ...rest] = paths;
  const ys = pathYs(cumulative);
  assert.equal(ys.length, steps);
  for (let i = 1; i < ys.length; i++) assert.ok(ys[i] < ys[i - 1], `time so far rises at step ${i + 1}: ${ys[i - 1]} -> ${ys[i]}`);
  const firing = pathYs(rest[rest.length - 1]);
  assert.equal(firing.length, steps);
  const eachStep = rest.slice(0, -1).reduce((n, d) => n + pathYs(d).length, 0);
  assert.equal(eachStep, steps, 'every step is drawn once, as a dense-path or a sparse-path step');
});

test('bench:fit --plot without a prefix or without a ReLU+L1 run: one line, exit 2, nothing run', () => {
  for (const args of [
    ['--activations', 'topk', '--plot', join(tmp('sdl-bench-fit-'), 'x')],
    ['--activations', 'relu', '--plot'],
    ['--activations', 'relu', '--plot', '--per-step'],
  ]) {
    const r = spawnSync(process.execPath, [BENCH, '--sizes', '64', '--peers', 'none', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /--plot takes a path prefix/);
    assert.equal(r.stdout, '', 'nothing timed');
  }
});
