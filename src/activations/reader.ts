// Opening a harvest's shards for reading (fit, index, eval, merge): every shard is checked against the manifest
// where it is opened: present, the checksum recorded at harvest time (unless the user opts out), a readable Arrow or Parquet
// file, the recorded number of rows and, for every column read, the width the manifest claims. A shard changed,
// truncated or mislabelled after the harvest is refused with one line instead of being trained on.
//
// Shards are read by range: only the rows and columns asked for leave the disk (arrow-layout.ts, parquet-shard.ts),
// so a reader's memory follows what it reads, not the shard's size. A file whose values cannot be read in place
// (compressed: Parquet shards written before sdlkit wrote its own, or an Arrow file from another tool) is decoded
// whole and sliced.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decodeShard, formatOf, type ShardData } from './shard.js';
import { parquetLayout } from './parquet-shard.js';
import { arrowLayout, readColumnRows, withFile, type ShardLayout, type ReadBuffers } from './arrow-layout.js';
export { ReadBuffers } from './arrow-layout.js';
import { shardChecksum, type Manifest } from './manifest.js';
import { fileDigest } from '../util/checksum.js';
import { UserError } from '../util/errors.js';

export interface ReadOptions {
  /** Compare each shard's checksum with the manifest (default true; `--no-verify` turns it off). */
  verify?: boolean;
  /** Read shards into these reused arrays: what a read returns is overwritten by the next read given them. */
  buffers?: ReadBuffers;
}

/** Rows [from, to) of a shard (`to` past the end means the end). */
export interface RowSpan {
  from: number;
  to: number;
}

/** Shards already verified in this process, by path, with the size and mtime they had: each is hashed once per run. */
const verified = new Map<string, string>();
/** Layouts of the shards read in this process, by path, under the same stamp (undefined: read whole). */
const layouts = new Map<string, { stamp: string; layout: ShardLayout | undefined }>();

/**
 * The last shard decoded whole (one whose values cannot be read in place), kept while its pieces are asked for in turn:
 * the training stream and the index read a shard range by range, and must not decode the file once per range.
 */
let lastWhole: { key: string; data: ShardData } | undefined;

/** A view of rows [from, to) of decoded shard data. */
function sliceShard(d: ShardData, from: number, to: number): ShardData {
  const values = new Map<string, Float32Array>();
  for (const [k, v] of d.values) values.set(k, v.subarray(from * d.widths.get(k)!, to * d.widths.get(k)!));
  const cut = (a: Int32Array) => a.subarray(from, to);
  return { ...d, rows: to - from, doc: cut(d.doc), window: cut(d.window), pos: cut(d.pos), token: cut(d.token), values };
}

function readLayoutRows(fd: number, layout: ShardLayout, sites: string[], from: number, to: number, buffers?: ReadBuffers): ShardData {
  const col = (name: string) => {
    const c = layout.columns.get(name);
    if (!c) throw new Error(`shard has no '${name}' column`);
    return c;
  };
  const ints = (name: string) => readColumnRows(fd, col(name), from, to, buffers, name) as Int32Array;
  const values = new Map<string, Float32Array>();
  const widths = new Map<string, number>();
  for (const [name, c] of layout.columns) if (c.kind !== 'int32') widths.set(name, c.width);
  for (const name of sites) if (widths.has(name)) values.set(name, readColumnRows(fd, col(name), from, to, buffers, name) as Float32Array);
  return {
    rows: to - from,
    doc: ints('doc'),
    window: ints('window'),
    pos: ints('pos'),
    token: ints('token'),
    values,
    widths,
    metadata: layout.metadata,
    own: true,
  };
}

/**
 * Whether a shard's values can be read where they lie (every Arrow and Parquet shard sdlkit writes now; not a Parquet
 * shard of before 2026-12-06, zstd, which is decoded whole on every read). Undefined for a file that cannot be read:
 * readShard names what is wrong with it.
 */
export function readsInPlace(path: string): boolean | undefined {
  try {
    return withFile(path, (fd) => (formatOf(path) === 'arrow' ? arrowLayout(fd) : parquetLayout(fd)) !== undefined);
  } catch {
    return undefined;
  }
}

/** Reads the columns `sites` (and the index columns) of shard `index`, all rows or the rows of `span`. */
export function readShard(dir: string, manifest: Manifest, index: number, sites: string[], opts: ReadOptions = {}, span?: RowSpan): ShardData {
  const info = manifest.shards[index];
  const path = join(dir, info.file);
  if (!existsSync(path)) throw new UserError(`shard ${info.file} listed in ${dir}'s manifest is missing; run the same 'sdl harvest' again to redo it`);
  const st = statSync(path);
  const sum = shardChecksum(info);
  const stamp = `${sum.kind}:${sum.value}:${st.size}:${st.mtimeMs}`;
  if ((opts.verify ?? true) && verified.get(path) !== stamp) {
    if (fileDigest(path, sum.kind) !== sum.value) {
      throw new UserError(
        `shard ${path} does not match the checksum in its manifest (changed or damaged after the harvest); run the same 'sdl harvest' again to redo it, or pass --no-verify if you changed it on purpose`,
      );
    }
    verified.set(path, stamp);
  }
  const format = formatOf(info.file);
  let data: ShardData;
  let total: number;
  try {
    const known = layouts.get(path);
    const res = withFile(path, (fd) => {
      const layout = known?.stamp === stamp ? known.layout : format === 'arrow' ? arrowLayout(fd) : parquetLayout(fd);
      layouts.set(path, { stamp, layout });
      if (!layout) return undefined;
      const from = Math.min(span?.from ?? 0, layout.rows),
        to = Math.min(span?.to ?? layout.rows, layout.rows);
      return { total: layout.rows, data: readLayoutRows(fd, layout, sites, from, Math.max(from, to), opts.buffers) };
    });
    if (res) ({ total, data } = res);
    else {
      const key = `${path}:${stamp}:${sites.join(',')}`;
      if (lastWhole?.key !== key) {
        lastWhole = undefined; // the previous shard is freed before the next is decoded
        const file = readFileSync(path);
        lastWhole = { key, data: decodeShard(new Uint8Array(file.buffer, file.byteOffset, file.byteLength), sites, format) };
      }
      const whole = lastWhole.data;
      total = whole.rows;
      const from = Math.min(span?.from ?? 0, total);
      data = span ? sliceShard(whole, from, Math.max(from, Math.min(span.to, total))) : whole;
    }
  } catch (e) {
    throw new UserError(
      `shard ${path} is not a readable ${format === 'parquet' ? 'Parquet' : 'Arrow'} file (${(e as Error).message.split('\n')[0]}); run the same 'sdl harvest' again to redo it`,
    );
  }
  if (total !== info.rows)
    throw new UserError(`shard ${path} has ${total} rows but its manifest records ${info.rows}; run the same 'sdl harvest' again to redo it`);
  for (const name of sites) {
    const site = manifest.sites.find((s) => s.name === name);
    const w = data.widths.get(name);
    if (w === undefined) throw new UserError(`shard ${path} has no column ${name}`);
    if (site && site.width !== w)
      throw new UserError(`shard ${path} holds ${name} ${w} wide but the manifest says ${site.width}; the manifest was edited or belongs to another harvest`);
  }
  return data;
}
