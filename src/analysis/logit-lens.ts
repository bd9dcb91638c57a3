// Logit lens of a feature: its decoder direction read through the model's unembedding (after the final norm's
// scale, where the model has one), i.e. the direct effect of the feature on each token's logit. The model's
// head is found by structure: the node producing the logits (MatMul with a [d, vocab] weight, Gemm with
// transB, or MatMul with a transposed [vocab, d] embedding) and the norm feeding it (Mul by a [d] weight, or
// one of the LayerNormalization ops with its scale input).
import type { LoadedModel } from '../models/model.js';
import { DataType, type TensorProto } from '../onnx/proto.js';
import { GraphIndex } from '../onnx/graph.js';
import { f16ToF32 } from '../util/f16.js';
import { UserError } from '../util/errors.js';

export interface Unembedding {
  /** W_U as [d, vocab], row-major. */
  W_U: Float32Array;
  /** The final norm's per-dimension scale (ones when none was found). */
  scale: Float32Array;
  d: number;
  vocab: number;
  /** What was found, for the user. */
  source: string;
}

function floats(t: TensorProto): Float32Array {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.dataType === DataType.FLOAT) {
    if (t.raw) return new Float32Array(t.raw.buffer.slice(t.raw.byteOffset, t.raw.byteOffset + 4 * n));
    if (t.floatData) return Float32Array.from(t.floatData);
  }
  if (t.dataType === DataType.FLOAT16 && t.raw) {
    const h = new Uint16Array(t.raw.buffer.slice(t.raw.byteOffset, t.raw.byteOffset + 2 * n));
    return f16ToF32(h);
  }
  throw new UserError(`tensor ${t.name} is stored as ${t.external ? 'external data' : `type ${t.dataType}`}, which the logit lens cannot read`);
}

const NORMS: Record<string, number> = {
  LayerNormalization: 1,
  SimplifiedLayerNormalization: 1,
  SkipLayerNormalization: 2,
  SkipSimplifiedLayerNormalization: 2,
};

export function findUnembedding(model: LoadedModel): Unembedding {
  const g = model.proto.graph;
  const ix = new GraphIndex(g);
  const inits = new Map(g.initializers.map((t) => [t.name, t]));
  const logits = g.outputs[0].name;
  const head = ix.producer.get(logits)?.node;
  const none = (why: string) => new UserError(`cannot find ${model.name}'s unembedding for the logit lens: ${why}`);
  if (!head) throw none(`no node produces ${logits}`);
  let W_U: Float32Array, d: number, vocab: number, hidden: string;
  const transposeOf = (t: TensorProto): Float32Array => {
    const [V, D] = t.dims,
      src = floats(t),
      out = new Float32Array(V * D);
    for (let v = 0; v < V; v++) for (let j = 0; j < D; j++) out[j * V + v] = src[v * D + j];
    return out;
  };
  if (head.opType === 'MatMul' && inits.get(head.inputs[1])?.dims.length === 2) {
    const t = inits.get(head.inputs[1])!;
    [d, vocab] = t.dims;
    W_U = floats(t);
    hidden = head.inputs[0];
  } else if (head.opType === 'Gemm' && inits.has(head.inputs[1])) {
    const t = inits.get(head.inputs[1])!;
    if (head.attrs.transB === 1) {
      [vocab, d] = t.dims;
      W_U = transposeOf(t);
    } else {
      [d, vocab] = t.dims;
      W_U = floats(t);
    }
    hidden = head.inputs[0];
  } else if (
    head.opType === 'MatMul' &&
    ix.producer.get(head.inputs[1])?.node.opType === 'Transpose' &&
    inits.has(ix.producer.get(head.inputs[1])!.node.inputs[0])
  ) {
    const t = inits.get(ix.producer.get(head.inputs[1])!.node.inputs[0])!;
    [vocab, d] = t.dims;
    W_U = transposeOf(t);
    hidden = head.inputs[0];
  } else throw none(`its logits come from a ${head.opType} node sdlkit does not read as an unembedding`);
  let scale: Float32Array = new Float32Array(d).fill(1),
    source: string = `${head.opType} ${head.name || head.outputs[0]}`;
  const norm = ix.producer.get(hidden)?.node;
  if (norm?.opType === 'Mul') {
    const s = norm.inputs.map((i) => inits.get(i)).find((t) => t && t.dims.length === 1 && t.dims[0] === d);
    if (s) {
      scale = floats(s);
      source += ` after the norm scale ${s.name}`;
    }
  } else if (norm && NORMS[norm.opType] !== undefined && inits.has(norm.inputs[NORMS[norm.opType]])) {
    const s = inits.get(norm.inputs[NORMS[norm.opType]])!;
    scale = floats(s);
    source += ` after ${norm.opType} scale ${s.name}`;
  }
  return { W_U, scale, d, vocab, source };
}

/** The direct logit effect of a direction [d]: (direction * scale) W_U, one value per vocabulary entry. */
export function logitEffect(u: Unembedding, direction: Float32Array): Float32Array {
  if (direction.length !== u.d) throw new UserError(`a direction of width ${direction.length} cannot be read through an unembedding of width ${u.d}`);
  const out = new Float32Array(u.vocab);
  for (let j = 0; j < u.d; j++) {
    const a = direction[j] * u.scale[j];
    if (a === 0) continue;
    const row = u.W_U.subarray(j * u.vocab, (j + 1) * u.vocab);
    for (let v = 0; v < u.vocab; v++) out[v] += a * row[v];
  }
  return out;
}

export interface LensEntry {
  token: number;
  effect: number;
}

/** The `n` tokens whose logits a direction raises most and lowers most. */
export function logitLens(u: Unembedding, direction: Float32Array, n = 10): { positive: LensEntry[]; negative: LensEntry[] } {
  const e = logitEffect(u, direction);
  const order = Array.from(e.keys()).sort((a, b) => e[b] - e[a]);
  const entry = (token: number) => ({ token, effect: e[token] });
  return { positive: order.slice(0, n).map(entry), negative: order.slice(-n).reverse().map(entry) };
}
