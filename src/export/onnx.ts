// A dictionary as a standalone ONNX model: input x [batch, d_in] (crosscoders: the sites concatenated in
// cfg order), outputs `features` [batch, d_sae] and `reconstruction` (crosscoders: one per site), with the
// activation exactly as at inference (TopK via TopK + ScatterElements; thresholds for JumpReLU/BatchTopK).
import { DataType } from '../onnx/proto.js';
import { GraphBuilder } from '../onnx/builder.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { selectionGroups, type DictConfig } from '../sdl/config.js';
import { cltFromDense, cltShape, decRow } from '../sdl/clt.js';
import { f32ToF16 } from '../util/f16.js';
import { UserError } from '../util/errors.js';
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
    const h = new Uint16Array(data.length);
    if (f32ToF16(data, h) > 0) throw new UserError(`${name} holds values beyond float16's range (|x| > 65504): export without --fp16`);
    g.graph.initializers.push({ name: `${P}${name}_f16`, dataType: DataType.FLOAT16, dims, raw: new Uint8Array(h.buffer) });
    return g.op('Cast', [`${P}${name}_f16`], { to: DataType.FLOAT }, P + name);
  };
  const W_enc = weight('W_enc', d.w.W_enc, [c.dIn, c.dSae]);
  const b_enc = weight('b_enc', d.w.b_enc, [c.dSae]);
  const b_dec = weight('b_dec', d.w.b_dec, [c.dOut]);
  const xt = c.applyBDecToInput ? g.op('Sub', [x, b_dec]) : x;
  const pre = g.op('Add', [g.op('MatMul', [xt, W_enc]), b_enc], {}, `${P}pre_activations`);
  // CLTs select per layer: TopK over each layer's latents.
  const groups = selectionGroups(c);
  const threshold =
    ACTIVATIONS[c.activation].inference === 'per-latent' || ACTIVATIONS[c.activation].inference === 'global'
      ? () => weight('threshold', d.inferenceThreshold(), [c.dSae])
      : undefined;
  const features = activationNodes(g, c, pre, c.dSae, groups, threshold, `${P}features`, P);
  if (opts.encoderOnly) return { features };
  const W_dec = weight('W_dec', d.w.W_dec, [c.dSae, c.dOut]);
  let recon = g.op('Add', [g.op('MatMul', [features, W_dec]), b_dec]);
  if (d.w.W_skip) recon = g.op('Add', [recon, g.op('MatMul', [x, weight('W_skip', d.w.W_skip, [c.dIn, c.dOut])])]);
  return { features, reconstruction: g.op('Identity', [recon], {}, `${P}reconstruction`) };
}

/**
 * sigma on pre-activations [n, m] as at inference: ReLU, TopK (in `groups` equal blocks of latents, k each: a CLT's
 * layers), or a threshold (JumpReLU's per-latent one, BatchTopK's global one). Named `name`.
 */
function activationNodes(
  g: GraphBuilder,
  c: DictConfig,
  pre: string,
  m: number,
  groups: number,
  threshold: (() => string) | undefined,
  name: string,
  P: string,
): string {
  const how = ACTIVATIONS[c.activation].inference;
  if (how === 'relu') return g.op('Relu', [pre], {}, name);
  if (how === 'topk') {
    const per = m / groups;
    const z = groups > 1 ? g.op('Reshape', [pre, g.i64(`${P}groups`, [-1, groups, per])]) : pre;
    const [values, indices] = g.node('TopK', [z, g.i64(`${P}k`, [Math.min(c.k, per)])], { axis: -1, largest: 1, sorted: 1 }, { outputs: 2 });
    const f = g.op('ScatterElements', [g.op('Mul', [z, g.scalarF32(0)]), indices, g.op('Relu', [values])], { axis: groups > 1 ? 2 : 1 });
    return groups > 1 ? g.op('Reshape', [f, g.i64(`${P}flat_features`, [-1, m])], {}, name) : g.op('Identity', [f], {}, name);
  }
  const pass = g.op('Cast', [g.op('And', [g.op('Greater', [pre, threshold!()]), g.op('Greater', [pre, g.scalarF32(0)])])], { to: DataType.FLOAT });
  return g.op('Mul', [pre, pass], {}, name);
}

/** The graph tensor holding a CLT's layer-l features inside a replacement model (later layers' splices read it). */
export const cltFeatures = (l: number): string => `sdlkit/clt/features.${l}`;

/**
 * One layer of a CLT inside a model (the replacement model): features f_l from `x` (layer l's input [n, d_in]),
 * named cltFeatures(l), and the reconstruction of layer l's output, b_dec_l + x W_skip_l + sum_{j <= l} f_j W_dec^{j->l},
 * reading the features of earlier layers from the graph (their splices come first in the node order).
 */
export function addCltLayerNodes(g: GraphBuilder, d: Dictionary, l: number, x: string, P: string): string {
  const s = cltShape(d.cfg);
  const { dI, dO, n } = s;
  const c = d.cfg;
  const p = cltFromDense(s, d.w);
  const W_enc = new Float32Array(dI * n);
  for (let i = 0; i < n; i++) for (let a = 0; a < dI; a++) W_enc[a * n + i] = p.W_encT[(l * n + i) * dI + a];
  const pre = g.op('Add', [g.op('MatMul', [x, g.f32(`${P}W_enc`, W_enc, [dI, n])]), g.f32(`${P}b_enc`, p.b_enc.subarray(l * n, (l + 1) * n), [n])]);
  const th =
    ACTIVATIONS[c.activation].inference === 'relu' || ACTIVATIONS[c.activation].inference === 'topk'
      ? undefined
      : () => g.f32(`${P}threshold`, d.inferenceThreshold().subarray(l * n, (l + 1) * n), [n]);
  activationNodes(g, c, pre, n, 1, th, cltFeatures(l), P);
  let recon = g.f32(`${P}b_dec`, p.b_dec.subarray(l * dO, (l + 1) * dO), [dO]);
  for (let j = 0; j <= l; j++) {
    // Rows of layer j's decoder, the block that writes layer l: [n, dO].
    const Wd = new Float32Array(n * dO);
    for (let i = 0; i < n; i++) {
      const r = decRow(s, j * n + i);
      Wd.set(p.W_dec.subarray(r.off + (l - j) * dO, r.off + (l - j + 1) * dO), i * dO);
    }
    recon = g.op('Add', [recon, g.op('MatMul', [cltFeatures(j), g.f32(`${P}W_dec_${j}`, Wd, [n, dO])])]);
  }
  if (p.W_skip) recon = g.op('Add', [recon, g.op('MatMul', [x, g.f32(`${P}W_skip`, p.W_skip.subarray(l * dI * dO, (l + 1) * dI * dO), [dI, dO])])]);
  return recon;
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
