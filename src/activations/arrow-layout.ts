// Where each column's values lie inside an Arrow IPC file, so a range of rows of one column can be read from disk
// without reading the file: training on one site of a 768-wide harvest holds a few MB of it instead of the whole
// shard (200 MB per site at 65,536 rows). The footer lists the record batches; each batch's message lists its
// buffers (offset and length within the batch body) in the schema's depth-first order (Arrow columnar format:
// a primitive column has a validity and a data buffer, a FixedSizeList a validity buffer and then its child's).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { type FixedSizeList, Message, Type, type Field } from 'apache-arrow';
import { Footer } from 'apache-arrow/ipc/metadata/file';
import { f16ToF32 } from '../util/f16.js';

export type Kind = 'int32' | 'f32' | 'f16';

/** One column's values in one record batch (a Parquet page): the rows and the absolute file offset of their bytes. */
interface Piece {
  rows: number;
  offset: number;
}

export interface ColumnLayout {
  kind: Kind;
  /** Values per row (the list size; 1 for a scalar column). */
  width: number;
  pieces: Piece[];
}

/** Where a shard file's columns lie (an Arrow file: arrowLayout; a Parquet file: parquetLayout in parquet-shard.ts). */
export interface ShardLayout {
  rows: number;
  columns: Map<string, ColumnLayout>;
  metadata: Map<string, string>;
}

export const BYTES: Record<Kind, number> = { int32: 4, f32: 4, f16: 2 };
const MAGIC_AND_PADDING = 10; // "ARROW1" + int32 footer length at the end of the file

/** Fills `dst` from byte `pos` of the file (reads may return short; a file that ends early is an error). */
function readInto(fd: number, dst: Uint8Array, pos: number): Uint8Array {
  let got = 0;
  while (got < dst.length) {
    const n = readSync(fd, dst, got, dst.length - got, pos + got);
    if (n === 0) throw new Error(`file ends at byte ${pos + got}, ${dst.length - got} bytes short`);
    got += n;
  }
  return dst;
}

export const readAt = (fd: number, pos: number, len: number): Uint8Array => readInto(fd, new Uint8Array(len), pos);

/** A scalar column's kind, or a FixedSizeList's item kind; undefined for any other type. */
function kindOf(f: Field): { kind: Kind; width: number; list: boolean } | undefined {
  const scalar = (t: Field['type']): Kind | undefined =>
    t.typeId === Type.Int && t.bitWidth === 32 && t.isSigned
      ? 'int32'
      : t.typeId === Type.Float && t.precision === 1
        ? 'f32'
        : t.typeId === Type.Float && t.precision === 0
          ? 'f16'
          : undefined;
  if (f.type.typeId === Type.FixedSizeList) {
    const t = f.type as FixedSizeList;
    const k = scalar(t.children[0].type);
    return k && k !== 'int32' ? { kind: k, width: t.listSize, list: true } : undefined;
  }
  const k = scalar(f.type);
  return k ? { kind: k, width: 1, list: false } : undefined;
}

/**
 * The layout of an open Arrow file, or undefined where it cannot be read in ranges (compressed bodies, dictionary
 * batches, or a column of another type): the caller then decodes the whole file. Throws on a damaged file.
 */
export function arrowLayout(fd: number): ShardLayout | undefined {
  const size = fstatSync(fd).size;
  if (size < 2 * MAGIC_AND_PADDING) throw new Error(`${size} bytes is too short for an Arrow file`);
  const tail = readAt(fd, size - MAGIC_AND_PADDING, MAGIC_AND_PADDING);
  if (new TextDecoder().decode(tail.subarray(4)) !== 'ARROW1') throw new Error('no Arrow file magic at the end (truncated, or not an Arrow IPC file)');
  const footerLen = new DataView(tail.buffer).getInt32(0, true);
  if (footerLen <= 0 || footerLen > size - 2 * MAGIC_AND_PADDING) throw new Error(`footer length ${footerLen} does not fit the file`);
  const footer = Footer.decode(readAt(fd, size - MAGIC_AND_PADDING - footerLen, footerLen));
  if (footer.numDictionaries > 0) return undefined;
  const kinds = footer.schema.fields.map(kindOf);
  if (kinds.some((k) => !k)) return undefined;
  const columns = new Map<string, ColumnLayout>();
  footer.schema.fields.forEach((f, i) => columns.set(f.name, { kind: kinds[i]!.kind, width: kinds[i]!.width, pieces: [] }));
  let rows = 0;
  for (const block of footer.recordBatches()) {
    if (block.offset + block.metaDataLength + block.bodyLength > size) throw new Error('a record batch runs past the end of the file');
    const meta = readAt(fd, block.offset, block.metaDataLength);
    const view = new DataView(meta.buffer);
    // A message starts with the continuation marker 0xFFFFFFFF (format >= 0.15) or directly with its length.
    const start = view.getInt32(0, true) === -1 ? 8 : 4;
    const len = view.getInt32(start - 4, true);
    if (len <= 0 || start + len > meta.length) throw new Error('a record batch message has a bad length');
    const msg = Message.decode(meta.subarray(start, start + len));
    if (!msg.isRecordBatch()) throw new Error('the footer points at a message that is not a record batch');
    const header = msg.header();
    if (header.compression) return undefined;
    const body = block.offset + block.metaDataLength;
    let b = 0;
    footer.schema.fields.forEach((f, i) => {
      const k = kinds[i]!;
      if (k.list) b++; // the list's validity buffer (no nulls in a shard)
      b++; // the values' validity buffer
      const data = header.buffers[b++];
      if (!data) throw new Error(`record batch lists too few buffers for column ${f.name}`);
      const need = header.length * k.width * BYTES[k.kind];
      if (data.length < need || data.offset + need > block.bodyLength) throw new Error(`column ${f.name}'s values run past their record batch`);
      columns.get(f.name)!.pieces.push({ rows: header.length, offset: body + data.offset });
    });
    rows += header.length;
  }
  return { rows, columns, metadata: footer.schema.metadata };
}

/**
 * Arrays a reader reuses from one read to the next, by key: the training stream reads a shard a piece at a time
 * (PIECE_BYTES, src/sdl/data.ts), and a fresh array per piece left several pieces waiting for the garbage collector
 * (48 MiB of the fit's peak at d 768 when pieces were 16 MiB).
 * An array a read returned is overwritten by the next read given the same buffers.
 *
 * With an arena (memory idle while these arrays are in use: fit's batch array between steps, where the held-out rows
 * are read and evaluated), each key's array is laid out in it, one after another, while room is left; past that, and
 * without one, arrays of their own. Reading into an arena adds nothing to the process's resident memory.
 */
export class ReadBuffers {
  private readonly held = new Map<string, Uint8Array<ArrayBuffer>>();
  private used = 0;

  constructor(private readonly arena?: Uint8Array<ArrayBuffer>) {}

  /** At least `bytes` bytes kept under `key`, made again (never shrunk) when too small; 8-byte aligned. */
  private buffer(key: string, bytes: number): Uint8Array<ArrayBuffer> {
    let b = this.held.get(key);
    if (!b || b.byteLength < bytes) {
      const a = this.arena;
      const at = a ? this.used + ((8 - ((a.byteOffset + this.used) % 8)) % 8) : 0;
      if (a && at + bytes <= a.byteLength) {
        b = a.subarray(at, at + bytes);
        this.used = at + bytes;
      } else b = new Uint8Array(bytes);
      this.held.set(key, b);
    }
    return b;
  }

  float32(key: string, n: number): Float32Array<ArrayBuffer> {
    const b = this.buffer(key, 4 * n);
    return new Float32Array(b.buffer, b.byteOffset, n);
  }

  int32(key: string, n: number): Int32Array<ArrayBuffer> {
    const b = this.buffer(key, 4 * n);
    return new Int32Array(b.buffer, b.byteOffset, n);
  }

  bytes(key: string, n: number): Uint8Array<ArrayBuffer> {
    return this.buffer(key, n).subarray(0, n);
  }
}

/** Reads rows [from, to) of one column from an open file. Float16 is widened to float32. With `buffers`, into reused arrays keyed by `key`. */
export function readColumnRows(fd: number, col: ColumnLayout, from: number, to: number, buffers?: ReadBuffers, key = ''): Float32Array | Int32Array {
  const w = col.width;
  const n = (to - from) * w;
  const ints = col.kind === 'int32';
  const out = buffers ? (ints ? buffers.int32(key, n) : buffers.float32(key, n)) : ints ? new Int32Array(n) : new Float32Array(n);
  const bytes = BYTES[col.kind];
  let base = 0; // first row of the current record batch
  for (const p of col.pieces) {
    const a = Math.max(from, base),
      z = Math.min(to, base + p.rows);
    if (a < z) {
      const pos = p.offset + (a - base) * w * bytes;
      const o = (a - from) * w;
      if (col.kind === 'f16') {
        const len = (z - a) * w * 2;
        const raw = readInto(fd, buffers ? buffers.bytes(`${key}:f16`, len) : new Uint8Array(len), pos);
        f16ToF32(new Uint16Array(raw.buffer, raw.byteOffset, (z - a) * w), new Float32Array(out.buffer, out.byteOffset + o * 4, (z - a) * w));
      } else {
        readInto(fd, new Uint8Array(out.buffer, out.byteOffset + o * 4, (z - a) * w * 4), pos);
      }
    }
    base += p.rows;
  }
  return out;
}

/** Opens `path`, runs `fn` with its descriptor, closes it. */
export function withFile<T>(path: string, fn: (fd: number) => T): T {
  const fd = openSync(path, 'r');
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}
