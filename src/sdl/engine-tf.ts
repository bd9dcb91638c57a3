// The Engine on TensorFlow.js (tfjs-node, wasm or cpu): step.ts's hand-written gradients and adam.ts.
// It is the portable reference; the native kernels are tested against it.
import { tf, type BackendName } from '../tensor/backend.js';
import type { DictConfig, TrainConfig } from './config.js';
import type { NamedTensor } from '../tensor/safetensors.js';
import { step, preacts, inferMask, type Params, type Grads } from './step.js';
import { Adam, normalizeRows, projectDecoderGrad } from './adam.js';
import { concatRows, transpose } from '../tensor/linalg.js';
import type { Engine, EngineForward, EngineInit, EngineStepOptions, EngineStepResult, EngineWeights } from './engine-types.js';
import { ACTIVATIONS } from './activations.js';

export class TfEngine implements Engine {
  private p: Params;
  private readonly adam: Adam;
  private grads?: Grads;
  private readonly cfg: DictConfig;
  private readonly train: TrainConfig;
  private readonly anchors?: { enc: tf.Tensor2D; dec: tf.Tensor2D; k: number; weight: number };

  constructor(
    readonly backend: BackendName,
    init: EngineInit,
  ) {
    const { cfg, train, weights: w, anchors } = init;
    this.cfg = cfg;
    this.train = train;
    const W_enc = tf.tensor2d(w.W_enc, [cfg.dIn, cfg.dSae]);
    this.p = {
      W_enc,
      b_enc: tf.tensor1d(w.b_enc),
      W_dec: cfg.tied ? (tf.transpose(W_enc) as tf.Tensor2D) : tf.tensor2d(w.W_dec, [cfg.dSae, cfg.dOut]),
      b_dec: tf.tensor1d(w.b_dec),
    };
    if (ACTIVATIONS[cfg.activation].selection === 'threshold')
      this.p.log_threshold = w.log_threshold ? tf.tensor1d(w.log_threshold) : (tf.fill([cfg.dSae], Math.log(train.jumpreluInitThreshold)) as tf.Tensor1D);
    this.adam = new Adam(train.adamBeta1, train.adamBeta2, train.adamEps);
    if (anchors) {
      const k = anchors.encoder.length;
      this.anchors = {
        enc: tf.tensor2d(transpose(concatRows(anchors.encoder, cfg.dIn), k, cfg.dIn), [cfg.dIn, k]),
        dec: tf.tensor2d(concatRows(anchors.decoder, cfg.dOut), [k, cfg.dOut]),
        k,
        weight: anchors.weight,
      };
    }
  }

  get adamT(): number {
    return this.adam.t;
  }

  step(Xa: Float32Array, Ya: Float32Array, B: number, o: EngineStepOptions): EngineStepResult {
    const { cfg } = this;
    if (this.grads) tf.dispose(Object.values(this.grads) as tf.Tensor[]);
    const X = tf.tensor2d(Xa.subarray(0, B * cfg.dIn), [B, cfg.dIn]);
    const Y = Ya === Xa ? X : tf.tensor2d(Ya.subarray(0, B * cfg.dOut), [B, cfg.dOut]);
    const dead = o.dead ? Float32Array.from(o.dead) : undefined;
    const r = step(cfg, this.p, X, Y, {
      sparsity: o.sparsity,
      bandwidth: o.bandwidth,
      dead,
      auxkCoefficient: o.auxkCoefficient,
      auxkK: o.auxkK,
      anchors: this.anchors,
    });
    tf.dispose(Y === X ? [X] : [X, Y]);
    this.grads = r.grads;
    return { loss: r.loss, mse: r.mse, sparsityLoss: r.sparsityLoss, auxLoss: r.auxLoss, l0: r.l0, fired: r.fired, minSelected: r.minSelected };
  }

  update(lr: number, clip: number): void {
    const { cfg, train, p } = this;
    const g = this.grads;
    if (!g) return;
    this.grads = undefined;
    if (train.unitNormDecoder && !cfg.tied && g.W_dec) {
      const pg = projectDecoderGrad(p.W_dec, g.W_dec as tf.Tensor2D);
      g.W_dec.dispose();
      g.W_dec = pg;
    }
    const trainable = { ...p };
    if (cfg.tied) delete (trainable as Partial<Params>).W_dec;
    this.adam.update(trainable, g, lr, clip);
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
  }

  forward(Xa: Float32Array, n: number, batchThresholds: number[], into?: Float32Array): EngineForward {
    const { cfg, p } = this;
    const batchThreshold = batchThresholds[0] ?? 0;
    const yhat = into ? into.subarray(0, n * cfg.dOut) : new Float32Array(n * cfg.dOut);
    const fired = new Float64Array(cfg.dSae);
    let actives = 0;
    const chunk = 2048;
    for (let r = 0; r < n; r += chunk) {
      const rows = Math.min(chunk, n - r);
      const X = tf.tensor2d(Xa.subarray(r * cfg.dIn, (r + rows) * cfg.dIn), [rows, cfg.dIn]);
      const [yh, mask] = tf.tidy(() => {
        const { pre } = preacts(cfg, p, X);
        const m = inferMask(cfg, p, pre, batchThreshold);
        return [tf.add(tf.matMul(tf.mul(pre, m), p.W_dec), p.b_dec), m];
      });
      yhat.set(yh.dataSync() as Float32Array, r * cfg.dOut);
      const md = mask.dataSync();
      for (let i = 0; i < md.length; i++)
        if (md[i]) {
          fired[i % cfg.dSae]++;
          actives++;
        }
      tf.dispose([X, yh, mask]);
    }
    return { yhat, fired, actives };
  }

  weights(): EngineWeights {
    const { p } = this;
    const w: EngineWeights = {
      W_enc: p.W_enc.dataSync().slice() as Float32Array,
      b_enc: p.b_enc.dataSync().slice() as Float32Array,
      W_dec: p.W_dec.dataSync().slice() as Float32Array,
      b_dec: p.b_dec.dataSync().slice() as Float32Array,
    };
    if (p.log_threshold) w.log_threshold = p.log_threshold.dataSync().slice() as Float32Array;
    return w;
  }

  takeWeights(): EngineWeights {
    const w = this.weights();
    this.dispose();
    return w;
  }

  resample(latents: number[], encoder: Float32Array[], decoder: Float32Array[]): void {
    const { cfg, p } = this;
    const w = this.weights();
    latents.forEach((i, q) => {
      for (let j = 0; j < cfg.dIn; j++) w.W_enc[j * cfg.dSae + i] = encoder[q][j];
      for (let j = 0; j < cfg.dOut; j++) w.W_dec[i * cfg.dOut + j] = decoder[q][j];
      w.b_enc[i] = 0;
    });
    tf.dispose([p.W_enc, p.W_dec, p.b_enc]);
    p.W_enc = tf.tensor2d(w.W_enc, [cfg.dIn, cfg.dSae]);
    p.W_dec = cfg.tied ? (tf.transpose(p.W_enc) as tf.Tensor2D) : tf.tensor2d(w.W_dec, [cfg.dSae, cfg.dOut]);
    p.b_enc = tf.tensor1d(w.b_enc);
    this.adam.resetLatents(latents, cfg.dSae);
  }

  saveState(): Record<string, NamedTensor> {
    const t: Record<string, NamedTensor> = {};
    for (const [n, v] of Object.entries(this.p)) if (v) t[n] = { data: (v as tf.Tensor).dataSync().slice() as Float32Array, shape: (v as tf.Tensor).shape };
    for (const [kind, store] of [
      ['m', this.adam.m],
      ['v', this.adam.v],
    ] as const)
      for (const [n, v] of store) t[`adam_${kind}.${n}`] = { data: v.dataSync().slice() as Float32Array, shape: v.shape };
    return t;
  }

  loadState(st: Record<string, NamedTensor>, adamT: number): void {
    const { cfg } = this;
    tf.dispose(Object.values(this.p) as tf.Tensor[]);
    const W_enc = tf.tensor2d(st.W_enc.data, [cfg.dIn, cfg.dSae]);
    this.p = {
      W_enc,
      b_enc: tf.tensor1d(st.b_enc.data),
      W_dec: cfg.tied ? (tf.transpose(W_enc) as tf.Tensor2D) : tf.tensor2d(st.W_dec.data, [cfg.dSae, cfg.dOut]),
      b_dec: tf.tensor1d(st.b_dec.data),
    };
    if (st.log_threshold) this.p.log_threshold = tf.tensor1d(st.log_threshold.data);
    for (const [n, t] of Object.entries(st)) {
      const m = /^adam_(m|v)\.(.+)$/.exec(n);
      if (m) (m[1] === 'm' ? this.adam.m : this.adam.v).set(m[2], tf.tensor(t.data, t.shape));
    }
    this.adam.t = adamT;
  }

  dispose(): void {
    if (this.grads) tf.dispose(Object.values(this.grads) as tf.Tensor[]);
    tf.dispose(Object.values(this.p) as tf.Tensor[]);
    this.adam.dispose();
    if (this.anchors) tf.dispose([this.anchors.enc, this.anchors.dec]);
  }
}
