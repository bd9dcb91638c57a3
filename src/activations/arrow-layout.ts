// Where each column's values lie inside an Arrow IPC file, so a range of rows of one column can be read from disk
// without reading the file: training on one site of a 768-wide harvest holds a few MB of it instead of the whole
// shard (200 MB per site at 65,536 rows). The footer lists the record batches; each batch's message lists its
// buffers (offset and length within the batch body) in the schema's depth-first order (Arrow columnar format:
// a primitive column has a validity and a data buffer, a FixedSizeList a validity buffer and then its child's).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { FlatTable, int64At } from '../util/flatbuffers.js';
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

// Arrow's FlatBuffers schema (its Schema, File and Message tables): the slots of the fields read here, in order.
const TYPE_INT = 2;
const TYPE_FLOAT = 3;
const TYPE_FIXED_SIZE_LIST = 16;
const HEADER_RECORD_BATCH = 3;
const Footer = { schema: 1, dictionaries: 2, recordBatches: 3 } as const;
const Schema = { endianness: 0, fields: 1, metadata: 2 } as const;
const FieldT = { name: 0, typeType: 2, type: 3, dictionary: 4, children: 5 } as const;
const MessageT = { headerType: 1, header: 2 } as const;
const RecordBatchT = { length: 0, buffers: 2, compression: 3 } as const;
/** Block { offset: int64; metaDataLength: int32; (4 bytes padding) bodyLength: int64 }. */
const BLOCK_BYTES = 24;

/** A scalar column's kind, or a FixedSizeList's item kind; undefined for any other type. */
function kindOf(f: FlatTable): { kind: Kind; width: number; list: boolean } | undefined {
  const scalar = (t: FlatTable): Kind | undefined => {
    const type = t.table(FieldT.type);
    if (!type) return undefined;
    const id = t.uint8(FieldT.typeType);
    if (id === TYPE_INT) return type.int32(0) === 32 && type.bool(1) ? 'int32' : undefined;
    if (id === TYPE_FLOAT) return (['f16', 'f32'] as const)[type.int16(0)];
    return undefined;
  };
  if (f.table(FieldT.dictionary)) return undefined;
  if (f.uint8(FieldT.typeType) === TYPE_FIXED_SIZE_LIST) {
    const [item] = f.tables(FieldT.children);
    const k = item && scalar(item);
    const type = f.table(FieldT.type);
    if (!type) throw new Error(`column ${f.string(FieldT.name)} is a FixedSizeList without its size`);
    const width = type.int32(0);
    return k && k !== 'int32' && width > 0 ? { kind: k, width, list: true } : undefined;
  }
  const k = scalar(f);
  return k ? { kind: k, width: 1, list: false } : undefined;
}

/** Key-value pairs of a table's custom_metadata vector. */
function keyValues(t: FlatTable, slot: number): Map<string, string> {
  return new Map(t.tables(slot).map((kv) => [kv.string(0) ?? '', kv.string(1) ?? '']));
}

/**
 * The layout of an open Arrow file, or undefined where it cannot be read in ranges (compressed bodies, dictionary
 * batches, or a column of another type): the caller then decodes the whole file. Throws on a damaged file: the
 * footer and messages are read with every offset checked (src/util/flatbuffers.ts).
 */
export function arrowLayout(fd: number): ShardLayout | undefined {
  const size = fstatSync(fd).size;
  if (size < 2 * MAGIC_AND_PADDING) throw new Error(`${size} bytes is too short for an Arrow file`);
  const tail = readAt(fd, size - MAGIC_AND_PADDING, MAGIC_AND_PADDING);
  if (new TextDecoder().decode(tail.subarray(4)) !== 'ARROW1') throw new Error('no Arrow file magic at the end (truncated, or not an Arrow IPC file)');
  const footerLen = new DataView(tail.buffer).getInt32(0, true);
  if (footerLen <= 0 || footerLen > size - 2 * MAGIC_AND_PADDING) throw new Error(`footer length ${footerLen} does not fit the file`);
  const footer = FlatTable.root(readAt(fd, size - MAGIC_AND_PADDING - footerLen, footerLen));
  if (footer.vector(Footer.dictionaries, BLOCK_BYTES).length > 0) return undefined;
  const schema = footer.table(Footer.schema);
  if (!schema) throw new Error('the footer holds no schema');
  if (schema.int16(Schema.endianness) !== 0) return undefined; // big-endian
  const fields = schema.tables(Schema.fields);
  const kinds = fields.map(kindOf);
  if (kinds.some((k) => !k)) return undefined;
  const names = fields.map((f) => f.string(FieldT.name) ?? '');
  const columns = new Map<string, ColumnLayout>();
  names.forEach((name, i) => columns.set(name, { kind: kinds[i]!.kind, width: kinds[i]!.width, pieces: [] }));
  if (columns.size !== names.length) return undefined; // two columns of one name
  let rows = 0;
  const blocks = footer.structs(Footer.recordBatches, BLOCK_BYTES, (v, at) => ({
    offset: int64At(v, at),
    metaDataLength: v.getInt32(at + 8, true),
    bodyLength: int64At(v, at + 16),
  }));
  for (const block of blocks) {
    if (block.offset < 0 || block.metaDataLength <= 0 || block.bodyLength < 0 || block.offset + block.metaDataLength + block.bodyLength > size)
      throw new Error('a record batch runs past the end of the file');
    const meta = readAt(fd, block.offset, block.metaDataLength);
    const view = new DataView(meta.buffer);
    // A message starts with the continuation marker 0xFFFFFFFF (format >= 0.15) or directly with its length.
    const start = view.getInt32(0, true) === -1 ? 8 : 4;
    const len = start <= meta.length ? view.getInt32(start - 4, true) : -1;
    if (len <= 0 || start + len > meta.length) throw new Error('a record batch message has a bad length');
    const msg = FlatTable.root(meta.subarray(start, start + len));
    const header = msg.table(MessageT.header);
    if (msg.uint8(MessageT.headerType) !== HEADER_RECORD_BATCH || !header) throw new Error('the footer points at a message that is not a record batch');
    if (header.table(RecordBatchT.compression)) return undefined;
    const length = header.int64(RecordBatchT.length);
    if (length < 0) throw new Error('a record batch of negative length');
    const buffers = header.structs(RecordBatchT.buffers, 16, (v, at) => ({ offset: int64At(v, at), length: int64At(v, at + 8) }));
    const body = block.offset + block.metaDataLength;
    let b = 0;
    names.forEach((name, i) => {
      const k = kinds[i]!;
      if (k.list) b++; // the list's validity buffer (no nulls in a shard)
      b++; // the values' validity buffer
      const data = buffers[b++];
      if (!data) throw new Error(`record batch lists too few buffers for column ${name}`);
      const need = length * k.width * BYTES[k.kind];
      if (data.offset < 0 || data.length < need || data.offset + need > block.bodyLength)
        throw new Error(`column ${name}'s values run past their record batch`);
      columns.get(name)!.pieces.push({ rows: length, offset: body + data.offset });
    });
    rows += length;
  }
  return { rows, columns, metadata: keyValues(schema, Schema.metadata) };
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
