// Hook resolution: where in an arbitrary ONNX graph the TransformerLens hook points
// (blocks.L.hook_resid_pre|attn_out|resid_mid|mlp_in|mlp_out|resid_post) live.
// Three sources, in order of trust: names pinned by sdlkit (Identity nodes), names that torch.onnx
// exporters leave (/layers.N/Add_output_0 ...), and the graph's structure (the chain of residual sums).
import type { NodeProto, ModelProto } from './proto.js';
import { GraphIndex } from './graph.js';

export const SITES = ['resid_pre', 'attn_out', 'resid_mid', 'mlp_in', 'mlp_out', 'resid_post'] as const;
export type Site = (typeof SITES)[number];

export interface HookPoint {
  /** Canonical name, blocks.L.hook_SITE. */
  name: string;
  layer: number;
  site: Site;
  /** The raw tensor to fetch (after `extraNodes` are added to the graph). */
  tensor: string;
  /** How it was found; 'tensor' is a raw tensor name the user gave (layer -1). */
  via: 'sdlkit-name' | 'exporter-name' | 'structure' | 'tensor';
  /** Nodes to add to the graph to materialise this hook (e.g. a bias a fused op folds in). */
  extraNodes?: NodeProto[];
}

export interface HookMap {
  nLayers: number;
  points: Map<string, HookPoint>;
  /** Canonical hooks known not to exist as tensors, with the reason. */
  missing: Map<string, string>;
}

export const canonical = (layer: number, site: string): string => `blocks.${layer}.hook_${site}`;
const CANON = /^blocks\.(\d+)\.hook_(resid_pre|attn_out|resid_mid|mlp_in|mlp_out|resid_post)$/;

export function parseCanonical(name: string): { layer: number; site: Site } | undefined {
  const m = CANON.exec(name);
  return m ? { layer: Number(m[1]), site: m[2] as Site } : undefined;
}

// torch.onnx names for the two residual adds of block N, across the common module paths
// (/layers.N, /model/layers.N, /transformer/h.N, /gpt_neox/layers.N, /model/decoder/layers.N).
const TORCH_RESID = /^\/(?:[\w.]+\/)*(?:layers|h|blocks|layer)\.(\d+)\/Add(_1)?_output_0$/;

interface SumPoint {
  node: NodeProto;
  /** The residual stream operand (the input of the block). */
  resid: string;
  /** The branch operand (attention or MLP output, before any fused bias). */
  branch: string;
  /** Bias the fused op adds to the branch (SkipLayerNormalization's 5th input), if any. */
  bias?: string;
  /** The sum; '' when a fused op does not output it. */
  out: string;
}

/** Looks through Identity nodes, so a pinned name and the tensor it pins compare equal. */
function alias(ix: GraphIndex, t: string): string {
  for (let p = ix.producer.get(t); p && p.node.opType === 'Identity'; p = ix.producer.get(t)) t = p.node.inputs[0];
  return t;
}

function sumPoints(ix: GraphIndex): SumPoint[] {
  const pts: SumPoint[] = [];
  for (const n of ix.graph.nodes) {
    if (n.opType === 'Add' && n.inputs.length === 2) {
      const [a, b] = n.inputs.map((t) => alias(ix, t));
      if (!a || !b || ix.initializerNames.has(a) || ix.initializerNames.has(b)) continue;
      // The residual operand's producer feeds (through the block) the branch operand.
      const pa = ix.producer.get(a)?.node,
        pb = ix.producer.get(b)?.node;
      if (pa && ix.isAncestorNode(pa, b)) pts.push({ node: n, resid: a, branch: b, out: n.outputs[0] });
      else if (pb && ix.isAncestorNode(pb, a)) pts.push({ node: n, resid: b, branch: a, out: n.outputs[0] });
    } else if (/^Skip(Simplified)?LayerNormalization$/.test(n.opType)) {
      const [input, skip] = n.inputs.slice(0, 2).map((t) => alias(ix, t));
      const bias = n.inputs[4] || undefined;
      pts.push({ node: n, resid: skip, branch: input, bias, out: n.outputs[3] ?? '' });
    }
  }
  return pts;
}

/** The longest chain of sum points, each taking the previous one's sum as its residual operand. */
function residualChain(ix: GraphIndex): SumPoint[] {
  const pts = sumPoints(ix);
  const byResid = new Map<string, SumPoint[]>();
  for (const p of pts) {
    const l = byResid.get(p.resid) ?? [];
    l.push(p);
    byResid.set(p.resid, l);
  }
  const memo = new Map<SumPoint, SumPoint[]>();
  const longestFrom = (p: SumPoint): SumPoint[] => {
    const hit = memo.get(p);
    if (hit) return hit;
    let best: SumPoint[] = [];
    if (p.out)
      for (const q of byResid.get(p.out) ?? []) {
        const c = longestFrom(q);
        if (c.length > best.length) best = c;
      }
    const r = [p, ...best];
    memo.set(p, r);
    return r;
  };
  let best: SumPoint[] = [];
  for (const p of pts) {
    const c = longestFrom(p);
    if (c.length > best.length) best = c;
  }
  return best;
}

const MATMUL_OPS = new Set(['MatMul', 'Gemm', 'FusedMatMul', 'MatMulNBits', 'MatMulInteger']);

const ATTENTION_OPS = new Set(['Softmax', 'Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'PackedAttention', 'SparseAttention']);

/** The nodes that compute `tensor`, walking up until `stop` says a node belongs to an earlier stage. */
function branchNodes(ix: GraphIndex, tensor: string, stop: (n: NodeProto) => boolean): Set<NodeProto> {
  const seen = new Set<NodeProto>();
  const stack = [tensor];
  while (stack.length) {
    const p = ix.producer.get(stack.pop()!);
    if (!p || seen.has(p.node) || stop(p.node)) continue;
    seen.add(p.node);
    for (const i of ix.dataInputs(p.node)) stack.push(i);
  }
  return seen;
}

/** The data input of the earliest matmul among `nodes`: the normalised MLP input. */
function firstMatmulInput(ix: GraphIndex, nodes: Set<NodeProto>): string | undefined {
  let first: NodeProto | undefined;
  for (const n of nodes) if (MATMUL_OPS.has(n.opType) && (!first || ix.nodeIndex.get(n)! < ix.nodeIndex.get(first)!)) first = n;
  return first ? ix.dataInputs(first)[0] : undefined;
}

/** The input of the first matmul of the MLP branch: the normalised MLP input. */
function mlpInput(ix: GraphIndex, attnSum: SumPoint, mlpSum: SumPoint): string | undefined {
  return firstMatmulInput(
    ix,
    branchNodes(ix, mlpSum.branch, (n) => n === attnSum.node),
  );
}

/**
 * A parallel block (GPT-NeoX, GPT-J): attention and MLP both read the block's input and their outputs
 * are added together before the residual sum. Returns the two branch tensors and their node sets.
 */
function parallelBranches(
  ix: GraphIndex,
  s: SumPoint,
): { node: NodeProto; branches: { tensor: string; nodes: Set<NodeProto>; attention: boolean }[] } | undefined {
  const p = ix.producer.get(s.branch)?.node;
  if (p?.opType !== 'Add' || p.inputs.length !== 2) return undefined;
  const [a, b] = p.inputs.map((t) => alias(ix, t));
  if (!a || !b || ix.initializerNames.has(a) || ix.initializerNames.has(b)) return undefined;
  const pa = ix.producer.get(a)?.node,
    pb = ix.producer.get(b)?.node;
  if (!pa || !pb || ix.isAncestorNode(pa, b) || ix.isAncestorNode(pb, a)) return undefined;
  // A node belongs to an earlier stage when it computes the block's input or is upstream of it (one walk).
  const earlier = branchNodes(ix, s.resid, () => false);
  const stop = (n: NodeProto) => earlier.has(n);
  const branches = [a, b].map((tensor) => {
    const nodes = branchNodes(ix, tensor, stop);
    return { tensor, nodes, attention: [...nodes].some((n) => ATTENTION_OPS.has(n.opType)) };
  });
  return { node: p, branches };
}

export function resolveHooks(model: ModelProto, opts: { useNames?: boolean } = {}): HookMap {
  const useNames = opts.useNames ?? true;
  const ix = new GraphIndex(model.graph);
  const points = new Map<string, HookPoint>();
  const missing = new Map<string, string>();
  let nLayers = 0;
  const put = (p: HookPoint) => {
    if (!points.has(p.name) && !missing.has(p.name)) points.set(p.name, p);
    nLayers = Math.max(nLayers, p.layer + 1);
  };

  // 1. Names pinned by sdlkit's own models.
  if (useNames)
    for (const name of ix.producer.keys()) {
      const c = parseCanonical(name);
      if (c) put({ name, ...c, tensor: name, via: 'sdlkit-name' });
    }
  // 2. Structure: the chain of residual sums, one per sub-layer (two per block), or one per block
  //    where attention and MLP run in parallel.
  const chain = residualChain(ix);
  let l = 0;
  for (let i = 0; i < chain.length; l++) {
    const A = chain[i];
    const branchHook = (s: SumPoint, site: Site, tensor = s.branch): HookPoint => {
      const name = canonical(l, site);
      if (!s.bias) return { name, layer: l, site, tensor, via: 'structure' };
      // A fused op adds its bias to the branch inside the kernel; add it back explicitly.
      const out = `sdlkit/${name}`;
      return {
        name,
        layer: l,
        site,
        tensor: out,
        via: 'structure',
        extraNodes: [{ name: `sdlkit_${name}`, opType: 'Add', domain: '', inputs: [tensor, s.bias], outputs: [out], attrs: {} }],
      };
    };
    const par = parallelBranches(ix, A);
    if (!par && i + 1 >= chain.length) break; // a lone sum: not a whole block
    put({ name: canonical(l, 'resid_pre'), layer: l, site: 'resid_pre', tensor: A.resid, via: 'structure' });
    let last: SumPoint;
    if (par) {
      last = A;
      missing.set(
        canonical(l, 'resid_mid'),
        `parallel attention and MLP: both read resid_pre and node '${par.node.name}' adds their outputs, so no resid_mid exists in block ${l}`,
      );
      const attn = par.branches.filter((b) => b.attention);
      if (attn.length === 1) {
        const mlp = par.branches.find((b) => !b.attention)!;
        put(branchHook(A, 'attn_out', attn[0].tensor));
        put(branchHook(A, 'mlp_out', mlp.tensor));
        const mi = firstMatmulInput(ix, mlp.nodes);
        if (mi) put({ name: canonical(l, 'mlp_in'), layer: l, site: 'mlp_in', tensor: mi, via: 'structure' });
      } else {
        const why = `ambiguous: the two parallel branches of block ${l} (${par.branches.map((b) => b.tensor).join(', ')}) ${attn.length ? 'both' : 'neither'} contain attention; pass --tensor with the one you mean`;
        for (const site of ['attn_out', 'mlp_out', 'mlp_in'] as const) missing.set(canonical(l, site), why);
      }
      i += 1;
    } else {
      const M = chain[i + 1];
      last = M;
      put(branchHook(A, 'attn_out'));
      if (A.out) put({ name: canonical(l, 'resid_mid'), layer: l, site: 'resid_mid', tensor: A.out, via: 'structure' });
      const mi = mlpInput(ix, A, M);
      if (mi) put({ name: canonical(l, 'mlp_in'), layer: l, site: 'mlp_in', tensor: mi, via: 'structure' });
      put(branchHook(M, 'mlp_out'));
      i += 2;
    }
    if (last.out) put({ name: canonical(l, 'resid_post'), layer: l, site: 'resid_post', tensor: last.out, via: 'structure' });
    else
      missing.set(
        canonical(l, 'resid_post'),
        `${last.node.opType} node '${last.node.name}' computes the residual sum of block ${l} internally and does not output it (fused away by the graph optimizer)`,
      );
    nLayers = Math.max(nLayers, l + 1);
  }
  // 3. torch.onnx exporter names for the residual stream, where the structure found nothing (and never
  //    for a hook the structure shows cannot exist: in a parallel block '/layers.N/Add' is attn + MLP).
  if (useNames)
    for (const name of ix.producer.keys()) {
      const m = TORCH_RESID.exec(name);
      if (!m) continue;
      const layer = Number(m[1]);
      const site: Site = m[2] ? 'resid_post' : 'resid_mid';
      put({ name: canonical(layer, site), layer, site, tensor: name, via: 'exporter-name' });
    }
  // resid_pre of layer l+1 is resid_post of layer l.
  for (let l = 1; l < nLayers; l++) {
    const prev = points.get(canonical(l - 1, 'resid_post'));
    if (prev && !points.has(canonical(l, 'resid_pre'))) put({ ...prev, name: canonical(l, 'resid_pre'), layer: l, site: 'resid_pre' });
  }
  return { nLayers, points, missing };
}

/** Layer/site sugar: `--layer 6 --site resid_post` or a canonical name or a raw tensor name. */
export function describeAvailable(map: HookMap, layer?: number): string {
  const names = [...map.points.keys()].filter((n) => layer === undefined || parseCanonical(n)?.layer === layer);
  return names.length ? names.join(', ') : '(none)';
}
