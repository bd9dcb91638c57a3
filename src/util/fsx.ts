// Atomic writes and hashing: a file is either complete or absent, never half-written.
import {
  accessSync,
  closeSync,
  constants,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  statfsSync,
  writeSync,
  existsSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from './errors.js';
import { native } from '../native/kernels.js';
import { type ChecksumKind, digest, fileDigest } from './checksum.js';

/** Bytes as one buffer, a string, or parts in order (an array, or a generator consumed once). */
export type Bytes = Uint8Array | string | Iterable<Uint8Array>;
const partsOf = (data: Bytes): Iterable<Uint8Array | string> => (typeof data === 'string' || data instanceof Uint8Array ? [data] : data);

/**
 * The parts as bytes, neighbours in one memory joined into one view when the parts are an array: a shard's columns
 * are views of one buffer, one after another, and written as one they go to the disk from that buffer in one O_DIRECT
 * run (TempFile.write). A generator's parts are taken one at a time, never held past the next: a generator may fill
 * the same scratch memory for each part.
 */
function* joinAdjacent(data: Bytes): Generator<Uint8Array> {
  if (!Array.isArray(data)) {
    for (const part of partsOf(data)) yield typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    return;
  }
  let run: Uint8Array | undefined;
  for (const b of data as Uint8Array[]) {
    if (run && b.buffer === run.buffer && b.byteOffset === run.byteOffset + run.length) run = new Uint8Array(run.buffer, run.byteOffset, run.length + b.length);
    else {
      if (run) yield run;
      run = b;
    }
  }
  if (run) yield run;
}

export function sha256(data: Bytes): string {
  const h = digest('sha256');
  for (const part of partsOf(data)) h.update(typeof part === 'string' ? Buffer.from(part, 'utf8') : part);
  return h.hex();
}

/** A file's SHA-256, read in pieces. */
export const sha256File = (path: string): string => fileDigest(path, 'sha256');

/** Flushes a file written by someone else (SQLite with synchronous off) to the disk, before it is renamed into place. */
export function fsyncFile(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes to `path.tmp-PID`, fsyncs, then renames over `path`. Parts are written one after another (a generator's
 * are made as they are written). Returns the checksum of what was written (`checksum`, default SHA-256). `direct`:
 * write with O_DIRECT (see TempFile), for large files nothing will read back soon.
 */
export function writeAtomic(path: string, data: Bytes, opts: WriteOptions = {}): string {
  const steps = atomicWriteSteps(path, data, opts, Number.POSITIVE_INFINITY);
  let r = steps.next();
  while (!r.done) {
    if (r.value) {
      try {
        fsyncSync(r.value.fsync);
      } catch (e) {
        r = steps.throw(e);
        continue;
      }
    }
    r = steps.next();
  }
  return r.value;
}

/**
 * writeAtomic a slice at a time, the event loop let in after each slice of at most `slice` bytes (rounded to whole
 * blocks), and the fsync on libuv's threads: a harvest writes its shards on the thread that hands the forward its
 * batches, so a shard's write may hold that thread for one slice (~3 ms), never for the whole 50 MB nor for the
 * fsync (35-40 ms a shard written with O_DIRECT on this VM, longer than a worker's queued batch lasts;
 * docs/BENCHMARKS.md). The bytes and checksum are writeAtomic's: both run the same steps.
 */
export async function writeAtomicInSlices(path: string, data: Bytes, opts: WriteOptions & { slice: number }): Promise<string> {
  const steps = atomicWriteSteps(path, data, opts, Math.max(BLOCK, Math.floor(opts.slice / BLOCK) * BLOCK));
  let r = steps.next();
  while (!r.done) {
    const step = r.value;
    if (step) {
      try {
        await new Promise<void>((resolve, reject) => fsync(step.fsync, (e) => (e ? reject(e) : resolve())));
      } catch (e) {
        r = steps.throw(e);
        continue;
      }
    } else await new Promise<void>((resolve) => setImmediate(resolve));
    r = steps.next();
  }
  return r.value;
}

export interface WriteOptions {
  direct?: boolean;
  checksum?: ChecksumKind;
}

/** What writeAtomic's steps ask of their driver: nothing (a slice is written), or an fsync of the file. */
type WriteStep = undefined | { fsync: number };

/** writeAtomic's work, yielding after each piece of at most `slice` bytes is checksummed and written, and for the fsync. */
function* atomicWriteSteps(path: string, data: Bytes, opts: WriteOptions, slice: number): Generator<WriteStep, string> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  let file: TempFile;
  try {
    file = new TempFile(tmp, opts.direct === true);
  } catch (e) {
    throw outputError(path, e);
  }
  const h = digest(opts.checksum ?? 'sha256');
  try {
    for (const buf of joinAdjacent(data))
      for (let at = 0; at < buf.length; at += slice) {
        const piece = at === 0 && buf.length <= slice ? buf : buf.subarray(at, Math.min(buf.length, at + slice));
        h.update(piece);
        file.write(piece);
        if (slice < Number.POSITIVE_INFINITY) yield;
      }
    file.flush();
    yield { fsync: file.fd };
    file.end();
    renameSync(tmp, path);
    return h.hex();
  } catch (e) {
    file.close();
    rmSync(tmp, { force: true });
    throw outputError(path, e);
  }
}

/** O_DIRECT writes go through this many bytes of 4096-aligned memory, one buffer per file being written at once. */
const DIRECT_BLOCK = 8 << 20;
/** The block O_DIRECT's addresses, offsets and lengths are aligned to (the largest logical block in common use). */
export const DIRECT_ALIGN = 4096;
const BLOCK = DIRECT_ALIGN;
/** Staging buffers made and not in use (each thread has its own module, so its own list): made once, reused. */
const freeStages: Uint8Array[] = [];

/** Bytes this thread has written with O_DIRECT straight from its callers' memory, not through the staging buffer (tests). */
export const directFromCaller = { bytes: 0 };

/**
 * A file being written, either through the page cache or with O_DIRECT: the disk reads the bytes from an aligned
 * staging buffer, or in whole blocks straight from the caller's memory where its address agrees with its place in
 * the file (a harvest's shard body), so the kernel neither copies them into cached pages nor writes those back
 * later. On this VM that is the difference between 0.2-1.9 s and 0.04 s of kernel time per 768 MB (docs/BENCHMARKS.md). O_DIRECT needs
 * aligned memory (the native build's alignedBuffer), aligned sizes (the last block is padded, then the file
 * truncated to its length) and a file system that takes it; without any of them the file is written through the
 * page cache, with the same bytes.
 */
class TempFile {
  fd: number;
  private stage?: Uint8Array;
  private fill = 0;
  private pos = 0;
  /** Whether blocks may be written from the caller's memory (until the kernel refuses one). */
  private fromCaller = true;

  constructor(
    private readonly path: string,
    direct: boolean,
  ) {
    this.stage = direct && constants.O_DIRECT ? stageBuffer() : undefined;
    if (this.stage) {
      try {
        this.fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DIRECT, 0o666);
        return;
      } catch (e) {
        this.releaseStage();
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        // the file system does not take O_DIRECT (tmpfs before Linux 6.6)
      }
    }
    this.fd = openSync(path, 'w');
  }

  write(buf: Uint8Array): void {
    let i = 0;
    // Bytes whose address agrees with their place in the file modulo the block go to the disk from where they lie,
    // in whole blocks, not through the staging copy (a harvest's shard body is laid out so: ShardBuffer.alignBody).
    const pageOffset = this.stage && buf.length >= 2 * BLOCK ? native()?.pageOffset : undefined;
    if (pageOffset && this.fromCaller && pageOffset(buf) === (this.pos + this.fill) % BLOCK) {
      i = this.stageBytes(buf, 0, (BLOCK - ((this.pos + this.fill) % BLOCK)) % BLOCK); // the stage now ends on a block
      if (this.stage && this.fill) this.flushStage(this.fill);
      if (this.stage) i += this.writeFromCaller(buf.subarray(i, i + Math.floor((buf.length - i) / BLOCK) * BLOCK));
    }
    i = this.stageBytes(buf, i, buf.length);
    if (!this.stage) this.writeAll(buf, i, buf.length);
  }

  /** Stages buf[from, to) (flushing each time the stage fills) while O_DIRECT is on; returns where it stopped. */
  private stageBytes(buf: Uint8Array, from: number, to: number): number {
    let i = from;
    // Large pieces by memmove: V8 copies from shared memory (a shard buffer) a byte at a time where source and stage
    // disagree modulo the word, as a Parquet shard's pages do (16 ms per 50 MB against 3).
    const copy = to - from >= BLOCK ? native()?.copyBytes : undefined;
    while (this.stage && i < to) {
      const n = Math.min(this.stage.length - this.fill, to - i);
      if (copy) copy(this.stage, this.fill, buf.subarray(i, i + n));
      else this.stage.set(buf.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.stage.length) this.flushStage(this.fill);
    }
    return i;
  }

  /** Whole blocks written with O_DIRECT from the caller's memory at the file's end (the stage empty); returns the bytes written. */
  private writeFromCaller(b: Uint8Array): number {
    try {
      for (let off = 0; off < b.length; ) off += writeSync(this.fd, b, off, b.length - off, this.pos + off);
    } catch (e) {
      // Memory the kernel will not take for O_DIRECT: these bytes and the rest go through the staging buffer (the
      // same offsets, so a block written before the refusal is written again with the same bytes).
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL' && (e as NodeJS.ErrnoException).code !== 'EFAULT') throw e;
      this.fromCaller = false;
      return 0;
    }
    this.pos += b.length;
    directFromCaller.bytes += b.length;
    return b.length;
  }

  /** Writes what is staged, pads an O_DIRECT file's last block and sets its length (the caller fsyncs and closes). */
  flush(): void {
    if (this.stage && this.fill) {
      const length = this.pos + this.fill;
      const padded = Math.ceil(this.fill / 4096) * 4096;
      this.stage.fill(0, this.fill, padded);
      this.flushStage(padded);
      if (this.stage) ftruncateSync(this.fd, length);
    }
  }

  /** Closes the written file; an error is the write's. */
  end(): void {
    this.releaseStage();
    const fd = this.fd;
    this.fd = -1;
    closeSync(fd);
  }

  /** Closes the file after a failure, quietly (the failure is what is reported). */
  close(): void {
    this.releaseStage();
    if (this.fd < 0) return;
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
    this.fd = -1;
  }

  private flushStage(bytes: number): void {
    const stage = this.stage!;
    try {
      for (let off = 0; off < bytes; ) off += writeSync(this.fd, stage, off, bytes - off, this.pos + off);
    } catch (e) {
      // A file system may accept O_DIRECT at open and refuse the first write (an alignment it needs is larger):
      // start over through the page cache. Later failures are real ones.
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL' || this.pos !== 0) throw e;
      closeSync(this.fd);
      this.fd = openSync(this.path, 'w');
      this.writeAll(stage, 0, this.fill);
      this.releaseStage();
      this.fill = 0;
      return;
    }
    this.pos += bytes;
    this.fill = 0;
  }

  /** The staging buffer back to the free list (a file written through the page cache from here on has none). */
  private releaseStage(): void {
    if (this.stage) freeStages.push(this.stage);
    this.stage = undefined;
  }

  private writeAll(buf: Uint8Array, from: number, to: number): void {
    for (let off = from; off < to; ) off += writeSync(this.fd, buf, off, to - off);
  }
}

/** A staging buffer for one file: a free one, else a new one (none without the native build's aligned memory). */
function stageBuffer(): Uint8Array | undefined {
  const free = freeStages.pop();
  if (free) return free;
  const n = native();
  return n ? new Uint8Array(n.alignedBuffer(DIRECT_BLOCK)) : undefined;
}

/** A file-system error while writing `path` as one line saying what to do (out of space, read-only, ...). */
export function outputError(path: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  const why: Record<string, string> = {
    ENOSPC: 'the disk is full; free space or write elsewhere (--out)',
    EDQUOT: 'the disk quota is exhausted; free space or write elsewhere (--out)',
    EROFS: 'the file system is read-only; write elsewhere (--out)',
    EACCES: 'permission denied; write elsewhere (--out) or fix the permissions',
    EPERM: 'permission denied; write elsewhere (--out) or fix the permissions',
    EISDIR: 'it is a folder; name a file (--out)',
    ENOTDIR: 'a part of the path is a file, not a folder; choose another --out',
    EEXIST: 'a file is in the way; choose another --out',
  };
  return code && why[code] ? new UserError(`cannot write ${path}: ${why[code]}`) : (e as Error);
}

/**
 * Checks, before any work starts, that `path` can be created as a file or a folder: nothing of the other kind is
 * there, the nearest existing parent is a writable folder, and its file system has `minFreeBytes` free.
 */
/** `flag` is the option that named the path (messages tell the user which one to change). */
export function checkOutput(path: string, kind: 'file' | 'dir', flag = '--out', minFreeBytes = 1 << 20): void {
  if (existsSync(path)) {
    const isDir = statSync(path).isDirectory();
    if (kind === 'dir' && !isDir) throw new UserError(`output folder ${path} is an existing file; choose another ${flag} or remove it`);
    if (kind === 'file' && isDir) throw new UserError(`output file ${path} is an existing folder; name a file with ${flag}`);
  }
  let parent = kind === 'dir' && existsSync(path) ? path : dirname(path);
  while (!existsSync(parent)) parent = dirname(parent);
  if (!statSync(parent).isDirectory()) throw new UserError(`cannot create ${path}: ${parent} is a file, not a folder; choose another ${flag}`);
  try {
    accessSync(parent, constants.W_OK);
  } catch {
    throw new UserError(`cannot write under ${parent} (read-only or no permission); choose another ${flag}`);
  }
  const fs = statfsSync(parent);
  const free = fs.bavail * fs.bsize;
  if (free < minFreeBytes)
    throw new UserError(
      `only ${(free / 1e6).toFixed(1)} MB free under ${parent}, ${(minFreeBytes / 1e6).toFixed(1)} MB needed; free space or choose another ${flag}`,
    );
}

/** Removes `NAME.tmp-PID*` files in `dir` left by processes that no longer run (killed or out of space). */
export function removeStaleTemps(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  const removed: string[] = [];
  for (const f of readdirSync(dir)) {
    const m = /\.tmp-(\d+)(?:-wal|-shm|-journal)?$/.exec(f);
    if (!m || pidAlive(Number(m[1]))) continue;
    rmSync(join(dir, f), { recursive: true, force: true });
    removed.push(f);
  }
  return removed;
}

export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process nobody has reaped yet (a zombie) still answers kill(pid, 0); on Linux, /proc says so.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/**
 * An exclusive lock on a folder for one writer: `.lock` holds the owner's pid, created with O_EXCL. A lock whose
 * process no longer runs is taken over. Returns the release function (also run at exit).
 */
export function lockFolder(dir: string, what: string, name = '.lock'): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      const release = () => {
        process.removeListener('exit', release);
        try {
          if (readFileSync(path, 'utf8') === String(process.pid)) rmSync(path, { force: true });
        } catch {
          /* gone already */
        }
      };
      process.once('exit', release);
      return release;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw outputError(path, e);
      const owner = Number(readFileSync(path, 'utf8'));
      if (Number.isInteger(owner) && owner > 0 && pidAlive(owner))
        throw new UserError(`${dir} is being written by another ${what} (process ${owner}); wait for it or choose another --out`);
      rmSync(path, { force: true }); // its owner died: take the lock over
    }
  }
  throw new UserError(`cannot lock ${dir}; another ${what} keeps taking it`);
}

export function writeJsonAtomic(path: string, value: unknown): void {
  writeAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

export function removeIfExists(path: string): void {
  if (existsSync(path)) rmSync(path, { recursive: true, force: true });
}
