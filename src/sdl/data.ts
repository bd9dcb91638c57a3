// Training data from harvested shards: site selection, per-site normalisation, a held-out split, NaN
// checks, and a streaming shuffle buffer whose memory is bounded whatever the shards' total size.
import { readShard, type ReadBuffers, type ReadOptions } from '../activations/reader.js';
import type { Manifest } from '../activations/manifest.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { countNonFinite, firstNonFinite } from '../util/finite.js';

export interface SiteRef {
  name: string;
  width: number;
}

/** Rows of one shard for the chosen sites, as [rows, dIn] and [rows, dOut] (the same array when in == out). */
export interface Rows {
  n: number;
  x: Float32Array;
  y: Float32Array;
}

/**
 * The kept rows of the sites side by side. One site read by nothing else, in arrays that are the read's own (a range
 * read from disk: ShardData.own), is compacted in place (keep is ascending, so each row moves down): no second copy
 * in memory. Views of a shard decoded whole (Parquet) are copied instead: the decoded shard is kept for the next range
 * asked of it, and compacting it in place changed what a second read of the same rows returned.
 */
function concatSites(
  values: Map<string, Float32Array>,
  sites: SiteRef[],
  keep: Int32Array,
  n: number,
  inPlace: boolean,
  out?: { buffers: ReadBuffers; key: string },
): Float32Array {
  const only = sites.length === 1 ? values.get(sites[0].name)! : undefined;
  if (inPlace && only) {
    const v = only;
    const w = sites[0].width;
    for (let r = 0; r < n; r++) if (keep[r] !== r) v.copyWithin(r * w, keep[r] * w, (keep[r] + 1) * w);
    return v.subarray(0, n * w);
  }
  const d = sites.reduce((a, s) => a + s.width, 0);
  const rows = out ? out.buffers.float32(out.key, n * d) : new Float32Array(n * d);
  let off = 0;
  for (const s of sites) {
    const v = values.get(s.name)!;
    for (let r = 0; r < n; r++) rows.set(v.subarray(keep[r] * s.width, (keep[r] + 1) * s.width), r * d + off);
    off += s.width;
  }
  return rows;
}

const sameSites = (a: SiteRef[], b: SiteRef[]) => a.length === b.length && a.every((s, i) => s.name === b[i].name);

/** A range of raw rows [from, to) of one shard. */
export interface RowRange {
  shard: number;
  from: number;
  to: number;
}

/**
 * Loads a range of a shard's rows (BOS rows dropped when asked), refusing NaN or Inf with the shard and row. With
 * `read.buffers` the rows returned are overwritten by the next load given the same buffers.
 */
export function loadRows(
  dir: string,
  manifest: Manifest,
  range: RowRange,
  sitesIn: SiteRef[],
  sitesOut: SiteRef[],
  excludeBos: boolean,
  read: ReadOptions = {},
): Rows {
  const shard = range.shard;
  const info = manifest.shards[shard];
  const names = [...new Set([...sitesIn, ...sitesOut].map((s) => s.name))];
  const data = readShard(dir, manifest, shard, names, read, { from: range.from, to: range.to });
  for (const name of names) {
    const v = data.values.get(name);
    if (!v) throw new UserError(`shard ${info.file} has no column ${name}`);
    const w = data.widths.get(name)!;
    if (countNonFinite(v) > 0) {
      const i = firstNonFinite(v);
      throw new UserError(
        `shard ${info.file} row ${range.from + Math.floor(i / w)} has ${Number.isNaN(v[i]) ? 'NaN' : 'Inf'} in ${name}; harvest it again or drop the shard`,
      );
    }
  }
  const keep = new Int32Array(data.rows);
  let n = 0;
  for (let r = 0; r < data.rows; r++) if (!excludeBos || data.pos[r] !== 0) keep[n++] = r;
  const same = sameSites(sitesIn, sitesOut);
  const shared = sitesIn.some((a) => sitesOut.some((b) => b.name === a.name));
  const reuse = (key: string) => (read.buffers ? { buffers: read.buffers, key } : undefined);
  const own = data.own === true;
  const x = concatSites(data.values, sitesIn, keep, n, own && (same || !shared), reuse(':x'));
  const y = same ? x : concatSites(data.values, sitesOut, keep, n, own && !shared, reuse(':y'));
  return { n, x, y };
}

/** Per-site scale factors so each site's mean norm is sqrt(width) (SAELens expected_average_only_in). */
export function siteScales(rows: Rows, sites: SiteRef[], which: 'x' | 'y'): number[] {
  const a = rows[which];
  const d = sites.reduce((s, x) => s + x.width, 0);
  let off = 0;
  return sites.map((s) => {
    let sum = 0;
    for (let r = 0; r < rows.n; r++) {
      let q = 0;
      for (let j = 0; j < s.width; j++) q += a[r * d + off + j] ** 2;
      sum += Math.sqrt(q);
    }
    off += s.width;
    const mean = sum / Math.max(1, rows.n);
    return mean > 0 ? Math.sqrt(s.width) / mean : 1;
  });
}

export function applyScales(a: Float32Array, sites: SiteRef[], scales: number[]): void {
  const d = sites.reduce((s, x) => s + x.width, 0);
  const n = a.length / d;
  let off = 0;
  sites.forEach((s, i) => {
    const f = scales[i];
    if (f !== 1) for (let r = 0; r < n; r++) for (let j = 0; j < s.width; j++) a[r * d + off + j] *= f;
    off += s.width;
  });
}

/** The last `evalTokens` raw rows of a harvest are held out; everything before them trains. */
export function splitRows(manifest: Manifest, evalTokens: number): { train: RowRange[]; held: RowRange[] } {
  const train: RowRange[] = [],
    held: RowRange[] = [];
  let left = Math.min(evalTokens, Math.floor(manifest.tokens / 2));
  for (let s = manifest.shards.length - 1; s >= 0; s--) {
    const rows = manifest.shards[s].rows;
    const h = Math.min(left, rows);
    left -= h;
    if (h > 0) held.unshift({ shard: s, from: rows - h, to: rows });
    if (h < rows) train.unshift({ shard: s, from: 0, to: rows - h });
  }
  return { train, held };
}

/** Rows are read from a shard this many bytes at a time (a piece of the shard, in order; see ShuffleStream). */
export const PIECE_BYTES = 4 * 2 ** 20;

/**
 * Streams training rows in random order: shards in a seeded random order per epoch, rows drawn at
 * random from a fixed-capacity buffer and replaced by the next incoming rows. A shard is read in pieces of
 * PIECE_BYTES, in order: the same rows in the same order as reading it whole, with one piece in memory.
 */
export class ShuffleStream {
  private readonly rng: Rng;
  private readonly bx: Float32Array;
  private readonly by: Float32Array;
  private readonly same: boolean;
  private fill = 0;
  private queue: number[] = [];
  private readonly pieceRows: number;
  private range?: RowRange;
  private rangeAt = 0;
  private cur?: Rows;
  private curPos = 0;
  epoch = 0;
  /** Rows drawn so far; replaying this many (skip) restores the stream exactly. */
  drawn = 0;

  constructor(
    private readonly load: (range: RowRange) => Rows,
    private readonly trainShards: RowRange[],
    private readonly dIn: number,
    private readonly dOut: number,
    capacity: number,
    seed: number,
    opts: { sameInOut?: boolean; pieceRows?: number } = {},
  ) {
    const sameInOut = opts.sameInOut ?? false;
    this.rng = new Rng(seed);
    const total = trainShards.reduce((a, s) => a + s.to - s.from, 0);
    if (total === 0) throw new UserError('no training rows: the harvest is empty after the held-out split; harvest more tokens or lower --eval-tokens');
    const cap = Math.max(1, Math.min(capacity, total));
    this.same = sameInOut;
    this.pieceRows = opts.pieceRows ?? Math.max(1, Math.floor(PIECE_BYTES / (4 * (sameInOut ? dIn : dIn + dOut))));
    this.bx = new Float32Array(cap * dIn);
    this.by = sameInOut ? this.bx : new Float32Array(cap * dOut);
    while (this.fill < cap) {
      const r = this.nextRow();
      this.bx.set(r.x, this.fill * dIn);
      if (!sameInOut) this.by.set(r.y, this.fill * dOut);
      this.fill++;
    }
  }

  private nextRow(): { x: Float32Array; y: Float32Array } {
    while (!this.cur || this.curPos >= this.cur.n) {
      if (!this.range || this.rangeAt >= this.range.to) {
        if (!this.queue.length) {
          this.queue = this.rng.shuffle(this.trainShards.map((_, i) => i));
          if (this.range) this.epoch++;
        }
        this.range = this.trainShards[this.queue.pop()!];
        this.rangeAt = this.range.from;
      }
      const to = Math.min(this.range.to, this.rangeAt + this.pieceRows);
      const rows = this.load({ shard: this.range.shard, from: this.rangeAt, to });
      this.rangeAt = to;
      this.cur = rows;
      this.curPos = 0;
    }
    const i = this.curPos++;
    const x = this.cur.x.subarray(i * this.dIn, (i + 1) * this.dIn);
    return { x, y: this.same ? x : this.cur.y.subarray(i * this.dOut, (i + 1) * this.dOut) };
  }

  /** Fills `x` [B, dIn] and `y` [B, dOut] with a random batch, refilling the used buffer slots. */
  batch(B: number, x: Float32Array, y: Float32Array): void {
    this.draw(B, x, y);
    if (this.same && y !== x) y.set(x);
  }

  /** Draws `rows` rows and discards them: a resumed run replays what the killed one drew, then goes on identically. */
  skip(rows: number): void {
    this.draw(rows);
  }

  private draw(B: number, x?: Float32Array, y?: Float32Array): void {
    const cap = this.fill;
    for (let b = 0; b < B; b++) {
      const slot = this.rng.int(cap);
      x?.set(this.bx.subarray(slot * this.dIn, (slot + 1) * this.dIn), b * this.dIn);
      if (!this.same) y?.set(this.by.subarray(slot * this.dOut, (slot + 1) * this.dOut), b * this.dOut);
      const r = this.nextRow();
      this.bx.set(r.x, slot * this.dIn);
      if (!this.same) this.by.set(r.y, slot * this.dOut);
    }
    this.drawn += B;
  }
}
