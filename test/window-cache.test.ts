// The token cache (src/corpus/window-cache.ts): a harvest's windows kept on disk and read back by the next harvest
// of the same text and tokenizer, always the windows tokenizing gives; damage is found and tokenized around.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BUNDLED_MODEL_DIR, loadModel } from '../src/models/model.js';
import { tokenizerIdentity } from '../src/models/model.js';
import { windowChunks, type WindowChunk, type WindowPlan } from '../src/corpus/window-chunks.js';
import { readManifest } from '../src/activations/manifest.js';
import { CLI, corpusFile, tmp } from './helpers.js';

const bundled = loadModel(join(BUNDLED_MODEL_DIR, 'sdl-tiny'));
const tok = bundled.tokenizer;

/** ctx 128: 1,024 windows a 1 MiB block, so 2,500 windows span three blocks. */
const plan = (dir: string | undefined, over: Partial<WindowPlan> = {}): WindowPlan & { warnings: string[] } => {
  const warnings: string[] = [];
  return {
    corpus: 'builtin',
    split: 'all',
    seed: 2,
    ctx: 128,
    batch: 16,
    modelVocab: tok.vocabSize,
    modelName: 'sdl-tiny',
    windowsPerShard: 512,
    nWindows: 2500,
    skip: [],
    cache: dir ? { dir, tokenizer: tokenizerIdentity(bundled), warn: (l) => warnings.push(l) } : undefined,
    warnings,
    ...over,
  };
};

const drain = (p: WindowPlan) => {
  const it = windowChunks(p, tok);
  const chunks: WindowChunk[] = [];
  for (let r = it.next(); ; r = it.next())
    if (r.done) return { chunks, exhausted: r.value };
    else chunks.push(r.value);
};

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);

test('token cache: the first pass writes the windows, the next reads them, the same as tokenizing, for fewer windows too', () => {
  const dir = tmp();
  const want = drain(plan(undefined));
  const first = plan(dir);
  assert.deepEqual(drain(first), want);
  assert.equal(first.cache?.hit, false);
  assert.deepEqual(files(dir), [first.cache?.file?.split('/').pop()]);
  const second = plan(dir);
  assert.deepEqual(drain(second), want);
  assert.equal(second.cache?.hit, true);
  assert.equal(second.cache?.file, first.cache?.file);
  // A prefix is read from the longer file; skipped shards are passed over as when tokenizing.
  const fewer = plan(dir, { nWindows: 700, skip: [0] });
  assert.deepEqual(drain(fewer), drain(plan(undefined, { nWindows: 700, skip: [0] })));
  assert.equal(fewer.cache?.hit, true);
  // More windows than the file holds: tokenized again, and the longer file replaces it.
  const more = plan(dir, { nWindows: 3000 });
  assert.deepEqual(drain(more), drain(plan(undefined, { nWindows: 3000 })));
  assert.equal(more.cache?.hit, false);
  const again = plan(dir, { nWindows: 3000 });
  drain(again);
  assert.equal(again.cache?.hit, true);
  // Another seed, context or split is another file.
  const other = plan(dir, { seed: 3, nWindows: 100 });
  drain(other);
  assert.equal(other.cache?.hit, false);
  assert.notEqual(other.cache?.file, first.cache?.file);
  assert.equal(files(dir).length, 2);
  for (const p of [first, second, fewer, more, again, other]) assert.deepEqual(p.warnings, []);
});

test('token cache: a pass stopped early leaves no cache file and no temporary file', () => {
  const dir = tmp();
  const p = plan(dir);
  const it = windowChunks(p, tok);
  for (let i = 0; i < 5; i++) it.next();
  it.return(false);
  assert.deepEqual(files(dir), []);
  const q = plan(dir);
  drain(q);
  assert.equal(q.cache?.hit, false, 'nothing was left to read');
});

test('token cache: a damaged header is a miss, a damaged block is tokenized from that window on; the windows never change', () => {
  const dir = tmp();
  const want = drain(plan(undefined));
  const p = plan(dir);
  drain(p);
  const file = p.cache?.file as string;
  const good = readFileSync(file);
  const flip = (at: number) => {
    const b = Buffer.from(good);
    b[at] ^= 0x10;
    writeFileSync(file, b);
  };
  // The header's window count.
  flip(16);
  const h = plan(dir);
  assert.deepEqual(drain(h), want);
  assert.equal(h.cache?.hit, false);
  assert.equal(h.warnings.length, 1);
  assert.match(h.warnings[0], /window cache .*\.windows: its header's checksum does not match: tokenizing again$/);
  assert.deepEqual(readFileSync(file), good, 'the file was written again, whole');
  // A token of the second block (windows 1,024-2,047): windows 0-1,023 are read, the rest tokenized.
  flip(64 + 1024 * 128 * 8 + 4 * 500);
  const b = plan(dir);
  assert.deepEqual(drain(b), want);
  assert.equal(b.cache?.hit, true);
  assert.deepEqual(b.warnings.length, 1);
  assert.match(b.warnings[0], /block 1 does not match its checksum: tokenizing again from window 1024$/);
  assert.equal(existsSync(file), false, 'the damaged file is removed');
  // Cut short (a crash before the file was whole): its length does not match its header.
  writeFileSync(file, good.subarray(0, good.length - 100));
  const c = plan(dir);
  assert.deepEqual(drain(c), want);
  assert.match(c.warnings[0], /its length does not match its header: tokenizing again$/);
});

test('token cache: a corpus that runs out is recorded so, and an edited corpus file is a new file', () => {
  const dir = tmp();
  const text = corpusFile(tmp(), 30);
  const small = (n: number) => plan(dir, { corpus: text, nWindows: n, windowsPerShard: 64, ctx: 32 });
  const first = small(100_000);
  const a = drain(first);
  assert.equal(a.exhausted, true);
  const made = a.chunks.reduce((s, c) => s + c.n, 0);
  assert.ok(made > 0 && made < 100_000);
  // The corpus has no more windows: a request for more still reads the file, and still runs out.
  const second = small(200_000);
  assert.deepEqual(drain(second), a);
  assert.equal(second.cache?.hit, true);
  appendFileSync(text, '\n\nThe corpus grew by one more paragraph of words for the model to read.\n');
  const third = small(100_000);
  const c = drain(third);
  assert.equal(third.cache?.hit, false);
  assert.notEqual(third.cache?.file, first.cache?.file);
  assert.deepEqual(c, drain(plan(undefined, { corpus: text, nWindows: 100_000, windowsPerShard: 64, ctx: 32 })));
});

test('sdl harvest: the second run reads its windows from the token cache, with the same shards; --no-token-cache tokenizes', () => {
  const dir = tmp();
  const env = { ...process.env, SDL_CACHE: join(dir, 'cache') };
  const run = (out: string, ...extra: string[]) => {
    const r = spawnSync(process.execPath, [CLI, 'harvest', '--layer', '6', '--tokens', '20k', '--split', 'all', '--out', join(dir, out), ...extra], {
      encoding: 'utf8',
      env,
    });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  assert.match(run('a'), /; token windows kept in .*cache\/windows\/[0-9a-f]{32}\.windows -> /);
  assert.match(run('b'), /; token windows read from .*cache\/windows\/[0-9a-f]{32}\.windows -> /);
  assert.doesNotMatch(run('c', '--no-token-cache'), /token windows/);
  const crcs = (out: string) => readManifest(join(dir, out))?.shards.map((s) => s.crc32c);
  assert.deepEqual(crcs('b'), crcs('a'));
  assert.deepEqual(crcs('c'), crcs('a'));
  const json = JSON.parse(run('d', '--json'));
  assert.equal(json.token_cache.hit, true);
});

test('token cache: a folder that cannot be made is one line, and the windows are tokenized', () => {
  const dir = tmp();
  const blocked = join(dir, 'windows');
  writeFileSync(blocked, 'a file where the cache folder should be');
  const p = plan(blocked);
  assert.deepEqual(drain(p), drain(plan(undefined)));
  assert.equal(p.warnings.length, 1);
  assert.match(p.warnings[0], /^window cache .*windows cannot be written \((EEXIST|ENOTDIR)\): the harvest tokenizes without it$/);
  assert.equal(p.cache?.file, undefined);
  assert.equal(p.cache?.hit, false);
});

test('token cache: a cache file that cannot be written is one line, and the harvest goes on with the same windows', () => {
  const first = plan(tmp(), { nWindows: 300 });
  drain(first);
  const kept = first.cache?.file;
  assert.ok(kept);
  const name = basename(kept);
  const dir = tmp();
  mkdirSync(join(dir, `${name}.tmp-${process.pid}`)); // where the writer's temporary file would go
  const p = plan(dir, { nWindows: 300 });
  assert.deepEqual(drain(p), drain(plan(undefined, { nWindows: 300 })));
  assert.equal(p.warnings.length, 1);
  assert.match(p.warnings[0], /\.windows cannot be written \(EISDIR\): the harvest tokenizes without it$/);
  assert.equal(existsSync(join(dir, name)), false);
  assert.equal(p.cache?.file, undefined, 'no file is said to be kept');
});
