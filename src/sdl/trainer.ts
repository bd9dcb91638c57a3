// The trainer: one loop for every kind and activation. Data -> step -> Adam -> constraints -> stats,
// with held-out evaluation, checkpoints, resume, resampling and a NaN guard.
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { TRAIN_DEFAULTS, defaultSparsity, checkDictConfig, checkTrainConfig, ruleLr, selectionGroups, type DictConfig, type TrainConfig } from './config.js';
import { CFG_FILE, Dictionary, type DictionaryWeights } from './dictionary.js';
import { ReadBuffers, readsInPlace } from '../activations/reader.js';
import { ShuffleStream, applyScales, loadRows, siteScales, splitRows, type RowRange, type Rows, type SiteRef } from './data.js';
import { initWeights } from './init.js';
import { createEngine, type Engine } from './engine.js';
import { weightsOf, type EngineWeights } from './engine-types.js';
import { EvalAccumulator, type EvalMetrics } from './metrics.js';
import { decodeSafetensors, safetensorsParts, type NamedTensor } from '../tensor/safetensors.js';
import { collectGarbage } from '../util/v8-heap.js';
import type { Manifest } from '../activations/manifest.js';
import { UserError } from '../util/errors.js';
import { checkOutput, lockFolder, readJson, removeStaleTemps, sha256, writeAtomic, writeJsonAtomic } from '../util/fsx.js';
import { Progress } from '../util/progress.js';
import { Rng } from '../util/rng.js';
import { cltCheckpointNames, usesCltKernels } from './clt.js';
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
  /** BatchTopK thresholds per selection group (CLTs: one per layer); `threshold` is the first. */
  thresholds?: number[];
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
    const bytes = readFileSync(p); // decodeSafetensors copies each tensor out aligned: no copy of the file first
    if (state.tensors_sha256 === undefined || sha256(bytes) === state.tensors_sha256) return decodeSafetensors(bytes, p).tensors;
  }
  throw new UserError(`the checkpoint in ${dir} has no tensors file matching its state.json; it is damaged: start again without --resume`);
}

/**
 * A checkpoint's tensors, refused unless complete: every parameter the dictionary trains and both Adam moments of
 * each. (A resume that quietly started some moments at zero would not continue the run it claims to.)
 */
function checkCheckpoint(t: Record<string, NamedTensor>, cfg: DictConfig, path: string): Record<string, NamedTensor> {
  if (usesCltKernels(cfg)) {
    const missing = cltCheckpointNames(cfg).filter((n) => !t[n]);
    if (missing.length) throw new UserError(`the checkpoint ${path} lacks ${missing.join(', ')}; it is damaged: start again without --resume`);
    return t;
  }
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

/** The engine's final weights with the per-site input/target scales folded into them, in place. */
function foldWeights(w: EngineWeights, cfg: DictConfig, scalesIn: number[], scalesOut: number[], threshold?: Float32Array): DictionaryWeights {
  const { W_enc, W_dec, b_enc, b_dec, W_skip } = w;
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
  // The skip path maps x' to y': W_skip[r, c] scales by s_in(r) / s_out(c).
  if (W_skip) {
    const sIn = perColumn(cfg.sitesIn, scalesIn),
      sOut = perColumn(cfg.sitesOut, scalesOut);
    for (let r = 0; r < cfg.dIn; r++) for (let c = 0; c < cfg.dOut; c++) W_skip[r * cfg.dOut + c] *= sIn[r] / sOut[c];
  }
  return { W_enc, b_enc, W_dec, b_dec, threshold, ...(W_skip ? { W_skip } : {}) };
}

/** Each column's site scale. */
function perColumn(sites: { width: number }[], scales: number[]): Float64Array {
  const out = new Float64Array(sites.reduce((a, s) => a + s.width, 0));
  let off = 0;
  sites.forEach((s, i) => {
    out.fill(scales[i], off, off + s.width);
    off += s.width;
  });
  return out;
}

function thresholdVector(w: EngineWeights, cfg: DictConfig, thresholds: number[]): Float32Array | undefined {
  const how = ACTIVATIONS[cfg.activation].inference;
  if (how === 'per-latent') return Float32Array.from(w.log_threshold!, Math.exp);
  if (how !== 'global') return undefined;
  // One threshold per selection group: the whole dictionary, or each CLT layer's latents.
  const t = new Float32Array(cfg.dSae),
    per = cfg.dSae / thresholds.length;
  thresholds.forEach((v, g) => t.fill(v, g * per, (g + 1) * per));
  return t;
}

/** BatchTopK selection groups: CLTs select per layer. */

/**
 * Held-out rows, read from the shards and normalised a chunk at a time when evaluated: no copy of the set is kept
 * between evaluations (48 MB at d 768 and 16,384 rows). A chunk, and the array for its reconstruction, are
 * overwritten by the next.
 */
interface HeldOut {
  n: number;
  /** `idle`: memory unused until the next step (the step's batch array) to read and reconstruct the chunks in. */
  chunks(idle?: Float32Array): Iterable<Rows & { yhat: Float32Array }>;
}

/** Evaluates the engine (normalised space) on held-out rows; reconstructions are compared in harvest units. */
function evaluate(cfg: DictConfig, engine: Engine, held: HeldOut, scalesOut: number[], batchThreshold: number[], idle?: Float32Array): EvalMetrics {
  const acc = new EvalAccumulator(cfg.sitesOut, cfg.dSae);
  const inv = scalesOut.map((s) => 1 / s);
  for (const rows of held.chunks(idle)) {
    const n = rows.n;
    const f = engine.forward(rows.x, n, batchThreshold, rows.yhat);
    // y may be x (same sites): forward is done with it.
    const y = rows.y;
    // Back to harvest units (undo the per-site scale) before comparing.
    applyScales(y, cfg.sitesOut, inv);
    applyScales(f.yhat, cfg.sitesOut, inv);
    acc.add(y, f.yhat, n, f.fired, f.actives);
  }
  return acc.result();
}

export async function fit(job: FitJob): Promise<FitResult> {
  const [r] = await fitSweep({ ...job, members: [{ name: basename(job.out), dict: job.dict, train: job.train, out: job.out }] });
  return r;
}

/** One dictionary of a sweep: its configuration and folder. */
export interface SweepMember {
  name: string;
  dict: DictConfig;
  train: TrainConfig;
  out: string;
  /** Continue from this member's checkpoint (default: the job's resume). */
  resume?: boolean;
}

export interface SweepJob extends Omit<FitJob, 'dict' | 'train' | 'out'> {
  members: SweepMember[];
  /** Called as each member finishes (its folder is then a complete dictionary). */
  onMemberDone?: (m: SweepMember, r: FitResult) => void;
}

/** Settings every member of a sweep must share: they fix the one data stream all members train on. */
const SHARED_SETTINGS: (keyof TrainConfig)[] = ['batchTokens', 'shuffleBufferTokens', 'evalTokens', 'excludeBos', 'checkpointEvery'];

/**
 * Trains several dictionaries on one read of the shards and one shuffle: every batch is drawn once (holding
 * every site any member needs) and each member takes its own sites from it. A single `sdl fit` is a sweep of
 * one, so a member trains exactly as it would alone with the same seed (tested).
 */
export async function fitSweep(job: SweepJob): Promise<FitResult[]> {
  const members = checkSweep(job.members);
  const outs = new Set(members.map((m) => m.out));
  if (outs.size !== members.length) throw new UserError('two sweep members write the same folder; give each its own --out');
  const unlocks: (() => void)[] = [];
  try {
    for (const m of members) unlocks.push(lockFolder(m.out, 'sdl fit'));
    return await sweepLocked(job, members);
  } finally {
    for (const u of unlocks) u();
  }
}

/** Checks every member (and that they agree on the shared settings) before anything is written; returns them with defaults filled. */
export function checkSweep(list: SweepMember[]): SweepMember[] {
  if (!list.length) throw new UserError('the sweep has no members');
  const members = list.map((m) => ({ ...m, train: { ...TRAIN_DEFAULTS, ...m.train } }));
  const first = members[0];
  for (const m of members) {
    checkDictConfig(m.dict, `sweep member ${m.name}`);
    checkTrainConfig(m.train);
    for (const k of SHARED_SETTINGS)
      if (JSON.stringify(m.train[k]) !== JSON.stringify(first.train[k]))
        throw new UserError(
          `sweep member ${m.name} sets ${k} to ${JSON.stringify(m.train[k])} but ${first.name} to ${JSON.stringify(first.train[k])}; members share one data stream, so ${k} must be the same for all`,
        );
    if (members.length > 1 && m.train.resampleEvery > 0)
      throw new UserError(`sweep member ${m.name} resamples dead latents, which draws extra rows from the shared stream; train it alone`);
    checkOutput(m.out, 'dir');
  }
  return members;
}

/** The rows every member draws from: all the sites any member reads or writes, in the harvest's order. */
interface SharedRows {
  sites: SiteRef[];
  width: number;
  /** Reads a range's rows in the shared layout; with `buffers`, into arrays the next read given them overwrites. */
  load: (r: RowRange, buffers?: ReadBuffers) => Rows;
  trainRanges: RowRange[];
  /** Rows for the members' normalisation scales and initialisation; released once every member is open. */
  sample?: Rows;
  /** Where the held-out rows are and how many there are (BOS rows dropped): every member reads them a chunk at a time (HeldOut). */
  held: { ranges: RowRange[]; n: number };
}

const SAMPLE_BYTES = 64 * 2 ** 20;
/** Held-out rows read and evaluated at a time (at most; fewer where BOS rows are dropped or a range ends). */
const HELD_CHUNK = 1024;

/** Splits ranges of rows into pieces of at most `size` rows. */
function* pieces(ranges: RowRange[], size: number): Generator<RowRange> {
  for (const r of ranges) for (let a = r.from; a < r.to; a += size) yield { shard: r.shard, from: a, to: Math.min(r.to, a + size) };
}

function sharedRows(job: SweepJob, members: SweepMember[]): SharedRows {
  const { manifest } = job;
  const wanted = new Set(members.flatMap((m) => [...m.dict.sitesIn, ...m.dict.sitesOut].map((s) => s.name)));
  const sites = manifest.sites.filter((s) => wanted.has(s.name)).map((s) => ({ name: s.name, width: s.width }));
  for (const name of wanted)
    if (!sites.some((s) => s.name === name))
      throw new UserError(`a sweep member needs site ${name}, which the harvest lacks (it has ${manifest.sites.map((s) => s.name).join(', ')})`);
  const width = sites.reduce((a, s) => a + s.width, 0);
  const t = members[0].train;
  const { train: trainRanges, held: heldRanges } = splitRows(manifest, t.evalTokens);
  const load = (r: RowRange, buffers?: ReadBuffers) => loadRows(job.actsDir, manifest, r, sites, sites, t.excludeBos, { verify: job.verify, buffers });
  // The held-out rows are read once here (checked for NaN, counted) and again at each evaluation.
  const buffers = new ReadBuffers();
  let n = 0;
  for (const p of pieces(heldRanges, HELD_CHUNK)) n += load(p, buffers).n;
  if (!trainRanges.length) throw new UserError('no training rows: the harvest is empty after the held-out split; harvest more tokens or lower --eval-tokens');
  // The sample (normalisation scales, b_dec's initialisation) is the first training shard's first kept rows, at
  // most 64 MiB of them, read in pieces of that size (a wide harvest's shard is 200 MB at d 768).
  const cap = Math.max(16384, Math.floor(SAMPLE_BYTES / (4 * width)));
  const r0 = trainRanges[0];
  const sx = new Float32Array(Math.min(cap, r0.to - r0.from) * width);
  let got = 0;
  for (let a = r0.from; a < r0.to && got < cap; a += cap) {
    const p = load({ shard: r0.shard, from: a, to: Math.min(r0.to, a + cap) });
    const take = Math.min(p.n, cap - got);
    sx.set(p.x.subarray(0, take * width), got * width);
    got += take;
  }
  const sample = { n: got, x: sx.subarray(0, got * width), y: sx.subarray(0, got * width) };
  return { sites, width, load, trainRanges, sample, held: { ranges: heldRanges, n } };
}

/** Copies one member's sites out of rows of the shared layout, each site multiplied by its scale. */
class SitePicker {
  private readonly parts: { from: number; width: number; site: number }[];
  readonly d: number;

  constructor(shared: SiteRef[], sites: SiteRef[]) {
    const offsets = new Map<string, number>();
    let off = 0;
    for (const s of shared) {
      offsets.set(s.name, off);
      off += s.width;
    }
    this.parts = sites.map((s, i) => ({ from: offsets.get(s.name)!, width: s.width, site: i }));
    this.d = sites.reduce((a, s) => a + s.width, 0);
  }

  /** One site that is the whole shared row: `out` may then be src itself (scaled in place). */
  whole(width: number): boolean {
    return this.parts.length === 1 && this.parts[0].from === 0 && this.d === width;
  }

  /** Without `out`, rows that would come out unchanged (one site, the whole row, scale 1) are a view of src: read-only. */
  pick(src: Float32Array, width: number, n: number, scales: number[], out?: Float32Array): Float32Array {
    if (!out && this.whole(width) && scales[0] === 1) return src.subarray(0, n * width);
    out ??= new Float32Array(n * this.d);
    for (let r = 0; r < n; r++) {
      let o = r * this.d;
      for (const p of this.parts) {
        const row = src.subarray(r * width + p.from, r * width + p.from + p.width);
        const f = scales[p.site];
        if (f === 1) out.set(row, o);
        else for (let j = 0; j < p.width; j++) out[o + j] = row[j] * f;
        o += p.width;
      }
    }
    return out;
  }
}

async function sweepLocked(job: SweepJob, specs: SweepMember[]): Promise<FitResult[]> {
  // A harvest's shards come from one sdlkit: its first says whether they are read in place.
  const first = job.manifest.shards[0];
  if (first && readsInPlace(join(job.actsDir, first.file)) === false)
    job.onNote?.(
      `${job.actsDir} holds shards that are decoded whole on every read (Parquet written before 2026-12-06, zstd); sdl convert ${job.actsDir} --format parquet --out <new folder> rewrites them to be read in place (fits about 2.5x faster)`,
    );
  const shared = sharedRows(job, specs);
  const runs: MemberRun[] = [];
  for (const [i, m] of specs.entries()) {
    const run = new MemberRun(m, job, shared);
    await run.open(i === specs.length - 1);
    runs.push(run);
  }
  const t = specs[0].train;
  const B = t.batchTokens;
  // One stream for all: the first member's seed orders the data (a sweep of seeds varies the initialisation).
  const streamBuffers = new ReadBuffers();
  const stream = new ShuffleStream((r) => shared.load(r, streamBuffers), shared.trainRanges, shared.width, shared.width, t.shuffleBufferTokens, t.seed, {
    sameInOut: true,
  });
  for (const r of runs) r.stream = stream;
  stream.skip(Math.min(...runs.map((r) => r.nextDrawn)));
  const total = Math.max(...runs.map((r) => r.totalSteps)) * B;
  const progress = new Progress(runs.length > 1 ? 'sweep' : 'fit', total, 'tok', Math.min(...runs.map((r) => r.tokens)), job.quiet);
  const X = new Float32Array(B * shared.width);
  const results: (FitResult | undefined)[] = runs.map(() => undefined);
  // Each member is written out as soon as it finishes (a killed sweep keeps its finished members).
  const settle = () =>
    runs.forEach((r, i) => {
      if (r.done && !results[i]) {
        results[i] = r.finish();
        job.onMemberDone?.(specs[i], results[i]!);
      }
    });
  try {
    settle();
    while (runs.some((r) => !r.done)) {
      const pos = stream.drawn;
      stream.batch(B, X, X);
      // Members resumed from a later checkpoint wait until the stream reaches them.
      let rare = false;
      for (const r of runs) if (!r.done && r.nextDrawn === pos && r.step(X) && r.train.lowMemory) rare = true;
      // --low-memory asks for a flat peak: the garbage of a checkpoint or an evaluation goes before the next step.
      if (rare) collectGarbage();
      settle();
      if (runs.length === 1) progress.update(runs[0].tokens, runs[0].status());
      else
        progress.update(
          pos + B,
          `${runs.filter((r) => r.done).length}/${runs.length} members done; ${runs
            .filter((r) => !r.done)
            .slice(0, 4)
            .map((r) => `${r.spec.name} ${r.status(true)}`)
            .join(', ')}`,
        );
    }
  } finally {
    for (const r of runs) r.dispose();
  }
  progress.done();
  return results as FitResult[];
}

/** The training state of one dictionary: everything `fit` used to hold in one function, stepped from outside. */
class MemberRun {
  stream!: ShuffleStream;
  totalSteps = 0;
  tokens = 0;
  /** Stream position of this member's next batch. */
  nextDrawn = 0;
  private readonly cfg: DictConfig;
  readonly train: TrainConfig;
  private readonly inPick: SitePicker;
  private readonly outPick: SitePicker;
  private readonly same: boolean;
  private engine!: Engine;
  private backend = '';
  private state?: CheckpointState;
  private scalesIn: number[] = [];
  private scalesOut: number[] = [];
  private held!: HeldOut;
  /** This member's batch, normalised; undefined when the stream's batch is scaled in place (batchInPlace). */
  private Xb?: Float32Array;
  private Yb?: Float32Array;
  /** A sweep of one reading one whole site scales the stream's batch in place: no second batch-sized array (12 MB at d 768). */
  private readonly batchInPlace: boolean;
  /** This member's batch array, idle between its steps (see heldOut). */
  private idle?: Float32Array;
  private sinceFired!: Float64Array;
  private stepNo = 0;
  private threshold: number[] = [];
  private thresholdInit = false;
  private lastEval?: EvalMetrics;
  private lastLoss = 0;
  private lastL0 = 0;
  private deadFrac = 0;
  private rng!: Rng;
  private t0 = 0;
  private elapsed0 = 0;
  private seconds = 0;
  private lastCheckpointStep = 0;
  private ckptDir: string;
  private logPath: string;
  private anchors?: { encoder: Float32Array[]; decoder: Float32Array[]; weight: number };
  private lr = 0;
  private warm = 0;
  private sparsityWarm = 0;
  private decayStart = 0;
  private sparsity = 0;
  private deadWindow = 0;
  private auxkK = 0;
  private resampleUntil = 0;
  private finished?: FitResult;
  private disposed = false;

  constructor(
    readonly spec: SweepMember,
    private readonly job: SweepJob,
    private readonly shared: SharedRows,
  ) {
    this.cfg = spec.dict;
    this.train = spec.train;
    this.inPick = new SitePicker(shared.sites, this.cfg.sitesIn);
    this.outPick = new SitePicker(shared.sites, this.cfg.sitesOut);
    this.same = this.cfg.sitesIn.length === this.cfg.sitesOut.length && this.cfg.sitesIn.every((s, i) => s.name === this.cfg.sitesOut[i].name);
    this.batchInPlace = job.members.length === 1 && this.same && this.inPick.whole(shared.width);
    this.ckptDir = join(spec.out, CHECKPOINT_DIR);
    this.logPath = join(spec.out, TRAINING_LOG_FILE);
  }

  get done(): boolean {
    return this.stepNo >= this.totalSteps;
  }

  /** This member's rows of the shared layout (x and y; y is x when the member reads and writes the same sites): read-only, they may be views of src. */
  private rows(src: Rows, scalesIn: number[], scalesOut: number[]): Rows {
    const x = this.inPick.pick(src.x, this.shared.width, src.n, scalesIn);
    return { n: src.n, x, y: this.same ? x : this.outPick.pick(src.x, this.shared.width, src.n, scalesOut) };
  }

  /**
   * The held-out rows read from the shards a chunk at a time and normalised with this member's scales. Given idle
   * memory (the step's batch array, between steps), everything an evaluation reads and writes is laid out in it:
   * arrays of its own, made at the first evaluation and kept, added 9 MiB at d 768 to every later step's peak
   * (the 10M-token fit's memory rose there, 613.5 -> 625.5 MiB). Without (a member finished before its first step
   * on resume), arrays made once and kept.
   */
  private heldOut(): HeldOut {
    const { ranges, n } = this.shared.held,
      w = this.shared.width,
      size = Math.min(HELD_CHUNK, n);
    const { dIn, dOut } = this.cfg;
    let own: ReadBuffers | undefined;
    const self = this;
    return {
      n,
      *chunks(idle) {
        const buffers = idle ? new ReadBuffers(new Uint8Array(idle.buffer as ArrayBuffer, idle.byteOffset, idle.byteLength)) : (own ??= new ReadBuffers());
        const bx = buffers.float32('held:x', size * dIn),
          by = self.same ? bx : buffers.float32('held:y', size * dOut),
          yhat = buffers.float32('held:yhat', size * dOut);
        for (const p of pieces(ranges, HELD_CHUNK)) {
          const raw = self.shared.load(p, buffers);
          if (!raw.n) continue;
          const px = self.inPick.pick(raw.x, w, raw.n, self.scalesIn, bx.subarray(0, raw.n * dIn));
          const py = self.same ? px : self.outPick.pick(raw.x, w, raw.n, self.scalesOut, by.subarray(0, raw.n * dOut));
          yield { n: raw.n, x: px, y: py, yhat: yhat.subarray(0, raw.n * dOut) };
        }
      },
    };
  }

  /**
   * The normalisation scales (kept from the checkpoint on resume), computed from the shared sample of raw training
   * rows, and the first of those rows normalised, for b_dec's initialisation.
   */
  private fromSample(state?: CheckpointState): { y: Float32Array; n: number } {
    const { cfg, train } = this;
    const sample = this.rows(
      this.shared.sample!,
      cfg.sitesIn.map(() => 1),
      cfg.sitesOut.map(() => 1),
    );
    this.scalesIn = state?.scalesIn ?? (train.normalizeActivations ? siteScales(sample, cfg.sitesIn, 'x') : cfg.sitesIn.map(() => 1));
    this.scalesOut =
      state?.scalesOut ?? (this.same ? this.scalesIn : train.normalizeActivations ? siteScales(sample, cfg.sitesOut, 'y') : cfg.sitesOut.map(() => 1));
    const n = Math.min(sample.n, 4096);
    const y = (this.same ? sample.x : sample.y).slice(0, n * cfg.dOut);
    applyScales(y, cfg.sitesOut, this.scalesOut);
    return { y, n };
  }

  async open(lastToOpen: boolean): Promise<void> {
    const { cfg, train, job, spec } = this;
    const { manifest } = job;
    removeStaleTemps(spec.out);
    removeStaleTemps(this.ckptDir);
    const B = train.batchTokens;
    this.totalSteps = train.steps ?? Math.ceil((train.tokens ?? manifest.tokens) / B);
    if (!(this.totalSteps > 0)) throw new UserError('nothing to train: pass --tokens or --steps');
    const totalSteps = this.totalSteps;
    this.lr = train.lr ?? ruleLr(cfg);
    this.warm = train.lrWarmupSteps ?? Math.min(1000, Math.ceil(totalSteps * 0.05));
    this.sparsityWarm = train.sparsityWarmupSteps ?? Math.ceil(totalSteps * 0.05);
    this.decayStart = Math.floor(totalSteps * (1 - train.lrDecayFraction));
    this.sparsity = train.sparsityCoefficient ?? defaultSparsity(cfg.activation);
    this.deadWindow = train.deadWindowTokens ?? Math.min(10_000_000, Math.max(B, Math.floor(totalSteps * B * 0.25)));
    this.auxkK = train.auxkK ?? Math.max(1, Math.floor(cfg.dIn / 2));
    this.resampleUntil = train.resampleUntil ?? Math.floor(totalSteps * 0.75);

    const ckptDir = this.ckptDir;
    let state: CheckpointState | undefined;
    let resumeChanges: string[] = [];
    const resume = spec.resume ?? job.resume;
    if (resume) {
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
      if (state.drawn === undefined)
        throw new UserError(`the checkpoint in ${ckptDir} does not record its place in the data (an older sdlkit wrote it); start again without --resume`);
      resumeChanges = state.train ? differences(state.train, now) : [];
    } else if (existsSync(join(spec.out, CFG_FILE)) && !job.force) {
      throw new UserError(`${spec.out} already holds a dictionary; pass --force to replace it, --resume to continue its run, or choose another --out`);
    }
    this.state = state;
    const first = this.fromSample(state);
    // The last member to open lets the 64 MB sample go before its engine's arrays are made (start-up's peak).
    if (lastToOpen) this.shared.sample = undefined;
    this.held = this.heldOut();
    if (this.held.n < 2)
      throw new UserError(`${this.held.n} held-out row${this.held.n === 1 ? '' : 's'}: FVU needs at least 2; raise --eval-tokens or harvest more tokens`);

    // Parameters: fresh, or from the checkpoint.
    this.threshold = state?.thresholds ?? new Array(selectionGroups(cfg)).fill(state?.threshold ?? 0);
    this.thresholdInit = state?.thresholdInit ?? false;
    const saved = state ? checkCheckpoint(checkpointTensors(ckptDir, state), cfg, join(ckptDir, CHECKPOINT_TENSORS_FILE)) : undefined;
    const init = saved ? weightsOf(saved) : initWeights(cfg, train, first);
    this.anchors = train.anchors ? { encoder: train.anchors.encoder, decoder: train.anchors.decoder, weight: train.anchorWeight } : undefined;
    const { engine, note } = await createEngine(job.backend, { cfg, train, weights: init, handOver: !saved, anchors: this.anchors });
    if (note) job.onNote?.(note);
    this.engine = engine;
    this.backend = engine.backend;
    if (saved) engine.loadState(saved, state!.adamT); // the Adam moments (the parameters came in through init)

    mkdirSync(spec.out, { recursive: true });
    // A finished dictionary in `out` is replaced only when this run completes: remove its cfg.json now,
    // so a killed run never leaves an old cfg.json beside new weights.
    if (!resume) {
      rmSync(join(spec.out, CFG_FILE), { force: true });
      rmSync(this.logPath, { force: true });
      rmSync(ckptDir, { recursive: true, force: true });
      for (const f of DERIVED_FILES) rmSync(join(spec.out, f), { recursive: true, force: true });
    }
    if (state) this.log({ event: 'resume', step: state.step, tokens: state.tokens, changed: resumeChanges });

    this.sinceFired = state?.sinceFired ? Float64Array.from(state.sinceFired) : new Float64Array(cfg.dSae);
    if (!this.batchInPlace) {
      this.Xb = new Float32Array(B * cfg.dIn);
      this.Yb = this.same ? this.Xb : new Float32Array(B * cfg.dOut);
    }
    this.stepNo = state?.step ?? 0;
    this.tokens = state?.tokens ?? 0;
    this.nextDrawn = state?.drawn ?? 0;
    this.elapsed0 = state?.elapsed ?? 0;
    this.rng = new Rng(train.seed + 99);
    if (state?.rng) this.rng.restore(state.rng);
    this.lastCheckpointStep = this.stepNo;
    this.t0 = performance.now();
  }

  private log(rec: Record<string, unknown>): void {
    appendFileSync(this.logPath, `${JSON.stringify(rec)}\n`);
  }

  // A checkpoint is two files; a kill between writing them must not pair new tensors with an old state.json.
  // So: the tensors go to NEXT (atomically), then state.json names their sha256, then NEXT replaces the old file.
  // The loader takes whichever of the two files has the recorded sha256.
  private saveCheckpoint(drawnBefore: number): void {
    const NEXT = `next.${CHECKPOINT_TENSORS_FILE}`;
    mkdirSync(this.ckptDir, { recursive: true });
    const tensorsSha = writeAtomic(join(this.ckptDir, NEXT), safetensorsParts(this.engine.saveState()));
    const s: CheckpointState = {
      step: this.stepNo,
      tokens: this.tokens,
      threshold: this.threshold[0],
      thresholds: this.threshold,
      thresholdInit: this.thresholdInit,
      scalesIn: this.scalesIn,
      scalesOut: this.scalesOut,
      adamT: this.engine.adamT,
      dict: this.cfg,
      train: historyRecord(this.train),
      drawn: drawnBefore,
      rng: this.rng.state,
      sinceFired: Array.from(this.sinceFired),
      tensors_sha256: tensorsSha,
      elapsed: this.elapsed0 + (performance.now() - this.t0) / 1000,
    };
    writeJsonAtomic(join(this.ckptDir, CHECKPOINT_STATE_FILE), s);
    renameSync(join(this.ckptDir, NEXT), join(this.ckptDir, CHECKPOINT_TENSORS_FILE));
    this.lastCheckpointStep = this.stepNo;
  }

  private resample(): number {
    // Anthropic (Towards Monosemanticity): dead latents get a high-loss input as decoder row and, scaled to
    // 0.2 x the mean alive encoder norm, as encoder column; b_enc = 0; their Adam moments are reset.
    const { cfg, train, engine, sinceFired } = this;
    const B = train.batchTokens;
    const dead: number[] = [];
    for (let i = 0; i < cfg.dSae; i++) if (sinceFired[i] >= (train.resampleEvery * B) / 2) dead.push(i);
    if (!dead.length) return 0;
    const poolN = Math.min(16384, Math.max(B, 4 * dead.length));
    const pool = new Float32Array(poolN * this.shared.width);
    this.stream.batch(poolN, pool, pool);
    const { x: px, y: py } = this.rows({ n: poolN, x: pool, y: pool }, this.scalesIn, this.scalesOut);
    const f = engine.forward(px, poolN, this.threshold);
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
      let r = this.rng.next() * total,
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
    // The pool came from the stream: this member's next batch is wherever the stream now stands.
    this.nextDrawn = this.stream.drawn;
    return dead.length;
  }

  /**
   * One training step on a batch of the shared layout (scaled in place when batchInPlace). True when the step also
   * did rare work (a checkpoint, an evaluation, resampling) whose garbage is best collected before the next step.
   */
  step(batch: Float32Array): boolean {
    const { cfg, train, engine, sinceFired } = this;
    const B = train.batchTokens;
    const drawnBefore = this.nextDrawn;
    const w = this.shared.width;
    const Xb = this.inPick.pick(batch, w, B, this.scalesIn, this.Xb ?? batch.subarray(0, B * w));
    // Once the update has read it, the batch array is idle until the next step: evaluations are read into it. A
    // member's own (sweeps) rather than the shared one, which the next member's step still reads.
    this.idle = this.Xb ?? batch;
    const Yb = this.same ? Xb : this.outPick.pick(batch, w, B, this.scalesOut, this.Yb);
    const stepNo = this.stepNo;
    const lrNow =
      this.lr *
      Math.min(1, (stepNo + 1) / Math.max(1, this.warm)) *
      (stepNo >= this.decayStart ? Math.max(0, (this.totalSteps - stepNo) / Math.max(1, this.totalSteps - this.decayStart)) : 1);
    const spNow = this.sparsity * Math.min(1, (stepNo + 1) / Math.max(1, this.sparsityWarm));
    let dead: Uint8Array | undefined;
    if (ACTIVATIONS[cfg.activation].auxk) {
      dead = new Uint8Array(cfg.dSae);
      for (let i = 0; i < cfg.dSae; i++) dead[i] = sinceFired[i] >= this.deadWindow ? 1 : 0;
    }
    const opts = { sparsity: spNow, bandwidth: train.jumpreluBandwidth, dead, auxkCoefficient: train.auxkCoefficient, auxkK: this.auxkK };
    const r = engine.step(Xb, Yb, B, opts);
    if (!Number.isFinite(r.loss)) {
      const where = existsSync(join(this.ckptDir, CHECKPOINT_STATE_FILE))
        ? `the last good checkpoint (step ${this.lastCheckpointStep}) is in ${this.ckptDir}; lower --lr and resume with --resume`
        : 'no checkpoint was written yet; lower --lr and start again';
      throw new UserError(`${this.job.members.length > 1 ? `sweep member ${this.spec.name}: ` : ''}the loss became ${r.loss} at step ${stepNo}; ${where}`);
    }
    // Checkpoint here, before the update: these parameters just produced a finite loss, so a checkpoint
    // is always a good state to resume from.
    let rare = false;
    if (stepNo > 0 && stepNo % train.checkpointEvery === 0 && stepNo !== this.lastCheckpointStep) {
      this.saveCheckpoint(drawnBefore);
      rare = true;
    }
    engine.update(lrNow, train.clipGradNorm);
    for (let i = 0; i < cfg.dSae; i++) sinceFired[i] = r.fired[i] > 0 ? 0 : sinceFired[i] + B;
    if (r.minSelected !== undefined) {
      const lr = train.thresholdLr;
      // A group that selected nothing this batch (-1) keeps its threshold.
      this.threshold = r.minSelected.map((m, g) => (m < 0 ? this.threshold[g] : this.thresholdInit ? (1 - lr) * this.threshold[g] + lr * m : m));
      this.thresholdInit = true;
      // The last step sets the inference threshold from the final weights: the batch threshold of the same batch
      // after the update. The EMA (SAELens's rule) averages over the last ~1/lr steps, so a run of a few hundred
      // steps would keep a threshold set by its first weights (docs/fit.md: held-out L0 25 instead of 32 after 100).
      if (stepNo + 1 === this.totalSteps) {
        const last = engine.step(Xb, Yb, B, opts).minSelected!;
        this.threshold = last.map((m, g) => (m < 0 ? this.threshold[g] : m));
      }
    }
    this.stepNo++;
    this.tokens += B;
    this.nextDrawn = drawnBefore + B;
    let resampled = 0;
    if (train.resampleEvery > 0 && this.stepNo % train.resampleEvery === 0 && this.stepNo <= this.resampleUntil) resampled = this.resample();
    this.deadFrac = sinceFired.reduce((a, s) => a + (s >= this.deadWindow ? 1 : 0), 0) / cfg.dSae;
    this.lastLoss = r.loss;
    this.lastL0 = r.l0;
    const rec: Record<string, unknown> = {
      step: this.stepNo,
      tokens: this.tokens,
      loss: r.loss,
      mse: r.mse,
      sparsity_loss: r.sparsityLoss,
      aux_loss: r.auxLoss,
      l0: r.l0,
      lr: lrNow,
      dead_fraction: this.deadFrac,
    };
    if (resampled) rec.resampled = resampled;
    if (this.stepNo % train.evalEvery === 0 || this.stepNo === this.totalSteps) {
      this.lastEval = evaluate(cfg, engine, this.held, this.scalesOut, this.threshold, this.idle);
      rec.eval = this.lastEval;
    }
    if (this.stepNo % 10 === 0 || rec.eval || resampled) this.log(rec);
    if (this.done) this.seconds = (performance.now() - this.t0) / 1000;
    return rare || resampled > 0 || rec.eval !== undefined;
  }

  status(short = false): string {
    const fvu = this.lastEval ? ` fvu ${this.lastEval.fvu.toFixed(4)}` : '';
    if (short) return `${this.stepNo}/${this.totalSteps}${fvu}`;
    return `step ${this.stepNo}/${this.totalSteps} loss ${this.lastLoss.toFixed(4)} l0 ${this.lastL0.toFixed(1)} dead ${(100 * this.deadFrac).toFixed(1)}%${fvu}`;
  }

  /** Writes the finished dictionary (weights, cfg, eval, harvest manifest) and returns its result. */
  finish(): FitResult {
    if (this.finished) return this.finished;
    const { cfg, train, engine, job, spec } = this;
    const { manifest } = job;
    const B = train.batchTokens;
    const evalNow = this.lastEval ?? evaluate(cfg, engine, this.held, this.scalesOut, this.threshold, this.idle);
    const deadFraction = this.sinceFired.reduce((a, s) => a + (s >= this.deadWindow ? 1 : 0), 0) / cfg.dSae;
    // The engine is done: its arrays become the dictionary's (no copy of the weights at the end of the run).
    const final = engine.takeWeights();
    this.disposed = true;
    const weights = foldWeights(final, cfg, this.scalesIn, this.scalesOut, thresholdVector(final, cfg, this.threshold));
    const dictionary = new Dictionary(cfg, weights, {
      model_name: manifest.identity.model.name,
      model_sha256: manifest.identity.model.sha256,
      dataset_path: manifest.identity.corpus.source,
      context_size: manifest.identity.ctx,
      prepend_bos: true,
    });
    const training = {
      backend: this.backend,
      steps: this.stepNo,
      tokens: this.tokens,
      batch_tokens: B,
      lr: this.lr,
      lr_warmup_steps: this.warm,
      lr_decay_fraction: train.lrDecayFraction,
      sparsity_coefficient: this.sparsity,
      sparsity_warmup_steps: this.sparsityWarm,
      dead_window_tokens: this.deadWindow,
      auxk_k: this.auxkK,
      auxk_coefficient: train.auxkCoefficient,
      resample_every: train.resampleEvery,
      anchors: this.anchors ? this.anchors.encoder.length : 0,
      anchor_weight: train.anchorWeight,
      seed: train.seed,
      scales_in: this.scalesIn,
      scales_out: this.scalesOut,
      batch_threshold: this.threshold.length === 1 ? this.threshold[0] : this.threshold,
      exclude_bos: train.excludeBos,
      unit_norm_decoder: train.unitNormDecoder,
      b_dec_init: train.bDecInit,
      eval: evalNow,
      dead_fraction: deadFraction,
      seconds: this.elapsed0 + this.seconds,
      activations: job.actsDir,
      activations_sha256: manifest.identity_sha256,
    };
    writeAtomic(join(spec.out, ACTS_MANIFEST_FILE), readFileSync(join(job.actsDir, MANIFEST_FILE)));
    writeJsonAtomic(join(spec.out, EVAL_FILE), { ...evalNow, dead_fraction_train: deadFraction });
    dictionary.save(spec.out, { training });
    this.dispose();
    const newTokens = this.tokens - (this.state?.tokens ?? 0);
    const seconds = this.seconds || (performance.now() - this.t0) / 1000;
    this.finished = {
      dictionary,
      eval: evalNow,
      steps: this.stepNo,
      tokens: this.tokens,
      seconds,
      tokensPerSecond: newTokens / seconds,
      backend: this.backend,
      deadFraction,
    };
    return this.finished;
  }

  dispose(): void {
    if (this.disposed || !this.engine) return;
    this.disposed = true;
    this.engine.dispose();
  }
}
