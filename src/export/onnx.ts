// A dictionary as a standalone ONNX model: input x [batch, d_in] (crosscoders: the sites concatenated in
// cfg order), outputs `features` [batch, d_sae] and `reconstruction` (crosscoders: one per site), with the
// activation exactly as at inference (TopK via TopK + ScatterElements; thresholds for JumpReLU/BatchTopK).
import { DataType } from '../onnx/proto.js';
import { GraphBuilder } from '../onnx/builder.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { f32ToF16 } from '../util/f16.js';
import { ACTIVATIONS } from '../sdl/activations.js';

export interface OnnxExportOptions {
  encoderOnly?: boolean;
  /** Store weights as float16 (inputs and outputs stay float32). */
  fp16?: boolean;
}

/**
 * Adds the dictionary's nodes to `g`, reading `x` [n, d_in]; returns the features and reconstruction tensors.
 * `prefix` keeps names apart when the nodes go into another model (splicing).
 */
export function addDictionaryNodes(
  g: GraphBuilder,
  d: Dictionary,
  x: string,
  opts: OnnxExportOptions & { prefix?: string } = {},
): { features: string; reconstruction?: string } {
  const c = d.cfg;
  const P = opts.prefix ?? '';
  const weight = (name: string, data: Float32Array, dims: number[]): string => {
    if (!opts.fp16) return g.f32(P + name, data, dims);
    const h = f32ToF16(data);
    g.graph.initializers.push({ name: `${P}${name}_f16`, dataType: DataType.FLOAT16, dims, raw: new Uint8Array(h.buffer) });
    return g.op('Cast', [`${P}${name}_f16`], { to: DataType.FLOAT }, P + name);
  };
  const W_enc = weight('W_enc', d.w.W_enc, [c.dIn, c.dSae]);
  const b_enc = weight('b_enc', d.w.b_enc, [c.dSae]);
  const b_dec = weight('b_dec', d.w.b_dec, [c.dOut]);
  const xt = c.applyBDecToInput ? g.op('Sub', [x, b_dec]) : x;
  const pre = g.op('Add', [g.op('MatMul', [xt, W_enc]), b_enc], {}, `${P}pre_activations`);
  let features: string;
  const how = ACTIVATIONS[c.activation].inference;
  if (how === 'relu') features = g.op('Relu', [pre], {}, `${P}features`);
  else if (how === 'topk') {
    const [values, indices] = g.node('TopK', [pre, g.i64(`${P}k`, [Math.min(c.k, c.dSae)])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
    features = g.op('ScatterElements', [g.op('Mul', [pre, g.scalarF32(0)]), indices, g.op('Relu', [values])], { axis: 1 }, `${P}features`);
  } else {
    const th = weight('threshold', d.inferenceThreshold(), [c.dSae]);
    const pass = g.op('Cast', [g.op('And', [g.op('Greater', [pre, th]), g.op('Greater', [pre, g.scalarF32(0)])])], { to: DataType.FLOAT });
    features = g.op('Mul', [pre, pass], {}, `${P}features`);
  }
  if (opts.encoderOnly) return { features };
  const W_dec = weight('W_dec', d.w.W_dec, [c.dSae, c.dOut]);
  return { features, reconstruction: g.op('Add', [g.op('MatMul', [features, W_dec]), b_dec], {}, `${P}reconstruction`) };
}

export function dictionaryToOnnx(d: Dictionary, opts: OnnxExportOptions = {}): Uint8Array {
  const c = d.cfg;
  const g = new GraphBuilder('sdlkit_dictionary');
  const x = g.input('x', DataType.FLOAT, ['batch', c.dIn]);
  const { reconstruction } = addDictionaryNodes(g, d, x, opts);
  g.output('features', DataType.FLOAT, ['batch', c.dSae]);
  if (reconstruction) {
    if (c.sitesOut.length > 1) {
      const outs = c.sitesOut.map((s) => `reconstruction.${s.name}`);
      g.node(
        'Split',
        [
          reconstruction,
          g.i64(
            'split_sizes',
            c.sitesOut.map((s) => s.width),
          ),
        ],
        { axis: 1 },
        { outputs: outs },
      );
      c.sitesOut.forEach((s, i) => g.output(outs[i], DataType.FLOAT, ['batch', s.width]));
    } else g.output('reconstruction', DataType.FLOAT, ['batch', c.dOut]);
  }
  return g.toBytes({
    'sdlkit.format': 'sdlkit-dictionary-onnx/1',
    'sdlkit.dict': JSON.stringify(c),
    'sdlkit.input_layout': c.sitesIn.map((s) => `${s.name}[${s.width}]`).join(' + '),
    ...Object.fromEntries(Object.entries(d.meta).map(([k, v]) => [`sdlkit.meta.${k}`, typeof v === 'string' ? v : JSON.stringify(v)])),
  });
}
