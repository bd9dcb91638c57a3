import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import { openActivations } from '../activations/manifest.js';
import { fit } from '../sdl/trainer.js';
import { chooseSites } from '../sdl/sites.js';
import { DEFAULT_EXPANSION, TRAIN_DEFAULTS, makeDictConfig, type Activation, type Kind, type TrainConfig } from '../sdl/config.js';
import { UserError } from '../util/errors.js';
import { fmtCount } from '../util/progress.js';
import { parseCount, printJson } from './common.js';
import { ACTIVATION_NAMES, KIND_NAMES } from '../sdl/activations.js';
import { LATEST_HARVEST_FILE, cacheDir } from '../util/files.js';

/** The harvest to use when --acts is not given: the last one. */
export function latestHarvest(): string {
  const p = join(cacheDir(), LATEST_HARVEST_FILE);
  if (!existsSync(p)) throw new UserError('no --acts given and no harvest found; run sdl harvest first or pass --acts <folder>');
  return readFileSync(p, 'utf8').trim();
}

function readAnchors(path: string, dIn: number, dOut: number): { encoder: Float32Array[]; decoder: Float32Array[] } {
  if (!existsSync(path)) throw new UserError(`anchors file ${path} not found`);
  let j: { encoder?: number[][]; decoder?: number[][] };
  try {
    j = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new UserError(`${path} is not JSON; anchors are {"encoder": [[...], ...], "decoder": [[...], ...]}`);
  }
  const unit = (rows: number[][] | undefined, d: number, what: string) =>
    (rows ?? []).map((r, i) => {
      if (!Array.isArray(r) || r.length !== d)
        throw new UserError(`${path}: ${what} anchor ${i} has ${r?.length} values, the dictionary's ${what} side has ${d}`);
      const n = Math.hypot(...r) || 1;
      return Float32Array.from(r, (v) => v / n);
    });
  const encoder = unit(j.encoder, dIn, 'encoder');
  const decoder = j.decoder ? unit(j.decoder, dOut, 'decoder') : dIn === dOut ? encoder : [];
  if (!encoder.length || decoder.length !== encoder.length)
    throw new UserError(`${path}: give k encoder anchors and k decoder anchors (decoder may be omitted for SAEs)`);
  return { encoder, decoder };
}

export function register(y: Argv): Argv {
  return y.command(
    'fit',
    'Train a sparse dictionary (SAE, transcoder or crosscoder) on harvested activations',
    (a) =>
      a
        .option('acts', { type: 'string', describe: 'harvest folder (default: the last harvest)' })
        .option('kind', { choices: KIND_NAMES, default: 'sae' as Kind })
        .option('site', { type: 'string', describe: 'SAE site (default: the first resid_post)' })
        .option('sites', { type: 'string', describe: 'crosscoder sites, comma-separated (default: every resid_post)' })
        .option('layer', { type: 'number', describe: 'transcoder layer (mlp_in -> mlp_out); SAE: resid_post of this layer' })
        .option('activation', { choices: ACTIVATION_NAMES, default: 'topk' as Activation })
        .option('k', { type: 'number', describe: 'active latents per token, TopK family (default 32, at most the latents)' })
        .option('expansion', { type: 'number', default: DEFAULT_EXPANSION, describe: 'latents = expansion x d_in' })
        .option('latents', { type: 'number', describe: 'number of latents (overrides --expansion)' })
        .option('matryoshka-widths', { type: 'string', describe: 'nested prefix sizes, e.g. 64,128,256,512' })
        .option('bias', { type: 'boolean', default: true, describe: "--no-bias: no b_enc/b_dec (the paper's theory setting)" })
        .option('tied', { type: 'boolean', default: false, describe: 'W_dec = W_enc^T' })
        .option('unit-norm-decoder', { type: 'boolean', default: TRAIN_DEFAULTS.unitNormDecoder })
        .option('b-dec-init', { choices: ['geometric_median', 'mean', 'zeros'] as const, default: TRAIN_DEFAULTS.bDecInit })
        .option('normalize', {
          type: 'boolean',
          default: TRAIN_DEFAULTS.normalizeActivations,
          describe: 'scale each site to mean norm sqrt(width), folded into the saved weights',
        })
        .option('lr', { type: 'number', describe: 'Adam learning rate (default 2e-4/sqrt(latents/16384))' })
        .option('lr-warmup', { type: 'number', describe: 'warm-up steps (default 5% of training, at most 1000)' })
        .option('lr-decay', { type: 'number', default: TRAIN_DEFAULTS.lrDecayFraction, describe: 'fraction of training over which the LR decays to 0' })
        .option('sparsity', { type: 'number', describe: 'L1 (relu) or L0 (jumprelu) coefficient' })
        .option('sparsity-warmup', { type: 'number', describe: 'sparsity warm-up steps (default 5% of training)' })
        .option('bandwidth', { type: 'number', default: TRAIN_DEFAULTS.jumpreluBandwidth, describe: 'JumpReLU straight-through bandwidth' })
        .option('threshold-init', { type: 'number', default: TRAIN_DEFAULTS.jumpreluInitThreshold, describe: 'JumpReLU initial threshold' })
        .option('clip', { type: 'number', default: TRAIN_DEFAULTS.clipGradNorm, describe: 'global gradient-norm clip (0: off)' })
        .option('batch', { type: 'string', default: String(TRAIN_DEFAULTS.batchTokens), describe: 'tokens per step' })
        .option('tokens', { type: 'string', describe: 'training tokens (default: one pass over the harvest)' })
        .option('steps', { type: 'number', describe: 'training steps (overrides --tokens)' })
        .option('seed', { type: 'number', default: 0 })
        .option('dead-window', { type: 'string', describe: 'tokens without firing after which a latent is dead' })
        .option('auxk-coef', { type: 'number', default: TRAIN_DEFAULTS.auxkCoefficient })
        .option('auxk-k', { type: 'number', describe: 'k_aux (default d_in/2)' })
        .option('resample', { type: 'number', default: 0, describe: 'Anthropic resampling every N steps (0: off)' })
        .option('anchors', { type: 'string', describe: 'JSON file {"encoder": [[...]], "decoder": [[...]]} of unit anchor directions' })
        .option('anchor-weight', { type: 'number', default: TRAIN_DEFAULTS.anchorWeight })
        .option('eval-tokens', { type: 'string', default: String(TRAIN_DEFAULTS.evalTokens), describe: 'held-out tokens (from the end of the harvest)' })
        .option('eval-every', { type: 'number', default: TRAIN_DEFAULTS.evalEvery })
        .option('checkpoint-every', { type: 'number', default: TRAIN_DEFAULTS.checkpointEvery })
        .option('buffer', { type: 'string', default: String(TRAIN_DEFAULTS.shuffleBufferTokens), describe: 'shuffle-buffer rows' })
        .option('include-bos', { type: 'boolean', default: false, describe: 'train on BOS rows too' })
        .option('backend', {
          choices: ['native', 'node', 'wasm', 'cpu'] as const,
          describe: "compute backend: sdlkit's native kernels, or TensorFlow.js (node, wasm, cpu); default: native, else node, else wasm, else cpu",
        })
        .option('out', { type: 'string', describe: 'dictionary folder (default: cache/dicts/<model>-<kind>-<activation>-<site>-<latents>)' })
        .option('resume', { type: 'boolean', default: false, describe: 'continue from the checkpoint in --out' })
        .option('force', { type: 'boolean', default: false, describe: 'replace a dictionary already in --out' })
        .option('verify', { type: 'boolean', default: true, describe: "--no-verify: skip the shards' checksums" })
        .option('json', { type: 'boolean', default: false })
        .example('sdl fit --kind sae --activation topk --k 32 --expansion 8', 'a TopK SAE on the last harvest')
        .example('sdl fit --kind transcoder --layer 6 --activation relu --sparsity 5', '')
        .example('sdl fit --kind crosscoder --sites blocks.2.hook_resid_post,blocks.4.hook_resid_post --activation batchtopk', ''),
    async (argv) => {
      const actsDir = argv.acts ?? latestHarvest();
      const manifest = openActivations(actsDir);
      const sites = argv.kind === 'crosscoder' ? argv.sites?.split(',').map((s) => s.trim()) : argv.site ? [argv.site] : undefined;
      const { sitesIn, sitesOut } = chooseSites(manifest, { kind: argv.kind as Kind, sites, layer: argv.layer });
      const activation = argv.activation as Activation;
      const dict = makeDictConfig({
        kind: argv.kind as Kind,
        activation,
        sitesIn,
        sitesOut,
        latents: argv.latents,
        expansion: argv.expansion,
        k: argv.k,
        matryoshkaWidths: argv['matryoshka-widths']?.split(',').map(Number),
        bias: argv.bias,
        tied: argv.tied,
      });
      const { dIn, dOut, dSae } = dict;
      const train: TrainConfig = {
        ...TRAIN_DEFAULTS,
        lr: argv.lr,
        lrWarmupSteps: argv['lr-warmup'],
        lrDecayFraction: argv['lr-decay'],
        sparsityWarmupSteps: argv['sparsity-warmup'],
        clipGradNorm: argv.clip,
        batchTokens: parseCount(argv.batch, '--batch'),
        tokens: argv.tokens ? parseCount(argv.tokens, '--tokens') : undefined,
        steps: argv.steps,
        seed: argv.seed,
        sparsityCoefficient: argv.sparsity,
        jumpreluBandwidth: argv.bandwidth,
        jumpreluInitThreshold: argv['threshold-init'],
        unitNormDecoder: argv['unit-norm-decoder'],
        bDecInit: argv['b-dec-init'],
        normalizeActivations: argv.normalize,
        deadWindowTokens: argv['dead-window'] ? parseCount(argv['dead-window'], '--dead-window') : undefined,
        auxkCoefficient: argv['auxk-coef'],
        auxkK: argv['auxk-k'],
        resampleEvery: argv.resample,
        anchorWeight: argv['anchor-weight'],
        anchors: argv.anchors ? readAnchors(argv.anchors, dIn, dOut) : undefined,
        evalTokens: parseCount(argv['eval-tokens'], '--eval-tokens'),
        evalEvery: argv['eval-every'],
        checkpointEvery: argv['checkpoint-every'],
        shuffleBufferTokens: parseCount(argv.buffer, '--buffer'),
        excludeBos: !argv['include-bos'],
      };
      // A raw tensor name (/transformer/h.2/Add_1_output_0) must not become nested folders.
      const siteTag = (sitesIn.length === 1 ? sitesIn[0].name : `${sitesIn.length}sites`).replace(/[^\w.+-]+/g, '_').replace(/^_+|_+$/g, '');
      const out = argv.out ?? join(cacheDir(), 'dicts', `${manifest.identity.model.name}-${dict.kind}-${activation}-${siteTag}-${dSae}`);
      const r = await fit({
        actsDir,
        manifest,
        dict,
        train,
        out,
        resume: argv.resume,
        force: argv.force,
        verify: argv.verify,
        backend: argv.backend,
        quiet: argv.json,
        onNote: (n) => console.error(`note: ${n}`),
      });
      if (argv.json)
        return printJson({
          out,
          backend: r.backend,
          steps: r.steps,
          tokens: r.tokens,
          seconds: r.seconds,
          tokens_per_second: r.tokensPerSecond,
          dead_fraction: r.deadFraction,
          eval: r.eval,
        });
      const site = Object.entries(r.eval.fvuBySite)
        .map(([k, v]) => `${k} ${v.toFixed(4)}`)
        .join(', ');
      console.log(
        `fit ${dict.kind} (${activation}, ${dSae} latents) on ${fmtCount(r.tokens)} tokens in ${r.seconds.toFixed(1)}s (${fmtCount(r.tokensPerSecond)} tok/s, backend ${r.backend})`,
      );
      console.log(
        `held-out: FVU ${r.eval.fvu.toFixed(4)} (${site}), MSE ${r.eval.mse.toExponential(3)}, L0 ${r.eval.l0.toFixed(1)}, dead ${(100 * r.deadFraction).toFixed(1)}% -> ${out}`,
      );
    },
  );
}
