// The activation registry is the one list of activations: its native codes equal the C++ enum the kernels switch
// on, every activation the CLI offers is in it, and each record's traits are consistent with one another.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ACTIVATIONS, ACTIVATION_NAMES, KINDS, needsThreshold } from '../src/sdl/activations.js';
import { ROOT } from './helpers.js';

test('the TypeScript activation table equals the C++ enum (names and codes)', () => {
  const header = readFileSync(join(ROOT, 'native/src/engine.h'), 'utf8');
  const m = /enum Activation \{([^}]*)\}/.exec(header);
  assert.ok(m, 'engine.h declares enum Activation');
  const cpp = Object.fromEntries(
    m![1]
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean)
      .map((e) => {
        const [name, code] = e.split('=').map((x) => x.trim());
        return [name.toLowerCase(), Number(code)];
      }),
  );
  const ts = Object.fromEntries(ACTIVATION_NAMES.map((a) => [a, ACTIVATIONS[a].nativeCode]));
  assert.deepEqual(ts, cpp);
});

test('every activation record is consistent', () => {
  for (const a of ACTIVATION_NAMES) {
    const s = ACTIVATIONS[a];
    assert.equal(s.usesK, s.selection === 'topk' || s.selection === 'batch', `${a}: k is a setting exactly for the TopK family`);
    assert.equal(
      needsThreshold(a),
      s.selection === 'batch' || s.selection === 'threshold',
      `${a}: a stored threshold exactly where selection is not per token`,
    );
    assert.equal(s.sparsity === 'none', s.defaultSparsity === 0, `${a}: a default coefficient exactly where there is a sparsity term`);
    if (s.sparsity === 'l0') assert.equal(s.selection, 'threshold');
    if (s.auxk) assert.ok(s.usesK);
    if (s.nested) assert.equal(s.selection, 'batch');
  }
  assert.deepEqual(Object.keys(KINDS), ['sae', 'transcoder', 'crosscoder', 'clt']);
  // Only kinds that read their own site subtract b_dec from the input.
  assert.equal(KINDS.clt.applyBDecToInput, false);
});
