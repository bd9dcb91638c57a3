// `sdl compare`: a table of dictionaries side by side and their sparsity-fidelity frontiers.
import type { Argv } from 'yargs';
import { compareRow, expandDictionaries, frontierPlot, type CompareRow } from '../analysis/compare.js';
import { checkOutput, writeAtomic } from '../util/fsx.js';
import { printJson } from './common.js';

const COLUMNS: [string, (r: CompareRow) => string][] = [
  ['dictionary', (r) => r.name],
  ['kind', (r) => `${r.kind}/${r.activation}${r.k !== null && r.activation !== 'relu' && r.activation !== 'jumprelu' ? ` k${r.k}` : ''}`],
  ['latents', (r) => String(r.latents)],
  ['L0', (r) => fmt(r.l0, 1)],
  ['FVU', (r) => fmt(r.fvu, 4)],
  ['EV', (r) => fmt(r.explained_variance, 4)],
  ['cos', (r) => fmt(r.cossim, 4)],
  ['RRB', (r) => fmt(r.relative_reconstruction_bias, 3)],
  ['CE rec', (r) => pct(r.ce_loss_recovered)],
  ['KL', (r) => fmt(r.kl, 4)],
  ['dead', (r) => pct(r.dead_fraction)],
  ['dense', (r) => pct(r.dense_fraction)],
];
const fmt = (v: number | null, d: number) => (v === null ? '-' : v.toFixed(d));
const pct = (v: number | null) => (v === null ? '-' : `${(100 * v).toFixed(1)}%`);

export function register(y: Argv): Argv {
  return y.command(
    'compare <dictionaries..>',
    'Compare dictionaries (or a folder of them): L0, FVU, explained variance, cosine, reconstruction bias, CE recovered, KL, dead and dense latents',
    (a) =>
      a
        .positional('dictionaries', { type: 'string', array: true, demandOption: true, describe: 'dictionary folders, or folders of them' })
        .option('plot', { type: 'string', describe: 'write the L0-vs-FVU and L0-vs-CE-recovered frontiers as SVG here' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl compare cache/dicts/pipeline-sae-L6 cache/dicts/pipeline-transcoder-L6 --plot cache/compare.svg', ''),
    (argv) => {
      const dirs = expandDictionaries(argv.dictionaries as string[]);
      if (argv.plot) checkOutput(argv.plot, 'file', '--plot');
      const rows = dirs.map(compareRow);
      if (argv.plot) writeAtomic(argv.plot, frontierPlot(rows));
      if (argv.json) return printJson({ dictionaries: rows, ...(argv.plot ? { plot: argv.plot } : {}) });
      const cells = rows.map((r) => COLUMNS.map(([, f]) => f(r)));
      const widths = COLUMNS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
      const line = (c: string[]) => c.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ');
      console.log(line(COLUMNS.map(([h]) => h)));
      for (const c of cells) console.log(line(c));
      const unmeasured = rows.filter((r) => r.ce_loss_recovered === null).map((r) => r.name);
      if (unmeasured.length) console.log(`CE recovered and KL come from 'sdl eval <dictionary>'; not yet run for: ${unmeasured.join(', ')}`);
      if (argv.plot) console.log(`frontiers -> ${argv.plot}`);
    },
  );
}
