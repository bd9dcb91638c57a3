// The feature index against a brute-force computation on a small case, and its queries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { harvest } from '../src/activations/harvest.js';
import { decodeShard } from '../src/activations/shard.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import type { DictConfig } from '../src/sdl/config.js';
import { buildIndex, INDEX_DEFAULTS } from '../src/index/build.js';
import { openIndex, listFeatures, featureDetail, runSql } from '../src/index/query.js';
import { IndexDbWriter, type FirstRows, type SecondRows } from '../src/index/db-writer.js';
import { ExampleStore, TopExamples } from '../src/index/examples.js';
import { BANDS, INNER_EDGES, QuantileExamples, reservoirSlot } from '../src/index/quantiles.js';
import { JsIndexStats } from '../src/index/stats.js';
import { Rng } from '../src/util/rng.js';
import { round4Array, round4Text } from '../src/util/format.js';
import { CLI, corpusFile, tinyLlama, tmp } from './helpers.js';

test('stored frequencies, maxima and top examples equal a brute-force computation; re-runs are no-ops', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const acts = join(dir, 'acts');
  await harvest({
    model,
    hooks: ['blocks.1.hook_resid_post'],
    corpus: corpusFile(dir, 80),
    split: 'all',
    tokens: 2048,
    ctx: 32,
    batch: 8,
    dtype: 'f32',
    seed: 0,
    shardTokens: 1024,
    out: acts,
    quiet: true,
  });
  const site = { name: 'blocks.1.hook_resid_post', width: 16 };
  const cfg: DictConfig = {
    kind: 'sae',
    activation: 'topk',
    sitesIn: [site],
    sitesOut: [site],
    dIn: 16,
    dOut: 16,
    dSae: 40,
    k: 3,
    matryoshkaWidths: [40],
    applyBDecToInput: true,
    noBias: false,
    tied: false,
  };
  const rng = new Rng(2);
  const r = (n: number, s: number) => Float32Array.from({ length: n }, () => rng.normal() * s);
  const d = new Dictionary(cfg, { W_enc: r(16 * 40, 0.5), b_enc: r(40, 0.1), W_dec: r(40 * 16, 0.3), b_dec: r(16, 0.1) });
  const dictDir = join(dir, 'dict');
  d.save(dictDir);
  const res = await buildIndex(dictDir, d, acts, { ...INDEX_DEFAULTS, topK: 5, contextRadius: 3, quiet: true });
  assert.equal(res.tokens, 2048);
  // The examples' part file (written by the second writer, copied in) and the temporary file are gone.
  assert.deepEqual(
    readdirSync(dictDir).filter((f) => f.includes('.tmp-') || f.includes('-examples')),
    [],
  );
  // Brute force.
  const count = new Float64Array(40),
    max = new Float64Array(40);
  const all: { f: number; act: number; window: number; pos: number; token: number }[] = [];
  for (const f of ['shard-00000.arrow', 'shard-00001.arrow']) {
    const s = decodeShard(readFileSync(join(acts, f)));
    const feats = d.encode(s.values.get(site.name)!, s.rows);
    for (let row = 0; row < s.rows; row++)
      for (let i = 0; i < 40; i++) {
        const a = feats[row * 40 + i];
        if (a <= 0) continue;
        count[i]++;
        max[i] = Math.max(max[i], a);
        all.push({ f: i, act: a, window: s.window[row], pos: s.pos[row], token: s.token[row] });
      }
  }
  const db = openIndex(dictDir);
  const rows = listFeatures(db, { limit: 100 });
  assert.equal(rows.length, 40);
  for (const row of rows) {
    assert.equal(row.count, count[row.id], `count of ${row.id}`);
    assert.ok(Math.abs(row.freq - count[row.id] / 2048) < 1e-12);
    assert.ok(Math.abs(row.max_act - max[row.id]) < 1e-4, `max of ${row.id}: ${row.max_act} vs ${max[row.id]}`);
    assert.equal(row.dead, count[row.id] === 0 ? 1 : 0);
    const want = all
      .filter((e) => e.f === row.id)
      .sort((a, b) => b.act - a.act)
      .slice(0, 5);
    const got = featureDetail(db, row.id).examples;
    assert.equal(got.length, want.length);
    got.forEach((g, i) => {
      assert.ok(Math.abs(g.act - want[i].act) < 1e-4, `example ${i} of ${row.id}`);
      const acts = JSON.parse(g.context_acts) as number[];
      assert.ok(Math.abs(acts[g.pos - g.context_start] - g.act) < 1e-3, 'the context holds the firing token');
    });
  }
  // Quantile examples: per (feature, band) min(5, firings in the band), each a real firing of that feature in its band,
  // its context holding the firing token.
  const bandOf = (a: number) => INNER_EDGES.filter((e) => e <= a).length;
  const quantileRows = db.prepare('select feature, band, act, window, pos, token, context_start, context_acts from quantile_examples').all() as {
    feature: number;
    band: number;
    act: number;
    window: number;
    pos: number;
    token: number;
    context_start: number;
    context_acts: string;
  }[];
  assert.ok(quantileRows.length > 0);
  for (let i = 0; i < 40; i++)
    for (let band = 0; band < BANDS; band++) {
      const fired = all.filter((e) => e.f === i && bandOf(e.act) === band);
      const kept = quantileRows.filter((q) => q.feature === i && q.band === band);
      assert.equal(kept.length, Math.min(5, fired.length), `feature ${i} band ${band}`);
      for (const q of kept) {
        assert.ok(
          fired.some((e) => e.window === q.window && e.pos === q.pos && e.token === q.token && Math.abs(e.act - q.act) < 1e-4),
          `quantile example of ${i} at window ${q.window} pos ${q.pos} is a firing in band ${band}`,
        );
        assert.ok(Math.abs((JSON.parse(q.context_acts) as number[])[q.pos - q.context_start] - q.act) < 1e-3);
      }
    }
  assert.deepEqual(
    listFeatures(db, { dead: true, limit: 100 }).map((x) => x.id),
    Array.from(count.keys()).filter((i) => count[i] === 0),
  );
  assert.deepEqual(
    listFeatures(db, { sort: 'freq', limit: 3 }).map((x) => x.count),
    [...count].sort((a, b) => b - a).slice(0, 3),
  );
  assert.throws(() => runSql(db, 'delete from features'), /read-only SELECT/);
  assert.throws(() => featureDetail(db, 99), /feature 99 does not exist; the dictionary has features 0-39/);
  // Each (token, feature) pair's firing count and mean activation (written in the table's key order).
  const pairs = new Map<string, { count: number; sum: number }>();
  for (const e of all) {
    const p = pairs.get(`${e.token}:${e.f}`) ?? { count: 0, sum: 0 };
    p.count++;
    p.sum += e.act;
    pairs.set(`${e.token}:${e.f}`, p);
  }
  const tf = db.prepare('select token, feature, count, mean_act from token_features').all() as {
    token: number;
    feature: number;
    count: number;
    mean_act: number;
  }[];
  assert.equal(tf.length, pairs.size);
  for (const r of tf) {
    const want = pairs.get(`${r.token}:${r.feature}`);
    assert.equal(r.count, want?.count, `token ${r.token}, feature ${r.feature}`);
    assert.ok(Math.abs(r.mean_act - want!.sum / want!.count) < 1e-4);
  }
  // The lookups' secondary indexes exist (made once the rows are in) and the planner uses them.
  const indexes = (db.prepare("select name from sqlite_master where type = 'index' and name not like 'sqlite_%'").all() as { name: string }[]).map(
    (r) => r.name,
  );
  for (const n of ['features_freq', 'features_max', 'features_dead', 'features_dense', 'token_features_feature', 'features_absorption'])
    assert.ok(indexes.includes(n), n);
  const plan = JSON.stringify(db.prepare('explain query plan select * from token_features where feature = 3').all());
  assert.match(plan, /token_features_feature/);
  db.close();
  const mtime = statSync(join(dictDir, 'index.sqlite')).mtimeMs;
  const again = await buildIndex(dictDir, d, acts, { ...INDEX_DEFAULTS, topK: 5, contextRadius: 3, quiet: true });
  assert.ok(again.upToDate);
  assert.equal(statSync(join(dictDir, 'index.sqlite')).mtimeMs, mtime);
  // The query commands.
  const top = spawnSync(process.execPath, [CLI, 'features', dictDir, '--sort', 'max', '--limit', '2', '--json'], { encoding: 'utf8' });
  assert.equal(top.status, 0, top.stderr);
  assert.equal(JSON.parse(top.stdout).length, 2);
  const one = spawnSync(process.execPath, [CLI, 'feature', dictDir, String(JSON.parse(top.stdout)[0].id)], { encoding: 'utf8' });
  assert.match(one.stdout, /top contexts:\n {2}\s*\d+\.\d{3} {2}.*\[\[/);
  const tokenSearch = spawnSync(process.execPath, [CLI, 'search', dictDir, '--token', ' the', '--json'], { encoding: 'utf8' });
  assert.equal(tokenSearch.status, 0, tokenSearch.stderr);
  const textSearch = spawnSync(process.execPath, [CLI, 'search', dictDir, '--text', 'the whale and the sea', '--json'], { encoding: 'utf8' });
  assert.equal(textSearch.status, 0, textSearch.stderr);
  const perToken = JSON.parse(textSearch.stdout);
  assert.equal(perToken[0].token, '<s>');
  assert.ok(
    perToken.every((t: { features: unknown[] }) => t.features.length <= 3),
    'TopK 3: at most 3 features per token',
  );
  const bad = spawnSync(process.execPath, [CLI, 'features', dictDir, '--where', 'freq > 0; drop table features'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  // A shard damaged after the harvest, found in the pass once the index's threads have started: the build fails with
  // the shard named, its threads stopped (else this test would not end) and no file of theirs left behind.
  const damaged = join(dir, 'damaged');
  cpSync(acts, damaged, { recursive: true });
  const shard = join(damaged, 'shard-00001.arrow');
  const bytes = readFileSync(shard);
  bytes[bytes.length >> 1] ^= 1;
  writeFileSync(shard, bytes);
  for (const f of readdirSync(dictDir)) if (f.startsWith('index.sqlite')) rmSync(join(dictDir, f)); // the index and its readers' WAL files
  await assert.rejects(
    buildIndex(dictDir, d, damaged, { ...INDEX_DEFAULTS, topK: 5, contextRadius: 3, quiet: true }),
    /shard-00001\.arrow does not match the checksum/,
  );
  assert.deepEqual(
    readdirSync(dictDir).filter((f) => f.startsWith('index.sqlite')),
    [],
  );
});

test('the index writer thread: a file it cannot open is an error, not a hang; an aborted index leaves no file', async () => {
  const first = (): FirstRows => ({
    examples: new TopExamples(2, 3, new ExampleStore(3)).lists(),
    quantiles: new QuantileExamples(2, 5, 1).lists(new Int32Array(2 * BANDS)),
  });
  const second = (): SecondRows => ({
    meta: [['tokens', '0']],
    features: {
      count: new Float64Array(2),
      sum: new Float64Array(2),
      max: new Float32Array(2),
      hist: new Uint32Array(2),
      bins: 1,
      tokens: 0,
      denseThreshold: 0.1,
      decoderNorm: new Float32Array(2),
      encDecCos: new Float32Array(2),
    },
    neighbors: { n: 1, other: new Int32Array([1, 0]), cosine: new Float32Array([0.5, 0.5]) },
  });
  const bad = new IndexDbWriter(join(tmp(), 'no-such-folder', 'index.sqlite'));
  bad.first(first());
  await assert.rejects(bad.finish(second()), /directory does not exist/);
  await bad.abort();
  // A complete write: both rows, the neighbours and the secondary indexes.
  const ok = join(tmp(), 'index.sqlite');
  const w = new IndexDbWriter(ok);
  w.first(first());
  await w.finish(second());
  const db = openIndex(dirname(ok));
  assert.deepEqual(runSql(db, 'select feature, other from neighbors order by feature'), [
    { feature: 0, other: 1 },
    { feature: 1, other: 0 },
  ]);
  db.close();
  // Aborted after its first rows: the file it had begun is removed.
  const gone = join(tmp(), 'index.sqlite');
  const a = new IndexDbWriter(gone);
  a.first(first());
  await new Promise((r) => setTimeout(r, 300));
  await a.abort();
  assert.equal(existsSync(gone), false);
});

test('context activations are written as String(Math.round(v * 1e4) / 1e4) would print them, from integers', () => {
  const want = (v: number) => String(Math.round(v * 1e4) / 1e4);
  const edges = [
    0,
    -0,
    1e-5,
    -1e-5,
    5e-5,
    -5e-5,
    0.0001,
    0.00015,
    0.5,
    -0.5,
    1,
    -1,
    10.05,
    123.4567,
    -123.45675,
    99999.99995,
    1e10,
    1e11 + 0.5,
    1e12,
    -1e13,
    1e21,
    3e300,
  ];
  const special = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
  for (const v of [...edges, ...special, ...edges.map(Math.fround)]) assert.equal(round4Text(v), want(v), `value ${v}`);
  // Activations as stored (float32), over 12 orders of magnitude, both signs.
  const rng = new Rng(7);
  for (let i = 0; i < 200_000; i++) {
    const v = Math.fround((rng.next() - 0.3) * Math.exp(rng.next() * 28 - 14));
    if (round4Text(v) !== want(v)) assert.fail(`value ${v}: ${round4Text(v)} vs ${want(v)}`);
  }
  const a = Float32Array.from([0.5, 1.23456, 0, -2, 1e-6]);
  assert.equal(round4Array(a), JSON.stringify(Array.from(a, (v) => Math.round(v * 1e4) / 1e4)));
  assert.equal(round4Array(new Float32Array(0)), '[]');
});

test('quantile examples are uniform reservoir samples: each firing equally likely to be kept, draws independent across features', () => {
  // 200 features firing on every one of 10,000 rows (5 chunks) in one band; 5 kept each: 1,000 kept rows in all.
  const m = 200,
    rows = 2000,
    chunks = 5,
    perBand = 5;
  const stats = new JsIndexStats({ m, vocab: 0, topK: 1, radius: 0, cooccurrence: 0, edges: new Float32Array(0), perBand, bandEdges: INNER_EDGES });
  const start = Int32Array.from({ length: rows + 1 }, (_, r) => r * m);
  const idx = Int32Array.from({ length: rows * m }, (_, q) => q % m);
  const val = new Float32Array(rows * m).fill(0.5);
  const kept = new Int32Array(m * perBand).fill(-1); // global row in each (feature, slot)
  // Each row's document id is its global row number: the examples kept say which rows they came from.
  for (let c = 0; c < chunks; c++)
    stats.add(
      start,
      idx,
      val,
      new Int32Array(rows),
      Int32Array.from({ length: rows }, (_, r) => r),
      Int32Array.from({ length: rows }, (_, r) => c * rows + r),
      new Int32Array(rows),
    );
  const res = stats.result();
  const q = res.quantiles;
  for (let i = 0; i < m; i++) {
    assert.equal(q.off[i + 1] - q.off[i], perBand);
    for (let e = q.off[i]; e < q.off[i + 1]; e++) {
      assert.equal(q.band?.[e], 3, '0.5 lies in [0.3, 1)');
      kept[i * perBand + e - q.off[i]] = q.store.doc[q.slots[e]];
    }
  }
  const N = rows * chunks;
  assert.ok(kept.every((r) => r >= 0));
  assert.ok(res.qSeen.every((s, key) => s === (key % BANDS === 3 ? N : 0)));
  // Uniform over the 10,000 rows: the mean position within 0.03 of 0.5 (3 standard errors), each quarter near 1/4.
  const mean = kept.reduce((a, r) => a + r / N, 0) / kept.length;
  assert.ok(Math.abs(mean - 0.5) < 0.03, `mean kept position ${mean}`);
  for (let qtr = 0; qtr < 4; qtr++) {
    const share = kept.filter((r) => Math.floor((4 * r) / N) === qtr).length / kept.length;
    assert.ok(Math.abs(share - 0.25) < 0.05, `quarter ${qtr}: ${share}`);
  }
  // Independent across features: the kept sets differ (a shared stream or a hash of n alone would repeat them).
  const sets = new Set(Array.from({ length: m }, (_, i) => Array.from(kept.subarray(i * perBand, (i + 1) * perBand)).join(',')));
  assert.ok(sets.size > m * 0.99, `${sets.size} distinct kept sets of ${m}`);
  // The draw is a slot in [0, n).
  for (let n = 1; n < 5000; n += 7) assert.ok(reservoirSlot(12345, n) < n);
});
