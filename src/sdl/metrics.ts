// Held-out evaluation: pooled FVU (total squared error over total variance about the mean, over all
// held-out tokens, as sparsify and SAELens' training log compute it), MSE, L0, per-site FVU for
// crosscoders, per-latent firing frequencies with a log10 density histogram, and SAEBench's core
// reconstruction metrics (definitions with worked cases in docs/metrics.md).

export interface EvalMetrics {
  tokens: number;
  /** Mean over tokens of ||y - y^||^2, in the harvest's units. */
  mse: number;
  fvu: number;
  /** Per output site (crosscoders: each layer's reconstruction). */
  fvuBySite: Record<string, number>;
  l0: number;
  /** Latents that never fired on the held-out tokens. */
  deadOnEval: number;
  /** Histogram of log10 firing frequency: bin edges and counts (never-firing latents counted separately). */
  density: { edges: number[]; counts: number[]; never: number };
  /** 1 - FVU: the share of the target's variance (about its mean) the reconstruction explains. */
  explainedVariance: number;
  /** Mean over tokens of cos(y, ŷ). */
  cossim: number;
  /** Mean over tokens of ||ŷ|| / ||y||. */
  l2Ratio: number;
  /** E||ŷ||² / E<ŷ, y>: the γ with ŷ/γ the least-squares fit to y (Gated SAE paper); below 1 means shrinkage. */
  relativeReconstructionBias: number;
  /** Feature density: share of latents firing on more than 1% / 10% of tokens, and mean log10 frequency of live latents. */
  densityStats: { over1Percent: number; over10Percent: number; meanLog10Frequency: number };
}

export class EvalAccumulator {
  private sse: Float64Array;
  private sumY: Float64Array;
  private sumY2: Float64Array;
  private fires: Float64Array;
  private actives = 0;
  private n = 0;
  private cosSum = 0;
  private ratioSum = 0;
  private hatHat = 0;
  private hatY = 0;

  constructor(
    readonly sites: { name: string; width: number }[],
    readonly dSae: number,
  ) {
    const d = sites.reduce((a, s) => a + s.width, 0);
    this.sse = new Float64Array(d);
    this.sumY = new Float64Array(d);
    this.sumY2 = new Float64Array(d);
    this.fires = new Float64Array(dSae);
  }

  /** Adds a chunk: targets and reconstructions in harvest units, per-latent firing counts and the active pairs in all. */
  add(y: Float32Array, yhat: Float32Array, rows: number, fired: ArrayLike<number>, actives: number): void {
    const d = this.sse.length;
    for (let r = 0; r < rows; r++) {
      let yy = 0,
        hh = 0,
        hy = 0;
      for (let j = 0; j < d; j++) {
        const v = y[r * d + j];
        const h = yhat[r * d + j];
        const e = v - h;
        this.sse[j] += e * e;
        this.sumY[j] += v;
        this.sumY2[j] += v * v;
        yy += v * v;
        hh += h * h;
        hy += h * v;
      }
      // A zero target (or reconstruction) has no direction: it counts as cosine 0, ratio 0 (SAEBench's eps does the same).
      this.cosSum += yy > 0 && hh > 0 ? hy / Math.sqrt(yy * hh) : 0;
      this.ratioSum += yy > 0 ? Math.sqrt(hh / yy) : 0;
      this.hatHat += hh;
      this.hatY += hy;
    }
    for (let i = 0; i < this.dSae; i++) this.fires[i] += fired[i];
    this.actives += actives;
    this.n += rows;
  }

  result(): EvalMetrics {
    const n = Math.max(1, this.n);
    const bySite: Record<string, number> = {};
    let off = 0,
      sseAll = 0,
      sstAll = 0;
    for (const s of this.sites) {
      let sse = 0,
        sst = 0;
      for (let j = off; j < off + s.width; j++) {
        sse += this.sse[j];
        sst += this.sumY2[j] - (this.sumY[j] * this.sumY[j]) / n;
      }
      bySite[s.name] = sst > 0 ? sse / sst : NaN;
      sseAll += sse;
      sstAll += sst;
      off += s.width;
    }
    const edges = [-7, -6, -5, -4, -3, -2, -1, 0];
    const counts = new Array(edges.length - 1).fill(0);
    let never = 0;
    for (const f of this.fires) {
      if (f === 0) {
        never++;
        continue;
      }
      const l = Math.log10(f / n);
      const b = Math.min(edges.length - 2, Math.max(0, Math.floor(l - edges[0])));
      counts[b]++;
    }
    let over1 = 0,
      over10 = 0,
      logSum = 0;
    for (const f of this.fires) {
      if (f / n > 0.01) over1++;
      if (f / n > 0.1) over10++;
      if (f > 0) logSum += Math.log10(f / n);
    }
    const live = this.dSae - never;
    const fvu = sstAll > 0 ? sseAll / sstAll : NaN;
    return {
      tokens: this.n,
      mse: sseAll / n,
      fvu,
      explainedVariance: 1 - fvu,
      cossim: this.cosSum / n,
      l2Ratio: this.ratioSum / n,
      relativeReconstructionBias: this.hatY !== 0 ? this.hatHat / this.hatY : NaN,
      densityStats: { over1Percent: over1 / this.dSae, over10Percent: over10 / this.dSae, meanLog10Frequency: live ? logSum / live : NaN },
      fvuBySite: bySite,
      l0: this.actives / n,
      deadOnEval: never,
      density: { edges, counts, never },
    };
  }

  /** Per-latent firing frequency on the held-out tokens. */
  frequencies(): Float64Array {
    return this.fires.map((f) => f / Math.max(1, this.n));
  }
}
