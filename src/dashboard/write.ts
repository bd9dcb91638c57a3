// `sdl dashboard`: a self-contained folder (index.html, app.js, style.css, data/) that opens from file:// with no
// network: the page and its scripts are sdlkit's own (assets/dashboard/), and the data are script files that
// call SDL.load(key, value), since browsers refuse fetch() on file:// but load <script src>.
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { UserError } from '../util/errors.js';
import { dirname, join, resolve } from 'node:path';
import { Dictionary } from '../sdl/dictionary.js';
import { CHUNK, featureDetails, featureList, openCheckedIndex, overview } from './data.js';
import { checkOutput, writeAtomic } from '../util/fsx.js';
import { compareRow } from '../analysis/compare.js';
import { Progress } from '../util/progress.js';

export const ASSETS_DIR = resolve(dirname(new URL(import.meta.url).pathname), '../../../assets/dashboard');
const ASSETS = ['index.html', 'app.js', 'style.css'];

const script = (key: string, value: unknown) => `SDL.load(${JSON.stringify(key)}, ${JSON.stringify(value)});\n`;

export interface DashboardResult {
  out: string;
  dictionaries: number;
  features: number;
  files: number;
  bytes: number;
  seconds: number;
}

/** Writes the dashboard of `dicts` into `out` (built beside it and renamed into place: never half a dashboard). */
export function writeDashboard(dicts: string[], out: string, opts: { quiet?: boolean } = {}): DashboardResult {
  const t0 = performance.now();
  checkOutput(out, 'dir');
  // Only an empty folder or an earlier dashboard is ever replaced.
  if (existsSync(out) && readdirSync(out).length && !existsSync(join(out, 'data', 'dicts.js'))) {
    throw new UserError(`${out} exists and is not a dashboard folder; choose another --out`);
  }
  const tmp = `${out.replace(/\/+$/, '')}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'data'), { recursive: true });
  for (const a of ASSETS) copyFileSync(join(ASSETS_DIR, a), join(tmp, a));
  const opened = dicts.map((dir) => ({ dir, d: Dictionary.load(dir), db: openCheckedIndex(dir) }));
  const total = opened.reduce((a, o) => a + o.d.cfg.dSae, 0);
  const progress = new Progress('dashboard', total, 'features', 0, opts.quiet);
  let done = 0;
  const list = opened.map(({ dir, d, db }, k) => {
    const key = `d${k}`;
    mkdirSync(join(tmp, 'data', key));
    const ov = overview(dir, db, d);
    writeAtomic(join(tmp, 'data', key, 'overview.js'), script(`${key}/overview`, ov));
    writeAtomic(join(tmp, 'data', key, 'list.js'), script(`${key}/list`, featureList(db)));
    for (let c = 0; c * CHUNK < d.cfg.dSae; c++) {
      const to = Math.min(d.cfg.dSae, (c + 1) * CHUNK);
      writeAtomic(join(tmp, 'data', key, `chunk-${c}.js`), script(`${key}/chunk-${c}`, featureDetails(db, d, c * CHUNK, to)));
      done += to - c * CHUNK;
      progress.update(done);
    }
    db.close();
    // The compare page shows what `sdl compare` shows (one implementation), plus index counts and absorption.
    const row = compareRow(dir);
    return {
      key,
      name: ov.name,
      kind: row.kind,
      activation: row.activation,
      site: row.sites.join(' + '),
      latents: row.latents,
      k: d.cfg.k,
      fvu: row.fvu,
      l0: row.l0,
      explainedVariance: row.explained_variance,
      cossim: row.cossim,
      rrb: row.relative_reconstruction_bias,
      kl: row.kl,
      dead: ov.counts.dead / ov.counts.features,
      dense: ov.counts.dense / ov.counts.features,
      ceRecovered: row.ce_loss_recovered,
      absorption: (ov.absorption as { mean_absorption_fraction?: number } | undefined)?.mean_absorption_fraction ?? null,
    };
  });
  writeAtomic(join(tmp, 'data', 'dicts.js'), script('dicts', list));
  progress.done();
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
  const size = (p: string): [number, number] =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .map((f) => size(join(p, f)))
          .reduce((a, b) => [a[0] + b[0], a[1] + b[1]], [0, 0])
      : [1, statSync(p).size];
  const [files, bytes] = size(out);
  return { out, dictionaries: dicts.length, features: total, files, bytes, seconds: (performance.now() - t0) / 1000 };
}
