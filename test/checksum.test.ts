// Shard checksums: CRC-32C's native kernel and TypeScript reference agree with the standard and with each other; shards
// are written and checked with it; harvests written before (SHA-256 entries) still open and are still checked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, crc32cReference, digest, fileDigest } from '../src/util/checksum.js';
import { native } from '../src/native/kernels.js';
import { directFromCaller, sha256, writeAtomic } from '../src/util/fsx.js';
import { readManifest, shardChecksum, shardFileMatches, type Manifest } from '../src/activations/manifest.js';
import { readShard } from '../src/activations/reader.js';
import { ShardBuffer, arrowBodyOffset, encodeShard, encodeShardChunks } from '../src/activations/shard.js';
import { writeRowsAsShards } from '../src/synth/write.js';
import { UserError } from '../src/util/errors.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'sdl-crc-'));
const bytesOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => ((i + seed) * 2654435761) >>> 24);

test('CRC-32C gives the standard check values (RFC 3720 B.4), natively and in the reference', () => {
  const cases: [Uint8Array, number][] = [
    [new TextEncoder().encode('123456789'), 0xe3069283],
    [new Uint8Array(0), 0],
    [new Uint8Array(32), 0x8a9136aa],
    [new Uint8Array(32).fill(0xff), 0x62a8ab43],
    [Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    [Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
  ];
  for (const [b, want] of cases) {
    assert.equal(crc32cReference(b), want);
    assert.equal(crc32c(b), want);
  }
});

test('the native CRC-32C equals the reference at every length and offset, and continues across parts', (t) => {
  const mod = native();
  if (!mod) return t.skip('native kernels not built');
  const big = bytesOf(250000, 3);
  // Lengths around the native kernel's three-block step (3 x 8,192 bytes) and its multiples too.
  for (const off of [0, 1, 3, 7, 8, 13])
    for (const n of [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4097, 24575, 24576, 24577, 49159, 65536, 200003]) {
      const b = big.subarray(off, off + n);
      assert.equal(mod.crc32c(b), crc32cReference(b), `offset ${off}, length ${n}`);
      assert.equal(mod.crc32c(b, 0x12345678), crc32cReference(b, 0x12345678), `offset ${off}, length ${n}, continued`);
    }
  // crc(a || b) = crc(b) continued from crc(a), for any cut.
  const whole = crc32cReference(big);
  for (const cut of [0, 1, 5, 4096, 24576, 33333, 70000, 250000])
    assert.equal(mod.crc32c(big.subarray(cut), mod.crc32c(big.subarray(0, cut))), whole, `cut ${cut}`);
  assert.throws(() => mod.crc32c(new Float32Array(4) as unknown as Uint8Array), /Uint8Array/);
  assert.throws(() => mod.crc32c(big, -1), /crc must be an integer/);
});

test('writeAtomic returns the CRC-32C or SHA-256 of what it wrote, in parts and with O_DIRECT; fileDigest reads it back the same', () => {
  const dir = tmp();
  for (const size of [0, 5, 4096, (8 << 20) + 777]) {
    const bytes = bytesOf(size, size);
    const parts: Uint8Array[] = [];
    for (let at = 0, n = 1; at < size; at += n, n = n * 5 + 1) parts.push(bytes.subarray(at, Math.min(size, at + n)));
    const path = join(dir, `f${size}`);
    const crc = writeAtomic(path, parts, { direct: true, checksum: 'crc32c' });
    assert.equal(crc, crc32cReference(bytes).toString(16).padStart(8, '0'), `size ${size}`);
    assert.match(crc, /^[0-9a-f]{8}$/);
    assert.equal(fileDigest(path, 'crc32c'), crc);
    assert.equal(fileDigest(path, 'sha256'), sha256(bytes));
    assert.equal(writeAtomic(path, parts, { direct: true }), sha256(bytes));
    assert.equal(writeAtomic(path, parts, { checksum: 'crc32c' }), crc, 'through the page cache, the same');
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes);
    const d = digest('crc32c');
    for (const p of parts) d.update(p);
    assert.equal(d.hex(), crc);
  }
});

test("O_DIRECT takes whole blocks straight from the caller's memory where its address agrees with the file offset, and the file is the same bytes", (t) => {
  const mod = native();
  if (!mod?.pageOffset) return t.skip('native kernels not built');
  const dir = tmp();
  const probe = join(dir, 'probe');
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
  } catch {
    return t.skip('this file system refuses O_DIRECT');
  }
  const memory = new Uint8Array(new SharedArrayBuffer(9 * 4096 + 8192));
  memory.set(bytesOf(memory.length, 11));
  const base = mod.pageOffset(memory);
  for (const [head, agree] of [
    [100, true],
    [100, false],
    [0, true],
    [4096 + 8, true],
  ] as const) {
    const headBytes = bytesOf(head, 3);
    // The body's address modulo 4096 equals its file offset (head) when `agree`; one byte off when not.
    const start = ((((head - base) % 4096) + 4096) % 4096) + (agree ? 0 : 8);
    const body = memory.subarray(start, start + 6 * 4096 + 123);
    assert.equal(mod.pageOffset(body) === head % 4096, agree);
    const before = directFromCaller.bytes;
    const path = join(dir, `f${head}-${agree}`);
    const crc = writeAtomic(path, [headBytes, body, bytesOf(77, 5)], { direct: true, checksum: 'crc32c' });
    const whole = Buffer.concat([headBytes, body, bytesOf(77, 5)]);
    assert.deepEqual(new Uint8Array(readFileSync(path)), new Uint8Array(whole), `head ${head}, agree ${agree}`);
    assert.equal(crc, crc32cReference(whole).toString(16).padStart(8, '0'));
    const direct = directFromCaller.bytes - before;
    // Agreeing: every whole block after the stage's first block boundary; not agreeing: none.
    assert.equal(direct, agree ? Math.floor((body.length - ((4096 - (head % 4096)) % 4096)) / 4096) * 4096 : 0, `head ${head}, agree ${agree}`);
  }
});

test("a shard buffer's arrays slide so that the Arrow body's address agrees with its file offset; the file is the same bytes", (t) => {
  const mod = native();
  if (!mod?.pageOffset) return t.skip('native kernels not built');
  const sites = [
    { name: 'blocks.0.hook_resid_post', width: 16 },
    { name: 'blocks.0.hook_mlp_out', width: 8 },
  ];
  const meta = { sdlkit_identity: 'abc', shard: '7' };
  const fill = (b: ShardBuffer) => {
    b.rows = b.capacity;
    for (let i = 0; i < b.capacity; i++) [b.doc[i], b.window[i], b.pos[i], b.token[i]] = [i % 13, i >> 7, i & 127, (i * 31) % 500];
    b.values.forEach((v, j) => {
      for (let i = 0; i < v.length; i++) v[i] = Math.sin(i + j);
    });
  };
  const plain = new ShardBuffer(2048, sites);
  fill(plain);
  const shared = new ShardBuffer(2048, sites, true);
  const at = arrowBodyOffset(shared, meta);
  assert.ok(at !== undefined && at > 0 && at % 8 === 0);
  shared.alignBody(at);
  assert.equal(mod.pageOffset(shared.doc), at % 4096);
  assert.equal(shared.values[1].byteOffset + shared.values[1].byteLength, shared.doc.byteOffset + 4 * (4 * 2048 + 24 * 2048));
  fill(shared);
  const path = join(tmp(), 'shard.arrow');
  const before = directFromCaller.bytes;
  writeAtomic(path, encodeShardChunks(shared, 'f32', meta), { direct: true, checksum: 'crc32c' });
  assert.deepEqual(new Uint8Array(readFileSync(path)), encodeShard(plain, 'f32', meta));
  if (directFromCaller.bytes === before) t.diagnostic('O_DIRECT refused here: written through the page cache');
  else assert.ok(directFromCaller.bytes - before >= 4 * 28 * 2048 - 4096, 'the body, its columns joined, from its own memory but for one block');
  assert.throws(() => shared.alignBody(at), /holds rows/);
  assert.throws(() => shared.fit(1152), /holds rows/);
});

test("a shard shorter than its buffer (a harvest's last) is laid out for its rows: its body too goes to the disk from where it lies", (t) => {
  const mod = native();
  if (!mod?.pageOffset) return t.skip('native kernels not built');
  const sites = [
    { name: 'blocks.0.hook_resid_post', width: 16 },
    { name: 'blocks.0.hook_mlp_out', width: 8 },
  ];
  const meta = { sdlkit_identity: 'abc', shard: '12' };
  // 9 windows of 128 tokens: apache-arrow pads each column to 64 bytes, so a harvest's rows (whole windows) leave no gaps.
  const rows = 1152;
  const fill = (b: ShardBuffer) => {
    for (let i = 0; i < rows; i++) [b.doc[i], b.window[i], b.pos[i], b.token[i]] = [i % 13, i >> 7, i & 127, (i * 31) % 500];
    b.values.forEach((v, j) => {
      for (let i = 0; i < rows * sites[j].width; i++) v[i] = Math.cos(i - j);
    });
    b.rows = rows;
  };
  const plain = new ShardBuffer(2048, sites);
  fill(plain);
  const shared = new ShardBuffer(2048, sites, true);
  shared.fit(rows);
  assert.equal(shared.laidRows, rows);
  assert.equal(shared.values[1].length, rows * 8);
  assert.equal(shared.token.byteOffset, shared.doc.byteOffset + 3 * 4 * rows, 'the columns one after another, for 1,152 rows');
  const at = arrowBodyOffset(shared, meta)!;
  shared.alignBody(at);
  assert.equal(mod.pageOffset(shared.doc), at % 4096);
  fill(shared);
  const path = join(tmp(), 'short.arrow');
  const before = directFromCaller.bytes;
  writeAtomic(path, encodeShardChunks(shared, 'f32', meta), { direct: true, checksum: 'crc32c' });
  assert.deepEqual(new Uint8Array(readFileSync(path)), encodeShard(plain, 'f32', meta), 'the same file as from a buffer laid out for 2,048 rows');
  if (directFromCaller.bytes === before) t.diagnostic('O_DIRECT refused here: written through the page cache');
  else assert.ok(directFromCaller.bytes - before >= 4 * 28 * rows - 2 * 4096, 'the body from its own memory but for its first and last blocks');
  // Taken again for a full shard, it is laid out for its capacity again.
  shared.reset();
  shared.fit(2048);
  assert.equal(shared.values[1].length, 2048 * 8);
  assert.throws(() => shared.fit(4096), /4096 rows in a buffer of 2048/);
});

test('shards are recorded with CRC-32C; one changed byte is caught; a harvest recorded with SHA-256 still opens and is still checked', () => {
  const dir = tmp();
  const m = writeRowsAsShards(join(dir, 'syn'), [{ name: 'x', width: 6, data: Float32Array.from({ length: 6 * 40 }, (_, i) => Math.sin(i)) }], 40, {
    source: 'test',
    seed: 0,
    shardTokens: 16,
  });
  assert.equal(m.shards.length, 3);
  for (const s of m.shards) {
    assert.match(s.crc32c ?? '', /^[0-9a-f]{8}$/);
    assert.equal(s.sha256, undefined);
    assert.equal(shardChecksum(s).kind, 'crc32c');
    assert.ok(shardFileMatches(join(dir, 'syn', s.file), s));
  }
  const path = join(dir, 'syn', m.shards[1].file);
  const good = readFileSync(path);
  const bad = Uint8Array.from(good);
  bad[bad.length - 300] ^= 0x01;
  writeFileSync(path, bad);
  assert.equal(shardFileMatches(path, m.shards[1]), false);
  assert.throws(
    () => readShard(join(dir, 'syn'), m, 1, ['x']),
    (e: Error) => e instanceof UserError && /does not match the checksum in its manifest/.test(e.message),
  );
  // The same folder as an older sdlkit wrote it: each entry's SHA-256, no CRC-32C.
  const old = join(dir, 'old');
  mkdirSync(old);
  const buf = new ShardBuffer(8, [{ name: 'x', width: 2 }], false);
  for (let r = 0; r < 8; r++) buf.values[0].set([r, -r], 2 * r);
  buf.rows = 8;
  const bytes = new Uint8Array(encodeShard(buf, 'f32'));
  writeFileSync(join(old, 'shard-00000.arrow'), bytes);
  const mo = {
    format: 'sdlkit-activations/1',
    sites: [{ name: 'x', tensor: 'x', width: 2 }],
    tokens: 8,
    complete: true,
    shards: [{ file: 'shard-00000.arrow', rows: 8, sha256: sha256(bytes) }],
  };
  writeFileSync(join(old, 'manifest.json'), JSON.stringify(mo));
  const read = readManifest(old)!;
  assert.equal(shardChecksum(read.shards[0]).kind, 'sha256');
  assert.deepEqual(Array.from(readShard(old, read, 0, ['x']).values.get('x')!.subarray(0, 4)), [0, -0, 1, -1]);
  const flipped = Uint8Array.from(bytes);
  flipped[flipped.length - 200] ^= 0x40;
  writeFileSync(join(old, 'shard-00000.arrow'), flipped);
  assert.throws(() => readShard(old, { ...read } as Manifest, 0, ['x']), /does not match the checksum/);
  // An entry with no checksum at all is not a manifest sdlkit wrote.
  writeFileSync(join(old, 'manifest.json'), JSON.stringify({ ...mo, shards: [{ file: 'shard-00000.arrow', rows: 8 }] }));
  assert.throws(
    () => readManifest(old),
    (e: Error) => e instanceof UserError && /is not an sdlkit activations manifest/.test(e.message),
  );
});

test('copyBytes (the O_DIRECT stage): the bytes TypedArray.set gives, from shared and plain memory at every alignment; bad arguments refused', (t) => {
  const mod = native();
  if (!mod?.copyBytes) return t.skip('native kernels not built');
  for (const shared of [true, false]) {
    const src = new Uint8Array(shared ? new SharedArrayBuffer(70_000) : new ArrayBuffer(70_000));
    src.set(bytesOf(src.length, 9));
    for (const from of [0, 1, 3, 8, 13])
      for (const at of [0, 1, 5, 8, 21])
        for (const n of [0, 1, 7, 64, 4099, 65_536]) {
          const want = bytesOf(70_000, 2);
          const got = want.slice();
          want.set(src.subarray(from, from + n), at);
          assert.equal(mod.copyBytes(got, at, src.subarray(from, from + n)), n);
          assert.deepEqual(got, want, `shared ${shared}, from ${from}, at ${at}, ${n} bytes`);
        }
  }
  const dst = new Uint8Array(100);
  assert.throws(() => mod.copyBytes!(dst, 90, new Uint8Array(11)), /must fit/);
  assert.throws(() => mod.copyBytes!(dst, -1, new Uint8Array(1)), /must fit/);
  assert.throws(() => mod.copyBytes!(dst, 0.5, new Uint8Array(1)), /must fit/);
  assert.throws(() => mod.copyBytes!(new Float32Array(4) as unknown as Uint8Array, 0, new Uint8Array(1)), /Uint8Arrays/);
});
