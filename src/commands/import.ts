import type { Argv } from 'yargs';
import { importLlama2c } from '../models/import-llama2c.js';
import { printJson } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'import <format> <checkpoint>',
    'Convert a model checkpoint into an sdlkit model folder (ONNX + tokenizer + config)',
    (a) => a
      .positional('format', { choices: ['llama2c'] as const, describe: 'checkpoint format', demandOption: true })
      .positional('checkpoint', { type: 'string', describe: 'checkpoint file (llama2.c .bin)', demandOption: true })
      .option('tokenizer', { type: 'string', describe: 'llama2.c tokenizer.bin', demandOption: true })
      .option('out', { type: 'string', describe: 'output folder, e.g. models/stories15M', demandOption: true })
      .option('name', { type: 'string', describe: 'model name (default: the folder name)' })
      .option('json', { type: 'boolean', default: false })
      .example('sdl import llama2c stories15M.bin --tokenizer tokenizer.bin --out models/stories15M', ''),
    (argv) => {
      const r = importLlama2c(argv.checkpoint!, argv.tokenizer!, argv.out!, argv.name);
      if (argv.json) printJson(r);
      else console.log(`imported ${r.config.name}: ${r.config.n_layers} layers, d_model ${r.config.d_model}, vocab ${r.config.vocab_size}, context ${r.config.context_length} -> ${r.dir} (model.onnx ${(r.onnxBytes / 1e6).toFixed(1)} MB)`);
    },
  );
}
