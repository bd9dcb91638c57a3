// Comparing dictionaries: one row per dictionary folder from what its commands left beside the weights
// (eval.json from fit's held-out evaluation, splice_eval.json from `sdl eval`), and the L0-vs-FVU and
// L0-vs-CE-recovered frontiers as an SVG. Nothing is recomputed here, so comparing is instant and a
// metric a dictionary has not been measured on is shown as missing, never guessed.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Dictionary } from '../sdl/dictionary.js';
import { CFG_FILE, EVAL_FILE, SPLICE_EVAL_FILE } from '../util/files.js';
import { UserError } from '../util/errors.js';
import { lineChart, type Series } from '../util/svg-plot.js';
import type { EvalMetrics } from '../sdl/metrics.js';
import type { SpliceMetrics } from '../eval/splice-eval.js';

export interface CompareRow {
  name: string;
  path: string;
  kind: string;
  activation: string;
  latents: number;
  k: number | null;
  sites: string[];
  /** Held-out metrics from fit (eval.json); null where the file or the field is missing. */
  l0: number | null;
  fvu: number | null;
  explained_variance: number | null;
  cossim: number | null;
  l2_ratio: number | null;
  relative_reconstruction_bias: number | null;
  dead_fraction: number | null;
  /** Share of latents firing on at least 10% of held-out tokens. */
  dense_fraction: number | null;
  /** From `sdl eval` (splice_eval.json). */
  ce_loss_recovered: number | null;
  kl: number | null;
  delta_ce: number | null;
}

const readJson = <T>(p: string): T | undefined => (existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as T) : undefined);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Dictionary folders named on the command line; a folder of dictionaries (a sweep) stands for each of them. */
export function expandDictionaries(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) throw new UserError(`${p} not found; pass dictionary folders (or a folder of them)`);
    if (existsSync(join(p, CFG_FILE))) {
      out.push(p);
      continue;
    }
    const inner = statSync(p).isDirectory()
      ? readdirSync(p)
          .map((f) => join(p, f))
          .filter((f) => existsSync(join(f, CFG_FILE)))
          .sort()
      : [];
    if (!inner.length) throw new UserError(`${p} is neither a dictionary folder nor a folder of dictionaries (no ${CFG_FILE} in it or below it)`);
    out.push(...inner);
  }
  return out;
}

export function compareRow(dir: string): CompareRow {
  const cfg = Dictionary.readConfig(dir);
  const d = cfg.sdlkit.dict;
  const ev = readJson<Partial<EvalMetrics>>(join(dir, EVAL_FILE));
  const sp = readJson<Partial<SpliceMetrics>>(join(dir, SPLICE_EVAL_FILE));
  const dense = ev?.density ? ev.density.counts[ev.density.counts.length - 1] / d.dSae : undefined; // the [10%, 100%] bin
  return {
    name: basename(dir),
    path: dir,
    kind: d.kind,
    activation: d.activation,
    latents: d.dSae,
    k: d.k ?? null,
    sites: d.sitesIn.map((s) => s.name),
    l0: num(ev?.l0),
    fvu: num(ev?.fvu),
    explained_variance: num(ev?.explainedVariance ?? (ev?.fvu !== undefined ? 1 - ev.fvu : undefined)),
    // Held-out figures first; dictionaries fitted before these metrics existed have them from `sdl eval`.
    cossim: num(ev?.cossim ?? sp?.cossim),
    l2_ratio: num(ev?.l2Ratio ?? sp?.l2_ratio),
    relative_reconstruction_bias: num(ev?.relativeReconstructionBias ?? sp?.relative_reconstruction_bias),
    dead_fraction: num(ev?.deadOnEval !== undefined ? ev.deadOnEval / d.dSae : undefined),
    dense_fraction: num(ev?.densityStats?.over10Percent ?? dense),
    ce_loss_recovered: num(sp?.ce_loss_recovered),
    kl: num(sp?.kl_spliced),
    delta_ce: num(sp?.delta_ce),
  };
}

/** The rows of a series on the Pareto frontier of (L0 low, metric best), in order of L0. */
export function frontier(points: [number, number][], better: 'lower' | 'higher'): [number, number][] {
  const sorted = [...points].sort((a, b) => a[0] - b[0] || (better === 'lower' ? a[1] - b[1] : b[1] - a[1]));
  const out: [number, number][] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (!last || (better === 'lower' ? p[1] < last[1] : p[1] > last[1])) out.push(p);
  }
  return out;
}

/** Two panels, L0 vs FVU and L0 vs CE loss recovered; one line per kind/activation through its frontier. */
export function frontierPlot(rows: CompareRow[]): string {
  const groups = new Map<string, CompareRow[]>();
  for (const r of rows) {
    const key = `${r.kind}/${r.activation}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const series = (metric: 'fvu' | 'ce_loss_recovered', better: 'lower' | 'higher'): Series[] =>
    [...groups].map(([name, rs]) => ({
      name,
      points: frontier(
        rs.filter((r) => r.l0 !== null && r[metric] !== null).map((r) => [r.l0 as number, r[metric] as number]),
        better,
      ),
    }));
  return lineChart(
    [
      { title: 'reconstruction (lower is better)', xLabel: 'L0 (active latents per token)', yLabel: 'FVU', series: series('fvu', 'lower') },
      {
        title: 'CE loss recovered (higher is better)',
        xLabel: 'L0 (active latents per token)',
        yLabel: 'CE loss recovered',
        series: series('ce_loss_recovered', 'higher'),
      },
    ],
    { title: `${rows.length} dictionaries: the sparsity-fidelity frontier` },
  );
}
