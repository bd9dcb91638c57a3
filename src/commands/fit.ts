import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import { openActivations } from '../activations/manifest.js';
import { checkSweep, fit, fitSweep, type FitResult, type SweepMember } from '../sdl/trainer.js';
import { fitWithLrRace, racesLearningRate, type LrRaceResult } from '../sdl/lr-race.js';
import { chooseSites } from '../sdl/sites.js';
import {
  DEFAULT_EXPANSION,
  TRAIN_DEFAULTS,
  defaultShuffleRows,
  makeDictConfig,
  shortRunNote,
  type Activation,
  type DictConfig,
  type Kind,
  type TrainConfig,
} from '../sdl/config.js';
import type { Manifest } from '../activations/manifest.js';
import { memberName, parseSweep, readSweepFile, type MemberSettings, type SweepRecord } from '../sdl/sweep.js';
import { checkOutput, readJson, sha256, writeJsonAtomic } from '../util/fsx.js';
import { UserError } from '../util/errors.js';
import { screenSetting } from '../native/kernels.js';
import { checkLowMemory, leanMemory } from '../sdl/engine.js';
import { denseAbove } from '../sdl/engine-native.js';
import { fmtCount } from '../util/progress.js';
import { parseCount, parseLayers, printJson } from './common.js';
import { ACTIVATIONS, ACTIVATION_NAMES, KIND_NAMES } from '../sdl/activations.js';
import { CFG_FILE, CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, LATEST_HARVEST_FILE, cacheDir } from '../util/files.js';

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

/** The options of `sdl fit` that describe one dictionary (what a sweep member may set). */
type FitArgs = Record<string, unknown>;

/** One dictionary's configuration from fit's options: the single place they are turned into configs. */
function buildMember(argv: FitArgs, manifest: Manifest): { dict: DictConfig; train: TrainConfig; defaultOut: string } {
  screenSetting(); // SDLKIT_SCREEN and SDLKIT_DENSE_ABOVE are checked here, before anything is written (the engines
  denseAbove(); // read them again)
  const kind = argv.kind as Kind;
  const str = (k: string) => (argv[k] === undefined ? undefined : String(argv[k]));
  const sites =
    kind === 'crosscoder'
      ? str('sites')
          ?.split(',')
          .map((s) => s.trim())
      : argv.site
        ? [String(argv.site)]
        : undefined;
  const { sitesIn, sitesOut } = chooseSites(manifest, {
    kind,
    sites,
    layer: argv.layer as number | undefined,
    layers: kind === 'clt' && argv.layers !== undefined && argv.layers !== 'all' ? parseLayers(String(argv.layers)) : undefined,
    input: argv.input as 'mlp_in' | 'resid_mid' | undefined,
  });
  if (kind !== 'clt' && (argv.layers !== undefined || argv.input !== undefined || argv['latents-per-layer'] !== undefined))
    throw new UserError('--layers, --input and --latents-per-layer are for --kind clt');
  const activation = argv.activation as Activation;
  if (argv['matryoshka-widths'] !== undefined && !ACTIVATIONS[activation]?.nested)
    throw new UserError(`--matryoshka-widths is for --activation matryoshka (got --activation ${activation})`);
  const dict = makeDictConfig({
    kind,
    activation,
    sitesIn,
    sitesOut,
    latents: argv.latents as number | undefined,
    expansion: argv.expansion as number,
    k: argv.k as number | undefined,
    matryoshkaWidths: str('matryoshka-widths')?.split(',').map(Number),
    bias: argv.bias as boolean,
    tied: argv.tied as boolean,
    skip: argv.skip as boolean,
    latentsPerLayer: argv['latents-per-layer'] as number | undefined,
  });
  const { dIn, dOut, dSae } = dict;
  const count = (k: string) => (argv[k] === undefined ? undefined : parseCount(String(argv[k]), `--${k}`));
  const train: TrainConfig = {
    ...TRAIN_DEFAULTS,
    lr: argv.lr as number | undefined,
    lrWarmupSteps: argv['lr-warmup'] as number | undefined,
    lrDecayFraction: argv['lr-decay'] as number,
    sparsityWarmupSteps: argv['sparsity-warmup'] as number | undefined,
    clipGradNorm: argv.clip as number,
    batchTokens: count('batch')!,
    tokens: count('tokens'),
    steps: argv.steps as number | undefined,
    seed: argv.seed as number,
    sparsityCoefficient: argv.sparsity as number | undefined,
    jumpreluBandwidth: argv.bandwidth as number,
    jumpreluInitThreshold: argv['threshold-init'] as number,
    unitNormDecoder: argv['unit-norm-decoder'] as boolean,
    bDecInit: argv['b-dec-init'] as TrainConfig['bDecInit'],
    normalizeActivations: argv.normalize as boolean,
    deadWindowTokens: count('dead-window'),
    auxkCoefficient: argv['auxk-coef'] as number,
    auxkK: argv['auxk-k'] as number | undefined,
    resampleEvery: argv.resample as number,
    anchorWeight: argv['anchor-weight'] as number,
    anchors: argv.anchors ? readAnchors(String(argv.anchors), dIn, dOut) : undefined,
    evalTokens: count('eval-tokens')!,
    evalEvery: argv['eval-every'] as number,
    checkpointEvery: argv['checkpoint-every'] as number,
    shuffleBufferTokens: count('buffer') ?? defaultShuffleRows(rowWidth([...sitesIn, ...sitesOut])),
    excludeBos: !argv['include-bos'],
    lowMemory: argv['low-memory'] as boolean,
  };
  // A raw tensor name (/transformer/h.2/Add_1_output_0) must not become nested folders.
  const siteTag = (sitesIn.length === 1 ? sitesIn[0].name : `${sitesIn.length}sites`).replace(/[^\w.+-]+/g, '_').replace(/^_+|_+$/g, '');
  checkLowMemory(dict, train, argv.backend as string | undefined);
  return { dict, train, defaultOut: join(cacheDir(), 'dicts', `${manifest.identity.model.name}-${dict.kind}-${activation}-${siteTag}-${dSae}`) };
}

/** Floats per row of a stream holding these sites (each distinct site once). */
const rowWidth = (sites: { name: string; width: number }[]): number => [...new Map(sites.map((s) => [s.name, s.width])).values()].reduce((a, b) => a + b, 0);

const SWEEP_FILE = 'sweep.json';

/** `sdl fit --sweep` / `--sweep-file`: every member built (and checked) first, then trained on one stream. */
async function runSweep(argv: FitArgs, actsDir: string, manifest: Manifest): Promise<void> {
  if (argv.sweep !== undefined && argv['sweep-file'] !== undefined) throw new UserError('give --sweep or --sweep-file, not both');
  const list = argv['sweep-file']
    ? readSweepFile(String(argv['sweep-file']))
    : parseSweep(String(argv.sweep)).map((settings) => ({ name: undefined, settings }));
  const names = list.map((m) => m.name ?? memberName(m.settings));
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new UserError(`two sweep members are both named ${dup}; give each a distinct "name"`);
  const spec = JSON.stringify(list.map((m) => m.settings));
  const out = argv.out
    ? String(argv.out)
    : join(cacheDir(), 'sweeps', `${manifest.identity.model.name}-${sha256(spec + manifest.identity_sha256).slice(0, 8)}`);
  checkOutput(out, 'dir');
  const members: (SweepMember & { settings: MemberSettings })[] = list.map((m, i) => {
    try {
      const b = buildMember({ ...argv, ...m.settings }, manifest);
      return { name: names[i], settings: m.settings, dict: b.dict, train: b.train, out: join(out, names[i]) };
    } catch (e) {
      if (e instanceof UserError) throw new UserError(`sweep member ${names[i]}: ${e.message}`);
      throw e;
    }
  });
  if (argv.buffer === undefined) {
    // One stream holds every member's sites: its default buffer is sized by all of them.
    const rows = defaultShuffleRows(rowWidth(members.flatMap((m) => [...m.dict.sitesIn, ...m.dict.sitesOut])));
    for (const m of members) m.train.shuffleBufferTokens = rows;
  }
  checkSweep(members); // shared settings agree, every member valid: before anything is written
  const recordPath = join(out, SWEEP_FILE);
  let record: SweepRecord | undefined = existsSync(recordPath) ? readJson<SweepRecord>(recordPath) : undefined;
  if (record && !argv.resume) {
    if (!argv.force) throw new UserError(`${out} holds a sweep; pass --resume to finish it, --force to start it again, or another --out`);
    rmSync(out, { recursive: true, force: true });
    record = undefined;
  }
  if (argv.resume) {
    if (!record) throw new UserError(`there is no sweep in ${out} to resume (no ${SWEEP_FILE}); run without --resume to start`);
    const was = JSON.stringify(record.members.map((m) => [m.name, m.settings]));
    if (was !== JSON.stringify(members.map((m) => [m.name, m.settings])) || record.acts_sha256 !== manifest.identity_sha256)
      throw new UserError(`${out} holds a sweep of other members or another harvest; resume with the same --sweep and --acts, or start again with --force`);
  }
  const now = new Date().toISOString();
  record ??= {
    format: 'sdlkit-sweep/1',
    acts: actsDir,
    acts_sha256: manifest.identity_sha256,
    base: Object.fromEntries(
      Object.entries(argv).filter(([k]) => /^[a-z][a-z0-9-]*$/.test(k) && !['sweep', 'sweep-file', 'resume', 'force', 'json', 'out'].includes(k)),
    ),
    members: members.map((m) => ({ name: m.name, settings: m.settings, out: m.out, status: 'pending' as const })),
    started: now,
    updated: now,
  };
  const rec = record;
  const save = () => {
    rec.updated = new Date().toISOString();
    writeJsonAtomic(recordPath, rec);
  };
  // Finished members stay untouched; the others continue from their checkpoints (or start, if they had none).
  const todo = members
    .filter((m, i) => !(rec.members[i].status === 'finished' && existsSync(join(m.out, CFG_FILE))))
    .map((m) => ({ ...m, resume: existsSync(join(m.out, CHECKPOINT_DIR, CHECKPOINT_STATE_FILE)) && Boolean(argv.resume) }));
  mkdirSync(out, { recursive: true });
  save();
  const t0 = performance.now();
  if (!argv.json) console.error(`sweep of ${members.length} members on one stream (${todo.length} to train): ${names.join(', ')}`);
  if (todo.length)
    await fitSweep({
      actsDir,
      manifest,
      members: todo,
      force: Boolean(argv.force),
      verify: argv.verify as boolean,
      backend: argv.backend as string | undefined,
      quiet: Boolean(argv.json),
      onNote: (n) => console.error(`note: ${n}`),
      onMemberDone: (m, r) => {
        const entry = rec.members.find((e) => e.name === m.name)!;
        entry.status = 'finished';
        entry.result = {
          fvu: r.eval.fvu,
          l0: r.eval.l0,
          dead_fraction: r.deadFraction,
          steps: r.steps,
          tokens: r.tokens,
          seconds: r.seconds,
          tokens_per_second: r.tokensPerSecond,
        };
        save();
      },
    });
  rec.seconds = (rec.seconds ?? 0) + (performance.now() - t0) / 1000;
  save();
  if (argv.json) return printJson({ out, ...rec });
  const w = Math.max(6, ...names.map((n) => n.length));
  console.log(`${'member'.padEnd(w)}  ${'L0'.padStart(6)}  ${'FVU'.padStart(7)}  ${'dead'.padStart(6)}`);
  for (const m of rec.members)
    console.log(
      `${m.name.padEnd(w)}  ${m.result!.l0.toFixed(1).padStart(6)}  ${m.result!.fvu.toFixed(4).padStart(7)}  ${`${(100 * m.result!.dead_fraction).toFixed(1)}%`.padStart(6)}`,
    );
  console.log(`${members.length} dictionaries in ${rec.seconds.toFixed(1)}s -> ${out} (${SWEEP_FILE}; compare them with: sdl compare ${out})`);
  const short = shortRunNote(Math.min(...rec.members.map((m) => m.result!.steps)));
  if (short) console.log(`note: some members are ${short}`);
}

export function register(y: Argv): Argv {
  return y.command(
    'fit',
    'Train a sparse dictionary (SAE, transcoder, crosscoder or cross-layer transcoder) on harvested activations',
    (a) =>
      a
        .option('acts', { type: 'string', describe: 'harvest folder (default: the last harvest)' })
        .option('kind', { choices: KIND_NAMES, default: 'sae' as Kind })
        .option('site', { type: 'string', describe: 'SAE site (default: the first resid_post)' })
        .option('sites', { type: 'string', describe: 'crosscoder sites, comma-separated (default: every resid_post)' })
        .option('layer', { type: 'number', describe: 'transcoder layer (mlp_in -> mlp_out); SAE: resid_post of this layer' })
        .option('layers', { type: 'string', describe: 'CLT layers: 0-7, 2,4,6 or all (default: every layer with both sites)' })
        .option('input', { choices: ['mlp_in', 'resid_mid'] as const, describe: 'CLT: the site each layer reads (default mlp_in)' })
        .option('latents-per-layer', { type: 'number', describe: 'CLT: latents per layer (default expansion x d)' })
        .option('skip', { type: 'boolean', default: false, describe: 'transcoder/CLT: learn a linear skip path W_skip' })
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
        .option('lr', { type: 'number', describe: 'Adam learning rate (default: TopK family, the best of three raced; else 8e-4/sqrt(latents/16384))' })
        .option('lr-race', {
          type: 'boolean',
          default: true,
          describe: 'TopK family without --lr: race three rates on one stream, keep the best (--no-lr-race: the rule alone)',
        })
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
        .option('buffer', { type: 'string', describe: 'shuffle-buffer rows (default 262,144, or 256 MiB of rows when fewer)' })
        .option('include-bos', { type: 'boolean', default: false, describe: 'train on BOS rows too' })
        .option('low-memory', {
          type: 'boolean',
          default: false,
          describe: 'keep no W_enc/W_dec gradients (TopK family, native): latents x (d_in + d_out) x 4 bytes less; slower with --clip',
        })
        .option('backend', {
          choices: ['native', 'node', 'wasm', 'cpu'] as const,
          describe: "compute backend: sdlkit's native kernels, or TensorFlow.js (node, wasm, cpu); default: native, else node, else wasm, else cpu",
        })
        .option('out', { type: 'string', describe: 'dictionary folder (default: cache/dicts/<model>-<kind>-<activation>-<site>-<latents>)' })
        .option('resume', { type: 'boolean', default: false, describe: 'continue from the checkpoint in --out' })
        .option('force', { type: 'boolean', default: false, describe: 'replace a dictionary already in --out' })
        .option('verify', { type: 'boolean', default: true, describe: "--no-verify: skip the shards' checksums" })
        .option('sweep', { type: 'string', describe: 'train many dictionaries on one stream: "k=16,32,64 latents=2048,4096" (the cross product)' })
        .option('sweep-file', { type: 'string', describe: 'a JSON list of members, each any per-dictionary option of sdl fit' })
        .option('json', { type: 'boolean', default: false })
        .example('sdl fit --kind sae --activation topk --k 32 --expansion 8', 'a TopK SAE on the last harvest')
        .example('sdl fit --sweep "k=16,32,64 latents=256,512" --tokens 256k', 'six SAEs from one read of the shards, in cache/sweeps/')
        .example('sdl fit --kind transcoder --layer 6 --activation relu --sparsity 5', '')
        .example('sdl fit --kind clt --latents-per-layer 512 --k 16', 'a cross-layer transcoder over every harvested layer (harvest --layers all)')
        .example('sdl fit --kind transcoder --layer 6 --skip', 'a skip transcoder')
        .example('sdl fit --kind crosscoder --sites blocks.2.hook_resid_post,blocks.4.hook_resid_post --activation batchtopk', ''),
    async (argv) => {
      if (argv['low-memory']) leanMemory(); // before anything is read: see leanMemory
      const actsDir = argv.acts ?? latestHarvest();
      const manifest = openActivations(actsDir);
      if (argv.sweep !== undefined || argv['sweep-file'] !== undefined) return runSweep(argv as unknown as FitArgs, actsDir, manifest);
      const { dict, train, defaultOut } = buildMember(argv as unknown as FitArgs, manifest);
      const { dSae } = dict;
      const activation = dict.activation;
      const out = argv.out ?? defaultOut;
      const job = {
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
        onNote: (n: string) => console.error(`note: ${n}`),
      };
      // The TopK family without --lr: the best of three rates (src/sdl/lr-race.ts); --no-lr-race takes the rule's.
      const race = racesLearningRate(job, argv['lr-race']);
      const r: FitResult & { race?: LrRaceResult['race']; lr?: number } = race ? await fitWithLrRace(job) : await fit(job);
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
          lr_race: r.race ?? null,
          short_run: shortRunNote(r.steps) ?? null,
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
      if (r.race) console.log(`learning rate ${r.lr} (held-out FVU of the three raced: ${r.race.map((x) => `${x.lr} ${x.fvu.toFixed(4)}`).join(', ')})`);
      const short = shortRunNote(r.steps);
      if (short) console.log(`note: ${short}`);
    },
  );
}
