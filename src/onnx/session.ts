// Running ONNX models with onnxruntime-node: exposing hook tensors as outputs and feeding the
// inputs that decoder-only LMs take (ids, positions, attention mask, empty KV caches).
import { availableParallelism } from 'node:os';
import type * as ort from 'onnxruntime-node';
import { onnxRuntime } from './runtime.js';
import { DATA_TYPE_NAMES, DataType, appendToGraph, pruneGraph, type ModelProto, type ValueInfo } from './proto.js';
import { GraphIndex, ID_INPUT, staticIdsShape } from './graph.js';
import type { HookPoint } from './hooks.js';
import { UserError } from '../util/errors.js';

export interface SessionOptions {
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** Let idle intra-op threads spin (fastest alone; off when another thread shares the cores). */
  spinning?: boolean;
}

export async function createSession(bytes: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  try {
    return await onnxRuntime().InferenceSession.create(bytes, {
      // All cores, counted by Node: onnxruntime's own default (0, its count of physical cores) ran one thread on a
      // 2-core VM (docs/BENCHMARKS.md: a GPT-2-small-sized harvest 997 -> 1,736 tok/s with both).
      intraOpNumThreads: opts.threads ?? availableParallelism(),
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      logSeverityLevel: 3,
      extra: { session: { intra_op: { allow_spinning: opts.spinning === false ? '0' : '1' } } },
    });
  } catch (e) {
    throw new UserError(`onnxruntime could not load the model: ${String((e as Error).message).split('\n')[0]}`);
  }
}

/** The model bytes with the hooks' tensors added as graph outputs (plus any nodes they need). */
export function exposeHooks(bytes: Uint8Array, hooks: HookPoint[], existingOutputs: Set<string>): Uint8Array {
  const nodes = hooks.flatMap((h) => h.extraNodes ?? []);
  const seen = new Set<string>();
  const outputs: ValueInfo[] = [];
  for (const h of hooks) {
    if (existingOutputs.has(h.tensor) || seen.has(h.tensor)) continue;
    seen.add(h.tensor);
    outputs.push({ name: h.tensor, elemType: 0 });
  }
  return outputs.length || nodes.length ? appendToGraph(bytes, { outputs, nodes }) : bytes;
}

/**
 * The model cut down to what the hooks need: nodes downstream of every hook (later layers, the LM head)
 * are dropped and the hooks become the only outputs. Harvesting layer 3 of 8 then costs about 4 layers.
 */
export function hookSubgraph(bytes: Uint8Array, proto: ModelProto, hooks: HookPoint[]): Uint8Array {
  // Subgraphs (If/Loop bodies) read outer tensors implicitly; keep such models whole.
  if (proto.graph.nodes.some((n) => Object.values(n.attrs).some((a) => typeof a === 'object' && a !== null && 'graph' in a))) {
    return exposeHooks(bytes, hooks, new Set(proto.graph.outputs.map((o) => o.name)));
  }
  const ix = new GraphIndex(proto.graph);
  const extra = hooks.flatMap((h) => h.extraNodes ?? []);
  const need = new Set<number>();
  const stack = [...new Set([...hooks.map((h) => h.tensor), ...extra.flatMap((n) => n.inputs)])];
  const seen = new Set<string>();
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    const p = ix.producer.get(t);
    if (!p || need.has(p.index)) continue;
    need.add(p.index);
    for (const i of p.node.inputs) if (i) stack.push(i);
  }
  const outputs = [...new Set(hooks.map((h) => h.tensor))].map((name) => ({ name, elemType: 0 }));
  const used = new Set([...need].flatMap((i) => proto.graph.nodes[i].inputs).concat(extra.flatMap((n) => n.inputs)));
  return pruneGraph(
    bytes,
    (i) => need.has(i),
    outputs,
    extra,
    (name) => used.has(name),
  );
}

/** The graph inputs a caller feeds (graph inputs that are not also initializers). */
export function runtimeInputs(proto: ModelProto): ValueInfo[] {
  const inits = new Set(proto.graph.initializers.map((t) => t.name));
  return proto.graph.inputs.filter((i) => !inits.has(i.name));
}

/** Refuses a batch or context that a statically shaped export cannot take, naming the values it can. */
export function checkStaticShape(model: { proto: ModelProto; name: string }, batch: number, ctx: number): void {
  const s = staticIdsShape(model.proto);
  if (!s) return;
  if ((s.batch !== undefined && s.batch !== batch) || (s.seq !== undefined && s.seq !== ctx))
    throw new UserError(
      `${model.name}'s input ${s.input} has the static shape [${s.batch ?? 'batch'}, ${s.seq ?? 'seq'}]; pass${s.seq !== undefined ? ` --ctx ${s.seq}` : ''}${s.batch !== undefined ? ` --batch ${s.batch}` : ''} (or export it with dynamic axes)`,
    );
}

/**
 * int32 values as int64, written as two 32-bit words each (the value, then its sign) instead of a BigInt per value:
 * a batch of 2,048 ids made 2,048 heap objects, 77 ms of a 300k-token harvest. The words' order is the platform's.
 */
export function widenToInt64(values: Int32Array): BigInt64Array {
  const out = new BigInt64Array(values.length);
  const words = new Int32Array(out.buffer);
  const [lo, hi] = LITTLE_ENDIAN ? [0, 1] : [1, 0];
  for (let i = 0; i < values.length; i++) {
    words[2 * i + lo] = values[i];
    words[2 * i + hi] = values[i] >> 31;
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Builds the feeds for a [batch, seq] window of token ids. Knows input_ids, position_ids, attention_mask
 * and past key/value inputs (fed empty); anything else is refused by name.
 */
export function makeFeeds(inputs: ValueInfo[], ids: Int32Array, batch: number, seq: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const intTensor = (elemType: number, values: Int32Array, dims: number[]) =>
    elemType === DataType.INT32
      ? new (onnxRuntime().Tensor)('int32', Int32Array.from(values), dims)
      : new (onnxRuntime().Tensor)('int64', widenToInt64(values), dims);
  for (const inp of inputs) {
    const n = inp.name;
    if (ID_INPUT.test(n)) feeds[n] = intTensor(inp.elemType, ids, [batch, seq]);
    else if (/position_ids$/.test(n)) {
      const pos = new Int32Array(batch * seq);
      for (let b = 0; b < batch; b++) for (let t = 0; t < seq; t++) pos[b * seq + t] = t;
      feeds[n] = intTensor(inp.elemType, pos, [batch, seq]);
    } else if (/attention_mask$/.test(n)) feeds[n] = intTensor(inp.elemType, new Int32Array(batch * seq).fill(1), [batch, seq]);
    else if (/token_type_ids$/.test(n)) feeds[n] = intTensor(inp.elemType, new Int32Array(batch * seq), [batch, seq]);
    else if (n === 'use_cache_branch') {
      // optimum's merged decoder: false takes the branch without a cache (the caches are fed empty).
      if (inp.elemType !== DataType.BOOL)
        throw new UserError(`model input use_cache_branch is ${DATA_TYPE_NAMES[inp.elemType] ?? inp.elemType}; sdlkit feeds it as bool`);
      feeds[n] = new (onnxRuntime().Tensor)('bool', new Uint8Array(1), [1]);
    } else if (/past|cache/.test(n)) {
      const dims = (inp.shape ?? []).map((d) => {
        if (typeof d === 'number' && d > 0) return d;
        const s = String(d);
        if (/batch/.test(s)) return batch;
        if (/past|cache|seq/.test(s) || d === 0) return 0;
        throw new UserError(`model input ${n} has a dimension '${s}' that sdlkit cannot size for an empty cache`);
      });
      const size = dims.reduce((a, b) => a * b, 1);
      const type = inp.elemType === DataType.FLOAT16 ? 'float16' : 'float32';
      feeds[n] = new (onnxRuntime().Tensor)(type, type === 'float16' ? new Uint16Array(size) : new Float32Array(size), dims);
    } else {
      throw new UserError(
        `model input '${n}' is not one sdlkit can feed (it feeds input_ids, position_ids, attention_mask, token_type_ids, use_cache_branch and empty past_* caches); export the model without it`,
      );
    }
  }
  if (!Object.keys(feeds).some((k) => ID_INPUT.test(k)))
    throw new UserError(`the model has no token-id input (looked for input_ids among: ${inputs.map((i) => i.name).join(', ')})`);
  return feeds;
}
