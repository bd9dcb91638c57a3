// First-letter absorption on a constructed case: one token of letter 'a' is carried by another latent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstLetter, measureAbsorption } from '../src/analysis/absorption.js';
import { Rng } from '../src/util/rng.js';

test('word tokens are classed by first letter; an absorbing latent is found and scored', () => {
  assert.equal(firstLetter(' Whale'), 22);
  assert.equal(firstLetter('\u2581ship'), 18);
  assert.equal(firstLetter(' a'), -1);
  assert.equal(firstLetter('3rd'), -1);
  const d = 26,
    dSae = 27,
    n = 10400;
  const rng = new Rng(1);
  const x = new Float32Array(n * d),
    label = new Int32Array(n),
    token = new Int32Array(n);
  const feats: { ids: Int32Array; vals: Float32Array }[] = [];
  for (let i = 0; i < n; i++) {
    const c = i % 26;
    label[i] = c;
    token[i] = c * 100 + rng.int(20); // 20 words per letter; word 0 of letter 'a' is absorbed
    for (let j = 0; j < d; j++) x[i * d + j] = 0.05 * rng.normal();
    x[i * d + c] += 2;
    const absorbed = c === 0 && token[i] === 0;
    feats.push(absorbed ? { ids: Int32Array.of(26), vals: Float32Array.of(2) } : { ids: Int32Array.of(c), vals: Float32Array.of(2) });
  }
  // Decoder: latent i writes e_i; latent 26 (the absorber) also writes e_0.
  const W_dec = new Float32Array(dSae * d);
  for (let i = 0; i < 26; i++) W_dec[i * d + i] = 1;
  W_dec[26 * d + 0] = 1;
  const r = measureAbsorption({ x, label, token, feats }, d, W_dec, d, dSae);
  assert.equal(r.letters.length, 26, 'every letter is probed well on this clean case');
  const a = r.letters.find((l) => l.letter === 'a')!;
  assert.deepEqual(a.main, [0]);
  // One word in 20 is carried by the absorber: too rare to be a "split" main latent (< 0.03 F1), so it absorbs.
  assert.ok(a.meanAbsorption > 0 && a.meanAbsorption < 0.1, `letter a absorption ${a.meanAbsorption}`);
  assert.ok(Math.abs(a.fullAbsorptionRate - a.meanAbsorption) < 1e-9, 'absorbed tokens are fully absorbed (the main latent is silent)');
  for (const l of r.letters.filter((x) => x.letter !== 'a')) assert.equal(l.meanAbsorption, 0);
  assert.ok((r.latentScore.get(26) ?? 0) > 0.9, 'the absorbing latent is the top absorber where it fires');
});
