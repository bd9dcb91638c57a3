import type { Argv } from 'yargs';
import { bindModel } from '../intervene/bind.js';
import { Dictionary } from '../sdl/dictionary.js';
import { spliceEval, evalWindows } from '../eval/splice-eval.js';
import { defaultModel, printJson } from './common.js';
import { checkOptions } from '../util/check.js';
import { writeJsonAtomic } from '../util/fsx.js';
import { join } from 'node:path';
import { readTruth, recovery, matching, activityScores, activationPatterns, absorption, cltRecovery } from '../analysis/truth.js';
import { SPLICE_EVAL_FILE } from '../util/files.js';
import { stackTranscoders } from '../sdl/stack.js';
import { UserError } from '../util/errors.js';

export function register(y: Argv): Argv {
  return y.command(
    'eval <dictionary> [more..]',
    'Measure a dictionary: inside its model (CE loss recovered, KL, FVU, L0) or against known features (--truth); several transcoders: their replacement model',
    (a) =>
      a
        .positional('dictionary', { type: 'string', demandOption: true })
        .positional('more', { type: 'string', array: true, describe: 'more transcoders of other layers: every MLP replaced at once' })
        .option('model', { type: 'string', describe: 'model folder or .onnx (default: the one the dictionary was trained on, else the bundled model)' })
        .option('tokenizer', { type: 'string' })
        .option('corpus', { type: 'string', default: 'builtin', describe: 'held-out text (builtin corpora: their heldout split)' })
        .option('windows', { type: 'number', default: 32, describe: 'windows of --ctx tokens' })
        .option('ctx', { type: 'number', default: 128 })
        .option('batch', { type: 'number', default: 8 })
        .option('truth', { type: 'string', describe: 'a bench folder from sdl synth: measure against its known features instead' })
        .option('tau', { type: 'number', default: 0.95, describe: 'truth: cosine threshold of M_GT' })
        .option('using', {
          choices: ['encoder', 'decoder'] as const,
          default: 'encoder' as const,
          describe: 'truth: learned features = encoder rows (the paper) or decoder rows',
        })
        .option('exclude', { type: 'number', default: 0, describe: 'truth: leave out the first N features (anchored ones)' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl eval cache/dicts/pipeline-sae-L6', 'CE loss recovered of the pipeline SAE in the bundled model')
        .example('sdl eval cache/dicts/clt', 'a CLT: every MLP output replaced at once; FVU per layer')
        .example('sdl eval tc-L0 tc-L1 tc-L2', 'per-layer transcoders replacing their MLPs together (as a CLT would)')
        .example('sdl eval cache/dicts/lrb-topk --truth cache/synth/lrb-256-64-0', 'GT recovery, activation patterns, absorption'),
    async (argv) => {
      checkOptions(argv, { windows: 'int>0', ctx: 'int>=2', batch: 'int>0', tau: '(0,1]', exclude: 'int>=0' });
      const more = (argv.more ?? []) as string[];
      const d = more.length ? stackTranscoders([argv.dictionary!, ...more].map((p) => Dictionary.load(p))) : Dictionary.load(argv.dictionary!);
      if (more.length && argv.truth) throw new UserError('--truth measures one dictionary; pass one');
      if (argv.truth && d.cfg.kind === 'clt') {
        const bench = readTruth(argv.truth);
        if (!bench.truth.config.layers)
          throw new UserError(
            `a CLT is measured against a CLT bench (sdl synth --layers L); ${argv.truth} is a single-site bench, which SAEs, transcoders and crosscoders are measured on`,
          );
        const per = cltRecovery(d, bench, argv.tau);
        if (argv.json) return printJson({ layers: per });
        for (const r of per)
          console.log(
            `target layer ${r.layer}: ${r.pairs} true (feature, layer) pairs, M_GT(${argv.tau}) ${(100 * r.mgt).toFixed(1)}%, MCC ${r.mcc.toFixed(3)}`,
          );
        return;
      }
      if (argv.truth) {
        const t = readTruth(argv.truth);
        if (t.truth.config.layers > 0)
          throw new UserError(
            `${argv.truth} is a CLT bench (sdl synth --layers): its features are measured per target layer on a CLT (sdl fit --kind clt); this is a ${d.cfg.kind}`,
          );
        if (argv.exclude >= d.cfg.dSae)
          throw new UserError(`--exclude ${argv.exclude} leaves none of the dictionary's ${d.cfg.dSae} features to measure; exclude fewer`);
        const exclude = Array.from({ length: argv.exclude }, (_, i) => i);
        const rec = recovery(d, t, { tau: argv.tau, using: argv.using, exclude });
        const match = matching(d, t, argv.using);
        const dir = argv.truth.endsWith('.json') ? argv.truth.replace(/\/[^/]+$/, '') : argv.truth;
        const activity = d.cfg.sitesIn.length === 1 && d.cfg.sitesIn[0].name === 'x_p' ? activityScores(d, t, dir, match.featureOf) : undefined;
        const pat = t.W.W_p && t.W.W_p.length / t.truth.config.n === d.cfg.dIn ? activationPatterns(d, t) : undefined;
        const abs = t.truth.hierarchy.length && pat ? absorption(d, t) : undefined;
        const res = {
          recovery: rec,
          matching: { mcc: match.mcc, uniqueness: match.uniqueness, matched: match.matched, using: match.using },
          activity,
          patterns: pat && { dead: pat.dead, monosemantic: pat.monosemantic, polysemantic: pat.polysemantic },
          absorption: abs,
        };
        if (argv.json) return printJson(res);
        console.log(`M_GT(${rec.tau}) ${(100 * rec.mgt).toFixed(2)}%, M_IP ${rec.mip.toFixed(3)} over ${rec.features} features (${rec.using} directions)`);
        console.log(
          `  MCC ${match.mcc.toFixed(4)} (best one-to-one matching of ${match.matched} features), uniqueness ${(100 * match.uniqueness).toFixed(1)}%`,
        );
        if (activity)
          console.log(
            `  matched latents against the true activations (${activity.rows} rows): precision ${activity.precision.toFixed(3)}, recall ${activity.recall.toFixed(3)}, F1 ${activity.f1.toFixed(3)}`,
          );
        console.log(`  tau sweep: ${rec.sweep.map((s) => `${s.tau}: ${(100 * s.mgt).toFixed(1)}%`).join(', ')}`);
        if (pat) console.log(`  latents on features in isolation: ${pat.dead} dead, ${pat.monosemantic} monosemantic, ${pat.polysemantic} polysemantic`);
        if (abs)
          console.log(
            `  absorption rate ${(100 * abs.rate).toFixed(1)}% of children; the paper's prediction (the weakest child is absorbed) holds for ${abs.parents.filter((p) => p.predictionHolds).length} of ${abs.parents.filter((p) => p.predictionHolds !== null).length} parents with absorption`,
          );
        return;
      }
      const { model: m } = await bindModel(d, { spec: argv.model, dictDir: argv.dictionary!, tokenizer: argv.tokenizer, fallback: defaultModel });
      const r = await spliceEval(m, d, evalWindows(m, argv.windows, argv.ctx, argv.corpus), argv.ctx, argv.batch);
      // Kept beside the weights for the dashboard and for comparisons (removed when the dictionary is fitted again).
      if (!more.length)
        writeJsonAtomic(join(argv.dictionary!, SPLICE_EVAL_FILE), {
          ...r,
          model: m.name,
          model_sha256: m.sha256,
          corpus: argv.corpus,
          windows: argv.windows,
          ctx: argv.ctx,
        });
      if (argv.json) return printJson(r);
      const c = d.cfg;
      const what =
        c.kind === 'clt'
          ? `${more.length ? `${more.length + 1} transcoders` : 'CLT'} replacing ${c.sitesOut.map((s) => s.name).join(', ')} at once`
          : `${c.kind} on ${c.sitesIn[0].name}${c.kind === 'transcoder' ? ` -> ${c.sitesOut[0].name}` : ''}`;
      console.log(`${what}, ${r.tokens} predictions:`);
      console.log(`  CE clean ${r.ce_clean.toFixed(4)}, spliced ${r.ce_spliced.toFixed(4)}, zero-ablated ${r.ce_zero_ablation.toFixed(4)} nats`);
      console.log(
        `  CE loss recovered ${(100 * r.ce_loss_recovered).toFixed(2)}%, delta LM loss ${r.delta_ce.toFixed(4)}, KL ${r.kl_spliced.toFixed(4)} (zero-ablation ${r.kl_zero_ablation.toFixed(4)})`,
      );
      console.log(
        `  FVU ${r.fvu.toFixed(4)} (explained variance ${r.explained_variance.toFixed(4)}), L0 ${r.l0.toFixed(1)}, cosine ${r.cossim.toFixed(4)}, L2 ratio ${r.l2_ratio.toFixed(3)}, relative reconstruction bias ${r.relative_reconstruction_bias.toFixed(3)}`,
      );
      console.log(
        `  latents alive ${(100 * r.frac_alive).toFixed(1)}%, firing on >1% of tokens ${(100 * r.freq_over_1_percent).toFixed(1)}%, on >10% ${(100 * r.freq_over_10_percent).toFixed(1)}%`,
      );
      if (r.fvu_by_site)
        console.log(
          `  FVU per layer: ${Object.entries(r.fvu_by_site)
            .map(([k, v]) => `${k.replace(/^blocks\.(\d+)\..*$/, 'L$1')} ${v.toFixed(3)}`)
            .join(', ')}`,
        );
    },
  );
}
