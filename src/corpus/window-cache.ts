// The token windows of a corpus, kept on disk after a harvest tokenizes them, so the next harvest of the same text
// with the same tokenizer (another layer, more sites, another model of the family) reads them instead: SAELens and
// sparsify train from pretokenized datasets for the same reason. A Hugging Face tokenizer in JavaScript takes ~5 us a
// token (GPT-2's: ~5 s of CPU a million tokens, on the thread that feeds the model); reading them back takes ~40 ms
// (docs/BENCHMARKS.md).
//
// A cache file holds windows 0..n-1 of the stream tokenWindows makes (src/corpus/windows.ts): each window's ids then
// its document numbers, int32, in blocks of about 1 MiB with a CRC-32C each. It is named by a hash of everything the
// windows depend on: the tokenizer's file and rule, the corpus files' sizes and change times, the split, the seed,
// the context length, and the code that makes windows. A file that does not match is never used: damage found on
// opening makes it a miss (the windows are tokenized and the file written again); damage found in a later block
// means the stream is tokenized again from that window on, so a harvest's windows never depend on the cache.
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { crc32c } from '../util/checksum.js';
import { removeStaleTemps } from '../util/fsx.js';
import { nativeFile } from '../native/kernels.js';
import type { Window } from './windows.js';

const MAGIC = 'SDLWIN01';
const HEADER_BYTES = 64;
/** Payload bytes a block holds at most (whole windows; at least one). */
const BLOCK_BYTES = 1 << 20;

/** What a corpus's windows depend on, beside the text files themselves (their stats are read here). */
export interface WindowCacheKey {
  tokenizer: unknown;
  /** Files the corpus reads, or folders whose files it reads. */
  corpusFiles: string[];
  corpus: string;
  split: string;
  seed: number;
  ctx: number;
}

/** The files whose code decides the windows: a change to any of them (an upgrade, a fix) makes every cache a miss. */
function codeFiles(): string[] {
  const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
  const require = createRequire(import.meta.url);
  const files = [
    here('./windows.js'),
    here('./sources.js'),
    here('./builtin-index.js'),
    here('../models/tokenizer.js'),
    here('../models/hf-tokenizer.js'),
    here('../util/rng.js'),
    require.resolve('@huggingface/tokenizers'),
  ];
  const nat = nativeFile();
  return nat ? [...files, nat] : files;
}

let codeHash: string | undefined;
function codeFingerprint(): string {
  if (codeHash === undefined) {
    let c = 0;
    for (const f of codeFiles()) c = crc32c(readFileSync(f), c);
    codeHash = c.toString(16);
  }
  return codeHash;
}

/** Each file's size and times (a folder's files, one level down): an edit changes the change time even where the modification time is set back. */
function fileStats(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    const st = statSync(p);
    const files = st.isDirectory()
      ? readdirSync(p)
          .sort()
          .map((f) => join(p, f))
      : [p];
    for (const f of files) {
      const s = statSync(f, { bigint: true });
      out.push(`${f}:${s.size}:${s.mtimeNs}:${s.ctimeNs}:${s.ino}`);
    }
  }
  return out;
}

/** The cache file's name for these windows (a SHA-256 of the key, the corpus files' stats and the code). */
export function windowCacheName(key: WindowCacheKey): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ v: MAGIC, code: codeFingerprint(), ...key, corpusFiles: fileStats(key.corpusFiles) }));
  return `${h.digest('hex').slice(0, 32)}.windows`;
}

/** Damage found in a cache file: its name and what is wrong. */
class DamagedCache extends Error {}

interface Header {
  ctx: number;
  perBlock: number;
  windows: number;
  exhausted: boolean;
  blocks: number;
}

function encodeHeader(h: Header, table: Uint32Array): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode(MAGIC), 0);
  v.setUint32(8, h.ctx, true);
  v.setUint32(12, h.perBlock, true);
  v.setFloat64(16, h.windows, true);
  v.setUint32(24, h.exhausted ? 1 : 0, true);
  v.setUint32(28, h.blocks, true);
  v.setUint32(32, crc32c(new Uint8Array(table.buffer, table.byteOffset, table.byteLength)), true);
  v.setUint32(HEADER_BYTES - 4, crc32c(b.subarray(0, HEADER_BYTES - 4)), true);
  return b;
}

/**
 * A finished cache file, checked as far as its header and block table go (each block is checked as it is read).
 * Undefined when there is none; throws DamagedCache when it does not hold what its header says.
 */
class WindowCacheFile {
  private constructor(
    readonly path: string,
    readonly header: Header,
    private readonly table: Uint32Array,
    /** The file's inode: windows() reads the file its header and table came from. */
    private readonly ino: number,
  ) {}

  static open(path: string, ctx: number): WindowCacheFile | undefined {
    if (!existsSync(path)) return undefined;
    const fd = openSync(path, 'r');
    try {
      const head = new Uint8Array(HEADER_BYTES);
      const damaged = (why: string) => new DamagedCache(`${path}: ${why}`);
      if (readSync(fd, head, 0, HEADER_BYTES, 0) !== HEADER_BYTES) throw damaged('shorter than its header');
      const v = new DataView(head.buffer);
      if (new TextDecoder().decode(head.subarray(0, 8)) !== MAGIC) throw damaged('not a window cache of this version');
      if (v.getUint32(HEADER_BYTES - 4, true) !== crc32c(head.subarray(0, HEADER_BYTES - 4))) throw damaged("its header's checksum does not match");
      const h: Header = {
        ctx: v.getUint32(8, true),
        perBlock: v.getUint32(12, true),
        windows: v.getFloat64(16, true),
        exhausted: v.getUint32(24, true) === 1,
        blocks: v.getUint32(28, true),
      };
      if (h.ctx !== ctx) throw damaged(`windows of ${h.ctx} tokens where ${ctx} were asked for`);
      if (h.perBlock < 1 || h.blocks !== Math.ceil(h.windows / h.perBlock)) throw damaged('its block count does not match its windows');
      const payload = h.windows * ctx * 8;
      if (fstatSync(fd).size !== HEADER_BYTES + payload + 4 * h.blocks) throw damaged('its length does not match its header');
      const table = new Uint32Array(h.blocks);
      const tableBytes = new Uint8Array(table.buffer);
      if (readSync(fd, tableBytes, 0, tableBytes.length, HEADER_BYTES + payload) !== tableBytes.length) throw damaged('its block table is cut short');
      if (crc32c(tableBytes) !== v.getUint32(32, true)) throw damaged("its block table's checksum does not match");
      return new WindowCacheFile(path, h, table, fstatSync(fd).ino);
    } finally {
      closeSync(fd);
    }
  }

  /** Windows 0..n-1 (n at most the file's), each a view of its block's memory; throws DamagedCache at a block whose checksum does not match. */
  *windows(n: number): Generator<Window> {
    const { ctx, perBlock } = this.header;
    const fd = openSync(this.path, 'r');
    try {
      // Another harvest may have put a longer file in its place since it was opened.
      if (fstatSync(fd).ino !== this.ino) throw new DamagedCache(`${this.path}: replaced while it was being opened`);
      for (let b = 0; b * perBlock < n; b++) {
        const count = Math.min(perBlock, this.header.windows - b * perBlock);
        // A new block's memory each time: the windows handed out stay valid while their holder keeps them.
        const block = new Int32Array(count * ctx * 2);
        const bytes = new Uint8Array(block.buffer);
        const at = HEADER_BYTES + b * perBlock * ctx * 8;
        if (readSync(fd, bytes, 0, bytes.length, at) !== bytes.length || crc32c(bytes) !== this.table[b])
          throw new DamagedCache(`${this.path}: block ${b} does not match its checksum`);
        for (let i = 0; i < count && b * perBlock + i < n; i++) {
          const o = i * ctx * 2;
          yield { index: b * perBlock + i, ids: block.subarray(o, o + ctx), docs: block.subarray(o + ctx, o + 2 * ctx) };
        }
      }
    } finally {
      closeSync(fd);
    }
  }
}

/** Writes a stream's windows to a temporary file beside the cache file; `finish` puts it in place, `abort` removes it. */
class WindowCacheWriter {
  private readonly tmp: string;
  private fd: number;
  private readonly perBlock: number;
  private readonly block: Int32Array;
  private fill = 0;
  private windows = 0;
  private readonly crcs: number[] = [];

  constructor(
    private readonly path: string,
    private readonly ctx: number,
  ) {
    this.tmp = `${path}.tmp-${process.pid}`;
    this.perBlock = Math.max(1, Math.floor(BLOCK_BYTES / (ctx * 8)));
    this.block = new Int32Array(this.perBlock * ctx * 2);
    this.fd = openSync(this.tmp, 'w');
    writeSync(this.fd, new Uint8Array(HEADER_BYTES)); // the header, once the windows are counted
  }

  add(w: Window): void {
    const o = this.fill * this.ctx * 2;
    this.block.set(w.ids, o);
    this.block.set(w.docs, o + this.ctx);
    this.windows++;
    if (++this.fill === this.perBlock) this.flush();
  }

  private flush(): void {
    if (!this.fill) return;
    const bytes = new Uint8Array(this.block.buffer, 0, this.fill * this.ctx * 8);
    this.crcs.push(crc32c(bytes));
    for (let off = 0; off < bytes.length; ) off += writeSync(this.fd, bytes, off, bytes.length - off);
    this.fill = 0;
  }

  /**
   * The windows written are the stream's first ones, all of them when `exhausted` (the corpus ran out). No fsync: a
   * cache file cut short by a crash fails its checks and is made again.
   */
  finish(exhausted: boolean): void {
    this.flush();
    const table = Uint32Array.from(this.crcs);
    writeSync(this.fd, new Uint8Array(table.buffer));
    const h: Header = { ctx: this.ctx, perBlock: this.perBlock, windows: this.windows, exhausted, blocks: this.crcs.length };
    writeSync(this.fd, encodeHeader(h, table), 0, HEADER_BYTES, 0);
    closeSync(this.fd);
    this.fd = -1;
    renameSync(this.tmp, this.path);
  }

  /** Removes the temporary file (quietly: what went wrong is reported by whoever aborts). */
  abort(): void {
    try {
      if (this.fd >= 0) closeSync(this.fd);
      this.fd = -1;
      rmSync(this.tmp, { force: true });
    } catch {
      /* a temporary file left behind is removed by the next harvest (removeStaleTemps) */
    }
  }
}

/** Where a harvest's windows come from: `read`, the cache; `tokenize`, the stream, written to the cache as it goes (`warn`: one line for damage found). */
export interface CachedWindowsOptions {
  dir: string;
  name: string;
  ctx: number;
  /** Windows the caller will take at most. */
  need: number;
  tokenize: () => Generator<Window>;
  warn: (line: string) => void;
  /** Called when the cache file being written will not be there after all (it could not be written). */
  unkept?: () => void;
}

export interface CachedWindows {
  windows: Generator<Window>;
  /** The cache file: the windows are read from it (hit), or written to it as they are tokenized; none when the folder cannot be used. */
  path?: string;
  hit: boolean;
}

/** The one line for a cache folder or file that cannot be written (a file where the folder should be, a full disk): the harvest goes on without it. */
const unwritable = (where: string, e: unknown) =>
  `window cache ${where} cannot be written (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): the harvest tokenizes without it`;

/**
 * The stream's first `need` windows (fewer when the corpus runs out), from the cache when it holds them, else
 * tokenized and the cache written once the caller has taken them all (or the stream ended). A caller that stops
 * early calls the generator's return(): the partial file is removed.
 */
export function cachedWindows(o: CachedWindowsOptions): CachedWindows {
  try {
    mkdirSync(o.dir, { recursive: true });
    removeStaleTemps(o.dir);
  } catch (e) {
    o.warn(unwritable(o.dir, e));
    return { windows: o.tokenize(), hit: false };
  }
  const path = join(o.dir, o.name);
  let file: WindowCacheFile | undefined;
  try {
    file = WindowCacheFile.open(path, o.ctx);
  } catch (e) {
    if (!(e instanceof DamagedCache)) throw e;
    o.warn(`window cache ${e.message}: tokenizing again`);
    rmSync(path, { force: true });
  }
  if (file && (file.header.windows >= o.need || file.header.exhausted)) return { windows: fromFile(file, o), path, hit: true };
  return { windows: written(o, path), path, hit: false };
}

function* fromFile(file: WindowCacheFile, o: CachedWindowsOptions): Generator<Window> {
  let i = 0;
  try {
    for (const w of file.windows(Math.min(o.need, file.header.windows))) {
      yield w;
      i++;
    }
    return;
  } catch (e) {
    if (!(e instanceof DamagedCache)) throw e;
    o.warn(`window cache ${e.message}: tokenizing again from window ${i}`);
    rmSync(file.path, { force: true });
  }
  // The stream is the same every time: its first i windows are made again and passed over.
  const s = o.tokenize();
  for (let j = 0; j < i && !s.next().done; j++);
  yield* s;
}

function* written(o: CachedWindowsOptions, path: string): Generator<Window> {
  let writer: WindowCacheWriter | undefined;
  /** A cache that cannot be written costs the next harvest its tokenizing, nothing more: one line, and on. */
  const stop = (e: unknown) => {
    o.warn(unwritable(path, e));
    writer?.abort();
    writer = undefined;
    o.unkept?.();
  };
  try {
    writer = new WindowCacheWriter(path, o.ctx);
  } catch (e) {
    stop(e);
  }
  let done = false;
  try {
    let n = 0;
    for (const w of o.tokenize()) {
      n++;
      try {
        writer?.add(w);
        // The caller asks for nothing after its last window: the file is finished before that window is handed over.
        if (n === o.need) writer?.finish(false);
      } catch (e) {
        stop(e);
      }
      if (n === o.need) {
        done = true;
        yield w;
        return;
      }
      yield w;
    }
    try {
      writer?.finish(true);
    } catch (e) {
      stop(e);
    }
    done = true;
  } finally {
    if (!done) writer?.abort();
  }
}
