// The feature index's per-token statistics, accumulated chunk by chunk over sparse activations: counts, sums,
// maxima, a histogram, per-token counts and sums, pair co-occurrence, each feature's top K examples (kept with their
// contexts as they enter) and its quantile examples (reservoir samples per activation band). The native IndexStats
// (native/src/index_stats.cc) is the fast path; this TypeScript class is the reference it is tested against, and the
// fallback.
import { BANDS, QuantileExamples, reservoirSlot } from './quantiles.js';
import { ExampleStore, TopExamples } from './examples.js';
import { topIndices } from './select.js';
import {
  COOCCURRENCE_MAX_ENTRIES,
  native,
  nativeThreads,
  type Cooccurrence,
  type IndexStatsConfig,
  type IndexStatsLike,
  type IndexStatsResult,
} from '../native/kernels.js';

export class JsIndexStats implements IndexStatsLike {
  private readonly r: Omit<IndexStatsResult, 'examples' | 'quantiles'>;
  private readonly top: Float32Array[]; // per feature: its top-K activations (unsorted), minimum tracked apart
  private readonly topLen: Int32Array;
  private readonly topMin: Float32Array;
  private readonly tops: TopExamples;
  private readonly quantiles: QuantileExamples;
  private readonly ctxBuf: Float32Array;
  /** The rows kept for co-occurrence: each chunk's latent ids, and where each row ends in their concatenation. */
  private readonly cooIds: Int32Array[] = [];
  private readonly cooEnd: number[] = [];
  private cooKept = 0;
  private cooFull = false;

  constructor(private readonly c: IndexStatsConfig) {
    const { m, vocab } = c;
    if (c.perBand > 0 && c.bandEdges.length + 1 !== BANDS)
      throw new Error(`IndexStats: ${c.bandEdges.length + 1} quantile bands, the example store has ${BANDS}`);
    this.r = {
      count: new Float64Array(m),
      sum: new Float64Array(m),
      max: new Float32Array(m),
      hist: new Uint32Array(m * (c.edges.length + 1)),
      tok: new Float32Array(vocab > 0 ? 2 * m * vocab : 0),
      qSeen: new Int32Array(c.perBand > 0 ? m * (c.bandEdges.length + 1) : 0),
    };
    this.top = Array.from({ length: m }, () => new Float32Array(c.topK));
    this.topLen = new Int32Array(m);
    this.topMin = new Float32Array(m);
    this.tops = new TopExamples(m, c.topK, new ExampleStore(2 * c.radius + 1));
    this.quantiles = new QuantileExamples(m, c.perBand, c.radius);
    this.ctxBuf = new Float32Array(2 * c.radius + 1);
  }

  add(start: Int32Array, idx: Int32Array, val: Float32Array, token: Int32Array, window: Int32Array, doc: Int32Array, pos: Int32Array): void {
    const { m, vocab, topK, radius, edges, cooccurrence, perBand, bandEdges } = this.c;
    const { count, sum, max, hist, tok, qSeen } = this.r;
    const H = edges.length,
      QB = bandEdges.length + 1;
    const n = start.length - 1;
    // The example of feature i at row r into slot s of a store: the row's fields, its context (same window, within the
    // radius) and feature i's activation on each context row.
    const keep = (store: ExampleStore, s: number, r: number, i: number, a: number): void => {
      let c0 = r,
        c1 = r;
      while (c0 > 0 && r - c0 < radius && window[c0 - 1] === window[r]) c0--;
      while (c1 + 1 < n && c1 - r < radius && window[c1 + 1] === window[r]) c1++;
      for (let rr = c0; rr <= c1; rr++) {
        let v = 0;
        for (let e = start[rr]; e < start[rr + 1]; e++)
          if (idx[e] === i) {
            v = val[e];
            break;
          }
        this.ctxBuf[rr - c0] = v;
      }
      store.set(s, a, doc[r], window[r], pos[r], token[r], pos[c0], token, c0, c1 - c0 + 1, this.ctxBuf, 0);
    };
    for (let r = 0; r < n; r++) {
      const q0 = start[r],
        q1 = start[r + 1],
        t = token[r];
      const tokOk = vocab > 0 && t >= 0 && t < vocab;
      for (let q = q0; q < q1; q++) {
        const i = idx[q],
          a = val[q];
        count[i]++;
        sum[i] += a;
        if (a > max[i]) max[i] = a;
        let lo = 0,
          hi = H; // number of edges <= a, by bisection
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (edges[mid] <= a) lo = mid + 1;
          else hi = mid;
        }
        hist[i * (H + 1) + lo]++;
        if (tokOk) {
          tok[2 * (t * m + i)]++;
          tok[2 * (t * m + i) + 1] += a;
        }
        if (topK > 0 && (this.topLen[i] < topK || a > this.topMin[i])) {
          this.pushTop(i, a);
          keep(this.tops.store, this.tops.slotFor(i), r, i, a);
        }
        if (perBand > 0 && a > 0) {
          let band = 0;
          while (band < QB - 1 && bandEdges[band] <= a) band++;
          const key = i * QB + band;
          const seen = ++qSeen[key];
          const slot = seen <= perBand ? seen - 1 : reservoirSlot(key, seen);
          if (slot < perBand) keep(this.quantiles.store, this.quantiles.slotFor(i, band, slot), r, i, a);
        }
      }
    }
    // Whole rows, in order, while they fit.
    if (cooccurrence > 0 && !this.cooFull) {
      const cap = this.c.cooccurrenceMaxEntries ?? COOCCURRENCE_MAX_ENTRIES;
      let r = 0;
      while (r < n && this.cooKept + start[r + 1] - start[0] <= cap) this.cooEnd.push(this.cooKept + start[++r] - start[0]);
      this.cooFull = r < n;
      this.cooIds.push(idx.slice(start[0], start[r]));
      this.cooKept += start[r] - start[0];
    }
  }

  cooccurrence(): Cooccurrence {
    const { m, cooccurrence: n } = this.c;
    const other = new Int32Array(m * n).fill(-1),
      count = new Uint32Array(m * n);
    const ids = new Int32Array(this.cooKept);
    let at = 0;
    for (const part of this.cooIds) {
      ids.set(part, at);
      at += part.length;
    }
    const rows = this.cooEnd.length,
      rowEnd = this.cooEnd;
    // The rows each feature fires on, in increasing order, then each feature's counts over its rows' latents.
    const colStart = new Uint32Array(m + 1);
    for (const j of ids) colStart[j + 1]++;
    for (let j = 0; j < m; j++) colStart[j + 1] += colStart[j];
    const rowsOf = new Uint32Array(ids.length),
      fill = colStart.slice(0, m);
    for (let r = 0, q = 0; r < rows; r++) for (; q < rowEnd[r]; q++) rowsOf[fill[ids[q]]++] = r;
    const c = new Uint32Array(m);
    for (let i = 0; i < m; i++) {
      for (let e = colStart[i]; e < colStart[i + 1]; e++) {
        const r = rowsOf[e];
        for (let q = r > 0 ? rowEnd[r - 1] : 0; q < rowEnd[r]; q++) c[ids[q]]++;
      }
      c[i] = 0;
      // The n largest counts (most first; scanned in id order, so a tie keeps the lower id), counters cleared behind.
      const top = topIndices(c, n);
      other.set(top, i * n);
      for (let q = 0; q < top.length; q++) count[i * n + q] = c[top[q]];
      c.fill(0);
    }
    this.cooIds.length = 0;
    return { n, other, count, tokens: rows };
  }

  private pushTop(i: number, a: number): void {
    const list = this.top[i];
    if (this.topLen[i] < this.c.topK) list[this.topLen[i]++] = a;
    else {
      let at = 0;
      for (let j = 1; j < this.topLen[i]; j++) if (list[j] < list[at]) at = j;
      list[at] = a;
    }
    let mn = Infinity;
    for (let j = 0; j < this.topLen[i]; j++) mn = Math.min(mn, list[j]);
    this.topMin[i] = mn;
  }

  result(): IndexStatsResult {
    return { ...this.r, examples: this.tops.lists(), quantiles: this.quantiles.lists(this.r.qSeen) };
  }
}

/** The native accumulator where the kernels are built, else the TypeScript one. */
export function createIndexStats(c: IndexStatsConfig): IndexStatsLike {
  const mod = native();
  const cfg = { cooccurrenceMaxEntries: COOCCURRENCE_MAX_ENTRIES, ...c };
  return mod ? new mod.IndexStats({ ...cfg, threads: nativeThreads() }) : new JsIndexStats(cfg);
}
