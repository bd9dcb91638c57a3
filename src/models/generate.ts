// Text generation with an ONNX language model (full recompute per step: the models here are small,
// and the graph stays cache-free). Greedy at temperature 0, else seeded sampling.
import type * as ort from 'onnxruntime-node';
import type { LoadedModel } from './model.js';
import { makeFeeds, runtimeInputs } from '../onnx/session.js';
import { Rng } from '../util/rng.js';

export interface GenerateOptions {
  /** Forward passes, as llama2.c's -n: the result holds steps + 1 tokens (prompt included) unless stopped. */
  steps: number;
  temperature?: number;
  seed?: number;
  /** Stop when the model emits BOS (llama2.c's convention). */
  stopAtBos?: boolean;
}

/** Logits [ids.length, vocab] of one sequence: a plain session, or an intervened model (intervene/). */
export type LogitsFn = (ids: Int32Array) => Promise<Float32Array>;

export function sessionLogits(model: LoadedModel, session: ort.InferenceSession): LogitsFn {
  const inputs = runtimeInputs(model.proto);
  const outName = model.proto.graph.outputs[0].name;
  return async (ids) => (await session.run(makeFeeds(inputs, ids, 1, ids.length), [outName]))[outName].data as Float32Array;
}

export async function generate(model: LoadedModel, forward: ort.InferenceSession | LogitsFn, prompt: number[], opts: GenerateOptions): Promise<number[]> {
  const ids = [...prompt];
  const rng = new Rng(opts.seed ?? 0);
  const temp = opts.temperature ?? 0;
  const logitsOf = typeof forward === 'function' ? forward : sessionLogits(model, forward);
  while (ids.length < Math.min(opts.steps + 1, model.contextLength)) {
    const logits = await logitsOf(Int32Array.from(ids));
    const V = logits.length / ids.length;
    const last = logits.subarray((ids.length - 1) * V, ids.length * V);
    let next = 0;
    if (temp === 0) {
      for (let v = 1; v < V; v++) if (last[v] > last[next]) next = v;
    } else {
      let max = -Infinity;
      for (const x of last) max = Math.max(max, x);
      const p = Float64Array.from(last, (x) => Math.exp((x - max) / temp));
      let r = rng.next() * p.reduce((a, b) => a + b, 0);
      for (next = 0; next < V - 1 && (r -= p[next]) > 0; next++);
    }
    if ((opts.stopAtBos ?? true) && next === model.tokenizer.bosId) break;
    ids.push(next);
  }
  return ids;
}
