// sdlkit's native CPU kernels (native/, C++ built by node-gyp at install): a dense GEMM and the SDL training
// step, one binary per instruction set (AVX-512, AVX2+FMA, generic). The generic build tells which of the
// others this processor can run; the fastest one is loaded. When none was built, callers fall back to
// TensorFlow.js and say so (nativeStatus()).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';
import type { ExampleLists } from '../index/examples.js';
import type { CltParams } from '../sdl/clt.js';

export interface NativeTensors {
  W_encT: Float32Array;
  b_enc: Float32Array;
  W_dec?: Float32Array;
  b_dec: Float32Array;
  log_threshold?: Float32Array;
}

/** A step's gradients: W_enc's and W_dec's may be left out for a deferRows step. */
export type NativeGrads = Omit<NativeTensors, 'W_encT'> & { W_encT?: Float32Array };

export interface NativeStepOptions {
  sparsity: number;
  bandwidth: number;
  auxkCoefficient: number;
  auxkK: number;
  dead?: Uint8Array;
  anchorK?: number;
  anchorEnc?: Float32Array;
  anchorDec?: Float32Array;
  anchorWeight?: number;
  denseAbove?: number;
  /** The sparse path's decoder pass a block of latents at a time: 0 (default) where it pays, n > 0 in blocks of n latents always, < 0 never (the same step; for tests). */
  decodeBlock?: number;
  /** The sparse path's gradient rows a block of this many batch rows at a time: 0 (default) where it pays, n > 0 always, < 0 never (the same step; for tests). */
  rowBlock?: number;
  /** ReLU: dL/dact a dot product an entry, apart from the gradient rows, even where both are made in one pass over the dL/dy^ rows (the same step; for tests). */
  dotsApart?: boolean;
  /** BatchTopK/Matryoshka with no threshold yet or after it fell: store the pre-activations instead of taking a floor from the rows' top 2k (the same selection; for tests). */
  storedFallback?: boolean;
  /** Untied TopK family: leave W_enc's and W_dec's gradients unwritten (g may omit them); applyRows makes them again and applies Adam. */
  deferRows?: boolean;
  /** Untied: remove each decoder row's gradient component along the row (the unit-norm constraint) as the step finishes it, before rowsSq and the update. */
  projectDec?: boolean;
  /** Skip rowsSq (no gradient-norm clipping); with deferRows each latent's rows are then made only once, by applyRows. */
  noRowsNorm?: boolean;
}

export interface NativeStepResult {
  loss: number;
  mse: number;
  sparsityLoss: number;
  auxLoss: number;
  anchorLoss: number;
  l0: number;
  /** BatchTopK/Matryoshka: the smallest selected pre-activation; -1 when nothing was selected. */
  minSelected: number;
  /** 1 when the dense (GEMM) path ran. */
  dense: number;
  nnz: number;
  /** 0: selected from stored pre-activations; 1: inside the encoder GEMM; 2: inside it, then recomputed (BatchTopK's floor was too high); 3: inside it, screened in bf16 (TopK, BatchTopK; the same selection as 1); 4: inside it, above a floor from the rows' own top 2k (BatchTopK's first step, or after its threshold fell). */
  selection: number;
  /** Untied: the squared norm of W_enc's and W_dec's gradients, summed over the rows as the step finishes them (decoder rows projected when projectDec); NaN with noRowsNorm, and tied. */
  rowsSq: number;
  /** 1 when the sparse path made dL/dact in the same pass over the dL/dy^ rows as the gradient rows (untied ReLU without AuxK, d_out a multiple of 256 floats with AVX-512, 64 with AVX2, 32 otherwise). */
  dotsFused: number;
  /** Bytes the engine holds after the step in its [B, d_sae] arrays of the stored and dense paths (a sparse ReLU step gives them back, JumpReLU all but its pre-activations): for tests. */
  denseBytes: number;
}

export interface NativeForward {
  /** Active latents per row; the rows' entries follow each other in idx/val. */
  count: Int32Array;
  idx: Int32Array;
  val: Float32Array;
  yhat?: Float32Array;
}

export interface NativeEngineConfig {
  dIn: number;
  dOut: number;
  dSae: number;
  /** 0 relu, 1 topk, 2 batchtopk, 3 jumprelu, 4 matryoshka */
  activation: number;
  k: number;
  widths?: number[];
  applyBDec: boolean;
  noBias: boolean;
  tied: boolean;
  threads: number;
  /** TopK: screen the encoder in bf16 (native/src/screen.h; the same result): 0 never, 1 where faster (default), 2 wherever the processor can. */
  screen?: 0 | 1 | 2;
  /** Give each phase's scratch back once it is over (the encoder's packed W_enc, the gradient's buffers): sdl fit --low-memory. */
  lean?: boolean;
}

/** The optimiser kernels every native engine has (native/src/engine.cc's sumSquares and adamUpdate, on its pool). */
/** Adam's step settings: the gradient is scaled by gscale (clipping) before the update; t counts from 1. */
export type AdamSettings = [lr: number, gscale: number, beta1: number, beta2: number, eps: number, t: number];

export interface NativeOptimiser {
  sumSquares(x: Float32Array): number;
  adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, ...settings: AdamSettings): void;
}

export interface NativeEngine extends NativeOptimiser {
  step(p: NativeTensors, g: NativeGrads, X: Float32Array, Y: Float32Array, B: number, o: NativeStepOptions, fired: Float32Array): NativeStepResult;
  /** `yhat`: true for a new reconstruction array, or an array of at least n x dOut to write it into. */
  /** `into`: arrays to write count, idx and val into where long enough (the result's are then views of them), for a pass over many chunks; see NativeForward. */
  forward(p: NativeTensors, X: Float32Array, n: number, threshold: number, yhat: boolean | Float32Array, into?: Partial<NativeForward>): NativeForward;
  projectDecoderGrad(W: Float32Array, g: Float32Array): void;
  normalizeRows(W: Float32Array, d: number): void;
  /** adam on p's rows of width d, each renormalised to unit norm right after its update (adam then normalizeRows, in one pass). */
  adamUnitRows(...args: [...Parameters<NativeOptimiser['adam']>, d: number]): void;
  /**
   * After a deferRows step: Adam on W_enc's and W_dec's rows with the gradients made again from its entries (scaled by
   * gscale), W_dec's rows renormalised after when `normalize`. X: the array that step was given, unchanged (W_enc's
   * gradient rows read its rows; another array is refused).
   */
  applyRows(
    p: NativeTensors,
    X: Float32Array,
    mEnc: Float32Array,
    vEnc: Float32Array,
    mDec: Float32Array,
    vDec: Float32Array,
    ...settings: [...AdamSettings, normalize: boolean]
  ): void;
}

export interface NativeCltConfig {
  L: number;
  /** Input and output width per layer. */
  dIn: number;
  dOut: number;
  /** Latents per layer. */
  n: number;
  /** 0 relu, 1 topk, 2 batchtopk, 3 jumprelu */
  activation: number;
  k: number;
  skip: boolean;
  threads: number;
  /** As NativeEngineConfig.screen, per layer. */
  screen?: 0 | 1 | 2;
}

export type NativeCltTensors = CltParams;

export interface NativeClt extends NativeOptimiser {
  step(
    p: NativeCltTensors,
    g: NativeCltTensors,
    X: Float32Array,
    Y: Float32Array,
    B: number,
    o: { sparsity: number; bandwidth: number; auxkCoefficient: number; auxkK: number; dead?: Uint8Array; denseAbove?: number; storedFallback?: boolean },
    fired: Float32Array,
  ): { loss: number; mse: number; sparsityLoss: number; auxLoss: number; l0: number; nnz: number; dense: number; selection: number; minSelected: Float32Array };
  /** `into`: as NativeEngine.forward's. */
  forward(p: NativeCltTensors, X: Float32Array, n: number, theta: Float32Array | undefined, wantYhat: boolean, into?: Partial<NativeForward>): NativeForward;
  projectDecoderGrad(W: Float32Array, g: Float32Array): void;
  normalizeDecoder(W: Float32Array): void;
}

export interface IndexStatsResult {
  count: Float64Array;
  sum: Float64Array;
  max: Float32Array;
  hist: Uint32Array;
  /** Per (token, feature), [vocab, m, 2]: firings, then summed activation (empty where tokens are not kept). */
  tok: Float32Array;
  /** Firings per (feature, quantile band), [m * bands] (empty without quantile sampling). */
  qSeen: Int32Array;
  /** Each feature's top examples, strongest first. */
  examples: ExampleLists;
  /** Each feature's quantile examples, band by band, strongest first within a band. */
  quantiles: ExampleLists;
}

export interface IndexStatsConfig {
  m: number;
  vocab: number;
  topK: number;
  radius: number;
  /** Each feature's most co-occurring features to find (0: none). */
  cooccurrence: number;
  /** The most latent ids kept for co-occurrence, in whole rows (default COOCCURRENCE_MAX_ENTRIES); rows past it go uncounted. */
  cooccurrenceMaxEntries?: number;
  /** Native only: the most rows-by-feature entries grouped at once while counting co-occurrence (default 2^25, 128 MB); tests make it small. */
  cooccurrenceBlock?: number;
  edges: Float32Array;
  /** Quantile examples kept per (feature, band), by reservoir sampling (0: none). */
  perBand: number;
  /** The edges between quantile bands (index/quantiles.ts INNER_EDGES). */
  bandEdges: Float64Array;
  /** Native only: threads, each owning a range of latents. */
  threads?: number;
}

export interface IndexStatsLike {
  /** One chunk's sparse activations (rows' entries from start[r], latents increasing) and each row's token, window, document and position. */
  add(start: Int32Array, idx: Int32Array, val: Float32Array, token: Int32Array, window: Int32Array, doc: Int32Array, pos: Int32Array): void;
  /** The accumulators and example lists, moved out: once, at the end. */
  result(): IndexStatsResult;
  /** Each feature's most co-occurring features: once, at the end (the rows kept for it are released). */
  cooccurrence(): Cooccurrence;
}

/** The rows kept for co-occurrence: 2^28 latent ids, 1 GiB (and as much again while they are grouped by feature). */
export const COOCCURRENCE_MAX_ENTRIES = 2 ** 28;

/**
 * Each feature's n features that fire with it on the most rows, over the first `tokens` rows (all of them unless the
 * entries kept reached their cap): [m, n] ids, most first (ties: the lower id), -1 past the last, and their counts.
 */
export interface Cooccurrence {
  n: number;
  other: Int32Array;
  count: Uint32Array;
  tokens: number;
}

/** One step of the absorption probes' gradient: logits L [n, C], bias b, positives, class weights, labels y [n] -> G [n, C], gb += (analysis/absorption.ts). */
export type ProbeGradient = (
  L: Float32Array,
  b: Float64Array,
  pos: Float64Array,
  wPos: Float64Array,
  wNeg: Float64Array,
  y: Int32Array,
  G: Float32Array,
  gb: Float64Array,
) => void;

export interface NativeBpe {
  /** The ids of well-formed text, no BOS; `prefix`: the dummy-prefix space before a non-empty text. */
  encode(text: string, prefix: boolean): Int32Array;
}

export interface NativeModule {
  isa: 'avx512' | 'avx2' | 'generic';
  /** This build and processor can screen the TopK encoder in bf16 (AVX512_BF16). */
  bf16Screen: boolean;
  Engine: new (cfg: NativeEngineConfig) => NativeEngine;
  Clt: new (cfg: NativeCltConfig) => NativeClt;
  IndexStats: new (cfg: IndexStatsConfig) => IndexStatsLike;
  /** llama2.c's tokenizer word by word (native/src/bpe.cc; Llama2cTokenizer.encode in models/tokenizer.ts is the reference). */
  Bpe: new (
    vocab: string[],
    scores: Float32Array,
  ) => NativeBpe;
  gemm(
    M: number,
    N: number,
    K: number,
    A: Float32Array,
    ars: number,
    acs: number,
    B: Float32Array,
    brs: number,
    bcs: number,
    C: Float32Array,
    ldc: number,
    accumulate: boolean,
    threads: number,
  ): void;
  /** Each unit row's n nearest other rows by cosine, [m, n] (-1 past the last): index/neighbors.ts's reference, natively. */
  nearestRows(unit: Float32Array, m: number, d: number, n: number, threads: number): { other: Int32Array; cosine: Float32Array };
  /** Each row's n largest values (of -C when negated), [rows, n] ids (-1 past the last) and values: index/select.ts topIndices(row, n, true), natively. */
  rowsLargest(C: Float32Array, rows: number, cols: number, n: number, negate: boolean, threads: number): { index: Int32Array; value: Float32Array };
  /** One step of the absorption probes' gradient (analysis/absorption.ts probeGradient is the reference): writes G, adds to gb. */
  probeGradient: ProbeGradient;
  /** Example contexts as the index's JSON text (index/context-text.ts is the reference): text, where each ends, and the rows left to TypeScript. */
  contextTexts(
    ctxTok: Int32Array,
    ctxAct: Float32Array,
    ctxLen: Int32Array,
    width: number,
    slots: Int32Array,
  ): { text: string; ends: Int32Array; exotic: Uint8Array };
  cpuFeatures(): { avx512: boolean; avx2: boolean; fma: boolean };
  /** GFLOP/s of float32 FMA and of the bf16 dot product in registers on `threads` threads at once, ~`seconds` each (0 where the processor lacks one): the instructions' own ceiling, for the benchmarks. */
  instructionPeak(threads: number, seconds: number): { fp32: number; bf16: number };
  /**
   * The fused encoder's column-chunk budget in bytes of packed W_enc (native/src/gemm.h), set when `bytes` is given;
   * returns the value before. A process-wide tuning knob: tests make chunks small to cross many of them.
   */
  gemmChunkBytes(bytes?: number): number;
  /** Bytes of W_enc's bf16 copy the calling thread keeps between screened encoder calls (0 after a lean engine's): tests. */
  screenCopyBytes(): number;
  /** The most bytes of screened values any pool thread keeps for the calling thread's screened calls (a lean engine's chunk after its step): tests. */
  screenChunkBytes(): number;
  /** CRC-32C of the bytes continuing from `crc` (native/src/checksum.cc; src/util/checksum.ts is the reference). */
  crc32c(bytes: Uint8Array, crc?: number): number;
  /** `bytes` of memory starting on a 4096-byte boundary (O_DIRECT writes need it; JavaScript cannot ask for it). */
  alignedBuffer(bytes: number): ArrayBuffer;
  /** glibc: large blocks returned to the system when freed, two malloc arenas (sdl fit --low-memory; native/src/addon.cc). */
  mallocLean(): void;
  /** glibc: freed blocks up to 4 MiB kept in the arenas for reuse, not returned and faulted in again (sdl harvest's forward workers; addon.cc). */
  mallocKeep(): void;
  /** Transparent huge pages over a large array's whole 2 MiB pages (advice: the bytes advised, 0 when refused). */
  adviseHuge(a: Float32Array | Int32Array | Uint32Array | Float64Array): number;
  /** Detaches an ArrayBuffer, freeing its memory now rather than at the next collection (sdl harvest's forward workers; addon.cc); whether it did; absent in builds before it. */
  detach?(buffer: ArrayBuffer): boolean;
  /** float32 -> IEEE half, round to nearest even, into dst's first src.length; returns how many finite values overflowed to infinity (native/src/half.cc; src/util/f16.ts is the reference); absent in builds before it. */
  f32ToF16?(src: Float32Array, dst: Uint16Array): number;
  /** IEEE half -> float32 (exact), into dst's first src.length; absent in builds before it. */
  f16ToF32?(src: Uint16Array, dst: Float32Array): void;
  /** How many entries are NaN or infinite (native/src/finite.cc; src/util/finite.ts is the reference); absent in builds before it. */
  countNonFinite?(a: Float32Array): number;
  /** src copied into dst's first src.length, returning how many entries are NaN or infinite (one pass); absent in builds before it. */
  copyCountNonFinite?(src: Float32Array, dst: Float32Array): number;
  /** The address of the array's first byte modulo 4096 (O_DIRECT from the caller's memory, src/util/fsx.ts); absent in builds before it. */
  pageOffset?(a: ArrayBufferView): number;
  /** src's bytes into dst from byte `offset` (memmove; TypedArray.set is the reference, byte-wise from shared memory at unaligned offsets); returns src.length; absent in builds before it. */
  copyBytes?(dst: Uint8Array, offset: number, src: Uint8Array): number;
}

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const buildDir = join(root, 'native', 'build', 'Release');
let loaded: NativeModule | null | undefined;
let loadedFile: string | undefined;
let status = '';

/** Arrays shorter than this go to the TypeScript reference of an element-wise kernel: the native call's own cost is more than the work. */
export const NATIVE_MIN_LENGTH = 64;

/** The fastest native build this processor can run, or undefined (see nativeStatus()). SDLKIT_NATIVE=off disables it, =generic|avx2|avx512 picks one. */
export function native(): NativeModule | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  const want = process.env.SDLKIT_NATIVE;
  if (want === 'off' || want === '0') {
    status = 'disabled by SDLKIT_NATIVE=off';
    return undefined;
  }
  if (want && !['generic', 'avx2', 'avx512'].includes(want)) {
    status = `not loaded: SDLKIT_NATIVE=${want} is not one of off, generic, avx2, avx512`;
    return undefined;
  }
  const generic = join(buildDir, 'sdlkit_generic.node');
  if (!existsSync(generic)) {
    status = 'not built (npm run build:native builds them and shows why they failed)';
    return undefined;
  }
  try {
    const g = require(generic) as NativeModule;
    const f = g.cpuFeatures();
    let pick: string = f.avx512 ? 'avx512' : f.avx2 && f.fma ? 'avx2' : 'generic';
    if (want && ['generic', 'avx2', 'avx512'].includes(want)) {
      if ((want === 'avx512' && !f.avx512) || (want === 'avx2' && !(f.avx2 && f.fma))) throw new Error(`SDLKIT_NATIVE=${want}, but this processor lacks it`);
      pick = want;
    }
    const file = join(buildDir, `sdlkit_${pick}.node`);
    // An explicit request is kept or refused; the automatic pick says when it had to settle for the generic build.
    if (!existsSync(file) && want) throw new Error(`SDLKIT_NATIVE=${want}, but the ${pick} build is missing (npm run build:native)`);
    loadedFile = existsSync(file) ? file : generic;
    loaded = existsSync(file) ? (require(file) as NativeModule) : g;
    status = existsSync(file) ? `native-${loaded.isa}` : `native-generic (the ${pick} build is missing: npm run build:native)`;
  } catch (e) {
    status = `failed to load: ${(e as Error).message}`;
    loaded = null;
  }
  return loaded ?? undefined;
}

/** The file of the native build loaded (undefined when none is). */
export function nativeFile(): string | undefined {
  return native() ? loadedFile : undefined;
}

/** 'native-avx512' etc. when loaded, else why not. */
export function nativeStatus(): string {
  native();
  return status;
}

/**
 * The engines' `screen` setting: 1 (screen TopK encoders in bf16 at the sizes where it is faster; exact either way),
 * 0 with SDLKIT_SCREEN=0 and 2 (at every size, where the processor has AVX512_BF16) with SDLKIT_SCREEN=2, for
 * comparisons.
 */
export function screenSetting(): 0 | 1 | 2 {
  const v = process.env.SDLKIT_SCREEN;
  if (v === undefined || v === '' || v === '1') return 1;
  if (v === '0' || v === '2') return Number(v) as 0 | 2;
  throw new UserError(`SDLKIT_SCREEN must be 0, 1 or 2, got '${v}'; unset it to screen where it is faster`);
}

/** Worker threads for the native kernels: SDLKIT_THREADS, else the machine's cores (at most 16). */
export function nativeThreads(): number {
  const env = Number(process.env.SDLKIT_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, Math.min(16, availableParallelism()));
}

/** Asks for huge pages under an engine's large arrays (parameters, gradients, Adam moments): the sparse step reads
 * W_dec's and W_enc's rows at random, and with 4 KiB pages each row read costs a TLB miss. Advice only; arrays under
 * 4 MiB are left alone. */
export function adviseHugePages(mod: NativeModule, arrays: Iterable<Float32Array | undefined>): void {
  for (const a of arrays) if (a) mod.adviseHuge(a);
}
