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
  via: 'sdlkit-name' | 'exporter-name' | 'structure';
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

/** The input of the first matmul of the MLP branch: the normalised MLP input. */
function mlpInput(ix: GraphIndex, attnSum: SumPoint, mlpSum: SumPoint): string | undefined {
  // Nodes upstream of the MLP branch, stopping at the attention sum's node.
  const seen = new Set<NodeProto>();
  const stack = [mlpSum.branch];
  while (stack.length) {
    const p = ix.producer.get(stack.pop()!);
    if (!p || seen.has(p.node) || p.node === attnSum.node) continue;
    seen.add(p.node);
    for (const i of ix.dataInputs(p.node)) stack.push(i);
  }
  let first: NodeProto | undefined;
  for (const n of seen) if (MATMUL_OPS.has(n.opType) && (!first || ix.nodeIndex.get(n)! < ix.nodeIndex.get(first)!)) first = n;
  return first ? ix.dataInputs(first)[0] : undefined;
}

export function resolveHooks(model: ModelProto, opts: { useNames?: boolean } = {}): HookMap {
  const useNames = opts.useNames ?? true;
  const ix = new GraphIndex(model.graph);
  const points = new Map<string, HookPoint>();
  const missing = new Map<string, string>();
  let nLayers = 0;
  const put = (p: HookPoint) => {
    if (!points.has(p.name)) points.set(p.name, p);
    nLayers = Math.max(nLayers, p.layer + 1);
  };

  // 1. Names pinned by sdlkit's own models.
  if (useNames)
    for (const name of ix.producer.keys()) {
      const c = parseCanonical(name);
      if (c) put({ name, ...c, tensor: name, via: 'sdlkit-name' });
    }
  // 2. torch.onnx exporter names for the residual stream.
  if (useNames)
    for (const name of ix.producer.keys()) {
      const m = TORCH_RESID.exec(name);
      if (!m) continue;
      const layer = Number(m[1]);
      const site: Site = m[2] ? 'resid_post' : 'resid_mid';
      put({ name: canonical(layer, site), layer, site, tensor: name, via: 'exporter-name' });
    }
  // 3. Structure: consecutive (attention, MLP) residual sums.
  const chain = residualChain(ix);
  if (chain.length >= 2) {
    const blocks = Math.floor(chain.length / 2);
    nLayers = Math.max(nLayers, blocks);
    for (let l = 0; l < blocks; l++) {
      const A = chain[2 * l],
        M = chain[2 * l + 1];
      const branchHook = (s: SumPoint, site: Site): HookPoint => {
        const name = canonical(l, site);
        if (!s.bias) return { name, layer: l, site, tensor: s.branch, via: 'structure' };
        // A fused op adds its bias to the branch inside the kernel; add it back explicitly.
        const tensor = `sdlkit/${name}`;
        return {
          name,
          layer: l,
          site,
          tensor,
          via: 'structure',
          extraNodes: [{ name: `sdlkit_${name}`, opType: 'Add', domain: '', inputs: [s.branch, s.bias], outputs: [tensor], attrs: {} }],
        };
      };
      put({ name: canonical(l, 'resid_pre'), layer: l, site: 'resid_pre', tensor: A.resid, via: 'structure' });
      put(branchHook(A, 'attn_out'));
      if (A.out) put({ name: canonical(l, 'resid_mid'), layer: l, site: 'resid_mid', tensor: A.out, via: 'structure' });
      const mi = mlpInput(ix, A, M);
      if (mi) put({ name: canonical(l, 'mlp_in'), layer: l, site: 'mlp_in', tensor: mi, via: 'structure' });
      put(branchHook(M, 'mlp_out'));
      if (M.out) put({ name: canonical(l, 'resid_post'), layer: l, site: 'resid_post', tensor: M.out, via: 'structure' });
      else
        missing.set(
          canonical(l, 'resid_post'),
          `${M.node.opType} node '${M.node.name}' computes the residual sum of block ${l} internally and does not output it (fused away by the graph optimizer)`,
        );
    }
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
