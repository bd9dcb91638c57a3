// The trainer: one loop for every kind and activation. Data -> step -> Adam -> constraints -> stats,
// with held-out evaluation, checkpoints, resume, resampling and a NaN guard.
import { appendFileSync, copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tf, initBackend, type BackendName } from './backend.js';
import { TRAIN_DEFAULTS, DEFAULT_SPARSITY, defaultLr, type DictConfig, type TrainConfig } from './config.js';
import { Dictionary, type DictionaryWeights } from './dictionary.js';
import { ShuffleStream, applyScales, loadRows, siteScales, splitRows, type RowRange, type Rows } from './data.js';
import { initWeights } from './init.js';
import { step, preacts, inferMask, type Params, type Grads } from './step.js';
import { Adam, normalizeRows, projectDecoderGrad } from './adam.js';
import { EvalAccumulator, type EvalMetrics } from './metrics.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from './safetensors.js';
import type { Manifest } from '../activations/manifest.js';
import { MANIFEST } from '../activations/manifest.js';
import { UserError } from '../util/errors.js';
import { readJson, writeJsonAtomic } from '../util/fsx.js';
import { Progress } from '../util/progress.js';
import { Rng } from '../util/rng.js';

export interface FitJob {
  actsDir: string;
  manifest: Manifest;
  dict: DictConfig;
  train: TrainConfig;
  out: string;
  resume?: boolean;
  backend?: string;
  quiet?: boolean;
}

export interface FitResult {
  dictionary: Dictionary;
  eval: EvalMetrics;
  steps: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  backend: BackendName;
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
  elapsed: number;
}

const CKPT = 'checkpoint';

function toParams(w: DictionaryWeights, cfg: DictConfig, train: TrainConfig): Params {
  const p: Params = {
    W_enc: tf.tensor2d(w.W_enc, [cfg.dIn, cfg.dSae]),
    b_enc: tf.tensor1d(w.b_enc),
    W_dec: cfg.tied ? (tf.transpose(tf.tensor2d(w.W_enc, [cfg.dIn, cfg.dSae])) as tf.Tensor2D) : tf.tensor2d(w.W_dec, [cfg.dSae, cfg.dOut]),
    b_dec: tf.tensor1d(w.b_dec),
  };
  if (cfg.activation === 'jumprelu') p.log_threshold = tf.fill([cfg.dSae], Math.log(train.jumpreluInitThreshold)) as tf.Tensor1D;
  return p;
}

/** Reads the weights back into typed arrays, folding the per-site input/target scales into them. */
function foldWeights(p: Params, cfg: DictConfig, scalesIn: number[], scalesOut: number[], threshold?: Float32Array): DictionaryWeights {
  const W_enc = p.W_enc.dataSync().slice() as Float32Array;
  const W_dec = p.W_dec.dataSync().slice() as Float32Array;
  const b_enc = p.b_enc.dataSync().slice() as Float32Array;
  const b_dec = p.b_dec.dataSync().slice() as Float32Array;
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

function thresholdVector(p: Params, cfg: DictConfig, batchThreshold: number): Float32Array | undefined {
  if (cfg.activation === 'jumprelu') {
    const t = tf.exp(p.log_threshold!);
    const th = Float32Array.from(t.dataSync());
    t.dispose();
    return th;
  }
  if (cfg.activation === 'batchtopk' || cfg.activation === 'matryoshka') return new Float32Array(cfg.dSae).fill(batchThreshold);
  return undefined;
}

/** Evaluates params (normalised space) on held-out rows; reconstructions are compared in harvest units. */
function evaluate(cfg: DictConfig, p: Params, held: Rows, scalesOut: number[], batchThreshold: number): EvalMetrics {
  const acc = new EvalAccumulator(cfg.sitesOut, cfg.dSae);
  const chunk = 2048;
  for (let r = 0; r < held.n; r += chunk) {
    const n = Math.min(chunk, held.n - r);
    const X = tf.tensor2d(held.x.subarray(r * cfg.dIn, (r + n) * cfg.dIn), [n, cfg.dIn]);
    const [yhat, mask] = tf.tidy(() => {
      const { pre } = preacts(cfg, p, X);
      const m = inferMask(cfg, p, pre, batchThreshold);
      return [tf.add(tf.matMul(tf.mul(pre, m), p.W_dec), p.b_dec), m];
    });
    const y = held.y.slice(r * cfg.dOut, (r + n) * cfg.dOut);
    const yh = yhat.dataSync().slice() as Float32Array;
    // Back to harvest units (undo the per-site scale) before comparing.
    const inv = scalesOut.map((s) => 1 / s);
    applyScales(y, cfg.sitesOut, inv);
    applyScales(yh, cfg.sitesOut, inv);
    acc.add(y, yh, mask.dataSync() as Float32Array, n);
    tf.dispose([X, yhat, mask]);
  }
  return acc.result();
}

export async function fit(job: FitJob): Promise<FitResult> {
  const { dict: cfg, manifest } = job;
  const train: TrainConfig = { ...TRAIN_DEFAULTS, ...job.train };
  const backend = await initBackend(job.backend);
  const B = train.batchTokens;
  const totalSteps = train.steps ?? Math.ceil((train.tokens ?? manifest.tokens) / B);
  if (!(totalSteps > 0)) throw new UserError('nothing to train: pass --tokens or --steps');
  const lr = train.lr ?? defaultLr(cfg.dSae);
  const warm = train.lrWarmupSteps ?? Math.min(1000, Math.ceil(totalSteps * 0.05));
  const sparsityWarm = train.sparsityWarmupSteps ?? Math.ceil(totalSteps * 0.05);
  const decayStart = Math.floor(totalSteps * (1 - train.lrDecayFraction));
  const sparsity = train.sparsityCoefficient ?? DEFAULT_SPARSITY[cfg.activation];
  const deadWindow = train.deadWindowTokens ?? Math.min(10_000_000, Math.max(B, Math.floor(totalSteps * B * 0.25)));
  const auxkK = train.auxkK ?? Math.max(1, Math.floor(cfg.dIn / 2));
  const resampleUntil = train.resampleUntil ?? Math.floor(totalSteps * 0.75);

  // Data: held-out rows at the end, a shuffled stream over the rest.
  const { train: trainRanges, held: heldRanges } = splitRows(manifest, train.evalTokens);
  const load = (r: RowRange) => loadRows(job.actsDir, manifest, r, cfg.sitesIn, cfg.sitesOut, train.excludeBos);
  const same = cfg.sitesIn.length === cfg.sitesOut.length && cfg.sitesIn.every((s, i) => s.name === cfg.sitesOut[i].name);
  const ckptDir = join(job.out, CKPT);
  let state: CheckpointState | undefined;
  if (job.resume && existsSync(join(ckptDir, 'state.json'))) state = readJson<CheckpointState>(join(ckptDir, 'state.json'));
  if (state) {
    const d = state.dict;
    if (d.dIn !== cfg.dIn || d.dOut !== cfg.dOut || d.dSae !== cfg.dSae || d.activation !== cfg.activation || d.kind !== cfg.kind) {
      throw new UserError(`the checkpoint in ${ckptDir} is a ${d.kind}/${d.activation} with d_in ${d.dIn}, d_out ${d.dOut}, d_sae ${d.dSae}, but these shards and options give ${cfg.kind}/${cfg.activation} with d_in ${cfg.dIn}, d_out ${cfg.dOut}, d_sae ${cfg.dSae}; resume with the same shards and options, or drop --resume`);
    }
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
  if (heldRows.n === 0) throw new UserError('no held-out rows: harvest more tokens');
  const stream = new ShuffleStream(load, trainRanges, cfg.dIn, cfg.dOut, train.shuffleBufferTokens, train.seed + (state?.step ?? 0), transform, same);

  // Parameters: fresh, or from the checkpoint.
  let p: Params;
  const adam = new Adam(train.adamBeta1, train.adamBeta2, train.adamEps);
  let threshold = state?.threshold ?? 0;
  let thresholdInit = state?.thresholdInit ?? false;
  if (state) {
    const st = readSafetensors(join(ckptDir, 'state.safetensors')).tensors;
    const t2 = (n: string, shape: number[]) => (shape.length === 2 ? tf.tensor2d(st[n].data, shape as [number, number]) : tf.tensor1d(st[n].data));
    p = { W_enc: t2('W_enc', [cfg.dIn, cfg.dSae]) as tf.Tensor2D, b_enc: t2('b_enc', [cfg.dSae]) as tf.Tensor1D, W_dec: t2('W_dec', [cfg.dSae, cfg.dOut]) as tf.Tensor2D, b_dec: t2('b_dec', [cfg.dOut]) as tf.Tensor1D };
    if (st.log_threshold) p.log_threshold = tf.tensor1d(st.log_threshold.data);
    for (const [n, t] of Object.entries(st)) {
      const m = /^adam_(m|v)\.(.+)$/.exec(n);
      if (m) (m[1] === 'm' ? adam.m : adam.v).set(m[2], tf.tensor(t.data, t.shape));
    }
    adam.t = state.adamT;
  } else {
    const n = Math.min(sample.n, 4096);
    const ys = (same ? sample.x : sample.y).slice(0, n * cfg.dOut);
    applyScales(ys, cfg.sitesOut, scalesOut);
    p = toParams(initWeights(cfg, train, { y: ys, n }), cfg, train);
  }
  const anchors = train.anchors ? {
    enc: tf.tensor2d(transposeRows(train.anchors.encoder, cfg.dIn), [cfg.dIn, train.anchors.encoder.length]),
    dec: tf.tensor2d(concatRows(train.anchors.decoder, cfg.dOut), [train.anchors.decoder.length, cfg.dOut]),
    k: train.anchors.encoder.length,
    weight: train.anchorWeight,
  } : undefined;

  mkdirSync(job.out, { recursive: true });
  // A finished dictionary in `out` is replaced only when this run completes: remove its cfg.json now,
  // so a killed run never leaves an old cfg.json beside new weights.
  if (!job.resume) {
    rmSync(join(job.out, 'cfg.json'), { force: true });
    rmSync(join(job.out, 'training_log.jsonl'), { force: true });
  }
  const logPath = join(job.out, 'training_log.jsonl');
  const log = (rec: Record<string, unknown>) => appendFileSync(logPath, JSON.stringify(rec) + '\n');

  const sinceFired = new Float64Array(cfg.dSae);
  const Xb = new Float32Array(B * cfg.dIn);
  const Yb = same ? Xb : new Float32Array(B * cfg.dOut);
  let stepNo = state?.step ?? 0;
  let tokens = state?.tokens ?? 0;
  const progress = new Progress('fit', totalSteps * B, 'tok', tokens, job.quiet);
  const t0 = performance.now();
  const elapsed0 = state?.elapsed ?? 0;
  let lastEval: EvalMetrics | undefined;
  const rng = new Rng(train.seed + 99);
  let lastCheckpointStep = stepNo;

  const saveCheckpoint = () => {
    const t: Record<string, NamedTensor> = {};
    for (const [n, v] of Object.entries(p)) if (v) t[n] = { data: (v as tf.Tensor).dataSync() as Float32Array, shape: (v as tf.Tensor).shape };
    for (const [kind, store] of [['m', adam.m], ['v', adam.v]] as const) for (const [n, v] of store) t[`adam_${kind}.${n}`] = { data: v.dataSync() as Float32Array, shape: v.shape };
    mkdirSync(ckptDir, { recursive: true });
    writeSafetensors(join(ckptDir, 'state.safetensors'), t);
    const s: CheckpointState = { step: stepNo, tokens, threshold, thresholdInit, scalesIn, scalesOut, adamT: adam.t, dict: cfg, elapsed: elapsed0 + (performance.now() - t0) / 1000 };
    writeJsonAtomic(join(ckptDir, 'state.json'), s);
    lastCheckpointStep = stepNo;
  };

  const resample = () => {
    // Anthropic (Towards Monosemanticity): dead latents get a high-loss input as decoder row and, scaled to
    // 0.2 x the mean alive encoder norm, as encoder column; b_enc = 0; their Adam moments are reset.
    const dead: number[] = [];
    for (let i = 0; i < cfg.dSae; i++) if (sinceFired[i] >= (train.resampleEvery * B) / 2) dead.push(i);
    if (!dead.length) return 0;
    const poolN = Math.min(16384, Math.max(B, 4 * dead.length));
    const px = new Float32Array(poolN * cfg.dIn), py = same ? px : new Float32Array(poolN * cfg.dOut);
    stream.batch(poolN, px, py);
    const X = tf.tensor2d(px, [poolN, cfg.dIn]), Y = tf.tensor2d(py, [poolN, cfg.dOut]);
    const lossT = tf.tidy(() => {
      const { pre } = preacts(cfg, p, X);
      const yhat = tf.add(tf.matMul(tf.mul(pre, inferMask(cfg, p, pre, threshold)), p.W_dec), p.b_dec);
      return tf.sum(tf.square(tf.sub(yhat, Y)), 1);
    });
    const losses = lossT.dataSync() as Float32Array;
    tf.dispose([X, Y, lossT]);
    const w = Float64Array.from(losses, (l) => l * l);
    const total = w.reduce((a, b) => a + b, 0);
    const We = p.W_enc.dataSync().slice() as Float32Array, Wd = p.W_dec.dataSync().slice() as Float32Array, be = p.b_enc.dataSync().slice() as Float32Array;
    let aliveNorm = 0, alive = 0;
    const deadSet = new Set(dead);
    for (let i = 0; i < cfg.dSae; i++) {
      if (deadSet.has(i)) continue;
      let q = 0;
      for (let j = 0; j < cfg.dIn; j++) q += We[j * cfg.dSae + i] ** 2;
      aliveNorm += Math.sqrt(q);
      alive++;
    }
    aliveNorm = alive ? aliveNorm / alive : 1;
    for (const i of dead) {
      let r = rng.next() * total, s = 0;
      for (; s < poolN - 1 && (r -= w[s]) > 0; s++);
      const xin = px.subarray(s * cfg.dIn, (s + 1) * cfg.dIn), yout = py.subarray(s * cfg.dOut, (s + 1) * cfg.dOut);
      const nx = Math.hypot(...xin) || 1, ny = Math.hypot(...yout) || 1;
      for (let j = 0; j < cfg.dIn; j++) We[j * cfg.dSae + i] = (xin[j] / nx) * 0.2 * aliveNorm;
      for (let j = 0; j < cfg.dOut; j++) Wd[i * cfg.dOut + j] = yout[j] / ny;
      be[i] = 0;
      sinceFired[i] = 0;
    }
    tf.dispose([p.W_enc, p.W_dec, p.b_enc]);
    p.W_enc = tf.tensor2d(We, [cfg.dIn, cfg.dSae]);
    p.W_dec = cfg.tied ? (tf.transpose(p.W_enc) as tf.Tensor2D) : tf.tensor2d(Wd, [cfg.dSae, cfg.dOut]);
    p.b_enc = tf.tensor1d(be);
    adam.resetLatents(dead, cfg.dSae);
    return dead.length;
  };

  while (stepNo < totalSteps) {
    stream.batch(B, Xb, Yb);
    const X = tf.tensor2d(Xb, [B, cfg.dIn]);
    const Y = same ? X : tf.tensor2d(Yb, [B, cfg.dOut]);
    const lrNow = lr * Math.min(1, (stepNo + 1) / Math.max(1, warm)) * (stepNo >= decayStart ? Math.max(0, (totalSteps - stepNo) / Math.max(1, totalSteps - decayStart)) : 1);
    const spNow = sparsity * Math.min(1, (stepNo + 1) / Math.max(1, sparsityWarm));
    let dead: Float32Array | undefined;
    if (cfg.activation === 'topk' || cfg.activation === 'batchtopk') {
      dead = new Float32Array(cfg.dSae);
      for (let i = 0; i < cfg.dSae; i++) dead[i] = sinceFired[i] >= deadWindow ? 1 : 0;
    }
    const r = step(cfg, p, X, Y, { sparsity: spNow, bandwidth: train.jumpreluBandwidth, dead, auxkCoefficient: train.auxkCoefficient, auxkK, anchors });
    tf.dispose(Y === X ? [X] : [X, Y]);
    if (!Number.isFinite(r.loss)) {
      tf.dispose(Object.values(r.grads) as tf.Tensor[]);
      const where = existsSync(join(ckptDir, 'state.json')) ? `the last good checkpoint (step ${lastCheckpointStep}) is in ${ckptDir}; lower --lr and resume with --resume` : 'no checkpoint was written yet; lower --lr and start again';
      throw new UserError(`the loss became ${r.loss} at step ${stepNo}; ${where}`);
    }
    // Checkpoint here, before the update: these parameters just produced a finite loss, so a checkpoint
    // is always a good state to resume from.
    if (stepNo > 0 && stepNo % train.checkpointEvery === 0 && stepNo !== lastCheckpointStep) saveCheckpoint();
    const g: Grads = r.grads;
    if (train.unitNormDecoder && !cfg.tied && g.W_dec) {
      const pg = projectDecoderGrad(p.W_dec, g.W_dec as tf.Tensor2D);
      g.W_dec.dispose();
      g.W_dec = pg;
    }
    const trainable = { ...p };
    if (cfg.tied) delete (trainable as Partial<Params>).W_dec;
    adam.update(trainable, g, lrNow, train.clipGradNorm);
    Object.assign(p, trainable);
    tf.dispose(Object.values(g) as tf.Tensor[]);
    if (cfg.tied) {
      const old = p.W_dec;
      if (train.unitNormDecoder) {
        const wn = tf.tidy(() => tf.transpose(normalizeRows(tf.transpose(p.W_enc) as tf.Tensor2D)) as tf.Tensor2D);
        p.W_enc.dispose();
        p.W_enc = wn;
      }
      p.W_dec = tf.transpose(p.W_enc) as tf.Tensor2D;
      old.dispose();
    } else if (train.unitNormDecoder) {
      const wn = normalizeRows(p.W_dec);
      p.W_dec.dispose();
      p.W_dec = wn;
    }
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
    const rec: Record<string, unknown> = { step: stepNo, tokens, loss: r.loss, mse: r.mse, sparsity_loss: r.sparsityLoss, aux_loss: r.auxLoss, l0: r.l0, lr: lrNow, dead_fraction: deadFrac };
    if (resampled) rec.resampled = resampled;
    if (stepNo % train.evalEvery === 0 || stepNo === totalSteps) {
      lastEval = evaluate(cfg, p, heldRows, scalesOut, threshold);
      rec.eval = lastEval;
    }
    if (stepNo % 10 === 0 || rec.eval || resampled) log(rec);
    progress.update(tokens, `step ${stepNo}/${totalSteps} loss ${r.loss.toFixed(4)} l0 ${r.l0.toFixed(1)} dead ${(100 * deadFrac).toFixed(1)}%${lastEval ? ` fvu ${lastEval.fvu.toFixed(4)}` : ''}`);
  }
  progress.done();
  const seconds = (performance.now() - t0) / 1000;
  const evalNow = lastEval ?? evaluate(cfg, p, heldRows, scalesOut, threshold);
  const deadFraction = sinceFired.reduce((a, s) => a + (s >= deadWindow ? 1 : 0), 0) / cfg.dSae;
  const weights = foldWeights(p, cfg, scalesIn, scalesOut, thresholdVector(p, cfg, threshold));
  const dictionary = new Dictionary(cfg, weights, {
    model_name: manifest.identity.model.name,
    model_sha256: manifest.identity.model.sha256,
    dataset_path: manifest.identity.corpus.source,
    context_size: manifest.identity.ctx,
    prepend_bos: true,
  });
  const training = {
    backend, steps: stepNo, tokens, batch_tokens: B, lr, lr_warmup_steps: warm, lr_decay_fraction: train.lrDecayFraction,
    sparsity_coefficient: sparsity, sparsity_warmup_steps: sparsityWarm, dead_window_tokens: deadWindow, auxk_k: auxkK,
    auxk_coefficient: train.auxkCoefficient, resample_every: train.resampleEvery, anchors: anchors ? anchors.k : 0, anchor_weight: train.anchorWeight,
    seed: train.seed, scales_in: scalesIn, scales_out: scalesOut, batch_threshold: threshold, exclude_bos: train.excludeBos,
    unit_norm_decoder: train.unitNormDecoder, b_dec_init: train.bDecInit, eval: evalNow, dead_fraction: deadFraction,
    seconds: elapsed0 + seconds, activations: job.actsDir, activations_sha256: manifest.identity_sha256,
  };
  copyFileSync(join(job.actsDir, MANIFEST), join(job.out, 'acts_manifest.json'));
  writeJsonAtomic(join(job.out, 'eval.json'), { ...evalNow, dead_fraction_train: deadFraction });
  dictionary.save(job.out, { training });
  tf.dispose(Object.values(p) as tf.Tensor[]);
  adam.dispose();
  if (anchors) tf.dispose([anchors.enc, anchors.dec]);
  const newTokens = tokens - (state?.tokens ?? 0);
  return { dictionary, eval: evalNow, steps: stepNo, tokens, seconds, tokensPerSecond: newTokens / seconds, backend, deadFraction };
}

function transposeRows(rows: Float32Array[], d: number): Float32Array {
  const k = rows.length;
  const out = new Float32Array(d * k);
  rows.forEach((r, i) => { for (let j = 0; j < d; j++) out[j * k + i] = r[j]; });
  return out;
}

function concatRows(rows: Float32Array[], d: number): Float32Array {
  const out = new Float32Array(rows.length * d);
  rows.forEach((r, i) => out.set(r.subarray(0, d), i * d));
  return out;
}
