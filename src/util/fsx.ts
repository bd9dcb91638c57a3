// Atomic writes and hashing: a file is either complete or absent, never half-written.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, existsSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';

export function sha256(data: Uint8Array | string | Uint8Array[]): string {
  const h = createHash('sha256');
  for (const part of Array.isArray(data) ? data : [data]) h.update(part);
  return h.digest('hex');
}

export function sha256File(path: string): string {
  return sha256(readFileSync(path));
}

/** Writes to `path.tmp-PID`, fsyncs, then renames over `path`. Chunks are written one after another. */
export function writeAtomic(path: string, data: Uint8Array | string | Uint8Array[]): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const part of Array.isArray(data) ? data : [data]) {
      const buf = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function writeJsonAtomic(path: string, value: unknown): void {
  writeAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

export function removeIfExists(path: string): void {
  if (existsSync(path)) rmSync(path, { recursive: true, force: true });
}
