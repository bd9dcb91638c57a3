// The module layout keeps its promises: the native training path and the query commands never load
// TensorFlow.js (it loads only when it is the engine), training never loads apache-arrow, and no module imports one
// that imports it back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CLI, ROOT, tmp } from './helpers.js';

function loaded(args: string[], env: Record<string, string> = {}): string[] {
  const log = join(tmp(), 'imports.log');
  const r = spawnSync(process.execPath, ['--import', join(ROOT, 'test/fixtures/record-imports.mjs'), CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env, SDL_IMPORT_LOG: log },
  });
  assert.equal(r.status, 0, r.stderr);
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

test('sdl fit on the native kernels loads no TensorFlow.js and no apache-arrow; --backend wasm loads TensorFlow.js', () => {
  const dir = tmp();
  const acts = join(dir, 'acts');
  assert.equal(spawnSync(process.execPath, [CLI, 'harvest', '--layer', '6', '--tokens', '8k', '--out', acts]).status, 0);
  const nat = loaded(['fit', '--acts', acts, '--steps', '3', '--eval-tokens', '1024', '--latents', '64', '--out', join(dir, 'a')]);
  assert.ok(
    nat.some((u) => u.includes('node_modules/yargs')),
    'the log records package modules',
  );
  assert.deepEqual(
    nat.filter((u) => u.includes('@tensorflow')),
    [],
  );
  // Shards are read by range without apache-arrow (arrow-layout.ts reads the footer): it loads where shards are written.
  assert.deepEqual(
    nat.filter((u) => u.includes('apache-arrow')),
    [],
  );
  const harvested = loaded(['harvest', '--layer', '6', '--tokens', '4k', '--out', join(dir, 'acts2')]);
  assert.ok(harvested.includes('require:apache-arrow'), 'CommonJS packages loaded on first use are recorded');
  const wasm = loaded(['fit', '--acts', acts, '--steps', '3', '--eval-tokens', '1024', '--latents', '64', '--backend', 'wasm', '--out', join(dir, 'b')]);
  assert.ok(wasm.some((u) => u.includes('@tensorflow')));
});

test('no import cycles among the source modules', () => {
  const src = join(ROOT, 'src');
  const files: string[] = [];
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  walk(src);
  const edges = new Map<string, string[]>();
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    // Static imports, type-only ones included (a cycle of types is still a tangle); dynamic import() is how a cycle is broken on purpose.
    const deps = [...text.matchAll(/^(?:import|export)[^'"\n]*?from\s+'(\.{1,2}\/[^']+)'/gm)].map((m) => resolve(dirname(f), m[1]).replace(/\.js$/, '.ts'));
    edges.set(f, deps);
  }
  const state = new Map<string, number>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (f: string) => {
    state.set(f, 1);
    stack.push(f);
    for (const g of edges.get(f) ?? []) {
      if (state.get(g) === 1) cycles.push([...stack.slice(stack.indexOf(g)), g].map((p) => p.slice(src.length + 1)).join(' -> '));
      else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, 2);
  };
  for (const f of files) if (!state.has(f)) visit(f);
  assert.deepEqual(cycles, []);
});
