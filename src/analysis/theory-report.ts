// The theory instruments as runnable demonstrations (`sdl theory`): each builds the paper's construction on a
// small random case and reports the quantities the statement is about, with whether the claim held.
import {
  codes,
  example35,
  gradTilde,
  lossTilde,
  mat,
  maxInterference,
  patternOf,
  relu,
  theorem31,
  theorem33,
  theorem36Decoder,
  theorem38,
  threshold,
  type Mat,
} from './theory.js';
import { featureDirections } from '../synth/features.js';
import { Rng } from '../util/rng.js';

const maxAbs = (m: Mat) => m.a.reduce((a, v) => Math.max(a, Math.abs(v)), 0);

/** n unit feature directions in R^d with interference <= M, as the columns of W_p [d, n]. */
export function directionsMat(n: number, d: number, M: number, seed: number): Mat {
  const { W } = featureDirections(n, d, M, seed);
  const m = mat(d, n);
  for (let f = 0; f < n; f++) for (let j = 0; j < d; j++) m.a[j * n + f] = W[f * d + j];
  return m;
}

export function example35Report() {
  const e = example35();
  const { gD, gE } = gradTilde(e.WD, e.WE, e.Wp, e.Wr, e.M, e.sigma);
  const loss = lossTilde(e.WD, e.WE, e.Wp, e.Wr, e.M, e.sigma);
  const pattern = patternOf(e.WE, e.Wp, e.sigma);
  return {
    loss,
    maxGradDecoder: maxAbs(gD),
    maxGradEncoder: maxAbs(gE),
    pattern,
    holds: loss === 1 && maxAbs(gD) === 0 && maxAbs(gE) === 0 && pattern[1].length === 0 && pattern[0].length === 2,
  };
}

export function theorem33Report(seed: number) {
  const n = 12,
    d = 10;
  const Wp = directionsMat(n, d, 0.3, seed + 1),
    Wr = directionsMat(n, 8, 0.3, seed + 2);
  const rng = new Rng(seed);
  const Md = Array.from({ length: n }, () => 0.5 + rng.next());
  const { WE, WD } = theorem33(Wp, Wr, 16);
  const loss = lossTilde(WD, WE, Wp, Wr, Md, relu);
  const M = maxInterference(Wp);
  const bound = n * n * M * M * Md.reduce((a, b) => a + b, 0);
  // The proof's sharper bound M^2 sum_d M_d (K_d - 1)^2, K_d = neurons feature d activates.
  const K = codes(WE, Wp, relu).map((z) => z.filter((v) => v > 0).length);
  const sharper = M * M * Md.reduce((a, m, dd) => a + m * (K[dd] - 1) ** 2, 0);
  return { n, d, interference: M, loss, sharperBound: sharper, bound, holds: loss <= sharper + 1e-12 && loss <= bound };
}

export function theorem36Report(seed: number) {
  const n = 8,
    np = 8,
    nq = 8;
  const rng = new Rng(seed);
  const Wp = mat(np, n);
  for (let i = 0; i < n; i++) Wp.a[i * n + i] = 1; // orthonormal features: any partition is realisable
  const Wr = directionsMat(n, 6, 0.2, seed + 7);
  const blocks = [[0, 1, 2], [3, 4], [5], [6, 7]];
  const WE = mat(nq, np);
  blocks.forEach((b, i) => b.forEach((f) => (WE.a[i * np + f] = 0.5 + rng.next())));
  const Md = Array.from({ length: n }, () => 0.2 + rng.next());
  const WD = theorem36Decoder(WE, Wp, Wr, Md, relu);
  const { gD, gE } = gradTilde(WD, WE, Wp, Wr, Md, relu);
  const along = blocks.map((_, i) => {
    let s = 0;
    for (let j = 0; j < np; j++) s += gE.a[i * np + j] * WE.a[i * np + j];
    return s;
  });
  const loss = lossTilde(WD, WE, Wp, Wr, Md, relu);
  return {
    pattern: patternOf(WE, Wp, relu),
    loss,
    maxGradDecoder: maxAbs(gD),
    maxDirectionalDerivative: Math.max(...along.map(Math.abs)),
    maxGradEncoder: maxAbs(gE),
    // The statement's parts that hold (decoder optimal, positive loss, stationary along each row); the full encoder gradient is the finding.
    holds: maxAbs(gD) < 1e-12 && loss > 0 && Math.max(...along.map(Math.abs)) < 1e-12,
  };
}

export function theorem38Report(seed: number) {
  const parents = 3,
    kids = 3,
    np = 12;
  const Wp = directionsMat(parents * kids, np, 0.1, seed + 4);
  const M = maxInterference(Wp);
  const children = Array.from({ length: parents }, (_, i) => Array.from({ length: kids }, (_, j) => i * kids + j));
  // Each parent neuron: the normalised sum of its children's directions; c between the responses it must separate.
  const WE = mat(parents, np);
  children.forEach((ch, i) => {
    let norm = 0;
    for (let j = 0; j < np; j++) {
      const v = ch.reduce((s, d) => s + Wp.a[j * Wp.cols + d], 0);
      WE.a[i * np + j] = v;
      norm += v * v;
    }
    for (let j = 0; j < np; j++) WE.a[i * np + j] /= Math.sqrt(norm);
  });
  let lo = -Infinity,
    hi = Infinity;
  codes(WE, Wp, (z) => z).forEach((z, d) =>
    children.forEach((ch, i) => {
      if (ch.includes(d)) hi = Math.min(hi, z[i]);
      else lo = Math.max(lo, z[i]);
    }),
  );
  const realizable = lo < hi;
  const c = (lo + hi) / 2;
  const before = patternOf(WE, Wp, threshold(new Array(parents).fill(c)));
  const splits = children.map((_, parent) => {
    const t = theorem38(WE, Wp, children, c, parent, M);
    const want = children.map((ch, i) => (i === parent ? ch.filter((d) => d !== t.split) : ch));
    want.push([t.split]);
    const after = patternOf(t.WE, Wp, threshold(t.thresholds));
    const weakest = children[parent][t.a.indexOf(Math.min(...t.a))];
    return { parent, responses: t.a, split: t.split, weakest, after, exact: JSON.stringify(after) === JSON.stringify(want) };
  });
  return {
    interference: M,
    threshold: c,
    realizable,
    before,
    splits,
    holds: realizable && JSON.stringify(before) === JSON.stringify(children) && splits.every((s) => s.exact && s.split === s.weakest),
  };
}

export function theorem31Report(seed: number, samples = 200000) {
  const n = 6,
    np = 5,
    nq = 8;
  const rng = new Rng(seed + 9);
  const Wp = directionsMat(n, np, 0.3, seed + 5);
  const WE = mat(
    nq,
    np,
    Array.from({ length: nq * np }, () => rng.normal()),
  );
  const WD = mat(
    np,
    nq,
    Array.from({ length: np * nq }, () => rng.normal() * 0.3),
  );
  const rows = [1 / n, 0.05, 0.01].map((p) => {
    const r = theorem31(WD, WE, Wp, Wp, relu, { S: 1 - p, cMin: 0.5, beta: 1, cap: 4, samples, seed: seed + 1 });
    return {
      activeProbability: p,
      ...r,
      gap: Math.abs(r.L - r.Ltilde),
      relativeGap: Math.abs(r.L - r.Ltilde) / r.L,
      within: Math.abs(r.L - r.Ltilde) <= r.bound,
    };
  });
  return { n, rows, holds: rows.every((r) => r.within) && rows[2].relativeGap < rows[0].relativeGap };
}

export function theoryReport(seed = 1) {
  return {
    example35: example35Report(),
    theorem31: theorem31Report(seed),
    theorem33: theorem33Report(seed),
    theorem36: theorem36Report(seed),
    theorem38: theorem38Report(seed),
  };
}
