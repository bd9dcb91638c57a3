import type { Argv } from 'yargs';
import { join } from 'node:path';
import { generateLrb, LRB_DEFAULTS } from '../synth/lrb.js';
import { writeAtomic } from '../util/fsx.js';
import { parseCount, printJson } from './common.js';
import { LATEST_HARVEST_FILE, cacheDir } from '../util/files.js';

export function register(y: Argv): Argv {
  return y.command(
    'synth',
    'Write a Linear Representation Bench (known features) as shards fit/export read, plus its ground truth',
    (a) =>
      a
        .option('n', { type: 'number', default: LRB_DEFAULTS.n, describe: 'ground-truth features' })
        .option('np', { type: 'number', default: LRB_DEFAULTS.np, describe: 'input width n_p' })
        .option('nr', { type: 'number', default: 0, describe: 'target width n_r (a transcoder bench: site x_r)' })
        .option('sources', { type: 'number', default: 1, describe: 'crosscoder bench: sources x_p.0, x_p.1, ...' })
        .option('layers', {
          type: 'number',
          default: 0,
          describe: 'CLT bench: per-layer mlp_in/mlp_out sites, features written to their own and every later layer',
        })
        .option('S', { type: 'number', default: LRB_DEFAULTS.S, describe: 'probability that a feature is inactive' })
        .option('M', { type: 'number', default: LRB_DEFAULTS.M, describe: 'maximum pairwise interference' })
        .option('c-min', { type: 'number', default: LRB_DEFAULTS.cMin })
        .option('beta', { type: 'number', default: LRB_DEFAULTS.beta })
        .option('N', { type: 'string', default: String(LRB_DEFAULTS.N), describe: 'samples (rows)' })
        .option('parents', { type: 'number', default: 0, describe: 'hierarchy: parent features (Definition 3.2)' })
        .option('children', { type: 'number', default: 0, describe: 'hierarchy: children per parent' })
        .option('zipf', { type: 'number', default: 0, describe: 'per-feature frequencies ~ 1/rank^zipf (mean kept at 1 - S)' })
        .option('seed', { type: 'number', default: 0 })
        .option('out', { type: 'string', describe: 'folder (default cache/synth/lrb-<n>-<np>-<seed>)' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl synth --n 256 --np 64 --S 0.98 --M 0.1 --N 200k', 'then: sdl fit --acts <out> --site x_p; sdl eval <dict> --truth <out>')
        .example('sdl synth --layers 4 --n 256 --np 32 --S 0.97 --N 400k', 'a CLT bench; then: sdl fit --kind clt; sdl eval <clt> --truth <out>'),
    (argv) => {
      const out = argv.out ?? join(cacheDir(), 'synth', `lrb-${argv.n}-${argv.np}-${argv.seed}`);
      const t = generateLrb(out, {
        n: argv.n,
        np: argv.np,
        nr: argv.nr,
        sources: argv.sources,
        layers: argv.layers,
        S: argv.S,
        M: argv.M,
        cMin: argv['c-min'],
        beta: argv.beta,
        N: parseCount(argv.N, '--N'),
        parents: argv.parents,
        children: argv.children,
        zipf: argv.zipf,
        seed: argv.seed,
      });
      writeAtomic(join(cacheDir(), LATEST_HARVEST_FILE), `${out}\n`);
      if (t.interference > argv.M + 1e-6) {
        const welch = argv.n > argv.np ? Math.sqrt((argv.n - argv.np) / (argv.np * (argv.n - 1))) : 0;
        process.stderr.write(
          `note: the directions reached interference ${t.interference.toFixed(3)}, not ${argv.M} (no ${argv.n} unit vectors in ${argv.np} dimensions go below the Welch bound ${welch.toFixed(3)})\n`,
        );
      }
      if (argv.json) return printJson({ out, ...t, frequencies: undefined });
      console.log(
        `wrote ${t.config.N} rows of ${t.sites.join(', ')} (n ${t.config.n}, n_p ${t.config.np}${t.config.nr ? `, n_r ${t.config.nr}` : ''}, S ${t.config.S}, achieved interference ${t.interference.toFixed(3)}${t.hierarchy.length ? `, ${t.hierarchy.length} parents x ${t.config.children} children` : ''}) -> ${out}`,
      );
    },
  );
}
