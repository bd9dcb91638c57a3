// Measuring a dictionary inside its model: cross-entropy with the clean model, with the dictionary's
// reconstruction spliced in, and with the site zero-ablated, on held-out text; CE loss recovered
// = (CE_zero - CE_spliced) / (CE_zero - CE_clean), delta LM loss, KL(clean || spliced), FVU and L0.
import { siteHook, type LoadedModel } from '../models/model.js';
import type { HookPoint } from '../onnx/hooks.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { createSession, exposeHooks, makeFeeds, runtimeInputs } from '../onnx/session.js';
import { spliceModel, spliceMany } from '../export/splice.js';
import type * as ort from 'onnxruntime-node';
import { onnxRuntime } from '../onnx/runtime.js';
import { documents } from '../corpus/sources.js';
import { tokenWindows } from '../corpus/windows.js';
import { UserError } from '../util/errors.js';
import { decodeSparse, encodeSparse } from '../sdl/encoder.js';
import { EvalAccumulator, type EvalMetrics } from '../sdl/metrics.js';

export interface SpliceMetrics {
  tokens: number;
  ce_clean: number;
  ce_spliced: number;
  ce_zero_ablation: number;
  ce_loss_recovered: number;
  delta_ce: number;
  kl_spliced: number;
  kl_zero_ablation: number;
  fvu: number;
  l0: number;
  /** SAEBench's core metrics on the same tokens (docs/metrics.md). */
  explained_variance: number;
  cossim: number;
  l2_ratio: number;
  relative_reconstruction_bias: number;
  /** Share of latents that fired on the evaluated tokens. */
  frac_alive: number;
  freq_over_1_percent: number;
  freq_over_10_percent: number;
  /** CLTs: FVU of each layer's MLP output. */
  fvu_by_site?: Record<string, number>;
}

/** Held-out windows of the model's own tokenizer (the first `count` of the heldout split, unshuffled). */
export function evalWindows(model: LoadedModel, count: number, ctx: number, corpus = 'builtin'): Int32Array {
  if (ctx > model.contextLength) throw new UserError(`--ctx ${ctx} exceeds ${model.name}'s context length ${model.contextLength}`);
  // Windows are gathered before the array is made: --windows may ask for more than the corpus holds (refused below
  // with the count it has), and an array of the asked size could be past what the machine can allocate.
  const got: Int32Array[] = [];
  for (const w of tokenWindows(
    documents({ source: corpus, split: corpus === 'builtin' || corpus === 'sotu' || corpus === 'moby-dick' ? 'heldout' : 'all' }),
    model.tokenizer,
    ctx,
  )) {
    got.push(w.ids); // a fresh array each window
    if (got.length === count) break;
  }
  if (got.length < count) throw new UserError(`the corpus gave only ${got.length} windows of ${ctx} tokens; lower --windows or --ctx`);
  const out = new Int32Array(count * ctx);
  got.forEach((ids, i) => out.set(ids, i * ctx));
  return out;
}

export function logSoftmaxRow(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let z = 0;
  for (const v of row) z += Math.exp(v - max);
  const lz = max + Math.log(z);
  return Float64Array.from(row, (v) => v - lz);
}

export async function spliceEval(model: LoadedModel, dict: Dictionary, windows: Int32Array, ctx: number, batch = 8): Promise<SpliceMetrics> {
  const c = dict.cfg;
  if (c.kind !== 'clt' && (c.sitesIn.length !== 1 || c.sitesOut.length !== 1)) return crosscoderEval(model, dict, windows, ctx, batch);
  const hook = (name: string) => {
    const h = siteHook(model, name);
    if (!h) throw new UserError(`${model.name} has no hook ${name}; the dictionary was trained on another model`);
    return h;
  };
  const ins = c.sitesIn.map((s) => hook(s.name)),
    outs = c.sitesOut.map((s) => hook(s.name));
  // One pass splices it: an SAE or transcoder at its site; a CLT at every layer's MLP output at once (layer l's
  // features read the replacement model's own layer-l input, its output sums the features of layers <= l).
  const spliced =
    c.kind === 'clt'
      ? spliceMany(
          model.bytes,
          outs.map((h, l) => ({ target: h.tensor, rep: { kind: 'clt-layer' as const, dict, layer: l, input: ins[l].tensor } })),
        )
      : spliceModel(model.bytes, model.proto, outs[0].tensor, { kind: 'dictionary', dict, input: ins[0].tensor });
  return onePassEval(model, dict, windows, ctx, batch, ins, outs, spliced);
}

/**
 * CE of the clean model, of `splicedBytes` and of the model with every output site zeroed, on the same windows; FVU and
 * the other reconstruction metrics on the clean pass's inputs and outputs (position 0 excluded, as in training).
 */
async function onePassEval(
  model: LoadedModel,
  dict: Dictionary,
  windows: Int32Array,
  ctx: number,
  batch: number,
  ins: HookPoint[],
  outs: HookPoint[],
  splicedBytes: Uint8Array,
): Promise<SpliceMetrics> {
  const c = dict.cfg;
  const logitsName = model.proto.graph.outputs[0].name;
  const clean = await createSession(exposeHooks(model.bytes, [...ins, ...outs], new Set(model.proto.graph.outputs.map((o) => o.name))));
  const spliced = await createSession(splicedBytes);
  const zero = await createSession(
    spliceMany(
      model.bytes,
      outs.map((h) => ({ target: h.tensor, rep: { kind: 'zero' as const } })),
    ),
  );
  const inputs = runtimeInputs(model.proto);
  const n = windows.length / ctx;
  const acc = new CeAccumulator(3);
  const quality = new EvalAccumulator(c.sitesOut, c.dSae);
  for (let b0 = 0; b0 < n; b0 += batch) {
    const B = Math.min(batch, n - b0);
    const ids = windows.subarray(b0 * ctx, (b0 + B) * ctx);
    const feeds = makeFeeds(inputs, ids, B, ctx);
    const [rc, rs, rz] = (await Promise.all([
      clean.run(feeds),
      spliced.run(feeds, [logitsName]),
      zero.run(feeds, [logitsName]),
    ])) as ort.InferenceSession.OnnxValueMapType[];
    acc.add(ids, B, ctx, rc[logitsName].data as Float32Array, rs[logitsName].data as Float32Array, rz[logitsName].data as Float32Array);
    const x = interleave(
      ins.map((h) => rc[h.tensor].data as Float32Array),
      c.sitesIn,
      B * ctx,
    );
    const y = interleave(
      outs.map((h) => rc[h.tensor].data as Float32Array),
      c.sitesOut,
      B * ctx,
    );
    for (let b = 0; b < B; b++) {
      const from = b * ctx + 1,
        to = (b + 1) * ctx;
      const xs = x.subarray(from * c.dIn, to * c.dIn);
      const f = encodeSparse(dict, xs, ctx - 1);
      quality.add(y.subarray(from * c.dOut, to * c.dOut), decodeSparse(dict, f, xs), ctx - 1, firingCounts(f.idx, c.dSae), f.idx.length);
    }
  }
  await Promise.all([clean.release(), spliced.release(), zero.release()]);
  const r = quality.result();
  return { ...summarize(acc, r), ...(c.sitesOut.length > 1 ? { fvu_by_site: r.fvuBySite } : {}) };
}

/** Per-latent firing counts of a chunk's sparse codes. */
function firingCounts(idx: ArrayLike<number>, dSae: number): Uint32Array {
  const counts = new Uint32Array(dSae);
  for (let q = 0; q < idx.length; q++) counts[idx[q]]++;
  return counts;
}

function summarize(acc: CeAccumulator, r: EvalMetrics): SpliceMetrics {
  const [ceC, ceS, ceZ] = acc.ce.map((v) => v / acc.preds);
  return {
    tokens: acc.preds,
    ce_clean: ceC,
    ce_spliced: ceS,
    ce_zero_ablation: ceZ,
    ce_loss_recovered: (ceZ - ceS) / (ceZ - ceC),
    delta_ce: ceS - ceC,
    kl_spliced: acc.kl[0] / acc.preds,
    kl_zero_ablation: acc.kl[1] / acc.preds,
    fvu: r.fvu,
    l0: r.l0,
    explained_variance: r.explainedVariance,
    cossim: r.cossim,
    l2_ratio: r.l2Ratio,
    relative_reconstruction_bias: r.relativeReconstructionBias,
    frac_alive: 1 - r.deadOnEval / Math.max(1, r.density.counts.reduce((a, b) => a + b, 0) + r.density.never),
    freq_over_1_percent: r.densityStats.over1Percent,
    freq_over_10_percent: r.densityStats.over10Percent,
  };
}

/**
 * CE of each variant's predictions at every position but the last, and KL(clean || variant) for every variant
 * after the first (the clean model), accumulated over batches. Shared by eval, ablate and steer.
 */
export class CeAccumulator {
  readonly ce: number[];
  readonly kl: number[];
  preds = 0;
  constructor(variants: number) {
    this.ce = new Array(variants).fill(0);
    this.kl = new Array(variants - 1).fill(0);
  }
  add(ids: Int32Array, B: number, ctx: number, ...logits: Float32Array[]): void {
    const V = logits[0].length / (B * ctx);
    for (let b = 0; b < B; b++)
      for (let t = 0; t + 1 < ctx; t++) {
        const o = (b * ctx + t) * V;
        const p = logits.map((L) => logSoftmaxRow(L.subarray(o, o + V)));
        const y = ids[b * ctx + t + 1];
        p.forEach((q, i) => (this.ce[i] -= q[y]));
        for (let v = 0; v < V; v++) {
          const pc = Math.exp(p[0][v]);
          for (let i = 1; i < p.length; i++) this.kl[i - 1] += pc * (p[0][v] - p[i][v]);
        }
        this.preds++;
      }
  }
}

/**
 * Crosscoders read every site at once, later layers included, so no single forward pass can splice them:
 * two stages. The clean pass gives every site; the crosscoder reconstructs all of them from those clean values
 * (position 0 kept); the model then runs with every site replaced by its reconstruction (or by zeros).
 */
async function crosscoderEval(model: LoadedModel, dict: Dictionary, windows: Int32Array, ctx: number, batch: number): Promise<SpliceMetrics> {
  const c = dict.cfg;
  const hooks = c.sitesIn.map((s) => {
    const h = siteHook(model, s.name);
    if (!h) throw new UserError(`${model.name} has no hook ${s.name}; the dictionary was trained on another model`);
    return h;
  });
  const logitsName = model.proto.graph.outputs[0].name;
  const clean = await createSession(exposeHooks(model.bytes, hooks, new Set(model.proto.graph.outputs.map((o) => o.name))));
  const names = hooks.map((_, i) => `sdlkit_replacement_${i}`);
  const spliced = await createSession(
    spliceMany(
      model.bytes,
      hooks.map((h, i) => ({ target: h.tensor, rep: { kind: 'input' as const, name: names[i], width: c.sitesIn[i].width } })),
    ),
  );
  const zero = await createSession(
    spliceMany(
      model.bytes,
      hooks.map((h) => ({ target: h.tensor, rep: { kind: 'zero' as const } })),
    ),
  );
  const inputs = runtimeInputs(model.proto);
  const acc = new CeAccumulator(3);
  const n = windows.length / ctx;
  const quality = new EvalAccumulator(c.sitesIn, c.dSae);
  for (let b0 = 0; b0 < n; b0 += batch) {
    const B = Math.min(batch, n - b0);
    const ids = windows.subarray(b0 * ctx, (b0 + B) * ctx);
    const feeds = makeFeeds(inputs, ids, B, ctx);
    const rc = await clean.run(feeds);
    const sites = hooks.map((h) => rc[h.tensor].data as Float32Array);
    // Concatenate the sites per token, encode and decode, and split back (position 0 unchanged).
    const x = interleave(sites, c.sitesIn, B * ctx);
    const f = encodeSparse(dict, x, B * ctx);
    const rec = decodeSparse(dict, f);
    const repl = c.sitesIn.map((s) => new Float32Array(B * ctx * s.width));
    for (let r = 0; r < B * ctx; r++) {
      const keep = r % ctx === 0;
      let off = 0;
      c.sitesIn.forEach((s, i) => {
        repl[i].set((keep ? x : rec).subarray(r * c.dIn + off, r * c.dIn + off + s.width), r * s.width);
        off += s.width;
      });
    }
    // Reconstruction quality per window, position 0 excluded (as in training and in the single-site path).
    for (let b = 0; b < B; b++) {
      const from = b * ctx + 1,
        to = (b + 1) * ctx;
      const fired = f.idx.subarray(f.start[from], f.start[to]);
      quality.add(x.subarray(from * c.dIn, to * c.dIn), rec.subarray(from * c.dIn, to * c.dIn), ctx - 1, firingCounts(fired, c.dSae), fired.length);
    }
    const extra = Object.fromEntries(names.map((nm, i) => [nm, new (onnxRuntime().Tensor)('float32', repl[i], [B, ctx, c.sitesIn[i].width])]));
    const rs = await spliced.run({ ...feeds, ...extra }, [logitsName]);
    const rz = await zero.run(feeds, [logitsName]);
    acc.add(ids, B, ctx, rc[logitsName].data as Float32Array, rs[logitsName].data as Float32Array, rz[logitsName].data as Float32Array);
  }
  await Promise.all([clean.release(), spliced.release(), zero.release()]);
  return summarize(acc, quality.result());
}

/** Sites [rows, width_i] side by side per row: [rows, sum width_i] (one site: itself). */
function interleave(sites: Float32Array[], widths: { width: number }[], rows: number): Float32Array {
  if (sites.length === 1) return sites[0];
  const d = widths.reduce((a, s) => a + s.width, 0);
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let off = 0;
    widths.forEach((s, i) => {
      out.set(sites[i].subarray(r * s.width, (r + 1) * s.width), r * d + off);
      off += s.width;
    });
  }
  return out;
}
