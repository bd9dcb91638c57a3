import type { Argv } from 'yargs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runLrbGrid } from '../experiments/lrb-grid.js';
import { runResample } from '../experiments/resample.js';
import { runAbsorption } from '../experiments/absorption.js';
import { METHODS, type BenchRunOptions } from '../experiments/common.js';
import { writeAtomic } from '../util/fsx.js';
import { UserError } from '../util/errors.js';
import { checkOptions } from '../util/check.js';
import { ACTIVATION_NAMES } from '../sdl/activations.js';
import type { Activation } from '../sdl/config.js';
import { parseCount, printJson } from './common.js';
import { cacheDir } from '../util/files.js';

const list = (s: string, what: string, allowed?: string[]) => {
  const xs = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (allowed) for (const x of xs) if (!allowed.includes(x)) throw new UserError(`unknown ${what} '${x}'; use ${allowed.join(', ')}`);
  return xs;
};
const seedsOf = (s: string) =>
  list(s, 'seed').map((x) => {
    const v = Number(x);
    if (!Number.isInteger(v)) throw new UserError(`--seeds takes integers separated by commas, not '${x}'`);
    return v;
  });
/** sizeOptions' flags as yargs gives them. */
interface SizeArgs {
  [flag: string]: unknown;
  n: number;
  np: number;
  latents: number;
  k: number;
  S: number;
  M: number;
  N: string;
  steps: number;
  batch: number;
  lr: number;
  seeds: string;
  json: boolean;
}
/** The options every experiment shares, checked before any bench data is made or anything trains. */
function benchRun(argv: SizeArgs): BenchRunOptions {
  checkOptions(argv, { n: 'int>0', np: 'int>0', latents: 'int>0', k: 'int>0', S: '[0,1)', M: '(0,1]', steps: 'int>0', batch: 'int>0', lr: '>0' });
  if (argv.k > argv.latents) throw new UserError(`--k ${argv.k} is more than --latents ${argv.latents}`);
  return {
    n: argv.n,
    np: argv.np,
    S: argv.S,
    M: argv.M,
    N: parseCount(argv.N, '--N'),
    latents: argv.latents,
    k: argv.k,
    steps: argv.steps,
    batch: argv.batch,
    lr: argv.lr,
    seeds: seedsOf(argv.seeds),
    cache: join(cacheDir(), 'bench'),
    quiet: argv.json,
  };
}
const log = (json: boolean) => (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

/** The bench's size and training options, shared by every experiment (defaults differ per experiment). */
function sizeOptions<T>(a: Argv<T>, d: { n: number; np: number; latents: number; k: number; steps: number }) {
  return a
    .option('n', { type: 'number', default: d.n, describe: 'features (the paper: 1000)' })
    .option('np', { type: 'number', default: d.np, describe: 'input width (the paper: 768)' })
    .option('latents', { type: 'number', default: d.latents, describe: 'n_q (the paper: 16,000)' })
    .option('k', { type: 'number', default: d.k, describe: 'TopK family k' })
    .option('S', { type: 'number', default: 0.99, describe: 'probability that a feature is inactive' })
    .option('M', { type: 'number', default: 0.1, describe: 'maximum interference' })
    .option('N', { type: 'string', default: '100k', describe: 'bench samples' })
    .option('steps', { type: 'number', default: d.steps })
    .option('batch', { type: 'number', default: 2048 })
    .option('lr', { type: 'number', default: 3e-3 })
    .option('seeds', { type: 'string', default: '0', describe: 'seeds (bench data and training), comma-separated' })
    .option('json', { type: 'boolean', default: false });
}

export function register(y: Argv): Argv {
  return y.command('bench', "The paper's controlled experiments on the Linear Representation Bench", (b) =>
    b
      .command(
        'lrb',
        'Every method with and without feature anchoring (Table 1), by encoder rows and decoder rows',
        (a) =>
          sizeOptions(a, { n: 128, np: 96, latents: 512, k: 4, steps: 400 })
            .option('anchors', { type: 'number', default: 10, describe: 'anchored features in the +FA runs (the paper: 100)' })
            .option('anchor-weight', { type: 'number', default: 0.1 })
            .option('methods', { type: 'string', default: Object.keys(METHODS).join(','), describe: `some of ${Object.keys(METHODS).join(', ')}` })
            .option('out', { type: 'string', describe: 'write the table as markdown here' })
            .example('sdl bench lrb', 'the small grid (minutes)')
            .example('sdl bench lrb --seeds 0,1,2 --out cache/lrb.md', 'three seeds, mean ± sd')
            .example(
              'sdl bench lrb --n 1000 --np 768 --latents 16000 --k 32 --methods topk --batch 4096 --lr 1e-3 --steps 600',
              "Table 7's TopK k = 32 at the paper's size",
            ),
        async (argv) => {
          const run = benchRun(argv);
          checkOptions(argv, { anchors: 'int>=0', 'anchor-weight': '>=0' });
          const r = await runLrbGrid(
            { ...run, anchors: argv.anchors, anchorWeight: argv['anchor-weight'], methods: list(argv.methods, 'method', Object.keys(METHODS)) },
            log(argv.json),
          );
          if (argv.out) writeAtomic(argv.out, `${r.markdown}\n`);
          if (argv.json) return printJson(r.rows);
          console.log(r.markdown);
        },
      )
      .command(
        'resample',
        'Dead latents with no remedy, with resampling, and with AuxK: dead fraction and FVU over training, with an SVG plot',
        (a) =>
          sizeOptions(a, { n: 128, np: 96, latents: 128, k: 4, steps: 1500 })
            .option('activation', { choices: ['topk', 'batchtopk', 'relu'] as const, default: 'topk' as const })
            .option('sparsity', { type: 'number', describe: "ReLU L1 coefficient (default: fit's)" })
            .option('resample-every', { type: 'number', default: 250 })
            .option('dead-window', { type: 'string', default: '40k', describe: 'a latent is dead when it has not fired for this many tokens' })
            .option('out', { type: 'string', describe: 'markdown here, and the plot beside it (.svg)' })
            .example('sdl bench resample --seeds 0,1,2 --out cache/resample.md', 'writes cache/resample.md and cache/resample.svg'),
        async (argv) => {
          const run = benchRun(argv);
          checkOptions(argv, { sparsity: '>=0', 'resample-every': 'int>0' });
          const r = await runResample(
            {
              ...run,
              activation: argv.activation as Activation,
              sparsity: argv.sparsity,
              resampleEvery: argv['resample-every'],
              deadWindow: parseCount(argv['dead-window'], '--dead-window'),
            },
            log(argv.json),
          );
          if (argv.out) {
            const svg = `${argv.out.replace(/\.md$/, '')}.svg`;
            writeFileSync(svg, r.svg);
            writeAtomic(argv.out, `${r.markdown}\n\n![dead fraction and held-out FVU over training](${svg.split('/').pop()})\n`);
          }
          if (argv.json) return printJson(r.results.map(({ curves, ...x }) => ({ ...x, curves })));
          console.log(r.markdown);
        },
      )
      .command(
        'absorption',
        "Absorption rate per method on the hierarchical bench, and Theorem 3.8's weakest-child prediction",
        (a) =>
          sizeOptions(a, { n: 128, np: 96, latents: 512, k: 4, steps: 400 })
            .option('parents', { type: 'number', default: 16 })
            .option('children', { type: 'number', default: 4 })
            .option('methods', { type: 'string', default: 'relu,jumprelu,topk,batchtopk,matryoshka' })
            .option('sparsity', { type: 'number', describe: "ReLU L1 / JumpReLU L0 coefficient (default: fit's)" })
            .option('out', { type: 'string', describe: 'write the table as markdown here' })
            .example('sdl bench absorption --latents 128 --k 1 --seeds 0,1,2', 'one latent per feature and per token: absorption appears'),
        async (argv) => {
          const run = benchRun(argv);
          checkOptions(argv, { parents: 'int>0', children: 'int>0', sparsity: '>=0' });
          const methods = list(argv.methods, 'method', ACTIVATION_NAMES);
          if (argv.parents * (argv.children + 1) > argv.n)
            throw new UserError(`--parents ${argv.parents} x (--children ${argv.children} + 1) needs more than --n ${argv.n} features`);
          const r = await runAbsorption({ ...run, parents: argv.parents, children: argv.children, methods, sparsity: argv.sparsity }, log(argv.json));
          if (argv.out) writeAtomic(argv.out, `${r.markdown}\n`);
          if (argv.json) return printJson(r.rows);
          console.log(r.markdown);
        },
      )
      .demandCommand(1, 'name an experiment: lrb, resample or absorption'),
  );
}
