// Splicing a dictionary into a model: the hooked tensor's consumers read the dictionary's reconstruction
// instead (or zeros, for the ablation baseline, or a new graph input, for a two-stage check). The graph is
// rewritten at the byte level: every field is copied verbatim except the consumers' input names, and the new
// nodes go right after the hooked tensor's producer, so the node list stays topologically sorted.
import { Reader, Writer } from '../onnx/protobuf.js';
import { DataType, decodeModel, encodeNode, encodeTensor, encodeValueInfo, graphField, rewriteGraph, type ModelProto } from '../onnx/proto.js';
import { GraphBuilder } from '../onnx/builder.js';
import { GraphIndex } from '../onnx/graph.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { addCltLayerNodes, addDictionaryNodes } from './onnx.js';
import { UserError } from '../util/errors.js';

export type Replacement =
  | { kind: 'dictionary'; dict: Dictionary; input: string }
  /** One layer of a CLT's replacement model: this layer's MLP output from its input and the earlier layers' features. */
  | { kind: 'clt-layer'; dict: Dictionary; layer: number; input: string }
  | { kind: 'zero' }
  | { kind: 'input'; name: string; width: number }
  /** y' = y + shift, one vector [1, width] fed per call: steering by `add` alone (see Intervener.logits). */
  | { kind: 'shift'; name: string; width: number; declareInput: boolean }
  | SteerReplacement;

/**
 * An intervention on the dictionary's features with the error term kept: y' = y + coef W_dec, where
 * coef = clamp_mask * (clamp_value - f(x)) + add / ||W_dec[i]||. `add` moves along unit decoder directions;
 * clamping sets a feature's activation and leaves the rest of the reconstruction and the error untouched
 * (SAELens' clamp with the error term). Ablation is a clamp to 0. The three per-feature inputs are graph
 * inputs [rows, d_sae] (rows 1 to broadcast over tokens, or one row per token), so one session serves
 * readout, steering and ablation. The features come from the dictionary's own nodes reading `input`, or,
 * when the dictionary reads sites the forward pass has not reached yet (crosscoders), from a graph input.
 * `cols` is the slice of the decoder's output that this site receives (crosscoders write several sites).
 */
export interface SteerReplacement {
  kind: 'steer';
  dict: Dictionary;
  input?: string;
  cols: [number, number];
  /** Declare the shared steering inputs (once per model, when several sites are spliced). */
  declareInputs: boolean;
}

/** Names of the intervention graph's extra inputs and outputs. */
export const STEER = {
  add: 'sdlkit_steer_add',
  clampMask: 'sdlkit_steer_clamp_mask',
  clampValue: 'sdlkit_steer_clamp_value',
  /** Graph input of the features (crosscoders) or graph output of the features computed in the graph. */
  features: 'sdlkit_features',
} as const;

export const SPLICED = 'sdlkit/spliced';
const splicedName = (tag: string) => (tag ? `sdlkit/${tag}/spliced` : SPLICED);

/**
 * Replaces tensor `target` ([batch, seq, d]) in the model. Position 0 (BOS) keeps its original value:
 * dictionaries are trained without BOS rows (fit's --exclude-bos default).
 */
export function spliceModel(bytes: Uint8Array, proto: ModelProto, target: string, rep: Replacement, tag = ''): Uint8Array {
  const ix = new GraphIndex(proto.graph);
  const prod = ix.producer.get(target);
  if (!prod) throw new UserError(`tensor ${target} is not produced by a node of the model; it cannot be spliced`);
  // `tag` keeps the names of several splices into one model apart.
  const P = tag ? `sdlkit/${tag}/` : 'sdlkit/';
  const g = new GraphBuilder('splice', P);
  const shape = g.op('Shape', [target]);
  let recon3d: string;
  const extraInputs: { name: string; elemType: number; shape: (number | string)[] }[] = [];
  const extraOutputs: { name: string; elemType: number; shape: (number | string)[] }[] = [];
  if (rep.kind === 'steer') {
    const d = rep.dict,
      m = d.cfg.dSae;
    if (rep.declareInputs) {
      for (const name of [STEER.add, STEER.clampMask, STEER.clampValue]) extraInputs.push({ name, elemType: DataType.FLOAT, shape: ['steer_rows', m] });
      if (!rep.input) extraInputs.push({ name: STEER.features, elemType: DataType.FLOAT, shape: ['tokens', m] });
    }
    let f: string = STEER.features;
    if (rep.input) {
      const x2 = g.op('Reshape', [rep.input, g.i64(`${P}flat_in`, [-1, d.cfg.dIn])]);
      f = g.op('Identity', [addDictionaryNodes(g, d, x2, { prefix: `${P}dict/`, encoderOnly: true }).features], {}, STEER.features);
      extraOutputs.push({ name: STEER.features, elemType: DataType.FLOAT, shape: ['tokens', m] });
    }
    const [c0, c1] = rep.cols,
      w = c1 - c0,
      dOut = d.cfg.dOut;
    const invNorm = new Float32Array(m),
      Wd = new Float32Array(m * w);
    for (let i = 0; i < m; i++) {
      let n2 = 0;
      for (let j = 0; j < dOut; j++) n2 += d.w.W_dec[i * dOut + j] ** 2;
      invNorm[i] = n2 > 0 ? 1 / Math.sqrt(n2) : 0;
      Wd.set(d.w.W_dec.subarray(i * dOut + c0, i * dOut + c1), i * w);
    }
    const clamp = g.op('Mul', [STEER.clampMask, g.op('Sub', [STEER.clampValue, f])]);
    const coef = g.op('Add', [clamp, g.op('Mul', [STEER.add, g.f32(`${P}inv_decoder_norm`, invNorm, [m])])]);
    const delta = g.op('MatMul', [coef, g.f32(`${P}W_dec_site`, Wd, [m, w])]);
    recon3d = g.op('Add', [target, g.op('Reshape', [delta, shape])]);
  } else if (rep.kind === 'clt-layer') {
    const x2 = g.op('Reshape', [rep.input, g.i64(`${P}flat_in`, [-1, rep.dict.cfg.sitesIn[rep.layer].width])]);
    recon3d = g.op('Reshape', [addCltLayerNodes(g, rep.dict, rep.layer, x2, `${P}clt/`), shape]);
  } else if (rep.kind === 'shift') {
    if (rep.declareInput) extraInputs.push({ name: rep.name, elemType: DataType.FLOAT, shape: [1, rep.width] });
    recon3d = g.op('Add', [target, rep.name]);
  } else if (rep.kind === 'zero') recon3d = g.op('Mul', [target, g.scalarF32(0, `${P}zero`)]);
  else if (rep.kind === 'input') {
    recon3d = rep.name;
    extraInputs.push({ name: rep.name, elemType: DataType.FLOAT, shape: ['batch', 'seq', rep.width] });
  } else {
    const d = rep.dict;
    const x2 = g.op('Reshape', [rep.input, g.i64(`${P}flat_in`, [-1, d.cfg.dIn])]);
    const { reconstruction } = addDictionaryNodes(g, d, x2, { prefix: `${P}dict/` });
    recon3d = g.op('Reshape', [reconstruction!, shape]);
  }
  // Keep position 0 as it was.
  const big = g.i64(`${P}big`, [1 << 30]);
  const first = g.op('Slice', [target, g.i64(`${P}s0`, [0]), g.i64(`${P}s1`, [1]), g.i64(`${P}ax1`, [1])]);
  const rest = g.op('Slice', [recon3d, `${P}s1`, big, `${P}ax1`]);
  g.op('Concat', [first, rest], { axis: 1 }, splicedName(tag));
  const newNodes = g.graph.nodes.map((n) => encodeNode(n, new Set(['alpha', 'beta', 'epsilon'])));
  const newInits = g.graph.initializers.map(encodeTensor);

  return rewriteGraph(
    bytes,
    ({ field, raw, nodeIndex }) => {
      if (field !== 1) return raw;
      const node = proto.graph.nodes[nodeIndex];
      const kept = node.inputs.includes(target) ? renameInputs(raw, target, splicedName(tag)) : raw;
      // The new nodes go right after the hooked tensor's producer: the node list stays topologically sorted.
      return nodeIndex === prod.index ? [kept, ...newNodes.map((n) => graphField(1, n))] : kept;
    },
    () => [
      ...newInits.map((t) => graphField(5, t)),
      ...extraInputs.map((i) => graphField(11, encodeValueInfo(i))),
      ...extraOutputs.map((o) => graphField(12, encodeValueInfo(o))),
    ],
  );
}

/** A NodeProto field with input `from` renamed to `to`, every other byte unchanged. */
function renameInputs(field: Uint8Array, from: string, to: string): Uint8Array {
  const outer = new Reader(field);
  outer.tag();
  const body = outer.sub();
  const w = new Writer();
  while (!body.done()) {
    const s = body.pos;
    const t = body.tag();
    if (t.field === 1) {
      const name = body.string();
      w.string(1, name === from ? to : name);
    } else {
      body.skip(t.wire);
      w.raw(body.buf.subarray(s, body.pos));
    }
  }
  return new Writer().bytes(1, w.finish()).finish();
}

/** Several splices into one model (crosscoders: one per site), each with its own names. */
export function spliceMany(bytes: Uint8Array, targets: { target: string; rep: Replacement }[]): Uint8Array {
  let b = bytes;
  targets.forEach(({ target, rep }, i) => {
    b = spliceModel(b, decodeModel(b), target, rep, `s${i}`);
  });
  return b;
}
