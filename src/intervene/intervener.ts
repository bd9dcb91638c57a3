// Running a model with a dictionary's features exposed and intervened on: one spliced ONNX graph (see
// SteerReplacement in export/splice.ts) serves the per-token readout (`sdl run`), steering (`sdl steer`),
// ablation (`sdl ablate`) and the dashboard's live endpoints. With no intervention the graph computes exactly
// the clean model (the added term is 0) and also returns the features and the hooked tensors.
import type * as ort from 'onnxruntime-node';
import { onnxRuntime } from '../onnx/runtime.js';
import { spliceMany, STEER } from '../export/splice.js';
import { appendToGraph } from '../onnx/proto.js';
import { createSession, hookSubgraph, makeFeeds, runtimeInputs } from '../onnx/session.js';
import type { LoadedModel } from '../models/model.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { decodeSparse, densify, encodeSparse, sparsify } from '../sdl/encoder.js';
import type { BoundModel } from './bind.js';
import { UserError } from '../util/errors.js';

/** Feature interventions, applied at every position but the first (BOS, which dictionaries are not trained on). */
export interface Intervention {
  /** feature -> multiple of its unit decoder direction to add (SAELens-style steering). */
  add?: Map<number, number>;
  /** feature -> activation to clamp it to, error term kept (0 = zero-ablation). */
  clamp?: Map<number, number>;
  /** Clamp every feature of each token to these values ([tokens, d_sae]); for exactness checks. */
  clampAll?: Float32Array;
}

export interface ForwardResult {
  batch: number;
  seq: number;
  /** [batch * seq, vocab]. */
  logits: Float32Array;
  vocab: number;
  /** Features at every token, [batch * seq, d_sae] (from the clean activations: the intervention acts after them). */
  features: Float32Array;
  /** The dictionary's input sites concatenated per token, [batch * seq, d_in] (clean values). */
  x: Float32Array;
  /** The sites it writes, concatenated per token, [batch * seq, d_out], before the intervention. */
  y: Float32Array;
}

export class Intervener {
  private constructor(
    readonly model: LoadedModel,
    readonly dict: Dictionary,
    private readonly bound: BoundModel,
    private readonly session: ort.InferenceSession,
    /** Crosscoders read sites the forward pass reaches only later: their features come from a clean pass first. */
    private readonly cleanPass: ort.InferenceSession | undefined,
  ) {}

  /**
   * Steering by `add` alone needs no features: the change at each site is the constant sum of scaled unit decoder
   * rows, so generation runs a lighter graph that adds it (the same splice, y' = y + shift). Built on first use;
   * test/intervene.test.ts holds its logits equal to the full graph's.
   */
  private shiftSession?: Promise<ort.InferenceSession>;
  private shiftNames(): string[] {
    return this.dict.cfg.sitesOut.map((_, i) => `sdlkit_steer_shift_${i}`);
  }

  private shifted(): Promise<ort.InferenceSession> {
    this.shiftSession ??= (async () => {
      const names = this.shiftNames();
      const targets = this.bound.outputs.map((h, i) => ({
        target: h.tensor,
        rep: { kind: 'shift' as const, name: names[i], width: this.dict.cfg.sitesOut[i].width, declareInput: true },
      }));
      return createSession(spliceMany(this.model.bytes, targets));
    })();
    return this.shiftSession;
  }

  /** Per written site, the vector sum_i add_i W_dec[i] / ||W_dec[i]||. */
  shiftVectors(add: Map<number, number>): Float32Array[] {
    const { dSae, dOut, sitesOut } = this.dict.cfg;
    const W = this.dict.w.W_dec;
    const total = new Float32Array(dOut);
    for (const [f, a] of add) {
      if (!Number.isInteger(f) || f < 0 || f >= dSae) throw new UserError(`feature ${f} does not exist: the dictionary has features 0-${dSae - 1}`);
      let n2 = 0;
      for (let j = 0; j < dOut; j++) n2 += W[f * dOut + j] ** 2;
      const s = n2 > 0 ? a / Math.sqrt(n2) : 0;
      for (let j = 0; j < dOut; j++) total[j] += s * W[f * dOut + j];
    }
    let off = 0;
    return sitesOut.map((site) => total.slice(off, (off += site.width)));
  }

  static async create(bound: BoundModel, dict: Dictionary): Promise<Intervener> {
    const { model, inputs, outputs } = bound;
    const c = dict.cfg;
    const inGraph = c.sitesIn.length === 1;
    let col = 0;
    const targets = outputs.map((h, i) => {
      const cols: [number, number] = [col, (col += c.sitesOut[i].width)];
      return { target: h.tensor, rep: { kind: 'steer' as const, dict, input: inGraph ? inputs[0].tensor : undefined, cols, declareInputs: i === 0 } };
    });
    const spliced = spliceMany(model.bytes, targets);
    const expose = [...new Set([...inputs, ...outputs].map((h) => h.tensor))].map((name) => ({ name, elemType: 0 }));
    const session = await createSession(appendToGraph(spliced, { outputs: expose }));
    const cleanPass = inGraph ? undefined : await createSession(hookSubgraph(model.bytes, model.proto, inputs));
    return new Intervener(model, dict, bound, session, cleanPass);
  }

  get logitsName(): string {
    return this.model.proto.graph.outputs[0].name;
  }

  /** The logits alone (generation): the session fetches nothing else; pure `add` steering runs the lighter graph. */
  async logits(ids: Int32Array, iv: Intervention = {}): Promise<Float32Array> {
    if (iv.add?.size && !iv.clamp?.size && !iv.clampAll) {
      const session = await this.shifted();
      const feeds: Record<string, ort.Tensor> = makeFeeds(runtimeInputs(this.model.proto), ids, 1, ids.length);
      const vecs = this.shiftVectors(iv.add);
      this.shiftNames().forEach((n, i) => (feeds[n] = new (onnxRuntime().Tensor)('float32', vecs[i], [1, vecs[i].length])));
      return (await session.run(feeds, [this.logitsName]))[this.logitsName].data as Float32Array;
    }
    return (await this.forward(ids, 1, ids.length, iv, true)).logits;
  }

  /** One forward pass of `batch` windows of `seq` tokens with the intervention applied. */
  async forward(ids: Int32Array, batch: number, seq: number, iv: Intervention = {}, logitsOnly = false): Promise<ForwardResult> {
    const c = this.dict.cfg,
      m = c.dSae,
      N = batch * seq;
    if (seq > this.model.contextLength)
      throw new UserError(`${seq} tokens do not fit ${this.model.name}'s context of ${this.model.contextLength}; shorten the text`);
    const feeds: Record<string, ort.Tensor> = makeFeeds(runtimeInputs(this.model.proto), ids, batch, seq);
    const add = new Float32Array(m),
      mask = new Float32Array(m),
      value = new Float32Array(m);
    const check = (f: number) => {
      if (!Number.isInteger(f) || f < 0 || f >= m) throw new UserError(`feature ${f} does not exist: the dictionary has features 0-${m - 1}`);
    };
    for (const [f, a] of iv.add ?? []) {
      check(f);
      add[f] += a;
    }
    for (const [f, v] of iv.clamp ?? []) {
      check(f);
      mask[f] = 1;
      value[f] = v;
    }
    const row = (a: Float32Array) => new (onnxRuntime().Tensor)('float32', a, [1, m]);
    feeds[STEER.add] = row(add);
    if (iv.clampAll) {
      if (iv.clampAll.length !== N * m) throw new Error(`clampAll holds ${iv.clampAll.length} values, expected ${N * m}`);
      feeds[STEER.clampMask] = new (onnxRuntime().Tensor)('float32', new Float32Array(N * m).fill(1), [N, m]);
      feeds[STEER.clampValue] = new (onnxRuntime().Tensor)('float32', iv.clampAll, [N, m]);
    } else {
      feeds[STEER.clampMask] = row(mask);
      feeds[STEER.clampValue] = row(value);
    }
    let features: Float32Array | undefined;
    let x: Float32Array | undefined;
    if (this.cleanPass && (logitsOnly ? feeds[STEER.clampMask].data.some((v) => v !== 0) : true)) {
      const clean = await this.cleanPass.run(makeFeeds(runtimeInputs(this.model.proto), ids, batch, seq));
      x = this.concatSites(
        clean,
        this.bound.inputs.map((h) => h.tensor),
        c.sitesIn,
        N,
      );
      features = densify(encodeSparse(this.dict, x, N), m);
      feeds[STEER.features] = new (onnxRuntime().Tensor)('float32', features, [N, m]);
    }
    if (this.cleanPass && !features) feeds[STEER.features] = new (onnxRuntime().Tensor)('float32', new Float32Array(N * m), [N, m]);
    if (logitsOnly) {
      const logits = (await this.session.run(feeds, [this.logitsName]))[this.logitsName].data as Float32Array;
      const none = new Float32Array(0);
      return { batch, seq, logits, vocab: logits.length / N, features: none, x: none, y: none };
    }
    const out = await this.session.run(feeds);
    x ??= this.concatSites(
      out,
      this.bound.inputs.map((h) => h.tensor),
      c.sitesIn,
      N,
    );
    features ??= out[STEER.features].data as Float32Array;
    const logits = out[this.logitsName].data as Float32Array;
    return {
      batch,
      seq,
      logits,
      vocab: logits.length / N,
      features,
      x,
      y: this.concatSites(
        out,
        this.bound.outputs.map((h) => h.tensor),
        c.sitesOut,
        N,
      ),
    };
  }

  private concatSites(out: ort.InferenceSession.OnnxValueMapType, tensors: string[], sites: { width: number }[], N: number): Float32Array {
    if (tensors.length === 1) return out[tensors[0]].data as Float32Array;
    const d = sites.reduce((a, s) => a + s.width, 0);
    const x = new Float32Array(N * d);
    let off = 0;
    sites.forEach((s, i) => {
      const v = out[tensors[i]].data as Float32Array;
      for (let r = 0; r < N; r++) x.set(v.subarray(r * s.width, (r + 1) * s.width), r * d + off);
      off += s.width;
    });
    return x;
  }

  /** Per token: ||y - reconstruction||^2 / ||y||^2 (the dictionary's relative error at that token). */
  reconstructionError(r: ForwardResult): Float32Array {
    const { dSae, dOut } = this.dict.cfg;
    const N = r.batch * r.seq;
    const rec = decodeSparse(this.dict, sparsify(r.features, N, dSae));
    const err = new Float32Array(N);
    for (let t = 0; t < N; t++) {
      let e = 0,
        n = 0;
      for (let j = 0; j < dOut; j++) {
        const y = r.y[t * dOut + j];
        e += (y - rec[t * dOut + j]) ** 2;
        n += y * y;
      }
      err[t] = n > 0 ? e / n : 0;
    }
    return err;
  }

  async release(): Promise<void> {
    if (this.shiftSession) await (await this.shiftSession).release();
    await this.session.release();
    await this.cleanPass?.release();
  }
}
