// Shard files as sdlkit writes and reads them. Its own Parquet shards (src/activations/parquet-shard.ts) and the
// Thrift compact protocol under them: the bytes the protocol's specification gives, files that two independent
// readers (parquet-wasm: Rust's parquet crate; DuckDB: C++) read back as the Arrow shard's table, reads by range across
// pages, older compressed shards. Damaged Parquet and Arrow files read without their checksum.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, cpSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Field, Int32, Schema, Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { ThriftReader, ThriftWriter, T, list, type ThriftStruct } from '../src/util/thrift-compact.js';
import { INDEX_COLUMNS, ShardBuffer, decodeShard, encodeShard, encodeShardParquet, type Dtype } from '../src/activations/shard.js';
import { parquetLayout } from '../src/activations/parquet-shard.js';
import { arrowLayout, readColumnRows } from '../src/activations/arrow-layout.js';
import { readShard } from '../src/activations/reader.js';
import { parquetWasm } from '../src/activations/parquet.js';
import { readManifest, writeManifest, type Manifest } from '../src/activations/manifest.js';
import { crc32c } from '../src/util/checksum.js';
import { UserError } from '../src/util/errors.js';
import { sha256 } from '../src/util/fsx.js';
import { Rng } from '../src/util/rng.js';
import { CLI, tmp } from './helpers.js';

test('Thrift compact protocol: the specification’s bytes for field headers, zigzag varints, lists; what is written reads back', () => {
  const bytes = (s: Parameters<ThriftWriter['struct']>[0]) => Array.from(new ThriftWriter().struct(s).finish());
  // Field 1 (delta 1) of type i32 (5) in one byte 0x15, zigzag(0) = 0, then the stop byte.
  assert.deepEqual(bytes({ 1: [T.I32, 0] }), [0x15, 0x00, 0x00]);
  assert.deepEqual(bytes({ 1: [T.I32, -1] }), [0x15, 0x01, 0x00]);
  assert.deepEqual(bytes({ 1: [T.I32, 64] }), [0x15, 0x80, 0x01, 0x00], 'zigzag(64) = 128: two varint bytes');
  // Field 20 is 20 past the last: long form (type byte, zigzag varint id 40), then i64 300 as zigzag 600 = 0xd8 0x04.
  assert.deepEqual(bytes({ 20: [T.I64, 300] }), [0x06, 0x28, 0xd8, 0x04, 0x00]);
  // A boolean field carries its value in the type nibble; a binary is its varint length and bytes.
  assert.deepEqual(bytes({ 2: [T.TRUE, true], 3: [T.TRUE, false], 4: [T.BINARY, 'ab'] }), [0x21, 0x12, 0x18, 0x02, 0x61, 0x62, 0x00]);
  // A list of under 15: size and element type in one byte; of 15 or more: 0xf0 | type, then the size.
  assert.deepEqual(bytes({ 1: [T.LIST, list(T.I32, [1, 2])] }), [0x19, 0x25, 0x02, 0x04, 0x00]);
  assert.deepEqual(bytes({ 1: [T.LIST, list(T.I32, new Array(15).fill(0))] }).slice(0, 3), [0x19, 0xf5, 0x0f]);

  const big = 2 ** 40 + 3;
  const written = new ThriftWriter()
    .struct({
      1: [T.I32, -123456],
      2: [T.I64, big],
      3: [T.I64, -big],
      4: [T.BINARY, 'ARROW:schema'],
      5: [T.LIST, list(T.STRUCT, [{ 1: [T.I16, 7] }, {}])],
      6: [T.LIST, list(T.TRUE, [true, false, true])],
      40: [T.STRUCT, { 15: [T.STRUCT, {}] }],
      41: [
        T.LIST,
        list(
          T.BINARY,
          Array.from({ length: 20 }, (_, i) => `p${i}`),
        ),
      ],
    })
    .finish();
  const r = new ThriftReader(written);
  const s = r.struct();
  assert.equal(r.at, written.length, 'read to the stop byte');
  assert.equal(s.get(1), -123456);
  assert.equal(s.get(2), big);
  assert.equal(s.get(3), -big);
  assert.equal(new TextDecoder().decode(s.get(4) as Uint8Array), 'ARROW:schema');
  const structs = s.get(5) as Map<number, unknown>[];
  assert.equal(structs.length, 2);
  assert.equal(structs[0].get(1), 7);
  assert.equal(structs[1].size, 0);
  assert.deepEqual(s.get(6), [true, false, true]);
  assert.ok((s.get(40) as Map<number, Map<number, unknown>>).get(15) instanceof Map);
  assert.equal((s.get(41) as Uint8Array[]).length, 20);
  // Bytes that end inside a value, and a varint that never ends, are errors, not garbage.
  assert.throws(() => new ThriftReader(written.subarray(0, 6)).struct(), RangeError);
  assert.throws(() => new ThriftReader(new Uint8Array([0x16, ...new Array(12).fill(0xff)])).struct(), /varint|end inside/);
  assert.throws(() => new ThriftWriter().struct({ 1: [T.I64, 2 ** 60] }), /not an integer/);
});

/** A shard of `rows` rows: a 300-wide site (873 rows to a 1 MiB page of float32: several pages) and a 1-wide one. */
function shard(rows: number): ShardBuffer {
  const buf = new ShardBuffer(rows, [
    { name: 'blocks.0.hook_resid_post', width: 300 },
    { name: 'blocks.0.hook_mlp_out', width: 1 },
  ]);
  for (let r = 0; r < rows; r++) {
    buf.doc[r] = r >> 6;
    buf.window[r] = r >> 7;
    buf.pos[r] = r & 63;
    buf.token[r] = (r * 7919) % 32000;
    for (let j = 0; j < 300; j++) buf.values[0][r * 300 + j] = Math.sin(r * 300 + j) * 4;
    buf.values[1][r] = -r / 3;
  }
  // A -0, a subnormal and the largest half: stored as they are.
  buf.values[0][5] = -0;
  buf.values[0][6] = 2 ** -20;
  buf.values[0][7] = 65504;
  buf.rows = rows;
  return buf;
}

const META = { sdlkit_identity: 'abc123', shard: '7' };

test('Parquet shards: parquet-wasm and DuckDB read the Arrow shard’s table; read by range across pages, in place', async () => {
  const dir = tmp();
  const { DuckDBInstance } = await import('@duckdb/node-api');
  const con = await (await DuckDBInstance.create(':memory:')).connect();
  try {
    for (const dtype of ['f32', 'f16'] as Dtype[]) {
      const rows = 2000;
      const buf = shard(rows);
      const file = join(dir, `s-${dtype}.parquet`);
      const chunks = encodeShardParquet(buf, dtype, META);
      assert.ok(
        chunks.some((c) => c.buffer === buf.doc.buffer),
        'the index columns are written from where they lie',
      );
      writeFileSync(file, Buffer.concat(chunks));
      const want = decodeShard(encodeShard(buf, dtype, META));

      // parquet-wasm (arrow-rs) reads it as the Arrow shard: columns, widths, values bit for bit, metadata.
      const viaWasm = decodeShard(new Uint8Array(readFileSync(file)), undefined, 'parquet');
      assert.equal(viaWasm.rows, rows);
      for (const c of ['doc', 'window', 'pos', 'token'] as const) assert.deepEqual(viaWasm[c], want[c], `${dtype} ${c}`);
      assert.deepEqual(viaWasm.widths, want.widths);
      for (const [name, v] of want.values) assert.deepEqual(viaWasm.values.get(name), v, `${dtype} ${name}`);
      assert.deepEqual(Object.fromEntries(viaWasm.metadata), META);

      // DuckDB reads the lists and the values.
      const q = await con.runAndReadAll(
        `select count(*)::int n, sum(token)::bigint t, min(len("blocks.0.hook_resid_post"))::int w, ` +
          `max("blocks.0.hook_resid_post"[8])::double big, sum("blocks.0.hook_mlp_out"[1])::double m from read_parquet('${file}')`,
      );
      const [n, t, w, big, m] = q.getRows()[0] as [number, bigint, number, number, number];
      assert.equal(n, rows);
      assert.equal(
        Number(t),
        Array.from(want.token).reduce((a, b) => a + b, 0),
      );
      assert.equal(w, 300);
      assert.equal(big, 65504);
      const mlp = want.values.get('blocks.0.hook_mlp_out')!;
      assert.ok(Math.abs(m - mlp.reduce((a, b) => a + b, 0)) < 1e-6 * rows * rows, `${dtype}: DuckDB's sum ${m}`);

      // The layout: every column's pages found, values read by range from disk, across page boundaries.
      const fd = openSync(file, 'r');
      try {
        const layout = parquetLayout(fd)!;
        assert.ok(layout, `${dtype}: read in place`);
        assert.equal(layout.rows, rows);
        assert.deepEqual(Object.fromEntries(layout.metadata), META);
        const site = layout.columns.get('blocks.0.hook_resid_post')!;
        assert.equal(site.width, 300);
        assert.equal(site.kind, dtype);
        const perPage = Math.floor(2 ** 20 / (300 * (dtype === 'f16' ? 2 : 4)));
        assert.equal(site.pieces.length, Math.ceil(rows / perPage), `${dtype}: pages of whole rows, about 1 MiB each`);
        const full = want.values.get('blocks.0.hook_resid_post')!;
        for (const [from, to] of [
          [0, rows],
          [perPage - 3, perPage + 5],
          [1, 2],
          [rows - 1, rows],
          [500, 500],
        ])
          assert.deepEqual(readColumnRows(fd, site, from, to), full.subarray(from * 300, to * 300), `${dtype} rows [${from}, ${to})`);
        assert.deepEqual(readColumnRows(fd, layout.columns.get('token')!, 10, 1990), want.token.subarray(10, 1990));
      } finally {
        closeSync(fd);
      }

      // Through readShard (a manifest), by span.
      const hd = join(dir, `h-${dtype}`);
      mkdirSync(hd, { recursive: true });
      const bytes = readFileSync(file);
      writeFileSync(join(hd, 'shard-00007.parquet'), bytes);
      const man = {
        sites: [...want.widths].map(([name, width]) => ({ name, width })),
        tokens: rows,
        shards: [{ file: 'shard-00007.parquet', rows, sha256: sha256(bytes) }],
      } as unknown as Manifest;
      const got = readShard(hd, man, 0, ['blocks.0.hook_mlp_out'], {}, { from: 100, to: 1900 });
      assert.equal(got.own, true, 'read by range, not decoded whole');
      assert.deepEqual(got.values.get('blocks.0.hook_mlp_out'), mlp.subarray(100, 1900));
      assert.deepEqual(got.pos, want.pos.subarray(100, 1900));
      assert.equal(got.values.has('blocks.0.hook_resid_post'), false, 'only the columns asked for');
    }
    // An empty shard is a valid file too.
    const empty = join(dir, 'empty.parquet');
    writeFileSync(empty, Buffer.concat(encodeShardParquet(shard(0), 'f32', META)));
    assert.equal(decodeShard(new Uint8Array(readFileSync(empty)), undefined, 'parquet').rows, 0);
    const fd = openSync(empty, 'r');
    assert.equal(parquetLayout(fd), undefined, "no rows to show the lists' widths: decoded whole");
    closeSync(fd);
  } finally {
    con.closeSync();
  }
});

test('Parquet shards: an older zstd shard is decoded whole and gives the same rows; damaged files refused in one line', () => {
  const dir = tmp();
  const rows = 1200;
  const buf = shard(rows);
  const want = decodeShard(encodeShard(buf, 'f32', META));
  // A shard as sdlkit wrote them before (parquet-wasm, zstd): no layout, the same values through the whole decode.
  const { Table: WasmTable, WriterPropertiesBuilder, Compression, writeParquet } = parquetWasm();
  const legacy = writeParquet(
    WasmTable.fromIPCStream(tableToIPC(tableFromIPC(encodeShard(buf, 'f32', META)), 'stream')),
    new WriterPropertiesBuilder().setCompression(Compression.ZSTD).setDictionaryEnabled(false).build(),
  );
  const put = (name: string, bytes: Uint8Array, recorded = bytes) => {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'shard-00000.parquet'), bytes);
    const man = {
      sites: [...want.widths].map(([n, width]) => ({ name: n, width })),
      tokens: rows,
      shards: [{ file: 'shard-00000.parquet', rows, sha256: sha256(recorded) }],
    } as unknown as Manifest;
    return { d, man };
  };
  const old = put('legacy', legacy);
  const fd = openSync(join(old.d, 'shard-00000.parquet'), 'r');
  assert.equal(parquetLayout(fd), undefined, 'compressed pages: not read in place');
  closeSync(fd);
  const got = readShard(old.d, old.man, 0, ['blocks.0.hook_resid_post'], {}, { from: 1000, to: 1100 });
  assert.deepEqual(got.values.get('blocks.0.hook_resid_post'), want.values.get('blocks.0.hook_resid_post')!.subarray(300_000, 330_000));

  // Damaged: cut short, a footer length past the file, a page whose size disagrees with its values. Without the
  // checksum check (which would refuse them first), the reader still says which file and what to do, in one line.
  const good = Buffer.concat(encodeShardParquet(buf, 'f32', META));
  const longFooter = Buffer.from(good);
  longFooter.writeUInt32LE(good.length, good.length - 8);
  const badPage = Buffer.from(good);
  // The first page header (after 'PAR1'): type, uncompressed size, compressed size; one more byte in the sizes.
  const r = new ThriftReader(badPage, 4);
  const page = r.struct();
  const size = page.get(3) as number;
  const patched = new ThriftWriter()
    .struct({ 1: [T.I32, 0], 2: [T.I32, size + 4], 3: [T.I32, size + 4], 5: [T.STRUCT, { 1: [T.I32, rows], 2: [T.I32, 0], 3: [T.I32, 3], 4: [T.I32, 3] }] })
    .finish();
  assert.equal(patched.length, r.at - 4, 'the patched header is as long as the original');
  badPage.set(patched, 4);
  for (const [name, bytes, re] of [
    ['cut', good.subarray(0, good.length - 100), /no Parquet magic/],
    ['footer', longFooter, /footer length/],
    ['page', badPage, /holds \d+ bytes of values|runs past/],
  ] as [string, Uint8Array, RegExp][]) {
    const { d, man } = put(name, bytes, good);
    assert.throws(
      () => readShard(d, man, 0, ['blocks.0.hook_resid_post'], { verify: false }, { from: 0, to: 10 }),
      (e: Error) => e instanceof UserError && /not a readable Parquet file/.test(e.message) && re.test(e.message) && !e.message.includes('\n'),
      name,
    );
    assert.throws(() => readShard(d, man, 0, ['blocks.0.hook_resid_post'], {}, { from: 0, to: 10 }), /does not match the checksum/, `${name}, verified`);
  }
});

test('Parquet layout: a page header longer than the first read (large statistics) is read whole', () => {
  const dir = tmp();
  const values = Int32Array.from({ length: 1000 }, (_, i) => i * 3 - 7);
  const schema = new Schema([new Field('token', new Int32(), false)]);
  const stream = tableToIPC(new Table(schema), 'stream');
  const arrowSchema = Buffer.from(stream.subarray(0, stream.length - 8)).toString('base64');
  // Statistics with a 10 KB max value (a writer may store long binary bounds): the header outgrows a 4 KiB read.
  const stats = { 5: [T.BINARY, new Uint8Array(10_000).fill(7)] } as const;
  const header = new ThriftWriter()
    .struct({
      1: [T.I32, 0],
      2: [T.I32, 4000],
      3: [T.I32, 4000],
      5: [T.STRUCT, { 1: [T.I32, 1000], 2: [T.I32, 0], 3: [T.I32, 3], 4: [T.I32, 3], 5: [T.STRUCT, stats] }],
    })
    .finish();
  assert.ok(header.length > 10_000);
  const file = join(dir, 'long-header.parquet');
  writeFileSync(
    file,
    handMadeParquet({
      header,
      body: new Uint8Array(values.buffer),
      leaves: [{ 1: [T.I32, 1], 3: [T.I32, 0], 4: [T.BINARY, 'token'] }],
      path: ['token'],
      type: 1,
      values: 1000,
      rows: 1000,
      keyValues: [{ 1: [T.BINARY, 'ARROW:schema'], 2: [T.BINARY, arrowSchema] }],
    }),
  );
  // parquet-wasm reads the hand-made file: it is valid Parquet.
  assert.deepEqual(decodeShardTokens(file), values);
  const fd = openSync(file, 'r');
  try {
    const layout = parquetLayout(fd)!;
    assert.deepEqual(layout.columns.get('token')!.pieces, [{ rows: 1000, offset: 4 + header.length }]);
    assert.deepEqual(readColumnRows(fd, layout.columns.get('token')!, 990, 1000), values.subarray(990));
  } finally {
    closeSync(fd);
  }
});

/** The token column of a Parquet file, as parquet-wasm reads it. */
function decodeShardTokens(file: string): Int32Array {
  const t = tableFromIPC(
    parquetWasm()
      .readParquet(new Uint8Array(readFileSync(file)))
      .intoIPCStream(),
  );
  return t.getChild('token')!.toArray() as Int32Array;
}

/**
 * Writes 600 copies of `good` with 1-3 bytes changed in one of `ranges` (in turn) as shard 0 of a harvest and reads each
 * without its checksum (`--no-verify`): each either reads (a change the reader does not use) or is refused with one
 * line; none may hang or run out of memory. Returns how many were refused.
 */
function readDamaged(file: string, good: Uint8Array, ranges: number[][], rows: number, sites: { name: string; width: number }[], seed: number): number {
  const d = join(tmp(), 'damaged');
  mkdirSync(d, { recursive: true });
  const man = { sites, tokens: rows, shards: [{ file, rows, sha256: sha256(good) }] } as unknown as Manifest;
  const rng = new Rng(seed);
  let refused = 0;
  for (let i = 0; i < 600; i++) {
    const bad = Buffer.from(good);
    const [a, z] = ranges[i % ranges.length];
    for (let j = 0, n = 1 + Math.floor(rng.next() * 3); j < n; j++) bad[a + Math.floor(rng.next() * (z - a))] = Math.floor(rng.next() * 256);
    writeFileSync(join(d, file), bad);
    try {
      const got = readShard(d, man, 0, ['blocks.0.hook_mlp_out'], { verify: false }, { from: 0, to: rows });
      // Read without complaint: a change the reader does not use (an unused size, a schema copy, metadata) or the
      // first index values (what the checksum, on by default, is there for).
      assert.equal(got.rows, rows);
      assert.equal(got.values.get('blocks.0.hook_mlp_out')!.length, rows);
    } catch (e) {
      assert.ok(e instanceof UserError, `${file}, copy ${i}: ${(e as Error).stack}`);
      assert.ok(!(e as Error).message.includes('\n'), 'one line');
      refused++;
    }
  }
  return refused;
}

test('damaged shards without their checksum: 600 copies of a Parquet and of an Arrow shard, each read or refused in one line; none hangs or runs out of memory', () => {
  const rows = 900;
  const buf = shard(rows);
  const sites = buf.sites.map((s) => ({ name: s.name, width: s.width }));
  // Parquet: two columns' first page headers (one with its levels) and the footer.
  const pq = Buffer.concat(encodeShardParquet(buf, 'f32', META));
  const r = new ThriftReader(pq, 4);
  r.struct();
  const footerAt = pq.length - 8 - pq.readUInt32LE(pq.length - 8);
  const meta = new ThriftReader(pq, footerAt).struct();
  type M = Map<number, unknown>;
  const firstSitePage = (((meta.get(4) as M[])[0].get(1) as M[])[4].get(3) as M).get(9) as number;
  const pqRefused = readDamaged(
    'shard-00000.parquet',
    pq,
    [
      [0, r.at + 40],
      [firstSitePage, firstSitePage + 64],
      [footerAt, pq.length],
    ],
    rows,
    sites,
    54,
  );
  assert.ok(pqRefused > 150, `damaged Parquet copies are refused (${pqRefused} of 600)`);
  // Arrow: the footer (schema and record batch blocks: apache-arrow's decoder ran out of memory on damaged ones) and the
  // file's first 1,200 bytes (the schema message and the record batch's).
  const arrow = Buffer.from(encodeShard(buf, 'f32', META));
  const arrowFooter = arrow.length - 10 - arrow.readInt32LE(arrow.length - 10);
  const arrowRefused = readDamaged(
    'shard-00000.arrow',
    arrow,
    [
      [arrowFooter, arrow.length - 10],
      [0, 1200],
    ],
    rows,
    sites,
    7,
  );
  assert.ok(arrowRefused > 150, `damaged Arrow copies are refused (${arrowRefused} of 600)`);
});

test('Arrow layout: the footer read with every offset checked gives apache-arrow’s columns, widths, kinds and metadata', () => {
  const dir = tmp();
  for (const dtype of ['f32', 'f16'] as Dtype[]) {
    const buf = shard(700);
    const bytes = encodeShard(buf, dtype, META);
    const file = join(dir, `s-${dtype}.arrow`);
    writeFileSync(file, bytes);
    const table = tableFromIPC(bytes);
    const fd = openSync(file, 'r');
    try {
      const layout = arrowLayout(fd)!;
      assert.equal(layout.rows, table.numRows);
      assert.deepEqual(layout.metadata, table.schema.metadata);
      assert.deepEqual(
        [...layout.columns].map(([name, c]) => [name, c.kind, c.width]),
        table.schema.fields.map((f) => [
          f.name,
          (INDEX_COLUMNS as readonly string[]).includes(f.name) ? 'int32' : dtype,
          (f.type as { listSize?: number }).listSize ?? 1,
        ]),
      );
      const want = decodeShard(bytes);
      assert.deepEqual(
        readColumnRows(fd, layout.columns.get('blocks.0.hook_resid_post')!, 3, 650),
        want.values.get('blocks.0.hook_resid_post')!.subarray(900, 195_000),
      );
    } finally {
      closeSync(fd);
    }
  }
});

test('older zstd Parquet shards: fit trains the same weights and says to convert; sdl convert --format parquet rewrites them as the shards written now; refuses shards already read in place', () => {
  const dir = tmp();
  const now = join(dir, 'now');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  assert.equal(run('harvest', '--layer', '6', '--tokens', '8k', '--shard-tokens', '4k', '--format', 'parquet', '--out', now).status, 0);
  // The same harvest as an earlier sdlkit wrote it: each shard's table through parquet-wasm with zstd, the manifest's checksums to match.
  const old = join(dir, 'old');
  cpSync(now, old, { recursive: true });
  const man = readManifest(old)!;
  const { Table: WasmTable, WriterPropertiesBuilder, Compression, writeParquet, readParquet } = parquetWasm();
  for (const s of man.shards) {
    const path = join(old, s.file);
    const stream = readParquet(new Uint8Array(readFileSync(path))).intoIPCStream();
    const zstd = writeParquet(WasmTable.fromIPCStream(stream), new WriterPropertiesBuilder().setCompression(Compression.ZSTD).build());
    writeFileSync(path, zstd);
    s.crc32c = crc32c(zstd).toString(16).padStart(8, '0');
    const fd = openSync(path, 'r');
    assert.equal(parquetLayout(fd), undefined, 'an older shard: decoded whole');
    closeSync(fd);
  }
  writeManifest(old, man);
  // Training on it works, and says how to make its reads faster.
  const fit = run('fit', '--acts', old, '--steps', '3', '--latents', '32', '--eval-tokens', '1024', '--out', join(dir, 'fit-old'));
  assert.equal(fit.status, 0, fit.stderr);
  assert.match(fit.stderr, /note: .* holds shards that are decoded whole on every read .*sdl convert .* --format parquet/);
  const fitNow = run('fit', '--acts', now, '--steps', '3', '--latents', '32', '--eval-tokens', '1024', '--out', join(dir, 'fit-now'));
  assert.equal(fitNow.status, 0, fitNow.stderr);
  assert.doesNotMatch(fitNow.stderr, /decoded whole/);
  assert.ok(
    readFileSync(join(dir, 'fit-old', 'sae_weights.safetensors')).equals(readFileSync(join(dir, 'fit-now', 'sae_weights.safetensors'))),
    'the same weights',
  );
  const up = join(dir, 'up');
  const r = run('convert', old, '--format', 'parquet', '--out', up);
  assert.equal(r.status, 0, r.stderr);
  for (const s of man.shards) assert.ok(readFileSync(join(up, s.file)).equals(readFileSync(join(now, s.file))), `${s.file}: the shard written now`);
  assert.deepEqual(readManifest(up)!.shards, readManifest(now)!.shards);
  const again = run('convert', now, '--format', 'parquet', '--out', join(dir, 'again'));
  assert.equal(again.status, 2);
  assert.match(again.stderr, /already a parquet harvest whose shards are read in place/);
});

test('Parquet layout: a page that claims more values than its bytes hold is refused before its levels are made', () => {
  const dir = tmp();
  // One list column of width 64, one row group of one row; its one page claims 2^30 values in 300 bytes.
  const body = new Uint8Array(300);
  const header = new ThriftWriter()
    .struct({
      1: [T.I32, 0],
      2: [T.I32, body.length],
      3: [T.I32, body.length],
      5: [T.STRUCT, { 1: [T.I32, 2 ** 30], 2: [T.I32, 0], 3: [T.I32, 3], 4: [T.I32, 3] }],
    })
    .finish();
  const file = join(dir, 'claims.parquet');
  writeFileSync(
    file,
    handMadeParquet({
      header,
      body,
      leaves: [
        { 3: [T.I32, 0], 4: [T.BINARY, 'a'], 5: [T.I32, 1], 6: [T.I32, 3] },
        { 3: [T.I32, 2], 4: [T.BINARY, 'list'], 5: [T.I32, 1] },
        { 1: [T.I32, 4], 3: [T.I32, 0], 4: [T.BINARY, 'element'] },
      ],
      path: ['a', 'list', 'element'],
      type: 4,
      values: 64,
      rows: 1,
    }),
  );
  const fd = openSync(file, 'r');
  try {
    const t0 = performance.now();
    assert.throws(() => parquetLayout(fd), /claims 1073741824 values in 300 bytes/);
    assert.ok(performance.now() - t0 < 1000, 'at once');
  } finally {
    closeSync(fd);
  }
});

/**
 * A Parquet file of one column and one page, made by hand (what encodeParquet would not write): 'PAR1', the page's
 * header and body, the footer (the schema: a root, then `leaves`, the column's elements), its length, 'PAR1'.
 */
function handMadeParquet(o: {
  header: Uint8Array;
  body: Uint8Array;
  leaves: ThriftStruct[];
  path: string[];
  type: number;
  values: number;
  rows: number;
  keyValues?: ThriftStruct[];
}): Buffer {
  const size = o.header.length + o.body.length;
  const column: ThriftStruct = {
    1: [T.I32, o.type],
    2: [T.LIST, list(T.I32, o.path.length > 1 ? [0, 3] : [0])],
    3: [T.LIST, list(T.BINARY, o.path)],
    4: [T.I32, 0],
    5: [T.I64, o.values],
    6: [T.I64, size],
    7: [T.I64, size],
    9: [T.I64, 4],
  };
  const footer = new ThriftWriter()
    .struct({
      1: [T.I32, 1],
      2: [T.LIST, list(T.STRUCT, [{ 4: [T.BINARY, 'schema'], 5: [T.I32, 1] }, ...o.leaves])],
      3: [T.I64, o.rows],
      4: [T.LIST, list(T.STRUCT, [{ 1: [T.LIST, list(T.STRUCT, [{ 2: [T.I64, 4], 3: [T.STRUCT, column] }])], 2: [T.I64, size], 3: [T.I64, o.rows] }])],
      5: o.keyValues ? [T.LIST, list(T.STRUCT, o.keyValues)] : undefined,
    })
    .finish();
  const len = Buffer.alloc(4);
  len.writeUInt32LE(footer.length);
  return Buffer.concat([Buffer.from('PAR1'), o.header, o.body, footer, len, Buffer.from('PAR1')]);
}
