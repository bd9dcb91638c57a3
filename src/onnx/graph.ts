// Read-only views over a decoded ONNX graph: producers, consumers, ancestry, and a summary for `inspect`.
import type { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfo } from './proto.js';

export class GraphIndex {
  readonly producer = new Map<string, { node: NodeProto; index: number; slot: number }>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly initializerNames: Set<string>;
  readonly inputNames: Set<string>;
  readonly nodeIndex = new Map<NodeProto, number>();

  constructor(readonly graph: GraphProto) {
    this.initializerNames = new Set(graph.initializers.map((t) => t.name));
    this.inputNames = new Set(graph.inputs.map((i) => i.name).filter((n) => !this.initializerNames.has(n)));
    graph.nodes.forEach((n, index) => {
      this.nodeIndex.set(n, index);
      n.outputs.forEach((o, slot) => {
        if (o) this.producer.set(o, { node: n, index, slot });
      });
      for (const i of n.inputs) {
        if (!i) continue;
        let list = this.consumers.get(i);
        if (!list) this.consumers.set(i, (list = []));
        list.push(n);
      }
    });
  }

  /** Every tensor name that exists at run time (node outputs and graph inputs). */
  hasTensor(name: string): boolean {
    return this.producer.has(name) || this.inputNames.has(name) || this.initializerNames.has(name);
  }

  /** True when `node` is `target` or lies upstream of it (walks data inputs, bounded by `limit` nodes). */
  isAncestorNode(node: NodeProto, tensor: string, limit = 100000): boolean {
    const seen = new Set<NodeProto>();
    const stack = [tensor];
    while (stack.length && seen.size < limit) {
      const t = stack.pop()!;
      const p = this.producer.get(t);
      if (!p || seen.has(p.node)) continue;
      if (p.node === node) return true;
      seen.add(p.node);
      for (const i of p.node.inputs) if (i && !this.initializerNames.has(i)) stack.push(i);
    }
    return false;
  }

  /** Data inputs of a node (not initializers, not empty). */
  dataInputs(n: NodeProto): string[] {
    return n.inputs.filter((i) => i && !this.initializerNames.has(i));
  }

  opHistogram(): [string, number][] {
    const h = new Map<string, number>();
    for (const n of this.graph.nodes) {
      const k = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}.${n.opType}` : n.opType;
      h.set(k, (h.get(k) ?? 0) + 1);
    }
    return [...h.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  }

  /** Graph inputs that are not initializers (what a caller must feed). */
  runtimeInputs(): ValueInfo[] {
    return this.graph.inputs.filter((i) => !this.initializerNames.has(i.name));
  }
}

/** Names a token-id input goes by. */
export const ID_INPUT = /^(input_ids|ids|tokens|token_ids|input)$|[./]input_ids$/;

/** The token-id input's fixed [batch, seq] dims, where the export fixed them (undefined where dynamic). */
export function staticIdsShape(proto: ModelProto): { batch?: number; seq?: number; input: string } | undefined {
  const inits = new Set(proto.graph.initializers.map((t) => t.name));
  const inp = proto.graph.inputs.find((i) => !inits.has(i.name) && ID_INPUT.test(i.name));
  const shape = inp?.shape;
  if (!inp || !shape || shape.length !== 2) return undefined;
  const fixed = (d: number | string | undefined) => (typeof d === 'number' && d > 0 ? d : undefined);
  const [batch, seq] = [fixed(shape[0]), fixed(shape[1])];
  return batch === undefined && seq === undefined ? undefined : { batch, seq, input: inp.name };
}

/**
 * The token embedding table [vocab, d_model]: the initializer read by the first Gather on one (or by onnxruntime's
 * fused EmbedLayerNormalization). The model's vocabulary size and width both come from it.
 */
export function embeddingTable(proto: ModelProto): TensorProto | undefined {
  const inits = new Map(proto.graph.initializers.map((t) => [t.name, t]));
  for (const n of proto.graph.nodes) {
    const table = n.opType === 'Gather' ? inits.get(n.inputs[0]) : n.opType === 'EmbedLayerNormalization' ? inits.get(n.inputs[2]) : undefined;
    if (table) return table;
  }
  return undefined;
}
