// Examples across a feature's whole activation range, not only its maximum (as Neuronpedia and SAEDashboard show
// them): activations fall into log-spaced bands, and each (feature, band) keeps a reservoir sample of `perBand`
// examples with their context (the tokens around the firing token, inside its window, and the feature's activation
// on each). The sampling runs with the other per-token statistics (IndexStats: index/stats.ts and its native twin),
// which emit an event per kept example; this store holds the examples. One pass, memory proportional to the samples.
import { type ExampleLists, ExampleStore } from './examples.js';

/** Band edges: band b holds activations in [EDGES[b], EDGES[b+1]) (the first band also everything below). */
export const QUANTILE_EDGES = [0, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, Infinity];
export const BANDS = QUANTILE_EDGES.length - 1;
/** The edges between bands: an activation's band is the number of them at or below it. */
export const INNER_EDGES = Float64Array.from(QUANTILE_EDGES.slice(1, -1));

/**
 * Reservoir sampling's draw for the n-th firing (n > perBand) of a (feature, band) key: a slot in [0, n), kept when
 * below perBand. A hash of (key, n) rather than a random stream, so each thread of the native accumulator, which owns
 * a range of features, draws what the one-threaded reference draws. Murmur3's finaliser mixes the two; the modulo's
 * bias is below n / 2^32 (0.2% at 10M firings in one band).
 */
export function reservoirSlot(key: number, n: number): number {
  let h = Math.imul(key, 0x9e3779b1) ^ Math.imul(n, 0x85ebca77) ^ 0x2545f491;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % n;
}

export class QuantileExamples {
  /** (feature, band) -> its first slot in the store (perBand slots each, allocated when first needed), or -1. */
  private readonly base: Int32Array;
  readonly store: ExampleStore;

  constructor(
    readonly m: number,
    readonly perBand: number,
    readonly radius: number,
  ) {
    this.base = new Int32Array(m * BANDS).fill(-1);
    this.store = new ExampleStore(2 * radius + 1);
  }

  /** The store slot of reservoir slot `slot` of feature i's band (the band's slots allocated when first needed). */
  slotFor(i: number, band: number, slot: number): number {
    const key = i * BANDS + band;
    if (this.base[key] < 0) this.base[key] = this.store.alloc(this.perBand);
    return this.base[key] + slot;
  }

  /**
   * Every feature's kept examples band by band (lowest first), strongest first within a band, as slots of the store
   * with their bands; `seen` [m * BANDS]: the firings counted per (feature, band) (IndexStatsResult.qSeen).
   */
  lists(seen: Int32Array): ExampleLists {
    const off = new Int32Array(this.m + 1);
    const slots: number[] = [],
      bands: number[] = [];
    const act = this.store.act;
    for (let i = 0; i < this.m; i++) {
      for (let band = 0; band < BANDS; band++) {
        const b = this.base[i * BANDS + band];
        if (b < 0) continue;
        const filled = Math.min(seen[i * BANDS + band], this.perBand);
        const kept = Array.from({ length: filled }, (_, q) => b + q).sort((p, q) => act[q] - act[p]);
        for (const s of kept) {
          slots.push(s);
          bands.push(band);
        }
      }
      off[i + 1] = slots.length;
    }
    return { store: this.store.parts(), off, slots: Int32Array.from(slots), band: Uint8Array.from(bands) };
  }
}
