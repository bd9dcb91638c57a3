// The feature index's per-token statistics, accumulated chunk by chunk over sparse activations: counts, sums,
// maxima, a histogram, per-token counts and sums, pair co-occurrence, each feature's running top K (an event per
// entry into it, with the context's activations) and its quantile examples (reservoir samples per activation band,
// an event per example kept). The native IndexStats (native/src/index_stats.cc)
// is the fast path; this TypeScript class is the reference it is tested against, and the fallback.
import { reservoirSlot } from './quantiles.js';
import { native, nativeThreads, type IndexEvents, type IndexStatsConfig, type IndexStatsLike, type IndexStatsResult } from '../native/kernels.js';

export class JsIndexStats implements IndexStatsLike {
  private readonly r: IndexStatsResult;
  private readonly top: Float32Array[]; // per feature: its top-K activations (unsorted), minimum tracked apart
  private readonly topLen: Int32Array;
  private readonly topMin: Float32Array;

  constructor(private readonly c: IndexStatsConfig) {
    const { m, vocab } = c;
    this.r = {
      count: new Float64Array(m),
      sum: new Float64Array(m),
      max: new Float32Array(m),
      hist: new Uint32Array(m * (c.edges.length + 1)),
      tok: new Float32Array(vocab > 0 ? 2 * m * vocab : 0),
      co: new Uint32Array(c.cooccurrence ? m * m : 0),
      qSeen: new Int32Array(c.perBand > 0 ? m * (c.bandEdges.length + 1) : 0),
    };
    this.top = Array.from({ length: m }, () => new Float32Array(c.topK));
    this.topLen = new Int32Array(m);
    this.topMin = new Float32Array(m);
  }

  add(start: Int32Array, idx: Int32Array, val: Float32Array, token: Int32Array, window: Int32Array): IndexEvents {
    const { m, vocab, topK, radius, edges, cooccurrence, perBand, bandEdges } = this.c;
    const { count, sum, max, hist, tok, co, qSeen } = this.r;
    const H = edges.length,
      QB = bandEdges.length + 1;
    const n = start.length - 1;
    const events: number[] = [],
      acts: number[] = [],
      qevents: number[] = [],
      qacts: number[] = [],
      ctx: number[] = [];
    // Row r's context (same window, within the radius) and feature i's activation on each of its rows, into ctx.
    let c0 = 0,
      c1 = 0;
    const context = (r: number, i: number): void => {
      c0 = r;
      c1 = r;
      while (c0 > 0 && r - c0 < radius && window[c0 - 1] === window[r]) c0--;
      while (c1 + 1 < n && c1 - r < radius && window[c1 + 1] === window[r]) c1++;
      for (let rr = c0; rr <= c1; rr++) {
        let v = 0;
        for (let s = start[rr]; s < start[rr + 1]; s++)
          if (idx[s] === i) {
            v = val[s];
            break;
          }
        ctx.push(v);
      }
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
          tok[2 * (i * vocab + t)]++;
          tok[2 * (i * vocab + t) + 1] += a;
        }
        if (this.topLen[i] < topK || a > this.topMin[i]) {
          this.pushTop(i, a);
          const off = ctx.length;
          context(r, i);
          events.push(i, r, c0, c1, off);
          acts.push(a);
        }
        if (perBand > 0 && a > 0) {
          let band = 0;
          while (band < QB - 1 && bandEdges[band] <= a) band++;
          const key = i * QB + band;
          const seen = ++qSeen[key];
          const slot = seen <= perBand ? seen - 1 : reservoirSlot(key, seen);
          if (slot < perBand) {
            const off = ctx.length;
            context(r, i);
            qevents.push(i, band, slot, r, c0, c1, off);
            qacts.push(a);
          }
        }
      }
      if (cooccurrence) {
        for (let a = q0; a < q1; a++) {
          const base = idx[a] * m;
          for (let b = a + 1; b < q1; b++) co[base + idx[b]]++;
        }
      }
    }
    return {
      events: Int32Array.from(events),
      acts: Float32Array.from(acts),
      qevents: Int32Array.from(qevents),
      qacts: Float32Array.from(qacts),
      ctx: Float32Array.from(ctx),
    };
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
    return this.r;
  }
}

/** The native accumulator where the kernels are built, else the TypeScript one. */
export function createIndexStats(c: IndexStatsConfig): IndexStatsLike {
  const mod = native();
  return mod ? new mod.IndexStats({ ...c, threads: nativeThreads() }) : new JsIndexStats(c);
}
