// Examples across a feature's whole activation range, not only its maximum (as Neuronpedia and SAEDashboard show
// them): activations fall into log-spaced bands, and each (feature, band) keeps a seeded reservoir sample of
// `perBand` examples with their context (the tokens around the firing token, inside its window, and the feature's
// activation on each). One pass, memory proportional to the samples kept.
import type { SparseActs } from '../sdl/encoder.js';
import { Rng } from '../util/rng.js';
import { type ExampleLists, ExampleStore } from './examples.js';

/** Band edges: band b holds activations in [EDGES[b], EDGES[b+1]) (the first band also everything below). */
export const QUANTILE_EDGES = [0, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, Infinity];
export const BANDS = QUANTILE_EDGES.length - 1;

const bandOf = (a: number): number => {
  let b = 0;
  while (b + 1 < BANDS && a >= QUANTILE_EDGES[b + 1]) b++;
  return b;
};

/** The activation of latent `i` in sparse row `r` (0 when inactive); rows list latents in increasing order. */
function actAt(f: SparseActs, r: number, i: number): number {
  let lo = f.start[r],
    hi = f.start[r + 1] - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (f.idx[mid] === i) return f.val[mid];
    if (f.idx[mid] < i) lo = mid + 1;
    else hi = mid - 1;
  }
  return 0;
}

export class QuantileSampler {
  /** Firings seen per (feature, band). */
  readonly seen: Int32Array;
  /** (feature, band) -> its first slot in the store (perBand slots each, allocated when first needed). */
  private readonly base = new Map<number, number>();
  private readonly store: ExampleStore;
  private readonly acts: Float32Array;
  private readonly rng: Rng;

  constructor(
    readonly m: number,
    readonly perBand: number,
    readonly radius: number,
    seed = 0,
  ) {
    this.seen = new Int32Array(m * BANDS);
    this.rng = new Rng(seed);
    this.store = new ExampleStore(2 * radius + 1);
    this.acts = new Float32Array(2 * radius + 1);
  }

  /**
   * One chunk of rows (whole windows): sparse features, and per row its doc, window, position and token.
   * A context never crosses into another window.
   */
  add(f: SparseActs, rows: { doc: Int32Array; window: Int32Array; pos: Int32Array; token: Int32Array }): void {
    for (let r = 0; r < f.rows; r++) {
      for (let q = f.start[r]; q < f.start[r + 1]; q++) {
        const i = f.idx[q],
          a = f.val[q];
        if (!(a > 0)) continue;
        const key = i * BANDS + bandOf(a);
        const n = ++this.seen[key];
        let slot: number;
        if (n <= this.perBand) slot = n - 1;
        else {
          slot = this.rng.int(n);
          if (slot >= this.perBand) continue;
        }
        let b = this.base.get(key);
        if (b === undefined) this.base.set(key, (b = this.store.alloc(this.perBand)));
        let lo = r,
          hi = r;
        while (lo > 0 && r - lo < this.radius && rows.window[lo - 1] === rows.window[r]) lo--;
        while (hi + 1 < f.rows && hi - r < this.radius && rows.window[hi + 1] === rows.window[r]) hi++;
        for (let c = lo; c <= hi; c++) this.acts[c - lo] = c === r ? a : actAt(f, c, i);
        this.store.set(b + slot, a, rows.doc[r], rows.window[r], rows.pos[r], rows.token[r], rows.pos[lo], rows.token, lo, hi - lo + 1, this.acts, 0);
      }
    }
  }

  /** Feature i's kept examples as [slot, band] pairs, band by band (lowest first), strongest first within a band. */
  private slots(i: number): [number, number][] {
    const out: [number, number][] = [];
    for (let band = 0; band < BANDS; band++) {
      const b = this.base.get(i * BANDS + band);
      if (b === undefined) continue;
      const filled = Math.min(this.seen[i * BANDS + band], this.perBand);
      const slots = Array.from({ length: filled }, (_, q) => b + q).sort((p, q) => this.store.act[q] - this.store.act[p]);
      for (const s of slots) out.push([s, band]);
    }
    return out;
  }

  /** Every feature's kept examples band by band (lowest first), strongest first within a band, as slots of the store with their bands. */
  lists(): ExampleLists {
    const off = new Int32Array(this.m + 1);
    const slots: number[] = [],
      bands: number[] = [];
    for (let i = 0; i < this.m; i++) {
      for (const [s, band] of this.slots(i)) {
        slots.push(s);
        bands.push(band);
      }
      off[i + 1] = slots.length;
    }
    return { store: this.store.parts(), off, slots: Int32Array.from(slots), band: Uint8Array.from(bands) };
  }
}
