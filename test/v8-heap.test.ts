// src/util/v8-heap.ts. holdYoungGeneration: set while the process runs, V8's young generation does not grow through an
// allocation pattern that, in a control process, makes it grow (V8 may still shrink it). collectGarbage: collects now.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

// Objects that survive a scavenge or two (a sliding window of 20,000): 300k allocated to start (the young generation
// grows, as a program's start makes it), then 3M, past its growth threshold many times over. Prints the new space's
// size between the two and at the end, in KiB.
const churn = (hold: boolean) => `
  import { getHeapSpaceStatistics } from 'node:v8';
  import { holdYoungGeneration } from ${JSON.stringify(join(ROOT, 'dist/src/util/v8-heap.js'))};
  const size = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size >> 10;
  const keep = [];
  const allocate = (n) => {
    for (let i = 0; i < n; i++) {
      const o = { i, a: new Array(8).fill(i) };
      if (i % 10 === 0) keep.push(o);
      if (keep.length > 20000) keep.splice(0, 10000);
    }
  };
  allocate(3e5);
  ${hold ? 'holdYoungGeneration();' : ''}
  const before = size();
  allocate(3e6);
  console.log(JSON.stringify({ before, after: size() }));`;

function newSpace(hold: boolean): { before: number; after: number } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', churn(hold)], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('holdYoungGeneration: the young generation does not grow where it otherwise grows', () => {
  const control = newSpace(false);
  assert.ok(
    control.after > control.before,
    `the control's young generation did not grow (${control.before} -> ${control.after} KiB): this allocation pattern no longer tests the hold`,
  );
  const held = newSpace(true);
  assert.ok(held.after <= held.before, `held, it grew: ${held.before} -> ${held.after} KiB`);
});

test('collectGarbage: an object nothing references is gone right after it, without --expose-gc', async () => {
  const { collectGarbage } = await import('../src/util/v8-heap.js');
  const make = () => new WeakRef({ big: new Array(1000).fill(1) });
  const refs = Array.from({ length: 5 }, make);
  await new Promise((r) => setImmediate(r)); // WeakRef targets stay alive to the end of the turn that made them
  collectGarbage();
  assert.equal(refs.filter((w) => w.deref() !== undefined).length, 0);
  collectGarbage(); // a second call reuses the gc it was given
});
