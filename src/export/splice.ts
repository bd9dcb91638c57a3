// Splicing a dictionary into a model: the hooked tensor's consumers read the dictionary's reconstruction
// instead (or zeros, for the ablation baseline, or a new graph input, for a two-stage check). The graph is
// rewritten at the byte level: every field is copied verbatim except the consumers' input names, and the new
// nodes go right after the hooked tensor's producer, so the node list stays topologically sorted.
import { Reader, Writer } from '../onnx/protobuf.js';
import { DataType, decodeModel, encodeNode, encodeTensor, encodeValueInfo, graphField, rewriteGraph, type ModelProto } from '../onnx/proto.js';
import { GraphBuilder } from '../onnx/builder.js';
import { GraphIndex } from '../onnx/graph.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { addDictionaryNodes } from './onnx.js';
import { UserError } from '../util/errors.js';

export type Replacement =
  | { kind: 'dictionary'; dict: Dictionary; input: string }
  | { kind: 'zero' }
  | { kind: 'input'; name: string; width: number };

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
  if (rep.kind === 'zero') recon3d = g.op('Mul', [target, g.scalarF32(0, `${P}zero`)]);
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
    () => [...newInits.map((t) => graphField(5, t)), ...extraInputs.map((i) => graphField(11, encodeValueInfo(i)))],
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
