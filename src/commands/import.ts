import type { Argv } from 'yargs';
import { importLlama2c } from '../models/import-llama2c.js';
import { importSaelens } from '../export/saelens.js';
import { UserError } from '../util/errors.js';
import { printJson } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'import <format> <checkpoint>',
    'Convert a llama2.c checkpoint into an sdlkit model folder, or a SAELens folder into an sdlkit dictionary',
    (a) =>
      a
        .positional('format', { choices: ['llama2c', 'saelens'] as const, describe: 'what to import', demandOption: true })
        .positional('checkpoint', { type: 'string', describe: 'llama2.c .bin checkpoint, or a SAELens folder', demandOption: true })
        .option('tokenizer', { type: 'string', describe: 'llama2c: the tokenizer.bin' })
        .option('out', { type: 'string', describe: 'output folder, e.g. models/stories15M or cache/dicts/imported', demandOption: true })
        .option('name', { type: 'string', describe: 'model name (default: the folder name)' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl import llama2c stories15M.bin --tokenizer tokenizer.bin --out models/stories15M', '')
        .example('sdl import saelens gpt2-small-res-jb/blocks.8.hook_resid_pre --out cache/dicts/jb-l8', ''),
    (argv) => {
      if (argv.format === 'saelens') {
        const d = importSaelens(argv.checkpoint!);
        d.save(argv.out!, { metadata: { imported_from: argv.checkpoint } });
        if (argv.json) return printJson({ out: argv.out, dict: d.cfg });
        console.log(`imported ${d.cfg.kind} (${d.cfg.activation}, ${d.cfg.dSae} latents, d_in ${d.cfg.dIn}) -> ${argv.out}`);
        return;
      }
      if (!argv.tokenizer) throw new UserError('a llama2c import needs --tokenizer <tokenizer.bin>');
      const r = importLlama2c(argv.checkpoint!, argv.tokenizer, argv.out!, argv.name);
      if (argv.json) printJson(r);
      else
        console.log(
          `imported ${r.config.name}: ${r.config.n_layers} layers, d_model ${r.config.d_model}, vocab ${r.config.vocab_size}, context ${r.config.context_length} -> ${r.dir} (model.onnx ${(r.onnxBytes / 1e6).toFixed(1)} MB)`,
        );
    },
  );
}
