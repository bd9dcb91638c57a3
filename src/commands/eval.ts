import type { Argv } from 'yargs';
import { loadModel } from '../models/model.js';
import { Dictionary } from '../sdl/dictionary.js';
import { spliceEval, evalWindows } from '../eval/splice-eval.js';
import { defaultModel, printJson } from './common.js';

export function register(y: Argv): Argv {
  return y.command(
    'eval <dictionary>',
    'Splice a dictionary into its model and measure CE loss recovered, delta loss, KL, FVU and L0 on held-out text',
    (a) => a
      .positional('dictionary', { type: 'string', demandOption: true })
      .option('model', { type: 'string', describe: 'model folder or .onnx (default: the bundled model)' })
      .option('tokenizer', { type: 'string' })
      .option('corpus', { type: 'string', default: 'builtin', describe: 'held-out text (builtin corpora: their heldout split)' })
      .option('windows', { type: 'number', default: 32, describe: 'windows of --ctx tokens' })
      .option('ctx', { type: 'number', default: 128 })
      .option('batch', { type: 'number', default: 8 })
      .option('json', { type: 'boolean', default: false })
      .example('sdl eval cache/dicts/pipeline-sae-L6', 'CE loss recovered of the pipeline SAE in the bundled model'),
    async (argv) => {
      const d = Dictionary.load(argv.dictionary!);
      const m = loadModel(argv.model ?? defaultModel(), { tokenizer: argv.tokenizer });
      const r = await spliceEval(m, d, evalWindows(m, argv.windows, argv.ctx, argv.corpus), argv.ctx, argv.batch);
      if (argv.json) return printJson(r);
      console.log(`${d.cfg.kind} on ${d.cfg.sitesIn[0].name}${d.cfg.kind === 'transcoder' ? ` -> ${d.cfg.sitesOut[0].name}` : ''}, ${r.tokens} predictions:`);
      console.log(`  CE clean ${r.ce_clean.toFixed(4)}, spliced ${r.ce_spliced.toFixed(4)}, zero-ablated ${r.ce_zero_ablation.toFixed(4)} nats`);
      console.log(`  CE loss recovered ${(100 * r.ce_loss_recovered).toFixed(2)}%, delta LM loss ${r.delta_ce.toFixed(4)}, KL ${r.kl_spliced.toFixed(4)} (zero-ablation ${r.kl_zero_ablation.toFixed(4)})`);
      console.log(`  FVU ${r.fvu.toFixed(4)}, L0 ${r.l0.toFixed(1)}`);
    },
  );
}
