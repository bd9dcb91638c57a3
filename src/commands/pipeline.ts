import type { Argv } from 'yargs';
import { join } from 'node:path';
import { DEFAULT_SITES, HARVEST_DEFAULTS, harvest, hookSpecs } from '../activations/harvest.js';
import { cacheDir } from '../util/files.js';
import { fit } from '../sdl/trainer.js';
import { chooseSites } from '../sdl/sites.js';
import { TRAIN_DEFAULTS, makeDictConfig } from '../sdl/config.js';
import { fmtCount } from '../util/progress.js';
import { defaultModel, parseCount } from './common.js';
import { loadModel } from '../models/model.js';
import { spliceEval, evalWindows } from '../eval/splice-eval.js';

export function register(y: Argv): Argv {
  return y.command(
    'pipeline',
    'The main job on the bundled model: harvest a middle layer, fit a TopK SAE and a transcoder on it, and measure both inside the model',
    (a) =>
      a
        .option('model', { type: 'string', describe: 'model folder (default: the bundled model)' })
        .option('layer', { type: 'number', default: 6 })
        .option('tokens', { type: 'string', default: '256k', describe: 'tokens to harvest' })
        .option('steps', { type: 'number', default: 300, describe: 'training steps per dictionary' })
        .option('expansion', { type: 'number', default: 8 })
        .example('npm start', 'the same as sdl pipeline'),
    async (argv) => {
      const model = argv.model ?? defaultModel();
      const t0 = performance.now();
      const h = await harvest({
        model,
        hooks: hookSpecs([argv.layer], [...DEFAULT_SITES], []),
        corpus: 'builtin',
        split: 'heldout',
        tokens: parseCount(argv.tokens, '--tokens'),
        ctx: HARVEST_DEFAULTS.ctx,
        batch: HARVEST_DEFAULTS.batch,
        dtype: 'f32',
        seed: 0,
        shardTokens: HARVEST_DEFAULTS.shardTokens,
      });
      console.log(
        `1/3 harvested ${fmtCount(h.manifest.tokens)} tokens of layer ${argv.layer} (${h.manifest.sites.map((s) => s.name).join(', ')}) in ${h.seconds.toFixed(1)}s -> ${h.out}`,
      );
      const lm = loadModel(model);
      const windows = evalWindows(lm, 16, 128);
      const jobs: { kind: 'sae' | 'transcoder'; label: string }[] = [
        { kind: 'sae', label: '2/3 TopK SAE on resid_post' },
        { kind: 'transcoder', label: '3/3 TopK transcoder mlp_in -> mlp_out' },
      ];
      for (const j of jobs) {
        const { sitesIn, sitesOut } = chooseSites(h.manifest, { kind: j.kind, layer: argv.layer });
        const dict = makeDictConfig({ kind: j.kind, activation: 'topk', sitesIn, sitesOut, expansion: argv.expansion, k: 16 });
        const dSae = dict.dSae;
        const out = join(cacheDir(), 'dicts', `pipeline-${j.kind}-L${argv.layer}`);
        const r = await fit({
          actsDir: h.out,
          manifest: h.manifest,
          dict,
          train: { ...TRAIN_DEFAULTS, steps: argv.steps, batchTokens: 2048, evalEvery: argv.steps },
          out,
          force: true,
          onNote: (n) => console.error(`note: ${n}`),
        });
        console.log(
          `${j.label}: ${dSae} latents, k 16, ${r.steps} steps in ${r.seconds.toFixed(1)}s (${r.backend}); held-out FVU ${r.eval.fvu.toFixed(3)}, L0 ${r.eval.l0.toFixed(1)}, dead ${(100 * r.deadFraction).toFixed(1)}% -> ${out}`,
        );
        const e = await spliceEval(lm, r.dictionary, windows, 128);
        console.log(
          `    spliced into the model: CE loss recovered ${(100 * e.ce_loss_recovered).toFixed(1)}% (clean ${e.ce_clean.toFixed(3)}, spliced ${e.ce_spliced.toFixed(3)}, zero-ablated ${e.ce_zero_ablation.toFixed(3)} nats), KL ${e.kl_spliced.toFixed(4)}`,
        );
      }
      console.log(`done in ${((performance.now() - t0) / 1000).toFixed(0)}s`);
    },
  );
}
