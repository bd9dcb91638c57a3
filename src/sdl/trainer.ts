// The trainer: one loop for every kind and activation. Data -> step -> Adam -> constraints -> stats,
// with held-out evaluation, checkpoints, resume, resampling and a NaN guard.
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TRAIN_DEFAULTS, defaultSparsity, checkDictConfig, checkTrainConfig, defaultLr, type DictConfig, type TrainConfig } from './config.js';
import { CFG_FILE, Dictionary, type DictionaryWeights } from './dictionary.js';
import { ShuffleStream, applyScales, loadRows, siteScales, splitRows, type RowRange, type Rows } from './data.js';
import { initWeights } from './init.js';
import { createEngine, type Engine } from './engine.js';
import { EvalAccumulator, type EvalMetrics } from './metrics.js';
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from '../tensor/safetensors.js';
import type { Manifest } from '../activations/manifest.js';
import { UserError } from '../util/errors.js';
import { checkOutput, lockFolder, readJson, removeStaleTemps, sha256, writeAtomic, writeJsonAtomic } from '../util/fsx.js';
import { Progress } from '../util/progress.js';
import { Rng } from '../util/rng.js';
import { ACTIVATIONS } from './activations.js';
import {
  ACTS_MANIFEST_FILE,
  CHECKPOINT_DIR,
  CHECKPOINT_STATE_FILE,
  CHECKPOINT_TENSORS_FILE,
  DERIVED_FILES,
  EVAL_FILE,
  MANIFEST_FILE,
  TRAINING_LOG_FILE,
} from '../util/files.js';

export interface FitJob {
  actsDir: string;
  manifest: Manifest;
  dict: DictConfig;
  train: TrainConfig;
  out: string;
  resume?: boolean;
  backend?: string;
  quiet?: boolean;
  /** Called with a note when the native kernels could not be used. */
  onNote?: (note: string) => void;
  /** Replace a finished dictionary already in `out` (default: refuse). */
  force?: boolean;
  /** Check each shard's checksum against the manifest (default true). */
  verify?: boolean;
}

export interface FitResult {
  dictionary: Dictionary;
  eval: EvalMetrics;
  steps: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  backend: string;
  deadFraction: number;
}

interface CheckpointState {
  step: number;
  tokens: number;
  threshold: number;
  thresholdInit: boolean;
  scalesIn: number[];
  scalesOut: number[];
  adamT: number;
  dict: DictConfig;
  /** The training settings the run started with: a resume must use the same ones. */
  train?: Record<string, unknown>;
  /** Rows the shuffle stream had drawn before this step's batch, the trainer's RNG and each latent's tokens since it fired: with them a resumed run continues exactly as an unbroken one. */
  drawn?: number;
  rng?: [number, number | null];
  sinceFired?: number[];
  /** SHA-256 of the tensors file written with this state. */
  tensors_sha256?: string;
  elapsed: number;
}

/** Derived files in a dictionary folder, stale once the weights change: a fresh fit removes them. */

/**
 * The training settings a run started with. A resume must keep those that fix the data it sees and how it is
 * scaled (FIXED_ON_RESUME); the optimiser's settings (learning rate, length, clipping, sparsity) may change, as
 * after a divergence, and the change is written into the training log.
 */
function historyRecord(t: TrainConfig): Record<string, unknown> {
  const { evalEvery: _e, checkpointEvery: _c, anchors, ...rest } = t;
  return { ...rest, anchors: anchors ? sha256(JSON.stringify([anchors.encoder.map((a) => Array.from(a)), anchors.decoder.map((a) => Array.from(a))])) : null };
}

const FIXED_ON_RESUME = [
  'seed',
  'batchTokens',
  'evalTokens',
  'excludeBos',
  'normalizeActivations',
  'unitNormDecoder',
  'bDecInit',
  'shuffleBufferTokens',
  'anchors',
];
const pick = (r: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.map((k) => [k, r[k]]));

/** The fields in which two records differ, as "name: old -> new". */
function differences(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k}: ${JSON.stringify(a[k])} -> ${JSON.stringify(b[k])}`);
}

/** The tensors that belong to a checkpoint's state.json: the file (current or just written) with the recorded sha256. */
function checkpointTensors(dir: string, state: CheckpointState): Record<string, NamedTensor> {
  for (const f of [CHECKPOINT_TENSORS_FILE, `next.${CHECKPOINT_TENSORS_FILE}`]) {
    const p = join(dir, f);
    if (!existsSync(p)) continue;
    const bytes = new Uint8Array(readFileSync(p));
    if (state.tensors_sha256 === undefined || sha256(bytes) === state.tensors_sha256) return decodeSafetensors(bytes, p).tensors;
  }
  throw new UserError(`the checkpoint in ${dir} has no tensors file matching its state.json; it is damaged: start again without --resume`);
}

/**
 * A checkpoint's tensors, refused unless complete: every parameter the dictionary trains and both Adam moments of
 * each. (A resume that quietly started some moments at zero would not continue the run it claims to.)
 */
function checkCheckpoint(t: Record<string, NamedTensor>, cfg: DictConfig, path: string): Record<string, NamedTensor> {
  const trained = [
    'W_enc',
    ...(cfg.tied ? [] : ['W_dec']),
    ...(cfg.noBias ? [] : ['b_enc', 'b_dec']),
    ...(ACTIVATIONS[cfg.activation].selection === 'threshold' ? ['log_threshold'] : []),
  ];
  const need = ['W_enc', 'b_enc', 'b_dec', ...trained, ...trained.flatMap((n) => [`adam_m.${n}`, `adam_v.${n}`])];
  const missing = [...new Set(need)].filter((n) => !t[n]);
  if (missing.length) throw new UserError(`the checkpoint ${path} lacks ${missing.join(', ')}; it is damaged: start again without --resume`);
  return t;
}

/** The engine's weights with the per-site input/target scales folded into them. */
function foldWeights(engine: Engine, cfg: DictConfig, scalesIn: number[], scalesOut: number[], threshold?: Float32Array): DictionaryWeights {
  const { W_enc, W_dec, b_enc, b_dec } = engine.weights();
  // Trained on x' = s_in x, y' = s_out y:  W_enc rows of site j scale by s_j; W_dec columns and b_dec by 1/s_out.
  let off = 0;
  cfg.sitesIn.forEach((s, i) => {
    for (let r = off; r < off + s.width; r++) for (let c = 0; c < cfg.dSae; c++) W_enc[r * cfg.dSae + c] *= scalesIn[i];
    off += s.width;
  });
  off = 0;
  cfg.sitesOut.forEach((s, i) => {
    for (let c = off; c < off + s.width; c++) {
      for (let r = 0; r < cfg.dSae; r++) W_dec[r * cfg.dOut + c] /= scalesOut[i];
      b_dec[c] /= scalesOut[i];
    }
    off += s.width;
  });
  return { W_enc, b_enc, W_dec, b_dec, threshold };
}

function thresholdVector(engine: Engine, cfg: DictConfig, batchThreshold: number): Float32Array | undefined {
  const how = ACTIVATIONS[cfg.activation].inference;
  if (how === 'per-latent') return Float32Array.from(engine.weights().log_threshold!, Math.exp);
  if (how === 'global') return new Float32Array(cfg.dSae).fill(batchThreshold);
  return undefined;
}

/** Evaluates the engine (normalised space) on held-out rows; reconstructions are compared in harvest units. */
function evaluate(cfg: DictConfig, engine: Engine, held: Rows, scalesOut: number[], batchThreshold: number): EvalMetrics {
  const acc = new EvalAccumulator(cfg.sitesOut, cfg.dSae);
  const chunk = 4096;
  const inv = scalesOut.map((s) => 1 / s);
  for (let r = 0; r < held.n; r += chunk) {
    const n = Math.min(chunk, held.n - r);
    const f = engine.forward(held.x.subarray(r * cfg.dIn, (r + n) * cfg.dIn), n, batchThreshold);
    const y = held.y.slice(r * cfg.dOut, (r + n) * cfg.dOut);
    // Back to harvest units (undo the per-site scale) before comparing.
    applyScales(y, cfg.sitesOut, inv);
    applyScales(f.yhat, cfg.sitesOut, inv);
    acc.add(y, f.yhat, n, f.fired, f.actives);
  }
  return acc.result();
}

export async function fit(job: FitJob): Promise<FitResult> {
  const cfg = job.dict;
  const train: TrainConfig = { ...TRAIN_DEFAULTS, ...job.train };
  checkDictConfig(cfg);
  checkTrainConfig(train);
  checkOutput(job.out, 'dir');
  const unlock = lockFolder(job.out, 'sdl fit');
  try {
    return await fitLocked(job, cfg, train);
  } finally {
    unlock();
  }
}

async function fitLocked(job: FitJob, cfg: DictConfig, train: TrainConfig): Promise<FitResult> {
  const { manifest } = job;
  removeStaleTemps(job.out);
  removeStaleTemps(join(job.out, CHECKPOINT_DIR));
  const B = train.batchTokens;
  const totalSteps = train.steps ?? Math.ceil((train.tokens ?? manifest.tokens) / B);
  if (!(totalSteps > 0)) throw new UserError('nothing to train: pass --tokens or --steps');
  const lr = train.lr ?? defaultLr(cfg.dSae);
  const warm = train.lrWarmupSteps ?? Math.min(1000, Math.ceil(totalSteps * 0.05));
  const sparsityWarm = train.sparsityWarmupSteps ?? Math.ceil(totalSteps * 0.05);
  const decayStart = Math.floor(totalSteps * (1 - train.lrDecayFraction));
  const sparsity = train.sparsityCoefficient ?? defaultSparsity(cfg.activation);
  const deadWindow = train.deadWindowTokens ?? Math.min(10_000_000, Math.max(B, Math.floor(totalSteps * B * 0.25)));
  const auxkK = train.auxkK ?? Math.max(1, Math.floor(cfg.dIn / 2));
  const resampleUntil = train.resampleUntil ?? Math.floor(totalSteps * 0.75);

  // Data: held-out rows at the end, a shuffled stream over the rest.
  const { train: trainRanges, held: heldRanges } = splitRows(manifest, train.evalTokens);
  const load = (r: RowRange) => loadRows(job.actsDir, manifest, r, cfg.sitesIn, cfg.sitesOut, train.excludeBos, { verify: job.verify });
  const same = cfg.sitesIn.length === cfg.sitesOut.length && cfg.sitesIn.every((s, i) => s.name === cfg.sitesOut[i].name);
  const ckptDir = join(job.out, CHECKPOINT_DIR);
  let state: CheckpointState | undefined;
  let resumeChanges: string[] = [];
  if (job.resume) {
    if (!existsSync(join(ckptDir, CHECKPOINT_STATE_FILE)))
      throw new UserError(`there is no checkpoint in ${ckptDir} to resume from; run without --resume to start`);
    state = readJson<CheckpointState>(join(ckptDir, CHECKPOINT_STATE_FILE));
    const d = state.dict;
    if (d.dIn !== cfg.dIn || d.dOut !== cfg.dOut || d.dSae !== cfg.dSae || d.activation !== cfg.activation || d.kind !== cfg.kind) {
      throw new UserError(
        `the checkpoint in ${ckptDir} is a ${d.kind}/${d.activation} with d_in ${d.dIn}, d_out ${d.dOut}, d_sae ${d.dSae}, but these shards and options give ${cfg.kind}/${cfg.activation} with d_in ${cfg.dIn}, d_out ${cfg.dOut}, d_sae ${cfg.dSae}; resume with the same shards and options, or drop --resume`,
      );
    }
    const now = historyRecord(train);
    const changed = [
      ...differences(d as unknown as Record<string, unknown>, cfg as unknown as Record<string, unknown>),
      ...(state.train ? differences(pick(state.train, FIXED_ON_RESUME), pick(now, FIXED_ON_RESUME)) : []),
    ];
    if (changed.length)
      throw new UserError(
        `the checkpoint in ${ckptDir} was made with other settings (${changed.slice(0, 3).join('; ')}${changed.length > 3 ? '; ...' : ''}); resume with the same options and shards, or start again without --resume`,
      );
    resumeChanges = state.train ? differences(state.train, now) : [];
  } else if (existsSync(join(job.out, CFG_FILE)) && !job.force) {
    throw new UserError(`${job.out} already holds a dictionary; pass --force to replace it, --resume to continue its run, or choose another --out`);
  }
  // Normalisation scales from a sample of training rows (kept from the checkpoint on resume).
  const sample = load(trainRanges[0]);
  const scalesIn = state?.scalesIn ?? (train.normalizeActivations ? siteScales(sample, cfg.sitesIn, 'x') : cfg.sitesIn.map(() => 1));
  const scalesOut = state?.scalesOut ?? (same ? scalesIn : train.normalizeActivations ? siteScales(sample, cfg.sitesOut, 'y') : cfg.sitesOut.map(() => 1));
  const transform = (r: Rows) => {
    applyScales(r.x, cfg.sitesIn, scalesIn);
    if (r.y !== r.x) applyScales(r.y, cfg.sitesOut, scalesOut);
  };
  const heldRows: Rows = (() => {
    const parts = heldRanges.map(load);
    const n = parts.reduce((a, p) => a + p.n, 0);
    const x = new Float32Array(n * cfg.dIn);
    const y = same ? x : new Float32Array(n * cfg.dOut);
    let o = 0;
    for (const p of parts) {
      x.set(p.x, o * cfg.dIn);
      if (!same) y.set(p.y, o * cfg.dOut);
      o += p.n;
    }
    const rows = { n, x, y };
    transform(rows);
    return rows;
  })();
  if (heldRows.n < 2)
    throw new UserError(`${heldRows.n} held-out row${heldRows.n === 1 ? '' : 's'}: FVU needs at least 2; raise --eval-tokens or harvest more tokens`);
  // A checkpoint records how many rows the stream had drawn; replaying them restores the stream exactly.
  // (Checkpoints written before that record reseed instead: the run goes on, on another data order.)
  const stream = new ShuffleStream(
    load,
    trainRanges,
    cfg.dIn,
    cfg.dOut,
    train.shuffleBufferTokens,
    train.seed + (state && state.drawn === undefined ? state.step : 0),
    transform,
    same,
  );
  if (state?.drawn) stream.skip(state.drawn);

  // Parameters: fresh, or from the checkpoint.
  let threshold = state?.threshold ?? 0;
  let thresholdInit = state?.thresholdInit ?? false;
  const saved = state ? checkCheckpoint(checkpointTensors(ckptDir, state), cfg, join(ckptDir, CHECKPOINT_TENSORS_FILE)) : undefined;
  const init = saved
    ? { W_enc: saved.W_enc.data, b_enc: saved.b_enc.data, W_dec: saved.W_dec.data, b_dec: saved.b_dec.data, log_threshold: saved.log_threshold?.data }
    : (() => {
        const n = Math.min(sample.n, 4096);
        const ys = (same ? sample.x : sample.y).slice(0, n * cfg.dOut);
        applyScales(ys, cfg.sitesOut, scalesOut);
        return initWeights(cfg, train, { y: ys, n });
      })();
  const anchors = train.anchors ? { encoder: train.anchors.encoder, decoder: train.anchors.decoder, weight: train.anchorWeight } : undefined;
  const { engine, note } = await createEngine(job.backend, { cfg, train, weights: init, anchors });
  if (note) job.onNote?.(note);
  const backend = engine.backend;
  if (saved) engine.loadState(saved, state!.adamT); // the Adam moments (the parameters came in through init)

  mkdirSync(job.out, { recursive: true });
  // A finished dictionary in `out` is replaced only when this run completes: remove its cfg.json now,
  // so a killed run never leaves an old cfg.json beside new weights.
  if (!job.resume) {
    rmSync(join(job.out, CFG_FILE), { force: true });
    rmSync(join(job.out, TRAINING_LOG_FILE), { force: true });
    rmSync(ckptDir, { recursive: true, force: true });
    for (const f of DERIVED_FILES) rmSync(join(job.out, f), { recursive: true, force: true });
  }
  const logPath = join(job.out, TRAINING_LOG_FILE);
  const log = (rec: Record<string, unknown>) => appendFileSync(logPath, `${JSON.stringify(rec)}\n`);
  if (state) log({ event: 'resume', step: state.step, tokens: state.tokens, changed: resumeChanges });

  const sinceFired = state?.sinceFired ? Float64Array.from(state.sinceFired) : new Float64Array(cfg.dSae);
  const Xb = new Float32Array(B * cfg.dIn);
  const Yb = same ? Xb : new Float32Array(B * cfg.dOut);
  let stepNo = state?.step ?? 0;
  let tokens = state?.tokens ?? 0;
  const progress = new Progress('fit', totalSteps * B, 'tok', tokens, job.quiet);
  const t0 = performance.now();
  const elapsed0 = state?.elapsed ?? 0;
  let lastEval: EvalMetrics | undefined;
  const rng = new Rng(train.seed + 99);
  if (state?.rng) rng.restore(state.rng);
  let drawnBefore = stream.drawn;
  let lastCheckpointStep = stepNo;

  // A checkpoint is two files; a kill between writing them must not pair new tensors with an old state.json.
  // So: the tensors go to NEXT (atomically), then state.json names their sha256, then NEXT replaces the old file.
  // The loader takes whichever of the two files has the recorded sha256.
  const NEXT = `next.${CHECKPOINT_TENSORS_FILE}`;
  const saveCheckpoint = () => {
    mkdirSync(ckptDir, { recursive: true });
    const bytes = encodeSafetensors(engine.saveState());
    writeAtomic(join(ckptDir, NEXT), bytes);
    const s: CheckpointState = {
      step: stepNo,
      tokens,
      threshold,
      thresholdInit,
      scalesIn,
      scalesOut,
      adamT: engine.adamT,
      dict: cfg,
      train: historyRecord(train),
      drawn: drawnBefore,
      rng: rng.state,
      sinceFired: Array.from(sinceFired),
      tensors_sha256: sha256(bytes),
      elapsed: elapsed0 + (performance.now() - t0) / 1000,
    };
    writeJsonAtomic(join(ckptDir, CHECKPOINT_STATE_FILE), s);
    renameSync(join(ckptDir, NEXT), join(ckptDir, CHECKPOINT_TENSORS_FILE));
    lastCheckpointStep = stepNo;
  };

  const resample = () => {
    // Anthropic (Towards Monosemanticity): dead latents get a high-loss input as decoder row and, scaled to
    // 0.2 x the mean alive encoder norm, as encoder column; b_enc = 0; their Adam moments are reset.
    const dead: number[] = [];
    for (let i = 0; i < cfg.dSae; i++) if (sinceFired[i] >= (train.resampleEvery * B) / 2) dead.push(i);
    if (!dead.length) return 0;
    const poolN = Math.min(16384, Math.max(B, 4 * dead.length));
    const px = new Float32Array(poolN * cfg.dIn),
      py = same ? px : new Float32Array(poolN * cfg.dOut);
    stream.batch(poolN, px, py);
    const f = engine.forward(px, poolN, threshold);
    const w = new Float64Array(poolN);
    for (let r = 0; r < poolN; r++) {
      let l = 0;
      for (let j = 0; j < cfg.dOut; j++) l += (f.yhat[r * cfg.dOut + j] - py[r * cfg.dOut + j]) ** 2;
      w[r] = l * l;
    }
    const total = w.reduce((a, b) => a + b, 0);
    const We = engine.weights().W_enc;
    let aliveNorm = 0,
      alive = 0;
    const deadSet = new Set(dead);
    for (let i = 0; i < cfg.dSae; i++) {
      if (deadSet.has(i)) continue;
      let q = 0;
      for (let j = 0; j < cfg.dIn; j++) q += We[j * cfg.dSae + i] ** 2;
      aliveNorm += Math.sqrt(q);
      alive++;
    }
    aliveNorm = alive ? aliveNorm / alive : 1;
    const enc: Float32Array[] = [],
      dec: Float32Array[] = [];
    for (const i of dead) {
      let r = rng.next() * total,
        s = 0;
      for (; s < poolN - 1 && (r -= w[s]) > 0; s++);
      const xin = px.subarray(s * cfg.dIn, (s + 1) * cfg.dIn),
        yout = py.subarray(s * cfg.dOut, (s + 1) * cfg.dOut);
      const nx = Math.hypot(...xin) || 1,
        ny = Math.hypot(...yout) || 1;
      enc.push(Float32Array.from(xin, (v) => (v / nx) * 0.2 * aliveNorm));
      dec.push(Float32Array.from(yout, (v) => v / ny));
      sinceFired[i] = 0;
    }
    engine.resample(dead, enc, dec);
    return dead.length;
  };

  while (stepNo < totalSteps) {
    drawnBefore = stream.drawn;
    stream.batch(B, Xb, Yb);
    const lrNow =
      lr *
      Math.min(1, (stepNo + 1) / Math.max(1, warm)) *
      (stepNo >= decayStart ? Math.max(0, (totalSteps - stepNo) / Math.max(1, totalSteps - decayStart)) : 1);
    const spNow = sparsity * Math.min(1, (stepNo + 1) / Math.max(1, sparsityWarm));
    let dead: Uint8Array | undefined;
    if (ACTIVATIONS[cfg.activation].auxk) {
      dead = new Uint8Array(cfg.dSae);
      for (let i = 0; i < cfg.dSae; i++) dead[i] = sinceFired[i] >= deadWindow ? 1 : 0;
    }
    const r = engine.step(Xb, Yb, B, { sparsity: spNow, bandwidth: train.jumpreluBandwidth, dead, auxkCoefficient: train.auxkCoefficient, auxkK });
    if (!Number.isFinite(r.loss)) {
      const where = existsSync(join(ckptDir, CHECKPOINT_STATE_FILE))
        ? `the last good checkpoint (step ${lastCheckpointStep}) is in ${ckptDir}; lower --lr and resume with --resume`
        : 'no checkpoint was written yet; lower --lr and start again';
      engine.dispose();
      throw new UserError(`the loss became ${r.loss} at step ${stepNo}; ${where}`);
    }
    // Checkpoint here, before the update: these parameters just produced a finite loss, so a checkpoint
    // is always a good state to resume from.
    if (stepNo > 0 && stepNo % train.checkpointEvery === 0 && stepNo !== lastCheckpointStep) saveCheckpoint();
    engine.update(lrNow, train.clipGradNorm);
    for (let i = 0; i < cfg.dSae; i++) sinceFired[i] = r.fired[i] > 0 ? 0 : sinceFired[i] + B;
    if (r.minSelected !== undefined) {
      threshold = thresholdInit ? (1 - train.thresholdLr) * threshold + train.thresholdLr * r.minSelected : r.minSelected;
      thresholdInit = true;
    }
    stepNo++;
    tokens += B;
    let resampled = 0;
    if (train.resampleEvery > 0 && stepNo % train.resampleEvery === 0 && stepNo <= resampleUntil) resampled = resample();
    const deadFrac = sinceFired.reduce((a, s) => a + (s >= deadWindow ? 1 : 0), 0) / cfg.dSae;
    const rec: Record<string, unknown> = {
      step: stepNo,
      tokens,
      loss: r.loss,
      mse: r.mse,
      sparsity_loss: r.sparsityLoss,
      aux_loss: r.auxLoss,
      l0: r.l0,
      lr: lrNow,
      dead_fraction: deadFrac,
    };
    if (resampled) rec.resampled = resampled;
    if (stepNo % train.evalEvery === 0 || stepNo === totalSteps) {
      lastEval = evaluate(cfg, engine, heldRows, scalesOut, threshold);
      rec.eval = lastEval;
    }
    if (stepNo % 10 === 0 || rec.eval || resampled) log(rec);
    progress.update(
      tokens,
      `step ${stepNo}/${totalSteps} loss ${r.loss.toFixed(4)} l0 ${r.l0.toFixed(1)} dead ${(100 * deadFrac).toFixed(1)}%${lastEval ? ` fvu ${lastEval.fvu.toFixed(4)}` : ''}`,
    );
  }
  progress.done();
  const seconds = (performance.now() - t0) / 1000;
  const evalNow = lastEval ?? evaluate(cfg, engine, heldRows, scalesOut, threshold);
  const deadFraction = sinceFired.reduce((a, s) => a + (s >= deadWindow ? 1 : 0), 0) / cfg.dSae;
  const weights = foldWeights(engine, cfg, scalesIn, scalesOut, thresholdVector(engine, cfg, threshold));
  const dictionary = new Dictionary(cfg, weights, {
    model_name: manifest.identity.model.name,
    model_sha256: manifest.identity.model.sha256,
    dataset_path: manifest.identity.corpus.source,
    context_size: manifest.identity.ctx,
    prepend_bos: true,
  });
  const training = {
    backend,
    steps: stepNo,
    tokens,
    batch_tokens: B,
    lr,
    lr_warmup_steps: warm,
    lr_decay_fraction: train.lrDecayFraction,
    sparsity_coefficient: sparsity,
    sparsity_warmup_steps: sparsityWarm,
    dead_window_tokens: deadWindow,
    auxk_k: auxkK,
    auxk_coefficient: train.auxkCoefficient,
    resample_every: train.resampleEvery,
    anchors: anchors ? anchors.encoder.length : 0,
    anchor_weight: train.anchorWeight,
    seed: train.seed,
    scales_in: scalesIn,
    scales_out: scalesOut,
    batch_threshold: threshold,
    exclude_bos: train.excludeBos,
    unit_norm_decoder: train.unitNormDecoder,
    b_dec_init: train.bDecInit,
    eval: evalNow,
    dead_fraction: deadFraction,
    seconds: elapsed0 + seconds,
    activations: job.actsDir,
    activations_sha256: manifest.identity_sha256,
  };
  writeAtomic(join(job.out, ACTS_MANIFEST_FILE), readFileSync(join(job.actsDir, MANIFEST_FILE)));
  writeJsonAtomic(join(job.out, EVAL_FILE), { ...evalNow, dead_fraction_train: deadFraction });
  dictionary.save(job.out, { training });
  engine.dispose();
  const newTokens = tokens - (state?.tokens ?? 0);
  return { dictionary, eval: evalNow, steps: stepNo, tokens, seconds, tokensPerSecond: newTokens / seconds, backend, deadFraction };
}
