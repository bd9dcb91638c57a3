import type { Argv } from 'yargs';
import { join } from 'node:path';
import { LM_DEFAULTS } from '../lm/config.js';
import { BUNDLED_MODEL_DIR } from '../models/model.js';
import { BUNDLED_MODEL_NAME, printJson } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'model <action>',
    'Train the bundled language model (tokenizer + transformer) on the public-domain corpora',
    (a) =>
      a
        .positional('action', { choices: ['train'] as const, demandOption: true })
        .option('out', { type: 'string', default: join(BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME), describe: 'model folder' })
        .option('steps', { type: 'number', default: LM_DEFAULTS.steps })
        .option('minutes', { type: 'number', describe: 'stop training after this many minutes (then export)' })
        .option('stop-step', { type: 'number', describe: 'stop at this step (the LR schedule still spans --steps)' })
        .option('vocab', { type: 'number', default: LM_DEFAULTS.vocabSize })
        .option('dim', { type: 'number', default: LM_DEFAULTS.dim })
        .option('hidden', { type: 'number', default: LM_DEFAULTS.hiddenDim })
        .option('layers', { type: 'number', default: LM_DEFAULTS.layers })
        .option('heads', { type: 'number', default: LM_DEFAULTS.heads })
        .option('kv-heads', { type: 'number', default: LM_DEFAULTS.kvHeads })
        .option('ctx', { type: 'number', default: LM_DEFAULTS.ctx })
        .option('batch', { type: 'number', default: LM_DEFAULTS.batch })
        .option('lr', { type: 'number', default: LM_DEFAULTS.lr })
        .option('seed', { type: 'number', default: LM_DEFAULTS.seed })
        .option('json', { type: 'boolean', default: false })
        .example('sdl model train', 'reproduce models/sdl-tiny (resumes from models/sdl-tiny/training/ when interrupted)'),
    async (argv) => {
      const r = await (await import('../lm/train-lm.js')).trainBundledModel({
        ...LM_DEFAULTS,
        out: argv.out,
        steps: argv.steps,
        minutes: argv.minutes,
        stopStep: argv['stop-step'],
        vocabSize: argv.vocab,
        dim: argv.dim,
        hiddenDim: argv.hidden,
        layers: argv.layers,
        heads: argv.heads,
        kvHeads: argv['kv-heads'],
        ctx: argv.ctx,
        batch: argv.batch,
        lr: argv.lr,
        seed: argv.seed,
        quiet: argv.json,
      });
      if (argv.json) return printJson(r);
      console.log(
        `trained ${r.steps} steps in ${r.seconds.toFixed(0)}s: held-out ${r.heldout.toFixed(3)} nats/token, train ${r.train.toFixed(3)}, unigram baseline ${r.unigram.toFixed(3)} -> ${r.dir}`,
      );
    },
  );
}
