// A shard as a Parquet file, written and read here: one row group, uncompressed PLAIN pages, the Arrow schema kept
// under the footer's 'ARROW:schema' key (so pyarrow, Polars and parquet-wasm give back FixedSizeList columns and the
// shard's metadata). A shard's values are what Parquet stores byte for byte in a PLAIN page, so the file is mostly
// views of the shard's arrays: only page headers and the lists' levels are made here (parquet-wasm, which wrote
// them before, took ~740 ms a 50 MB shard to build and encode the levels; docs/BENCHMARKS.md). For the same reason a
// reader finds each page's values by their offset and reads a range of rows from disk, as it does in an Arrow file.
//
// A hook column is Parquet's three-level LIST (the layout Parquet's specification gives for lists):
//   required group <hook> (LIST) { repeated group list { required float|float16 element } }
// so its maximum repetition and definition levels are 1: each row's first value has repetition level 0 and the
// others 1, and every value has definition level 1. Both are written as runs of the RLE/bit-packed hybrid (width 1).
import { fstatSync } from 'node:fs';
import { T, ThriftReader, ThriftWriter, list, type Decoded, type ThriftStruct } from '../util/thrift-compact.js';
import { BYTES, readAt, type ColumnLayout, type Kind, type ShardLayout } from './arrow-layout.js';

const MAGIC = new TextEncoder().encode('PAR1');
/** A page holds whole rows, about this many bytes of values at most: the size Parquet writers default to. */
const PAGE_BYTES = 1 << 20;

// Parquet's enums, as its format specification numbers them.
const TYPE = { INT32: 1, FLOAT: 4, FIXED_LEN_BYTE_ARRAY: 7 } as const;
const REPETITION = { REQUIRED: 0, REPEATED: 2 } as const;
const ENCODING = { PLAIN: 0, RLE: 3 } as const;
const CONVERTED_LIST = 3;
/** Each kind's physical type: a float16 is two bytes (FIXED_LEN_BYTE_ARRAY) with the FLOAT16 logical type. */
const PHYSICAL: Record<Kind, number> = { int32: TYPE.INT32, f32: TYPE.FLOAT, f16: TYPE.FIXED_LEN_BYTE_ARRAY };
const PAGE_DATA = 0;
const CODEC_UNCOMPRESSED = 0;

/** One column to write: int32 scalars, or float32 / float16 (as raw halves) lists of `width` values a row. */
export interface ParquetColumn {
  name: string;
  kind: Kind;
  width: number;
  values: Int32Array | Float32Array | Uint16Array;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const u32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};

/** Appends a run of `count` copies of `value` in the RLE/bit-packed hybrid at bit width 1: a varint header (count << 1), one value byte. */
function rleRun(out: Uint8Array, at: number, value: number, count: number): number {
  let h = count * 2;
  while (h >= 0x80) {
    out[at++] = (h % 0x80) | 0x80;
    h = Math.floor(h / 0x80);
  }
  out[at++] = h;
  out[at++] = value;
  return at;
}

/** Levels made so far, by rows and width: every shard of a harvest has the same pages (cleared past a few shapes). */
const levelCache = new Map<string, Uint8Array>();

/**
 * The repetition and definition levels of `rows` lists of `width` values, each prefixed by its byte length (data page
 * v1): repetition 0 for a row's first value and 1 for the rest (one run each), definition 1 for all.
 */
function listLevels(rows: number, width: number): Uint8Array {
  const key = `${rows}x${width}`;
  const cached = levelCache.get(key);
  if (cached) return cached;
  const out = new Uint8Array(8 + rows * 14 + 24); // a run is at most 12 bytes (a varint of up to 2^53, its value)
  let at = 4;
  if (width === 1) at = rleRun(out, at, 0, rows);
  else for (let r = 0; r < rows; r++) at = rleRun(out, rleRun(out, at, 0, 1), 1, width - 1);
  new DataView(out.buffer).setUint32(0, at - 4, true);
  const defAt = at;
  at = rleRun(out, at + 4, 1, rows * width);
  new DataView(out.buffer).setUint32(defAt, at - defAt - 4, true);
  if (levelCache.size >= 64) levelCache.clear();
  const levels = out.slice(0, at);
  levelCache.set(key, levels);
  return levels;
}

const i32 = (v: number) => [T.I32, v] as const;
const i64 = (v: number) => [T.I64, v] as const;
const str = (v: string) => [T.BINARY, v] as const;
const struct = (v: ThriftStruct) => [T.STRUCT, v] as const;

/** The schema elements of one column, depth first. */
function schemaElements(c: ParquetColumn): ThriftStruct[] {
  if (c.kind === 'int32') return [{ 1: i32(PHYSICAL.int32), 3: i32(REPETITION.REQUIRED), 4: str(c.name) }];
  const leaf: ThriftStruct =
    c.kind === 'f16'
      ? { 1: i32(PHYSICAL.f16), 2: i32(2), 3: i32(REPETITION.REQUIRED), 4: str('element'), 10: struct({ 15: struct({}) }) }
      : { 1: i32(PHYSICAL.f32), 3: i32(REPETITION.REQUIRED), 4: str('element') };
  return [
    { 3: i32(REPETITION.REQUIRED), 4: str(c.name), 5: i32(1), 6: i32(CONVERTED_LIST), 10: struct({ 3: struct({}) }) },
    { 3: i32(REPETITION.REPEATED), 4: str('list'), 5: i32(1) },
    leaf,
  ];
}

/**
 * The Parquet file of `rows` rows of these columns, as chunks to write in order (most of them views of the
 * columns' arrays). `arrowSchema` is the serialised Arrow schema message (base64 under 'ARROW:schema');
 * `metadata` goes to the footer's key-value list too.
 */
export function encodeParquet(columns: ParquetColumn[], rows: number, arrowSchema: Uint8Array, metadata: Record<string, string>): Uint8Array[] {
  const chunks: Uint8Array[] = [MAGIC];
  let at = MAGIC.length;
  const push = (b: Uint8Array) => {
    chunks.push(b);
    at += b.length;
  };
  const chunkMeta: ThriftStruct[] = [];
  let rowGroupBytes = 0;
  for (const c of columns) {
    const isList = c.kind !== 'int32';
    const valueBytes = BYTES[c.kind] * c.width;
    if (c.values.length < rows * c.width) throw new Error(`parquet: column ${c.name} holds ${c.values.length} values, fewer than ${rows} rows of ${c.width}`);
    const perPage = Math.max(1, Math.floor(PAGE_BYTES / valueBytes));
    const start = at;
    // At least one page, so that an empty shard's column has one (empty) page.
    for (let p = 0, pages = Math.max(1, Math.ceil(rows / perPage)); p < pages; p++) {
      const r = p * perPage;
      const n = Math.min(perPage, rows - r);
      const body = bytesOf(c.values.subarray(r * c.width, (r + n) * c.width));
      const lv = isList ? listLevels(n, c.width) : undefined;
      const size = (lv?.length ?? 0) + body.length;
      const dataPage: ThriftStruct = { 1: i32(n * c.width), 2: i32(ENCODING.PLAIN), 3: i32(ENCODING.RLE), 4: i32(ENCODING.RLE) };
      push(new ThriftWriter().struct({ 1: i32(PAGE_DATA), 2: i32(size), 3: i32(size), 5: struct(dataPage) }).finish());
      if (lv) push(lv);
      push(body);
    }
    const total = at - start;
    rowGroupBytes += total;
    const path = isList ? [c.name, 'list', 'element'] : [c.name];
    const meta: ThriftStruct = {
      1: i32(PHYSICAL[c.kind]),
      2: [T.LIST, list(T.I32, isList ? [ENCODING.PLAIN, ENCODING.RLE] : [ENCODING.PLAIN])],
      3: [T.LIST, list(T.BINARY, path)],
      4: i32(CODEC_UNCOMPRESSED),
      5: i64(rows * c.width),
      6: i64(total),
      7: i64(total),
      9: i64(start),
    };
    chunkMeta.push({ 2: i64(start), 3: struct(meta) });
  }
  const keyValues = [...Object.entries(metadata), ['ARROW:schema', Buffer.from(arrowSchema).toString('base64')]].map(([k, v]) => ({ 1: str(k), 2: str(v) }));
  const root: ThriftStruct = { 4: str('schema'), 5: i32(columns.length) };
  const footer = new ThriftWriter()
    .struct({
      1: i32(1),
      2: [T.LIST, list(T.STRUCT, [root, ...columns.flatMap(schemaElements)])],
      3: i64(rows),
      4: [
        T.LIST,
        list(T.STRUCT, [
          {
            1: [T.LIST, list(T.STRUCT, chunkMeta)],
            2: i64(rowGroupBytes),
            3: i64(rows),
            5: i64(MAGIC.length),
            6: i64(rowGroupBytes),
            7: [T.I16, 0],
          },
        ]),
      ],
      5: [T.LIST, list(T.STRUCT, keyValues)],
      6: str('sdlkit'),
    })
    .finish();
  push(footer);
  push(u32(footer.length));
  push(MAGIC);
  return chunks;
}

const text = (v: unknown): string => new TextDecoder().decode(v as Uint8Array);
const num = (s: Decoded, id: number, what: string): number => {
  const v = s.get(id);
  if (typeof v !== 'number') throw new Error(`the Parquet footer lacks ${what}`);
  return v;
};

/** The page header at `pos` and its length in bytes: read 4 KiB at a time (statistics can make one long). */
function pageHeader(fd: number, pos: number, end: number): { page: Decoded; length: number } {
  for (let len = 4096; ; len *= 16) {
    const r = new ThriftReader(readAt(fd, pos, Math.min(end - pos, len)));
    try {
      return { page: r.struct(), length: r.at };
    } catch (e) {
      if (!(e instanceof RangeError) || len >= end - pos) throw e;
    }
  }
}

/** A column of the file's schema, as encodeParquet writes it: a required INT32, or a LIST of required float / float16. */
interface SchemaColumn {
  name: string;
  kind: Kind;
  list: boolean;
}

/** The columns of a flat list of Parquet schema elements, or undefined for a schema encodeParquet does not write. */
function schemaColumns(elements: Decoded[]): SchemaColumn[] | undefined {
  const out: SchemaColumn[] = [];
  let e = 1;
  for (let c = 0, n = elements[0]?.get(5); c < (n as number); c++) {
    const el = elements[e];
    if (!el || el.get(3) !== REPETITION.REQUIRED) return undefined;
    const name = text(el.get(4));
    if (!el.has(5)) {
      if (el.get(1) !== PHYSICAL.int32) return undefined;
      out.push({ name, kind: 'int32', list: false });
      e += 1;
      continue;
    }
    const [mid, leaf] = [elements[e + 1], elements[e + 2]];
    if (el.get(5) !== 1 || mid?.get(3) !== REPETITION.REPEATED || mid.get(5) !== 1 || leaf?.get(3) !== REPETITION.REQUIRED || leaf.has(5)) return undefined;
    const half = leaf.get(1) === PHYSICAL.f16 && leaf.get(2) === 2 && (leaf.get(10) as Decoded | undefined)?.has(15);
    if (!half && leaf.get(1) !== PHYSICAL.f32) return undefined;
    out.push({ name, kind: half ? 'f16' : 'f32', list: true });
    e += 3;
  }
  // Columns are found by name: two of one name are not a shard's.
  return e === elements.length && new Set(out.map((c) => c.name)).size === out.length ? out : undefined;
}

/**
 * Where each column's values lie in an open Parquet file, when they can be read in place: the schema encodeParquet
 * writes, every page a v1 data page of PLAIN values, uncompressed, each list page's levels those of fixed-size rows
 * (compared byte for byte with what encodeParquet writes). Undefined for any other Parquet file (compressed,
 * dictionary-encoded, other types or list shapes): the caller decodes it whole. Throws on a damaged file. The footer's
 * Arrow schema is left alone: apache-arrow's decoder ran out of memory on damaged ones (test/shard-files.test.ts).
 */
export function parquetLayout(fd: number): ShardLayout | undefined {
  const size = fstatSync(fd).size;
  if (size < 12) throw new Error(`${size} bytes is too short for a Parquet file`);
  const tail = readAt(fd, size - 8, 8);
  if (text(tail.subarray(4)) !== 'PAR1' || text(readAt(fd, 0, 4)) !== 'PAR1')
    throw new Error('no Parquet magic at both ends (truncated, or not a Parquet file)');
  const footerLen = new DataView(tail.buffer).getUint32(0, true);
  if (footerLen > size - 12) throw new Error(`footer length ${footerLen} does not fit the file`);
  const meta = new ThriftReader(readAt(fd, size - 8 - footerLen, footerLen)).struct();
  const fields = schemaColumns(meta.get(2) as Decoded[]);
  const total = num(meta, 3, 'the row count');
  // An empty file says nothing of its lists' widths: decoded whole (its Arrow schema does).
  if (!fields || total === 0) return undefined;
  const columns = new Map<string, ColumnLayout>();
  let rows = 0;
  for (const group of (meta.get(4) as Decoded[] | undefined) ?? []) {
    const groupRows = num(group, 3, "a row group's row count");
    const chunks = group.get(1) as Decoded[];
    if (chunks.length !== fields.length) throw new Error(`a row group holds ${chunks.length} columns, not ${fields.length}`);
    for (const [i, f] of fields.entries()) {
      const md = chunks[i].get(3) as Decoded | undefined;
      if (!md) return undefined; // column data in another file
      if (md.get(4) !== CODEC_UNCOMPRESSED || md.has(11)) return undefined;
      // A list's width: its values over the rows (each page's levels then show that every row holds that many).
      const width = f.list ? num(md, 5, "a column's value count") / groupRows : 1;
      if (!Number.isInteger(width) || width < 1) return undefined;
      const col = columns.get(f.name) ?? { kind: f.kind, width, pieces: [] };
      columns.set(f.name, col);
      if (col.width !== width) return undefined;
      let pos = num(md, 9, "a column's first page");
      const end = pos + num(md, 7, "a column's size");
      if (pos < 4 || end < pos || end > size - 8 - footerLen) throw new Error(`column ${f.name} lies outside the file's data`);
      let got = 0;
      while (pos < end) {
        const { page, length } = pageHeader(fd, pos, end);
        const pageSize = num(page, 3, "a page's size");
        const data = page.get(5) as Decoded | undefined;
        if (page.get(1) !== PAGE_DATA || !data || data.get(2) !== ENCODING.PLAIN) return undefined;
        const values = num(data, 1, "a page's value count");
        if (pageSize < 0 || values < 0) throw new Error(`a page of column ${f.name} has a negative size`);
        if (values % width !== 0) return undefined; // a page that splits a row: not written here
        const pageRows = values / width;
        let at = pos + length;
        const stop = at + pageSize;
        if (stop > end) throw new Error(`a page of column ${f.name} runs past its column`);
        // Checked before the levels are made for its rows: a damaged count could ask for gigabytes of them.
        if (values * BYTES[f.kind] > stop - at) throw new Error(`a page of column ${f.name} claims ${values} values in ${stop - at} bytes`);
        if (f.list) {
          const want = listLevels(pageRows, width);
          if (at + want.length > stop || !Buffer.from(readAt(fd, at, want.length)).equals(want)) return undefined;
          at += want.length;
        }
        if (stop - at !== values * BYTES[f.kind])
          throw new Error(`a page of column ${f.name} holds ${stop - at} bytes of values, not ${values * BYTES[f.kind]}`);
        col.pieces.push({ rows: pageRows, offset: at });
        got += pageRows;
        pos = stop;
      }
      if (got !== groupRows) throw new Error(`column ${f.name} holds ${got} rows of its row group's ${groupRows}`);
    }
    rows += groupRows;
  }
  if (rows !== total) throw new Error(`the row groups hold ${rows} rows, the footer says ${total}`);
  const metadata = new Map<string, string>();
  for (const kv of (meta.get(5) as Decoded[] | undefined) ?? []) {
    const key = text(kv.get(1));
    if (key !== 'ARROW:schema') metadata.set(key, text(kv.get(2) ?? new Uint8Array()));
  }
  return { rows, columns, metadata };
}
