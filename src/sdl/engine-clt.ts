// The Engine for cross-layer transcoders and skip transcoders: native/src/clt.cc where the kernels are built, else
// the TypeScript reference (clt-reference.ts). Parameters live in the compact layout (clt.ts); the trainer sees the
// dense SAELens-orientation form only through weights(), at evaluation and save time.
import type { NativeClt, NativeModule } from '../native/kernels.js';
import { adviseHugePages, nativeThreads, screenSetting } from '../native/kernels.js';
import { denseAbove } from './engine-native.js';
import type { NamedTensor } from '../tensor/safetensors.js';
import { ACTIVATIONS } from './activations.js';
import { cltReferenceForward, cltReferenceStep } from './clt-reference.js';
import { type CltParams, type CltShape, cltFromDense, cltShape, cltToDense, cltTrained, decRow } from './clt.js';
import type { DictConfig, TrainConfig } from './config.js';
import {
  weightsOf,
  type Engine,
  type EngineForward,
  type EngineInit,
  type EngineStepOptions,
  type EngineStepResult,
  type EngineWeights,
} from './engine-types.js';
import { UserError } from '../util/errors.js';

type Name = keyof CltParams;

export class CltEngine implements Engine {
  readonly backend: string;
  private readonly s: CltShape;
  private readonly cfg: DictConfig;
  private readonly train: TrainConfig;
  private readonly nat?: NativeClt;
  private readonly p: CltParams;
  private readonly g: CltParams;
  private readonly m = new Map<Name, Float32Array>();
  private readonly v = new Map<Name, Float32Array>();
  private readonly trainable: Name[];
  private readonly fired: Float32Array;
  private t = 0;

  constructor(mod: NativeModule | undefined, init: EngineInit) {
    const { cfg, train, weights } = init;
    if (init.anchors) throw new UserError('feature anchoring is not available for CLTs and skip transcoders');
    this.cfg = cfg;
    this.train = train;
    this.s = cltShape(cfg);
    const { L, dI, dO, n, skip } = this.s;
    if (mod) {
      this.nat = new mod.Clt({
        L,
        dIn: dI,
        dOut: dO,
        n,
        activation: ACTIVATIONS[cfg.activation].nativeCode,
        k: cfg.k,
        skip,
        threads: nativeThreads(),
        screen: screenSetting(),
      });
      this.backend = `native-${mod.isa}`;
    } else this.backend = 'typescript';
    this.p = cltFromDense(this.s, weights);
    if (ACTIVATIONS[cfg.activation].selection === 'threshold' && !this.p.log_threshold)
      this.p.log_threshold = new Float32Array(L * n).fill(Math.log(train.jumpreluInitThreshold));
    this.trainable = cltTrained(cfg);
    this.g = {
      W_encT: new Float32Array(this.p.W_encT.length),
      b_enc: new Float32Array(this.p.b_enc.length),
      W_dec: new Float32Array(this.p.W_dec.length),
      b_dec: new Float32Array(this.p.b_dec.length),
      ...(this.p.log_threshold ? { log_threshold: new Float32Array(L * n) } : {}),
      ...(skip ? { W_skip: new Float32Array(L * dI * dO) } : {}),
    };
    for (const name of this.trainable) {
      this.m.set(name, new Float32Array(this.p[name]!.length));
      this.v.set(name, new Float32Array(this.p[name]!.length));
    }
    this.fired = new Float32Array(L * n);
    if (mod)
      adviseHugePages(mod, [this.p.W_encT, this.p.W_dec, this.p.W_skip, this.g.W_encT, this.g.W_dec, this.g.W_skip, ...this.m.values(), ...this.v.values()]);
  }

  get adamT(): number {
    return this.t;
  }

  step(X: Float32Array, Y: Float32Array, B: number, o: EngineStepOptions): EngineStepResult {
    const batch = ACTIVATIONS[this.cfg.activation].selection === 'batch';
    const opts = { sparsity: o.sparsity, bandwidth: o.bandwidth, auxkCoefficient: o.auxkCoefficient, auxkK: o.auxkK, dead: o.dead, denseAbove: denseAbove() };
    if (this.nat) {
      const r = this.nat.step(this.p as Required<CltParams>, this.g as Required<CltParams>, X, Y, B, opts, this.fired);
      return { ...r, fired: this.fired, minSelected: batch ? Array.from(r.minSelected) : undefined, dense: r.dense === 1 };
    }
    const r = cltReferenceStep(this.s, this.cfg.activation, this.cfg.k, this.p, this.g, X, Y, B, opts);
    this.fired.set(r.fired);
    return { ...r, fired: this.fired, minSelected: batch ? r.minSelected : undefined };
  }

  update(lr: number, clip: number): void {
    const { train, p, g } = this;
    if (train.unitNormDecoder) this.project();
    let sq = 0;
    for (const n of this.trainable) sq += this.nat ? this.nat.sumSquares(g[n]!) : g[n]!.reduce((a, x) => a + x * x, 0);
    const norm = Math.sqrt(sq);
    const scale = clip > 0 && norm > clip ? clip / norm : 1;
    this.t++;
    const { adamBeta1: b1, adamBeta2: b2, adamEps: eps } = train;
    for (const n of this.trainable) {
      const m = this.m.get(n)!,
        v = this.v.get(n)!;
      if (this.nat) this.nat.adam(p[n]!, g[n]!, m, v, lr, scale, b1, b2, eps, this.t);
      else adamStep(p[n]!, g[n]!, m, v, lr, scale, b1, b2, eps, this.t);
    }
    if (train.unitNormDecoder) this.normalize();
  }

  /** Removes from each decoder row's gradient its component along the row (the unit-norm constraint). */
  private project(): void {
    if (this.nat) {
      this.nat.projectDecoderGrad(this.p.W_dec, this.g.W_dec);
      return;
    }
    for (let j = 0; j < this.s.L * this.s.n; j++) {
      const r = decRow(this.s, j),
        w = this.p.W_dec.subarray(r.off, r.off + r.len),
        gr = this.g.W_dec.subarray(r.off, r.off + r.len);
      let d = 0;
      for (let i = 0; i < r.len; i++) d += gr[i] * w[i];
      for (let i = 0; i < r.len; i++) gr[i] -= d * w[i];
    }
  }

  private normalize(): void {
    if (this.nat) {
      this.nat.normalizeDecoder(this.p.W_dec);
      return;
    }
    for (let j = 0; j < this.s.L * this.s.n; j++) {
      const r = decRow(this.s, j),
        w = this.p.W_dec.subarray(r.off, r.off + r.len);
      const s = 1 / (Math.hypot(...w) + 1e-12);
      for (let i = 0; i < r.len; i++) w[i] *= s;
    }
  }

  /** Per-latent inference thresholds: BatchTopK's per-layer ones spread over the layer, JumpReLU's own. */
  private theta(thresholds: number[]): Float32Array | undefined {
    const { L, n } = this.s;
    const how = ACTIVATIONS[this.cfg.activation].inference;
    if (how === 'per-latent') return Float32Array.from(this.p.log_threshold!, Math.exp);
    if (how === 'global') {
      const t = new Float32Array(L * n);
      for (let l = 0; l < L; l++) t.fill(thresholds[l] ?? thresholds[0] ?? 0, l * n, (l + 1) * n);
      return t;
    }
    return undefined;
  }

  forward(X: Float32Array, rows: number, thresholds: number[], into?: Float32Array): EngineForward {
    const theta = this.theta(thresholds);
    const r = this.nat
      ? this.nat.forward(this.p as Required<CltParams>, X, rows, theta, true)
      : cltReferenceForward(this.s, this.cfg.activation, this.cfg.k, this.p, X, rows, theta);
    const fired = new Float64Array(this.s.L * this.s.n);
    for (const j of r.idx) fired[j]++;
    let yhat = r.yhat!;
    if (into) {
      into.set(yhat);
      yhat = into.subarray(0, yhat.length);
    }
    return { yhat, fired, actives: r.idx.length };
  }

  weights(): EngineWeights {
    const d = cltToDense(this.s, this.p);
    return {
      W_enc: d.W_enc,
      b_enc: this.p.b_enc.slice(),
      W_dec: d.W_dec,
      b_dec: this.p.b_dec.slice(),
      ...(this.p.log_threshold ? { log_threshold: this.p.log_threshold.slice() } : {}),
      ...(d.W_skip ? { W_skip: d.W_skip } : {}),
    };
  }

  /** The dense form is new arrays anyway; the Adam moments are let go. */
  takeWeights(): EngineWeights {
    const w = this.weights();
    this.m.clear();
    this.v.clear();
    return w;
  }

  resample(): void {
    throw new UserError('--resample is not available for CLTs and skip transcoders (AuxK revives their dead latents)');
  }

  saveState(): Record<string, NamedTensor> {
    const { cfg } = this;
    const w = this.weights();
    const t: Record<string, NamedTensor> = {
      W_enc: { data: w.W_enc, shape: [cfg.dIn, cfg.dSae] },
      b_enc: { data: w.b_enc, shape: [cfg.dSae] },
      W_dec: { data: w.W_dec, shape: [cfg.dSae, cfg.dOut] },
      b_dec: { data: w.b_dec, shape: [cfg.dOut] },
    };
    if (w.log_threshold) t.log_threshold = { data: w.log_threshold, shape: [cfg.dSae] };
    if (w.W_skip) t.W_skip = { data: w.W_skip, shape: [cfg.dIn, cfg.dOut] };
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const)
      for (const [n, a] of store) t[`adam_${kind}.${n}`] = { data: a, shape: [a.length] }; // views: written before the next step
    return t;
  }

  loadState(t: Record<string, NamedTensor>, adamT: number): void {
    const p = cltFromDense(this.s, weightsOf(t));
    for (const n of Object.keys(p) as Name[]) this.p[n]?.set(p[n]!);
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const)
      for (const [n, a] of store) {
        const src = t[`adam_${kind}.${n}`];
        if (src) a.set(src.data);
      }
    this.t = adamT;
  }

  dispose(): void {}
}

/** Adam with bias correction on one tensor (the TypeScript path; native/src/engine.cc's adamUpdate is the same rule). */
function adamStep(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  lr: number,
  gs: number,
  b1: number,
  b2: number,
  eps: number,
  t: number,
): void {
  const bc1 = 1 - b1 ** t,
    bc2 = 1 - b2 ** t;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gs;
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] -= (lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + eps);
  }
}
