// A small graph builder for the ONNX models sdlkit writes itself (imported llama2.c models,
// exported dictionaries). Standard opset-17 ops only, so any runtime can load the result.
import { DataType, encodeModel, type AttrValue, type Dim, type GraphProto, type NodeProto, type TensorProto } from './proto.js';

export const OPSET = 17;

export class GraphBuilder {
  readonly graph: GraphProto = { name: 'sdlkit', nodes: [], inputs: [], outputs: [], initializers: [], valueInfo: [] };
  private counter = 0;
  private names = new Set<string>();

  /** `namePrefix` goes before every generated name, so nodes built here can join another model's graph. */
  constructor(
    name = 'sdlkit',
    private readonly namePrefix = '',
  ) {
    this.graph.name = name;
  }

  private fresh(prefix: string): string {
    let n: string;
    do n = `${this.namePrefix}${prefix}_${this.counter++}`;
    while (this.names.has(n));
    this.names.add(n);
    return n;
  }

  input(name: string, elemType: number, shape: Dim[]): string {
    this.graph.inputs.push({ name, elemType, shape });
    this.names.add(name);
    return name;
  }

  output(name: string, elemType: number, shape?: Dim[]): void {
    this.graph.outputs.push({ name, elemType, shape });
  }

  /** A float32 initializer; data is copied into little-endian raw bytes. */
  f32(name: string, data: Float32Array, dims: number[]): string {
    if (data.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`initializer ${name}: ${data.length} values for dims ${dims}`);
    const raw = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    this.graph.initializers.push({ name, dataType: DataType.FLOAT, dims, raw });
    this.names.add(name);
    return name;
  }

  i64(name: string, data: number[], dims: number[] = [data.length]): string {
    const raw = new Uint8Array(new BigInt64Array(data.map((v) => BigInt(v))).buffer);
    this.graph.initializers.push({ name, dataType: DataType.INT64, dims, raw } as TensorProto);
    this.names.add(name);
    return name;
  }

  scalarF32(value: number, name = this.fresh('const')): string {
    return this.f32(name, new Float32Array([value]), []);
  }

  /** Adds a node; returns its output names (fresh unless given). */
  node(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    opts: { outputs?: string[] | number; name?: string; domain?: string } = {},
  ): string[] {
    const outs = Array.isArray(opts.outputs) ? opts.outputs : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(opType.toLowerCase()));
    for (const o of outs) this.names.add(o);
    const n: NodeProto = { name: opts.name ?? this.fresh(`n_${opType}`), opType, domain: opts.domain ?? '', inputs, outputs: outs, attrs };
    this.graph.nodes.push(n);
    return outs;
  }

  /** Single-output convenience. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, output?: string): string {
    return this.node(opType, inputs, attrs, output ? { outputs: [output] } : {})[0];
  }

  /** Pins a name on a tensor with an Identity node, so it survives optimisation and is found by name. */
  name(tensor: string, name: string): string {
    return this.op('Identity', [tensor], {}, name);
  }

  toBytes(metadata: Record<string, string> = {}, producerName = 'sdlkit'): Uint8Array {
    return encodeModel({
      irVersion: 8,
      opsets: [{ domain: '', version: OPSET }],
      producerName,
      producerVersion: '0.1.0',
      graph: this.graph,
      metadata,
    });
  }
}
