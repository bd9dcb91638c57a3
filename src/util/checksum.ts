// The checksums sdlkit records for the files it writes: SHA-256 (models, checkpoints, identities: names content) and
// CRC-32C (activation shards: catches damage at ~10 GB/s with the native build's crc32 instruction, where SHA-256 took
// ~0.5 CPU s of every million tokens the bundled model harvests; docs/BENCHMARKS.md). The native build's crc32c
// (native/src/checksum.cc) and the table reference here give the same numbers: a test holds them equal.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { native } from '../native/kernels.js';

export type ChecksumKind = 'sha256' | 'crc32c';

/** Reflected Castagnoli polynomial; TABLES[k][b] is the register after byte b and then k zero bytes. */
const POLY = 0x82f63b78;
let TABLES: Uint32Array[] | undefined;
function tables(): Uint32Array[] {
  if (TABLES) return TABLES;
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let i = 0; i < 8; i++) c = (c >>> 1) ^ (c & 1 ? POLY : 0);
    t[0][b] = c >>> 0;
  }
  for (let k = 1; k < 8; k++) for (let b = 0; b < 256; b++) t[k][b] = ((t[k - 1][b] >>> 8) ^ t[0][t[k - 1][b] & 0xff]) >>> 0;
  TABLES = t;
  return t;
}

/** CRC-32C of `bytes` continuing from `crc` (0 to start), eight bytes a step through tables: the reference. */
export function crc32cReference(bytes: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = tables();
  let c = ~crc >>> 0;
  let i = 0;
  const n = bytes.length;
  for (; i + 8 <= n; i += 8) {
    const lo = (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24)) ^ c;
    c =
      t7[lo & 0xff] ^
      t6[(lo >>> 8) & 0xff] ^
      t5[(lo >>> 16) & 0xff] ^
      t4[lo >>> 24] ^
      t3[bytes[i + 4]] ^
      t2[bytes[i + 5]] ^
      t1[bytes[i + 6]] ^
      t0[bytes[i + 7]];
  }
  for (; i < n; i++) c = (c >>> 8) ^ t0[(c ^ bytes[i]) & 0xff];
  return ~c >>> 0;
}

/** CRC-32C of `bytes` continuing from `crc`: the native build's crc32 instruction when it is there. */
export function crc32c(bytes: Uint8Array, crc = 0): number {
  const mod = native();
  return mod ? mod.crc32c(bytes, crc) : crc32cReference(bytes, crc);
}

/** A running checksum of bytes given in parts; `hex()` once at the end (CRC-32C: eight hex digits). */
export interface Digest {
  update(bytes: Uint8Array): void;
  hex(): string;
}

export function digest(kind: ChecksumKind): Digest {
  if (kind === 'sha256') {
    const h = createHash('sha256');
    return { update: (b) => void h.update(b), hex: () => h.digest('hex') };
  }
  let c = 0;
  return { update: (b) => void (c = crc32c(b, c)), hex: () => c.toString(16).padStart(8, '0') };
}

/** fileDigest's read buffer, made once per thread: a new 16 MiB one per shard checked was 16 MiB of fit's peak RSS. */
let readBuf: Uint8Array | undefined;

/** A file's checksum, read 1 MiB at a time (a 200 MB shard is not held in memory to be checked). */
export function fileDigest(path: string, kind: ChecksumKind): string {
  const h = digest(kind);
  readBuf ??= new Uint8Array(2 ** 20);
  const buf = readBuf;
  const fd = openSync(path, 'r');
  try {
    for (let pos = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.hex();
}
