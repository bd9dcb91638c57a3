// The ONNX protobuf schema, as far as sdlkit reads and writes it (field numbers from onnx.proto3).
// Decoding keeps tensor bytes as views into the model buffer; encoding builds a model bottom-up.
import { Reader, Writer, WIRE_LEN } from './protobuf.js';

export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;
export const DATA_TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(DataType).map(([k, v]) => [v, k.toLowerCase()]));

export interface TensorProto {
  name: string;
  dataType: number;
  dims: number[];
  /** raw_data, as a view into the decoded buffer (or owned bytes when built here). */
  raw?: Uint8Array;
  floatData?: number[];
  int64Data?: number[];
  int32Data?: number[];
  /** Set when the tensor lives in an external file (data_location = EXTERNAL). */
  external?: boolean;
}

export type Dim = number | string;
export interface ValueInfo {
  name: string;
  /** Tensor element type (DataType); 0 when the value info carries no type. */
  elemType: number;
  /** undefined when the shape is unknown. */
  shape?: Dim[];
}

export type AttrValue = number | string | number[] | string[] | TensorProto | { graph: true };
export interface NodeProto {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: TensorProto[];
  valueInfo: ValueInfo[];
}

export interface OpsetId {
  domain: string;
  version: number;
}

export interface ModelProto {
  irVersion: number;
  opsets: OpsetId[];
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  metadata: Record<string, string>;
}

// ---------- decoding ----------

function decodeTensor(r: Reader): TensorProto {
  const t: TensorProto = { name: '', dataType: 0, dims: [] };
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        r.repeatedVarint(wire, t.dims, true);
        break;
      case 2:
        t.dataType = r.varint();
        break;
      case 4: {
        const out = (t.floatData ??= []);
        if (wire === WIRE_LEN) {
          const s = r.sub();
          while (!s.done()) out.push(s.float32());
        } else out.push(r.float32());
        break;
      }
      case 5:
        r.repeatedVarint(wire, (t.int32Data ??= []), true);
        break;
      case 7:
        r.repeatedVarint(wire, (t.int64Data ??= []), true);
        break;
      case 8:
        t.name = r.string();
        break;
      case 9:
        t.raw = r.bytes();
        break;
      case 14:
        t.external = r.varint() === 1;
        break;
      default:
        r.skip(wire);
    }
  }
  return t;
}

function decodeDim(r: Reader): Dim {
  let d: Dim = '?';
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1) d = r.int64();
    else if (field === 2) d = r.string();
    else r.skip(wire);
  }
  return d;
}

function decodeValueInfo(r: Reader): ValueInfo {
  const v: ValueInfo = { name: '', elemType: 0 };
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1) v.name = r.string();
    else if (field === 2) {
      const tp = r.sub();
      while (!tp.done()) {
        const t = tp.tag();
        if (t.field !== 1) {
          tp.skip(t.wire);
          continue;
        } // only tensor types
        const tt = tp.sub();
        while (!tt.done()) {
          const u = tt.tag();
          if (u.field === 1) v.elemType = tt.varint();
          else if (u.field === 2) {
            const sh = tt.sub();
            v.shape = [];
            while (!sh.done()) {
              const w = sh.tag();
              if (w.field === 1) v.shape.push(decodeDim(sh.sub()));
              else sh.skip(w.wire);
            }
          } else tt.skip(u.wire);
        }
      }
    } else r.skip(wire);
  }
  return v;
}

function decodeAttr(r: Reader): [string, AttrValue] {
  let name = '';
  let type = 0;
  let f = 0,
    i = 0,
    s = '';
  let t: TensorProto | undefined;
  const floats: number[] = [];
  const ints: number[] = [];
  const strings: string[] = [];
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        name = r.string();
        break;
      case 2:
        f = r.float32();
        break;
      case 3:
        i = r.int64();
        break;
      case 4:
        s = r.string();
        break;
      case 5:
        t = decodeTensor(r.sub());
        break;
      case 7:
        if (wire === WIRE_LEN) {
          const sr = r.sub();
          while (!sr.done()) floats.push(sr.float32());
        } else floats.push(r.float32());
        break;
      case 8:
        r.repeatedVarint(wire, ints, true);
        break;
      case 9:
        strings.push(r.string());
        break;
      case 20:
        type = r.varint();
        break;
      default:
        r.skip(wire);
    }
  }
  const value: AttrValue =
    type === 1
      ? f
      : type === 2
        ? i
        : type === 3
          ? s
          : type === 4
            ? t!
            : type === 6
              ? floats
              : type === 7
                ? ints
                : type === 8
                  ? strings
                  : type === 5 || type === 10
                    ? { graph: true }
                    : i;
  return [name, value];
}

function decodeNode(r: Reader): NodeProto {
  const n: NodeProto = { name: '', opType: '', domain: '', inputs: [], outputs: [], attrs: {} };
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        n.inputs.push(r.string());
        break;
      case 2:
        n.outputs.push(r.string());
        break;
      case 3:
        n.name = r.string();
        break;
      case 4:
        n.opType = r.string();
        break;
      case 5: {
        const [k, v] = decodeAttr(r.sub());
        n.attrs[k] = v;
        break;
      }
      case 7:
        n.domain = r.string();
        break;
      default:
        r.skip(wire);
    }
  }
  return n;
}

function decodeGraph(r: Reader): GraphProto {
  const g: GraphProto = { name: '', nodes: [], inputs: [], outputs: [], initializers: [], valueInfo: [] };
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        g.nodes.push(decodeNode(r.sub()));
        break;
      case 2:
        g.name = r.string();
        break;
      case 5:
        g.initializers.push(decodeTensor(r.sub()));
        break;
      case 11:
        g.inputs.push(decodeValueInfo(r.sub()));
        break;
      case 12:
        g.outputs.push(decodeValueInfo(r.sub()));
        break;
      case 13:
        g.valueInfo.push(decodeValueInfo(r.sub()));
        break;
      default:
        r.skip(wire);
    }
  }
  return g;
}

/** Decodes an ONNX model. Throws a plain Error('not an ONNX model ...') when the bytes are not one. */
export function decodeModel(buf: Uint8Array): ModelProto {
  const m: ModelProto = { irVersion: 0, opsets: [], producerName: '', producerVersion: '', graph: undefined as unknown as GraphProto, metadata: {} };
  const r = new Reader(buf);
  let graphSeen = false;
  try {
    while (!r.done()) {
      const { field, wire } = r.tag();
      switch (field) {
        case 1:
          m.irVersion = r.varint();
          break;
        case 2:
          m.producerName = r.string();
          break;
        case 3:
          m.producerVersion = r.string();
          break;
        case 7:
          // Repeated occurrences of an embedded message merge; sdlkit's appended outputs rely on this.
          if (!graphSeen) {
            m.graph = decodeGraph(r.sub());
            graphSeen = true;
          } else mergeGraph(m.graph, decodeGraph(r.sub()));
          break;
        case 8: {
          const o = r.sub();
          const id: OpsetId = { domain: '', version: 0 };
          while (!o.done()) {
            const t = o.tag();
            if (t.field === 1) id.domain = o.string();
            else if (t.field === 2) id.version = o.varint();
            else o.skip(t.wire);
          }
          m.opsets.push(id);
          break;
        }
        case 14: {
          const e = r.sub();
          let k = '',
            v = '';
          while (!e.done()) {
            const t = e.tag();
            if (t.field === 1) k = e.string();
            else if (t.field === 2) v = e.string();
            else e.skip(t.wire);
          }
          m.metadata[k] = v;
          break;
        }
        default:
          r.skip(wire);
      }
    }
  } catch (e) {
    throw new Error(`not an ONNX model (protobuf decoding failed: ${(e as Error).message})`);
  }
  if (!graphSeen || m.irVersion === 0 || m.graph.nodes.length === 0) {
    throw new Error('not an ONNX model (no ir_version or no graph nodes found)');
  }
  return m;
}

function mergeGraph(into: GraphProto, more: GraphProto): void {
  into.nodes.push(...more.nodes);
  into.inputs.push(...more.inputs);
  into.outputs.push(...more.outputs);
  into.initializers.push(...more.initializers);
  into.valueInfo.push(...more.valueInfo);
  if (more.name) into.name = more.name;
}

// ---------- encoding ----------

export function encodeTensor(t: TensorProto): Uint8Array {
  const w = new Writer();
  if (t.dims.length) w.packedVarints(1, t.dims);
  w.varint(2, t.dataType);
  if (t.floatData) {
    const b = new Uint8Array(t.floatData.length * 4);
    const dv = new DataView(b.buffer);
    t.floatData.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    w.bytes(4, b);
  }
  if (t.int64Data) w.packedVarints(7, t.int64Data);
  w.string(8, t.name);
  if (t.raw) w.bytes(9, t.raw);
  return w.finish();
}

export function encodeValueInfo(v: ValueInfo): Uint8Array {
  const w = new Writer().string(1, v.name);
  if (v.elemType) {
    const tt = new Writer().varint(1, v.elemType);
    if (v.shape) {
      const sh = new Writer();
      for (const d of v.shape) {
        const dw = new Writer();
        if (typeof d === 'number') dw.varint(1, d);
        else dw.string(2, d);
        sh.bytes(1, dw.finish());
      }
      tt.bytes(2, sh.finish());
    }
    w.bytes(2, new Writer().bytes(1, tt.finish()).finish());
  }
  return w.finish();
}

function encodeAttr(name: string, v: AttrValue): Uint8Array {
  const w = new Writer().string(1, name);
  if (typeof v === 'number') {
    if (Number.isInteger(v) && !Object.is(v, -0)) w.varint(3, v).varint(20, 2);
    else w.float32(2, v).varint(20, 1);
  } else if (typeof v === 'string') w.string(4, v).varint(20, 3);
  else if (Array.isArray(v)) {
    if (v.length && typeof v[0] === 'string') {
      for (const s of v as string[]) w.string(9, s);
      w.varint(20, 8);
    } else w.packedVarints(8, v as number[]).varint(20, 7);
  } else if ('dataType' in v) w.bytes(5, encodeTensor(v)).varint(20, 4);
  else throw new Error(`cannot encode attribute ${name}`);
  return w.finish();
}

/** A float attribute that happens to be integral (alpha = 1.0) must stay FLOAT: wrap it. */
export class FloatAttr {
  constructor(readonly value: number) {}
}

export function encodeNode(n: NodeProto, floatAttrs: ReadonlySet<string> = new Set()): Uint8Array {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs)) {
    if (floatAttrs.has(k) && typeof v === 'number') w.bytes(5, new Writer().string(1, k).float32(2, v).varint(20, 1).finish());
    else w.bytes(5, encodeAttr(k, v));
  }
  if (n.domain) w.string(7, n.domain);
  return w.finish();
}

/** Attributes that ONNX defines as FLOAT, so integral values are still encoded as floats. */
const FLOAT_ATTRS = new Set(['alpha', 'beta', 'epsilon', 'gamma', 'value_float', 'ratio', 'bias', 'lambd']);

export function encodeGraph(g: GraphProto): Uint8Array {
  const w = new Writer();
  for (const n of g.nodes) w.bytes(1, encodeNode(n, FLOAT_ATTRS));
  w.string(2, g.name || 'graph');
  for (const t of g.initializers) w.bytes(5, encodeTensor(t));
  for (const v of g.inputs) w.bytes(11, encodeValueInfo(v));
  for (const v of g.outputs) w.bytes(12, encodeValueInfo(v));
  for (const v of g.valueInfo) w.bytes(13, encodeValueInfo(v));
  return w.finish();
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer().varint(1, m.irVersion);
  if (m.producerName) w.string(2, m.producerName);
  if (m.producerVersion) w.string(3, m.producerVersion);
  w.bytes(7, encodeGraph(m.graph));
  for (const o of m.opsets) {
    const ow = new Writer();
    if (o.domain) ow.string(1, o.domain);
    ow.varint(2, o.version);
    w.bytes(8, ow.finish());
  }
  for (const [k, v] of Object.entries(m.metadata)) w.bytes(14, new Writer().string(1, k).string(2, v).finish());
  return w.finish();
}

/**
 * Adds graph outputs (and optionally nodes) to a serialized model without re-encoding it:
 * protobuf merges a repeated embedded message, so a trailing ModelProto{graph{output..., node...}}
 * extends the original graph. Cost: a few bytes, whatever the model's size.
 */
export function appendToGraph(model: Uint8Array, extra: { outputs?: ValueInfo[]; nodes?: NodeProto[] }): Uint8Array {
  const g = new Writer();
  for (const n of extra.nodes ?? []) g.bytes(1, encodeNode(n, FLOAT_ATTRS));
  for (const o of extra.outputs ?? []) g.bytes(12, encodeValueInfo(o));
  const tail = new Writer().bytes(7, g.finish()).finish();
  const out = new Uint8Array(model.length + tail.length);
  out.set(model, 0);
  out.set(tail, model.length);
  return out;
}

/** One field of a GraphProto as it appears in the bytes (tag included), with the node's index for nodes. */
export interface GraphField {
  field: number;
  raw: Uint8Array;
  /** Index of the node in graph order (field 1 only). */
  nodeIndex: number;
}

/**
 * Rewrites a serialized model's graph fields at the byte level: every field outside the graph, and every graph
 * field `visit` returns unchanged, is copied verbatim, so whatever sdlkit does not decode (subgraphs, doc strings,
 * types) survives. `visit` returns the bytes to write for a field (possibly several fields, or none); `append`
 * gives fields to add at the end of the first graph message. Graph parts merged from appended messages count
 * their nodes on, as decodeModel does.
 */
export function rewriteGraph(model: Uint8Array, visit: (f: GraphField) => Uint8Array | Uint8Array[] | null, append: () => Uint8Array[] = () => []): Uint8Array {
  const r = new Reader(model);
  const w = new Writer();
  let nodeIndex = 0;
  let first = true;
  while (!r.done()) {
    const start = r.pos;
    const { field, wire } = r.tag();
    if (field !== 7) {
      r.skip(wire);
      w.raw(model.subarray(start, r.pos));
      continue;
    }
    const gr = r.sub();
    const g = new Writer();
    while (!gr.done()) {
      const fs = gr.pos;
      const t = gr.tag();
      gr.skip(t.wire);
      const raw = gr.buf.subarray(fs, gr.pos);
      const out = visit({ field: t.field, raw, nodeIndex: t.field === 1 ? nodeIndex++ : -1 });
      if (out === null) continue;
      for (const b of Array.isArray(out) ? out : [out]) g.raw(b);
    }
    if (first) {
      for (const b of append()) g.raw(b);
      first = false;
    }
    w.message(7, g);
  }
  return w.finish();
}

/** A whole graph field (tag + length + body) for raw insertion. */
export const graphField = (field: number, body: Uint8Array): Uint8Array => new Writer().bytes(field, body).finish();

/**
 * Keeps the nodes `keepNode` accepts (by index in graph order) and the initializers `keepInitializer` accepts,
 * replaces the graph outputs with `outputs`, and appends `nodes`.
 */
export function pruneGraph(
  model: Uint8Array,
  keepNode: (index: number) => boolean,
  outputs: ValueInfo[],
  nodes: NodeProto[] = [],
  keepInitializer: (name: string) => boolean = () => true,
): Uint8Array {
  return rewriteGraph(
    model,
    ({ field, raw, nodeIndex }) => {
      if (field === 1) return keepNode(nodeIndex) ? raw : null;
      if (field === 12) return null;
      if (field === 5) {
        const tr = new Reader(raw);
        tr.tag();
        return keepInitializer(decodeTensor(tr.sub()).name) ? raw : null;
      }
      return raw;
    },
    () => [...nodes.map((n) => graphField(1, encodeNode(n, FLOAT_ATTRS))), ...outputs.map((o) => graphField(12, encodeValueInfo(o)))],
  );
}
