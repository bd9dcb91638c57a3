// Activation shards: Apache Arrow IPC files (or the same table as Parquet), one row per token. Columns: doc,
// window, pos, token (int32) and one FixedSizeList<float32|float16>[width] column per hook site, named by the hook.
// Any Arrow reader opens the .arrow files (pyarrow.ipc.open_file, polars); Spark, Ray Data, DuckDB and Polars read
// the .parquet ones without plugins. sdlkit writes and reads its Parquet shards itself (parquet-shard.ts: the values
// stored as they lie in memory); parquet-wasm (Rust's arrow/parquet crates compiled to WebAssembly) reads the
// compressed ones earlier versions wrote.
import type { Data, FixedSizeList, Int32, Schema, Table } from 'apache-arrow';
import { apacheArrow as arrow } from './arrow.js';
import { parquetWasm } from './parquet.js';
import { encodeParquet, type ParquetColumn } from './parquet-shard.js';
import { f16ToF32, f32ToF16 } from '../util/f16.js';
import { UserError } from '../util/errors.js';
import { native } from '../native/kernels.js';
import { DIRECT_ALIGN } from '../util/fsx.js';

export type ShardFormat = 'arrow' | 'parquet';
export const SHARD_FORMATS: readonly ShardFormat[] = ['arrow', 'parquet'];

/** Shard k's file name: shard-00000.arrow or shard-00000.parquet. */
export const shardFile = (k: number, format: ShardFormat): string => `shard-${String(k).padStart(5, '0')}.${format}`;
/** A shard file's format, from its name. */
export const formatOf = (file: string): ShardFormat => (file.endsWith('.parquet') ? 'parquet' : 'arrow');

export type Dtype = 'f32' | 'f16';
export const INDEX_COLUMNS = ['doc', 'window', 'pos', 'token'] as const;

export interface ShardSite {
  name: string;
  width: number;
}

/**
 * An in-memory shard being filled row by row (preallocated; no growth in the hot path). `shared`: its arrays live in
 * one SharedArrayBuffer, so the forward's worker threads write their batches' hooks where they belong (a harvest's
 * buffers): handing transferred 50 MB buffers between threads made each side's V8 count them as new external memory
 * and collect (36 full collections per million tokens of the bundled model against 1, docs/BENCHMARKS.md).
 */
export class ShardBuffer {
  rows = 0;
  doc!: Int32Array;
  window!: Int32Array;
  pos!: Int32Array;
  token!: Int32Array;
  values!: Float32Array[];
  private readonly memory: ArrayBufferLike;
  /** Each site's values rounded to float16 for an f16 shard (made on first use, in shared memory when the buffer's is). */
  private halves?: Uint16Array[];
  /** Rows rounded into `halves` so far. */
  private halfRows?: number;

  constructor(
    readonly capacity: number,
    readonly sites: ShardSite[],
    shared = false,
  ) {
    const bytes = 4 * (4 * capacity + sites.reduce((a, s) => a + capacity * s.width, 0));
    // A shared buffer (a harvest's, filled by the forward's workers) gets a block of room to slide its arrays along: alignBody.
    this.memory = shared ? new SharedArrayBuffer(bytes + DIRECT_ALIGN) : new ArrayBuffer(bytes);
    this.laid = capacity;
    this.layOut(0);
  }

  /** Rows the arrays are laid out for: the capacity, or fewer for a shard known to be shorter (fit). */
  private laid: number;

  get laidRows(): number {
    return this.laid;
  }

  /** The arrays one after another from byte `shift` of the memory: doc, window, pos, token, then each site's values. */
  private layOut(shift: number): void {
    let at = shift / 4;
    const take = <T>(n: number, make: (b: ArrayBufferLike, offset: number, length: number) => T): T => {
      const a = make(this.memory, 4 * at, n);
      at += n;
      return a;
    };
    const int = (b: ArrayBufferLike, o: number, n: number) => new Int32Array(b, o, n);
    this.doc = take(this.laid, int);
    this.window = take(this.laid, int);
    this.pos = take(this.laid, int);
    this.token = take(this.laid, int);
    this.values = this.sites.map((s) => take(this.laid * s.width, (b, o, n) => new Float32Array(b, o, n)));
  }

  /**
   * Lays an empty buffer's arrays out for a shard of `rows` rows (at most the capacity), one after another, as a
   * float32 Arrow file of that many rows has them: a harvest's last shard, shorter than the others, then goes to the
   * disk from where it lies as theirs do (alignBody), not through the writer's staging copy (~35 ms at the harvest's
   * end, docs/BENCHMARKS.md). A buffer taken for a full shard again is laid out for the capacity again.
   */
  fit(rows: number): void {
    if (this.rows) throw new Error('ShardBuffer.fit: the buffer holds rows');
    if (!(rows > 0 && rows <= this.capacity)) throw new Error(`ShardBuffer.fit: ${rows} rows in a buffer of ${this.capacity}`);
    if (rows === this.laid) return;
    this.laid = rows;
    this.layOut(this.doc.byteOffset);
  }

  /**
   * Slides an empty shared buffer's arrays so that the first starts at an address that agrees with `fileOffset`
   * modulo 4096. A full float32 shard's Arrow body is the arrays in this order with no gaps, so when the body starts
   * at `fileOffset` in the file, the writer sends it to the disk with O_DIRECT from here, without copying it into its
   * staging buffer (src/util/fsx.ts). Without the native build, or where the offsets cannot agree, nothing moves.
   */
  alignBody(fileOffset: number): void {
    if (this.rows) throw new Error('ShardBuffer.alignBody: the buffer holds rows');
    const pageOffset = native()?.pageOffset;
    if (!pageOffset || !(this.memory instanceof SharedArrayBuffer)) return;
    const shift = (((fileOffset - pageOffset(new Uint8Array(this.memory, 0, 1))) % DIRECT_ALIGN) + DIRECT_ALIGN) % DIRECT_ALIGN;
    if (shift % 4 === 0 && shift !== this.doc.byteOffset) this.layOut(shift);
  }

  /**
   * Rounds the rows filled since the last call into this buffer's float16 arrays (the shard's writer reads them
   * where they are). An f16 harvest calls it as each batch lands, so that a value too
   * large for a half is refused at once rather than stored as an infinity (every dictionary fit on it would fail or
   * be wrong).
   */
  roundToHalf(): void {
    if (!this.halves) {
      const total = this.sites.reduce((a, s) => a + this.capacity * s.width, 0);
      const mem = this.memory instanceof SharedArrayBuffer ? new SharedArrayBuffer(2 * total) : new ArrayBuffer(2 * total);
      let at = 0;
      this.halves = this.sites.map((s) => {
        const a = new Uint16Array(mem, 2 * at, this.capacity * s.width);
        at += this.capacity * s.width;
        return a;
      });
    }
    const from = this.halfRows ?? 0;
    if (from >= this.rows) return;
    this.sites.forEach((s, i) => {
      const [a, b] = [from * s.width, this.rows * s.width];
      const over = f32ToF16(this.values[i].subarray(a, b), this.halves![i].subarray(a, b));
      if (over > 0)
        throw new UserError(
          `${s.name} holds ${over} value(s) beyond float16's range (|x| > 65504), which an f16 shard would store as infinity; harvest with --dtype f32 (and --force to replace this unfinished harvest)`,
        );
    });
    this.halfRows = this.rows;
  }

  /** Site i's values (the first `rows` rows) as float16: an f16 shard's column (see roundToHalf). */
  halfValues(i: number): Uint16Array {
    this.roundToHalf();
    return this.halves![i].subarray(0, this.rows * this.sites[i].width);
  }

  get full(): boolean {
    return this.rows >= this.capacity;
  }

  reset(): void {
    this.rows = 0;
    this.halfRows = 0;
  }
}

/**
 * Where a float32 Arrow shard of `buf`'s shape (the rows it is laid out for) and these metadata starts its body (the bytes of the arrays) in
 * the file: the schema and the record batch's header come first. The same for every shard whose metadata values
 * have the same lengths.
 */
export function arrowBodyOffset(buf: ShardBuffer, metadata: Record<string, string>): number | undefined {
  const rows = buf.rows;
  buf.rows = buf.laidRows;
  try {
    let at = 0;
    for (const c of encodeShardChunks(buf, 'f32', metadata)) {
      if (c.buffer === buf.doc.buffer && c.byteOffset === buf.doc.byteOffset) return at;
      at += c.length;
    }
    return undefined;
  } finally {
    buf.rows = rows;
  }
}

function intData(a: Int32Array): Data<Int32> {
  const { makeData, Int32 } = arrow();
  return makeData({ type: new Int32(), length: a.length, nullCount: 0, data: a });
}

/** A shard's Arrow schema: the index columns, then one FixedSizeList column per site. */
function shardSchema(sites: ShardSite[], dtype: Dtype, metadata: Record<string, string>): Schema {
  const { Field, FixedSizeList, Float16, Float32, Int32, Schema } = arrow();
  const item = dtype === 'f16' ? new Float16() : new Float32();
  const fields = [
    ...INDEX_COLUMNS.map((c) => new Field(c, new Int32(), false)),
    ...sites.map((s) => new Field(s.name, new FixedSizeList(s.width, new Field('item', item, false)), false)),
  ];
  return new Schema(fields, new Map(Object.entries(metadata)));
}

/** Site i's values of the first `rows` rows, as the shard stores them (float32, or float16's bits). */
function siteValues(buf: ShardBuffer, dtype: Dtype, i: number): Float32Array | Uint16Array {
  return dtype === 'f16' ? buf.halfValues(i) : buf.values[i].subarray(0, buf.rows * buf.sites[i].width);
}

/** The first `rows` rows of a buffer as an Arrow table. */
function shardTable(buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string>): Table {
  const { makeData, RecordBatch, Struct, Table } = arrow();
  const n = buf.rows;
  const schema = shardSchema(buf.sites, dtype, metadata);
  const children: Data[] = [buf.doc, buf.window, buf.pos, buf.token].map((a) => intData(a.subarray(0, n)));
  buf.sites.forEach((_, i) => {
    const type = schema.fields[INDEX_COLUMNS.length + i].type as FixedSizeList;
    const data = siteValues(buf, dtype, i);
    const child = makeData({ type: type.children[0].type, length: data.length, nullCount: 0, data });
    children.push(makeData({ type, length: n, nullCount: 0, child }));
  });
  const data = makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children });
  return new Table([new RecordBatch(schema, data)]);
}

/** A shard as one Arrow IPC file. */
export function encodeShard(buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string> = {}): Uint8Array {
  return arrow().tableToIPC(shardTable(buf, dtype, metadata), 'file');
}

/**
 * The same file as the writer's chunks, most of them views of the shard's own arrays: writing and hashing
 * them one by one saves copying 50 MB per shard into one buffer. (Reads the writer's queue of chunks; where
 * an apache-arrow version keeps it elsewhere, falls back to the joined bytes.)
 */
export function encodeShardChunks(buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string> = {}): Uint8Array[] {
  const writer = arrow().RecordBatchFileWriter.writeAll(shardTable(buf, dtype, metadata));
  const queued = (writer as unknown as { _sink?: { _values?: unknown } })._sink?._values;
  if (Array.isArray(queued) && queued.every((c) => c instanceof Uint8Array)) return queued as Uint8Array[];
  return [writer.toUint8Array(true)];
}

/**
 * The shard as one Parquet file (parquet-shard.ts), as chunks to write in order: most of them views of the buffer's
 * arrays. The Arrow schema (and the metadata) kept in its footer make reading it back give the same table as the
 * .arrow shard.
 */
export function encodeShardParquet(buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string> = {}): Uint8Array[] {
  const n = buf.rows;
  const columns: ParquetColumn[] = [
    ...[buf.doc, buf.window, buf.pos, buf.token].map((a, i) => ({ name: INDEX_COLUMNS[i], kind: 'int32' as const, width: 1, values: a.subarray(0, n) })),
    ...buf.sites.map((s, i) => ({ name: s.name, kind: dtype, width: s.width, values: siteValues(buf, dtype, i) })),
  ];
  return encodeParquet(columns, n, schemaMessage(shardSchema(buf.sites, dtype, metadata)), metadata);
}

/** A schema as the encapsulated IPC message Arrow's Parquet readers look for under 'ARROW:schema'. */
function schemaMessage(schema: Schema): Uint8Array {
  // An IPC stream of no batches is the schema message and the 8-byte end-of-stream marker.
  const { tableToIPC, Table } = arrow();
  const stream = tableToIPC(new Table(schema), 'stream');
  return stream.subarray(0, stream.length - 8);
}

/** A shard's file bytes in the given format, as chunks to write in order. */
export function encodeShardData(buf: ShardBuffer, format: ShardFormat, dtype: Dtype, metadata: Record<string, string> = {}): Uint8Array[] {
  return format === 'parquet' ? encodeShardParquet(buf, dtype, metadata) : encodeShardChunks(buf, dtype, metadata);
}

export interface ShardData {
  rows: number;
  doc: Int32Array;
  window: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  /** Per site: [rows * width] float32 (f16 shards are widened on read). */
  values: Map<string, Float32Array>;
  widths: Map<string, number>;
  metadata: Map<string, string>;
  /** The arrays are this read's own (rows read by range from disk), free to rearrange; else views of a shard decoded whole and kept. */
  own?: boolean;
}

function concatInt(parts: Int32Array[]): Int32Array {
  if (parts.length === 1) return parts[0];
  const out = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Reads a shard; `sites` limits which float columns are materialised. */
export function decodeShard(bytes: Uint8Array, sites?: string[], format: ShardFormat = 'arrow'): ShardData {
  const table = arrow().tableFromIPC(format === 'parquet' ? parquetWasm().readParquet(bytes).intoIPCStream() : bytes);
  const rows = table.numRows;
  const intCol = (name: string): Int32Array => {
    const col = table.getChild(name);
    if (!col) throw new Error(`shard has no '${name}' column`);
    return concatInt(col.data.map((d) => (d.values as Int32Array).subarray(d.offset, d.offset + d.length)));
  };
  const values = new Map<string, Float32Array>();
  const widths = new Map<string, number>();
  for (const f of table.schema.fields) {
    if ((INDEX_COLUMNS as readonly string[]).includes(f.name)) continue;
    const width = (f.type as FixedSizeList).listSize;
    widths.set(f.name, width);
    if (sites && !sites.includes(f.name)) continue;
    const chunks = table.getChild(f.name)!.data;
    const only = chunks.length === 1 ? chunks[0] : undefined;
    if (only && only.children[0].values instanceof Float32Array) {
      // One float32 record batch (what sdl harvest writes): a view on the file's bytes, not a copy (a 768-wide
      // shard of 65k rows is 200 MB; readers own the bytes and may reuse them).
      const base = only.offset * width + only.children[0].offset;
      values.set(f.name, (only.children[0].values as Float32Array).subarray(base, base + rows * width));
      continue;
    }
    const out = new Float32Array(rows * width);
    let o = 0;
    for (const d of chunks) {
      const child = d.children[0];
      const raw = child.values as Float32Array | Uint16Array;
      const len = d.length * width;
      const base = d.offset * width + child.offset;
      if (raw instanceof Uint16Array) f16ToF32(raw.subarray(base, base + len), out.subarray(o, o + len));
      else out.set(raw.subarray(base, base + len), o);
      o += len;
    }
    values.set(f.name, out);
  }
  return { rows, doc: intCol('doc'), window: intCol('window'), pos: intCol('pos'), token: intCol('token'), values, widths, metadata: table.schema.metadata };
}
