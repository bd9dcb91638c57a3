// The Engine on sdlkit's native kernels. Weights live in Float32Arrays shared with C++ without copies;
// the encoder is stored latent-major (W_encT [dSae, dIn]) so every latent owns a contiguous row in both
// matrices, and is transposed to SAELens orientation only at the boundary (weights(), checkpoints).
import type { NativeEngine, NativeGrads, NativeModule, NativeTensors } from '../native/kernels.js';
import { adviseHugePages, nativeThreads, screenSetting } from '../native/kernels.js';
import type { DictConfig, TrainConfig } from './config.js';
import type { NamedTensor, TensorSource } from '../tensor/safetensors.js';
import { concatRows, transpose } from '../tensor/linalg.js';
import type { Engine, EngineForward, EngineInit, EngineStepOptions, EngineStepResult, EngineWeights } from './engine-types.js';
import { ACTIVATIONS } from './activations.js';
import { UserError } from '../util/errors.js';
import { leanMemory } from './engine.js';

type Name = 'W_encT' | 'b_enc' | 'W_dec' | 'b_dec' | 'log_threshold';

export class NativeTrainEngine implements Engine {
  readonly backend: string;
  private readonly e: NativeEngine;
  private readonly cfg: DictConfig;
  private readonly train: TrainConfig;
  private readonly p: NativeTensors;
  private readonly g: NativeGrads;
  /** train.lowMemory (untied TopK family): W_enc's and W_dec's gradients are never stored; the step keeps its entries
   * and the update makes each latent's gradient rows again and applies Adam to them in cache (native applyRows). */
  private readonly deferRows: boolean;
  private rowsSq = 0;
  /** deferRows: the last step's input, whose rows the update reads again (the trainer leaves it unchanged between). */
  private stepX?: Float32Array;
  private readonly m = new Map<Name, Float32Array>();
  private readonly v = new Map<Name, Float32Array>();
  private readonly trainable: Name[];
  private readonly fired: Float32Array;
  private readonly anchorOpts: { anchorK: number; anchorEnc?: Float32Array; anchorDec?: Float32Array; anchorWeight?: number };
  private t = 0;
  private spent = false;

  constructor(mod: NativeModule, init: EngineInit) {
    const { cfg, train, weights: w, anchors } = init;
    this.cfg = cfg;
    this.train = train;
    this.backend = `native-${mod.isa}`;
    // --low-memory: the encoder's and the gradient's scratch given back between phases (native Config::lean).
    this.e = new mod.Engine({ ...nativeEngineOptions(cfg, nativeThreads()), lean: Boolean(train.lowMemory) });
    const W_encT = transpose(w.W_enc, cfg.dIn, cfg.dSae);
    this.p = {
      W_encT,
      b_enc: Float32Array.from(w.b_enc),
      W_dec: cfg.tied ? W_encT : init.handOver ? w.W_dec : Float32Array.from(w.W_dec),
      b_dec: Float32Array.from(w.b_dec),
    };
    if (ACTIVATIONS[cfg.activation].selection === 'threshold')
      this.p.log_threshold = w.log_threshold ? Float32Array.from(w.log_threshold) : new Float32Array(cfg.dSae).fill(Math.log(train.jumpreluInitThreshold));
    const sel = ACTIVATIONS[cfg.activation].selection;
    this.deferRows = Boolean(train.lowMemory) && !cfg.tied && (sel === 'topk' || sel === 'batch');
    if (train.lowMemory) leanMemory();
    this.g = {
      W_encT: this.deferRows ? undefined : new Float32Array(W_encT.length),
      b_enc: new Float32Array(cfg.dSae),
      W_dec: cfg.tied || this.deferRows ? undefined : new Float32Array(cfg.dSae * cfg.dOut),
      b_dec: new Float32Array(cfg.dOut),
    };
    if (this.p.log_threshold) this.g.log_threshold = new Float32Array(cfg.dSae);
    this.trainable = [
      'W_encT',
      ...(cfg.tied ? [] : ['W_dec' as const]),
      ...(cfg.noBias ? [] : ['b_enc' as const, 'b_dec' as const]),
      ...(this.p.log_threshold ? ['log_threshold' as const] : []),
    ];
    for (const n of this.trainable) {
      // A handed-over W_enc, once transposed, is an array of the right size nothing else holds: W_encT's first moment.
      this.m.set(n, n === 'W_encT' && init.handOver ? w.W_enc.fill(0) : new Float32Array(this.p[n]!.length));
      this.v.set(n, new Float32Array(this.p[n]!.length));
    }
    this.fired = new Float32Array(cfg.dSae);
    adviseHugePages(mod, [this.p.W_encT, this.p.W_dec, this.g.W_encT, this.g.W_dec, ...this.m.values(), ...this.v.values()]);
    this.anchorOpts = anchors
      ? {
          anchorK: anchors.encoder.length,
          anchorEnc: concatRows(anchors.encoder, cfg.dIn),
          anchorDec: concatRows(anchors.decoder, cfg.dOut),
          anchorWeight: anchors.weight,
        }
      : { anchorK: 0 };
  }

  get adamT(): number {
    return this.t;
  }

  step(X: Float32Array, Y: Float32Array, B: number, o: EngineStepOptions): EngineStepResult {
    this.live();
    // Without clipping the update needs no gradient norm, and the deferred rows are made once (in the update). Untied,
    // the step projects W_dec's gradient rows and sums both weights' gradient norms as it finishes each latent's rows
    // (in cache), kept or deferred alike: the update makes no pass over those gradients for either.
    const noRowsNorm = !(this.train.clipGradNorm > 0);
    const rows = this.cfg.tied ? {} : { deferRows: this.deferRows, projectDec: this.train.unitNormDecoder, noRowsNorm };
    const r = this.e.step(this.p, this.g, X, Y, B, { ...o, ...this.anchorOpts, ...rows, denseAbove: denseAbove(this.cfg) }, this.fired);
    this.rowsSq = r.rowsSq;
    if (this.deferRows) this.stepX = X;
    const batchTop = ACTIVATIONS[this.cfg.activation].selection === 'batch';
    return {
      loss: r.loss,
      mse: r.mse,
      sparsityLoss: r.sparsityLoss,
      auxLoss: r.auxLoss,
      l0: r.l0,
      fired: this.fired,
      minSelected: batchTop && r.minSelected >= 0 ? [r.minSelected] : undefined,
      dense: r.dense === 1,
    };
  }

  update(lr: number, clip: number): void {
    this.live();
    const { cfg, train, m, v } = this;
    // Untied, the step projected W_dec's gradient and measured both weights' (tied, W_enc^T's one gradient is
    // measured here, unprojected).
    const measured: Name[] = cfg.tied ? [] : ['W_encT', 'W_dec'];
    const rows: Name[] = this.deferRows ? ['W_encT', 'W_dec'] : [];
    const separate = this.trainable.filter((n) => !rows.includes(n));
    if (measured.length && clip > 0 && Number.isNaN(this.rowsSq))
      throw new Error(`update with clip ${clip} after a step without the gradient norm (the engine's train.clipGradNorm is ${train.clipGradNorm})`);
    let sq = measured.length && clip > 0 ? this.rowsSq : 0;
    for (const n of this.trainable) if (!measured.includes(n)) sq += this.e.sumSquares(this.g[n]!);
    const norm = Math.sqrt(sq);
    const scale = clip > 0 && norm > clip ? clip / norm : 1;
    this.t++;
    const { adamBeta1: b1, adamBeta2: b2, adamEps: eps } = train;
    if (this.deferRows)
      this.e.applyRows(
        this.p,
        this.stepX!,
        m.get('W_encT')!,
        v.get('W_encT')!,
        m.get('W_dec')!,
        v.get('W_dec')!,
        lr,
        scale,
        b1,
        b2,
        eps,
        this.t,
        train.unitNormDecoder,
      );
    // The unit-norm decoder's rows are renormalised as each is updated, in cache (applyRows does its own).
    const unit: Name | undefined = train.unitNormDecoder && !this.deferRows ? (cfg.tied ? 'W_encT' : 'W_dec') : undefined;
    for (const n of separate) {
      if (n === unit) this.e.adamUnitRows(this.p[n]!, this.g[n]!, m.get(n)!, v.get(n)!, lr, scale, b1, b2, eps, this.t, cfg.tied ? cfg.dIn : cfg.dOut);
      else this.e.adam(this.p[n]!, this.g[n]!, m.get(n)!, v.get(n)!, lr, scale, b1, b2, eps, this.t);
    }
  }

  forward(X: Float32Array, n: number, batchThresholds: number[], into?: Float32Array): EngineForward {
    this.live();
    const r = this.e.forward(this.p, X, n, batchThresholds[0] ?? 0, into ? into.subarray(0, n * this.cfg.dOut) : true);
    const fired = new Float64Array(this.cfg.dSae);
    for (const j of r.idx) fired[j]++;
    return { yhat: r.yhat!, fired, actives: r.idx.length };
  }

  /** W_enc is transposed into W_encT's first Adam moment, which nothing needs any more; the rest are the live arrays. */
  takeWeights(): EngineWeights {
    const { cfg, p } = this;
    this.live();
    this.spent = true;
    const W_enc = transpose(p.W_encT, cfg.dSae, cfg.dIn, this.m.get('W_encT'));
    this.m.clear();
    this.v.clear();
    return {
      W_enc,
      b_enc: p.b_enc,
      W_dec: cfg.tied ? p.W_encT : p.W_dec!,
      b_dec: p.b_dec,
      ...(p.log_threshold ? { log_threshold: p.log_threshold } : {}),
    };
  }

  /** Refuses every call once takeWeights has handed the arrays over. */
  private live(): void {
    if (this.spent) throw new Error('the native engine gave its weights away (takeWeights); it cannot be used after');
  }

  weights(): EngineWeights {
    const { cfg, p } = this;
    this.live();
    const W_enc = transpose(p.W_encT, cfg.dSae, cfg.dIn);
    return {
      W_enc,
      b_enc: p.b_enc.slice(),
      W_dec: cfg.tied ? p.W_encT.slice() : p.W_dec!.slice(),
      b_dec: p.b_dec.slice(),
      ...(p.log_threshold ? { log_threshold: p.log_threshold.slice() } : {}),
    };
  }

  resample(latents: number[], encoder: Float32Array[], decoder: Float32Array[]): void {
    const { cfg, p } = this;
    this.live();
    latents.forEach((j, i) => {
      p.W_encT.set(encoder[i].subarray(0, cfg.dIn), j * cfg.dIn);
      if (!cfg.tied) p.W_dec!.set(decoder[i].subarray(0, cfg.dOut), j * cfg.dOut);
      p.b_enc[j] = 0;
    });
    for (const store of [this.m, this.v]) {
      for (const [n, a] of store) {
        const width = n === 'W_encT' ? cfg.dIn : n === 'W_dec' ? cfg.dOut : n === 'b_enc' || n === 'log_threshold' ? 1 : 0;
        if (!width) continue;
        for (const j of latents) a.fill(0, j * width, (j + 1) * width);
      }
    }
  }

  /** The parameters and Adam moments as views of the live arrays (W_enc's transposed as written): write before the next step. */
  saveState(): Record<string, TensorSource> {
    const { cfg, p } = this;
    this.live();
    const t: Record<string, TensorSource> = {
      W_enc: { transposeOf: p.W_encT, shape: [cfg.dIn, cfg.dSae] },
      b_enc: { data: p.b_enc, shape: [cfg.dSae] },
      W_dec: { data: cfg.tied ? p.W_encT : p.W_dec!, shape: [cfg.dSae, cfg.dOut] },
      b_dec: { data: p.b_dec, shape: [cfg.dOut] },
    };
    if (p.log_threshold) t.log_threshold = { data: p.log_threshold, shape: [cfg.dSae] };
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      for (const [n, a] of store) {
        if (n === 'W_encT') t[`adam_${kind}.W_enc`] = { transposeOf: a, shape: [cfg.dIn, cfg.dSae] };
        else t[`adam_${kind}.${n}`] = { data: a, shape: n === 'W_dec' ? [cfg.dSae, cfg.dOut] : [a.length] }; // a view: written before the next step
      }
    }
    return t;
  }

  loadState(t: Record<string, NamedTensor>, adamT: number): void {
    const { cfg, p } = this;
    transpose(t.W_enc.data, cfg.dIn, cfg.dSae, p.W_encT);
    p.b_enc.set(t.b_enc.data);
    if (!cfg.tied) p.W_dec!.set(t.W_dec.data);
    p.b_dec.set(t.b_dec.data);
    if (p.log_threshold && t.log_threshold) p.log_threshold.set(t.log_threshold.data);
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      for (const [n, a] of store) {
        const src = t[`adam_${kind}.${n === 'W_encT' ? 'W_enc' : n}`];
        if (!src) continue;
        if (n === 'W_encT') transpose(src.data, cfg.dIn, cfg.dSae, a);
        else a.set(src.data);
      }
    }
    this.t = adamT;
  }

  dispose(): void {}
}

/** The native engine's constructor options for a dictionary config. */
export function nativeEngineOptions(cfg: DictConfig, threads: number) {
  return {
    dIn: cfg.dIn,
    dOut: cfg.dOut,
    dSae: cfg.dSae,
    activation: ACTIVATIONS[cfg.activation].nativeCode,
    k: cfg.k,
    widths: cfg.matryoshkaWidths,
    applyBDec: cfg.applyBDecToInput,
    noBias: cfg.noBias,
    tied: cfg.tied,
    threads,
    screen: screenSetting(),
  };
}

/** ReLU decoders larger than these (bytes) keep their sparse step up to 12.5%, 15% and 16.5% firing (denseAbove). */
const LARGE_DECODER_BYTES = 1 << 20;
const WIDE_DECODER_BYTES = 16 << 20;
const HUGE_DECODER_BYTES = 32 << 20;

/**
 * Fraction of a batch's entries firing above which ReLU/JumpReLU steps use dense GEMMs: SDLKIT_DENSE_ABOVE, else the
 * measured crossover. A ReLU step whose decoder is over 1 MiB stays sparse up to 12.5%, over 16 MiB up to 15%, over
 * 32 MiB up to 16.5%: its sparse step took less than the dense one up to ~13-14% firing at 512 x 4,096 (stops 65-67),
 * ~15.5% at 768 x 6,144 and ~17% at 768 x 24,576 (stop 67, once dL/dact came from the gradient rows' pass), against
 * ~10-11% at 64 x 512 and 128 x 1,024 (docs/BENCHMARKS.md). JumpReLU's sparse step makes a pass more and keeps 0.1, as
 * does the cross-layer engine and a caller with no dictionary (the option check).
 */
export function denseAbove(dict?: Pick<DictConfig, 'activation' | 'dSae' | 'dOut'>): number {
  const raw = process.env.SDLKIT_DENSE_ABOVE;
  if (raw === undefined || raw === '') {
    if (dict?.activation !== 'relu') return 0.1;
    const bytes = dict.dSae * dict.dOut * 4;
    return bytes > HUGE_DECODER_BYTES ? 0.165 : bytes > WIDE_DECODER_BYTES ? 0.15 : bytes > LARGE_DECODER_BYTES ? 0.125 : 0.1;
  }
  const v = Number(raw);
  if (!(v > 0 && v <= 1))
    throw new UserError(
      `SDLKIT_DENSE_ABOVE must be a fraction in (0, 1], got '${raw}'; unset it for the measured default (0.1; for ReLU decoders 0.125 over 1 MiB, 0.15 over 16 MiB, 0.165 over 32 MiB)`,
    );
  return v;
}
