// Measuring a dictionary inside its model: cross-entropy with the clean model, with the dictionary's
// reconstruction spliced in, and with the site zero-ablated, on held-out text; CE loss recovered
// = (CE_zero - CE_spliced) / (CE_zero - CE_clean), delta LM loss, KL(clean || spliced), FVU and L0.
import type * as ort from 'onnxruntime-node';
import type { LoadedModel } from '../models/model.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { createSession, exposeHooks, makeFeeds } from '../onnx/session.js';
import { spliceModel } from '../export/splice.js';
import { documents } from '../corpus/sources.js';
import { tokenWindows } from '../corpus/windows.js';
import { UserError } from '../util/errors.js';

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
}

/** Held-out windows of the model's own tokenizer (the first `count` of the heldout split, unshuffled). */
export function evalWindows(model: LoadedModel, count: number, ctx: number, corpus = 'builtin'): Int32Array {
  const out = new Int32Array(count * ctx);
  let n = 0;
  for (const w of tokenWindows(documents({ source: corpus, split: corpus === 'builtin' || corpus === 'sotu' || corpus === 'moby-dick' ? 'heldout' : 'all' }), model.tokenizer, ctx)) {
    out.set(w.ids, n * ctx);
    if (++n === count) break;
  }
  if (n < count) throw new UserError(`the corpus gave only ${n} windows of ${ctx} tokens; lower --windows or --ctx`);
  return out;
}

function logSoftmaxRow(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let z = 0;
  for (const v of row) z += Math.exp(v - max);
  const lz = max + Math.log(z);
  return Float64Array.from(row, (v) => v - lz);
}

export async function spliceEval(model: LoadedModel, dict: Dictionary, windows: Int32Array, ctx: number, batch = 8): Promise<SpliceMetrics> {
  const c = dict.cfg;
  if (c.sitesIn.length !== 1 || c.sitesOut.length !== 1) throw new UserError('splice evaluation covers SAEs and transcoders (one input and one output site)');
  const hin = model.hooks.points.get(c.sitesIn[0].name), hout = model.hooks.points.get(c.sitesOut[0].name);
  if (!hin || !hout) throw new UserError(`${model.name} has no hook ${!hin ? c.sitesIn[0].name : c.sitesOut[0].name}; the dictionary was trained on another model`);
  const logitsName = model.proto.graph.outputs[0].name;
  const clean = await createSession(exposeHooks(model.bytes, [hin, hout], new Set(model.proto.graph.outputs.map((o) => o.name))));
  const spliced = await createSession(spliceModel(model.bytes, model.proto, hout.tensor, { kind: 'dictionary', dict, input: hin.tensor }));
  const zero = await createSession(spliceModel(model.bytes, model.proto, hout.tensor, { kind: 'zero' }));
  const inputs = model.proto.graph.inputs.filter((i) => !model.proto.graph.initializers.some((t) => t.name === i.name));
  const n = windows.length / ctx;
  let ceC = 0, ceS = 0, ceZ = 0, klS = 0, klZ = 0, preds = 0;
  let sse = 0, l0 = 0, rows = 0;
  const sumY = new Float64Array(c.dOut), sumY2 = new Float64Array(c.dOut);
  for (let b0 = 0; b0 < n; b0 += batch) {
    const B = Math.min(batch, n - b0);
    const ids = windows.subarray(b0 * ctx, (b0 + B) * ctx);
    const feeds = makeFeeds(inputs, ids, B, ctx);
    const [rc, rs, rz] = await Promise.all([clean.run(feeds), spliced.run(feeds, [logitsName]), zero.run(feeds, [logitsName])]) as ort.InferenceSession.OnnxValueMapType[];
    const Lc = rc[logitsName].data as Float32Array, Ls = rs[logitsName].data as Float32Array, Lz = rz[logitsName].data as Float32Array;
    const V = Lc.length / (B * ctx);
    for (let b = 0; b < B; b++) for (let t = 0; t + 1 < ctx; t++) {
      const o = (b * ctx + t) * V;
      const pc = logSoftmaxRow(Lc.subarray(o, o + V)), ps = logSoftmaxRow(Ls.subarray(o, o + V)), pz = logSoftmaxRow(Lz.subarray(o, o + V));
      const y = ids[b * ctx + t + 1];
      ceC -= pc[y];
      ceS -= ps[y];
      ceZ -= pz[y];
      for (let v = 0; v < V; v++) {
        const p = Math.exp(pc[v]);
        klS += p * (pc[v] - ps[v]);
        klZ += p * (pc[v] - pz[v]);
      }
      preds++;
    }
    // Reconstruction quality on the same tokens (position 0 excluded, as in training).
    const X = rc[hin.tensor].data as Float32Array, Y = rc[hout.tensor].data as Float32Array;
    for (let b = 0; b < B; b++) {
      const x = X.subarray((b * ctx + 1) * c.dIn, (b + 1) * ctx * c.dIn), y = Y.subarray((b * ctx + 1) * c.dOut, (b + 1) * ctx * c.dOut);
      const m = ctx - 1;
      const f = dict.encode(x, m);
      for (const v of f) if (v !== 0) l0++;
      const rec = dict.decode(f, m);
      for (let i = 0; i < rec.length; i++) {
        sse += (y[i] - rec[i]) ** 2;
        sumY[i % c.dOut] += y[i];
        sumY2[i % c.dOut] += y[i] * y[i];
      }
      rows += m;
    }
  }
  let sst = 0;
  for (let j = 0; j < c.dOut; j++) sst += sumY2[j] - (sumY[j] * sumY[j]) / rows;
  await Promise.all([clean.release(), spliced.release(), zero.release()]);
  const r = { ce_clean: ceC / preds, ce_spliced: ceS / preds, ce_zero_ablation: ceZ / preds };
  return {
    tokens: preds, ...r,
    ce_loss_recovered: (r.ce_zero_ablation - r.ce_spliced) / (r.ce_zero_ablation - r.ce_clean),
    delta_ce: r.ce_spliced - r.ce_clean,
    kl_spliced: klS / preds, kl_zero_ablation: klZ / preds, fvu: sse / sst, l0: l0 / rows,
  };
}
