// llama2.c checkpoints ("v0" format, Karpathy's TinyStories models) and their conversion to ONNX.
// The ONNX graph is built from standard ops and names every TransformerLens hook with an Identity node.
import { DataType } from '../onnx/proto.js';
import { GraphBuilder } from '../onnx/builder.js';
import { UserError } from '../util/errors.js';
import { transpose } from '../tensor/linalg.js';

export interface LlamaConfig {
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  vocab_size: number;
  seq_len: number;
  /** RMSNorm epsilon (llama2.c: 1e-5). */
  norm_eps: number;
  /** Rotary base (llama2.c: 10000). */
  rope_theta: number;
  shared_classifier: boolean;
}

export interface LlamaWeights {
  config: LlamaConfig;
  tok_embeddings: Float32Array; // [V, D]
  rms_att: Float32Array; // [L, D]
  wq: Float32Array; // [L, D, D]     stored [out, in]
  wk: Float32Array; // [L, KV*hs, D]
  wv: Float32Array; // [L, KV*hs, D]
  wo: Float32Array; // [L, D, D]
  rms_ffn: Float32Array; // [L, D]
  w1: Float32Array; // [L, H, D]
  w2: Float32Array; // [L, D, H]
  w3: Float32Array; // [L, H, D]
  rms_final: Float32Array; // [D]
  wcls: Float32Array; // [V, D]
  /** The checkpoint's own rotary tables (unused by the forward pass; kept so files round-trip byte for byte). */
  freq_real?: Float32Array;
  freq_imag?: Float32Array;
}

/**
 * Random weights for a llama2.c model of the given shape (tests and benches): normal(0, scale) matrices, the
 * embedding normal(0, 1) and shared with the classifier, norm weights 1 + normNoise * normal. Drawn in field order
 * from `rng`, so a seed gives the same model every time.
 */
export function randomLlamaWeights(config: LlamaConfig, rng: { normal(): number }, opts: { scale: number; normNoise: number }): LlamaWeights {
  const { dim, hidden_dim: H, n_layers: L, n_heads, n_kv_heads, vocab_size: V } = config;
  const kv = n_kv_heads * (dim / n_heads);
  const rand = (n: number, s = opts.scale) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = rng.normal() * s;
    return a;
  };
  const norm = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = 1 + opts.normNoise * rng.normal();
    return a;
  };
  const emb = rand(V * dim, 1);
  return {
    config,
    tok_embeddings: emb,
    rms_att: norm(L * dim),
    wq: rand(L * dim * dim),
    wk: rand(L * kv * dim),
    wv: rand(L * kv * dim),
    wo: rand(L * dim * dim),
    rms_ffn: norm(L * dim),
    w1: rand(L * H * dim),
    w2: rand(L * dim * H),
    w3: rand(L * H * dim),
    rms_final: norm(dim),
    wcls: emb,
  };
}

export const HEADER_BYTES = 28;

/** Parses a llama2.c v0 checkpoint. */
export function readLlama2c(buf: Uint8Array, source = 'checkpoint'): LlamaWeights {
  if (buf.length < HEADER_BYTES)
    throw new UserError(`${source} is too small to be a llama2.c checkpoint (${buf.length} bytes); pass the .bin file written by llama2.c's export`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocabRaw, seq_len] = h;
  const vocab_size = Math.abs(vocabRaw);
  const sane =
    dim > 0 &&
    dim <= 65536 &&
    hidden_dim > 0 &&
    n_layers > 0 &&
    n_layers <= 1024 &&
    n_heads > 0 &&
    dim % n_heads === 0 &&
    n_kv_heads > 0 &&
    n_heads % n_kv_heads === 0 &&
    vocab_size > 0 &&
    seq_len > 0 &&
    seq_len <= 1 << 20;
  if (!sane) throw new UserError(`${source} does not have a valid llama2.c header (read ${h.join(', ')}); pass a llama2.c v0 checkpoint`);
  const hs = dim / n_heads;
  const kvDim = n_kv_heads * hs;
  const config: LlamaConfig = {
    dim,
    hidden_dim,
    n_layers,
    n_heads,
    n_kv_heads,
    vocab_size,
    seq_len,
    norm_eps: 1e-5,
    rope_theta: 10000,
    shared_classifier: vocabRaw > 0,
  };
  const L = n_layers;
  const sizes: [keyof Omit<LlamaWeights, 'config' | 'wcls'> | 'freq_real' | 'freq_imag', number][] = [
    ['tok_embeddings', vocab_size * dim],
    ['rms_att', L * dim],
    ['wq', L * dim * dim],
    ['wk', L * kvDim * dim],
    ['wv', L * kvDim * dim],
    ['wo', L * dim * dim],
    ['rms_ffn', L * dim],
    ['w1', L * hidden_dim * dim],
    ['w2', L * dim * hidden_dim],
    ['w3', L * hidden_dim * dim],
    ['rms_final', dim],
    ['freq_real', (seq_len * hs) / 2],
    ['freq_imag', (seq_len * hs) / 2],
  ];
  const floats = sizes.reduce((a, [, n]) => a + n, 0) + (config.shared_classifier ? 0 : vocab_size * dim);
  const expected = HEADER_BYTES + floats * 4;
  if (buf.length !== expected)
    throw new UserError(
      `${source}: header says dim ${dim}, ${n_layers} layers, vocab ${vocab_size}, which needs ${expected} bytes, but the file has ${buf.length}; the file is truncated or not a llama2.c v0 checkpoint`,
    );
  // Copy into an aligned buffer (the file view may be unaligned for Float32Array).
  const all = new Float32Array(floats);
  new Uint8Array(all.buffer).set(buf.subarray(HEADER_BYTES, expected));
  const out: Record<string, Float32Array> = {};
  let off = 0;
  for (const [name, n] of sizes) {
    out[name] = all.subarray(off, off + n);
    off += n;
  }
  const wcls = config.shared_classifier ? out.tok_embeddings : all.subarray(off, off + vocab_size * dim);
  return { config, ...(out as unknown as Omit<LlamaWeights, 'config' | 'wcls'>), wcls };
}

/** Writes a llama2.c v0 checkpoint (used for the bundled model, which trains in sdlkit). */
export function writeLlama2c(w: LlamaWeights): Uint8Array {
  const c = w.config;
  const hs = c.dim / c.n_heads;
  const header = new Int32Array([c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len]);
  const { real, imag } = w.freq_real && w.freq_imag ? { real: w.freq_real, imag: w.freq_imag } : ropeTables(c.seq_len, hs, c.rope_theta);
  const parts: Float32Array[] = [w.tok_embeddings, w.rms_att, w.wq, w.wk, w.wv, w.wo, w.rms_ffn, w.w1, w.w2, w.w3, w.rms_final, real, imag];
  if (!c.shared_classifier) parts.push(w.wcls);
  const total = HEADER_BYTES + parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(total);
  out.set(new Uint8Array(header.buffer), 0);
  let off = HEADER_BYTES;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), off);
    off += p.byteLength;
  }
  return out;
}

/** llama2.c's rotary tables: pair j of a head rotates by pos * theta^(-2j/hs). */
export function ropeTables(seqLen: number, hs: number, theta: number): { real: Float32Array; imag: Float32Array } {
  const real = new Float32Array((seqLen * hs) / 2);
  const imag = new Float32Array((seqLen * hs) / 2);
  for (let p = 0; p < seqLen; p++) {
    for (let j = 0; j < hs / 2; j++) {
      const freq = 1 / theta ** ((2 * j) / hs);
      real[p * (hs / 2) + j] = Math.cos(p * freq);
      imag[p * (hs / 2) + j] = Math.sin(p * freq);
    }
  }
  return { real, imag };
}

export const HOOK_SITES = ['resid_pre', 'attn_out', 'resid_mid', 'mlp_in', 'mlp_out', 'resid_post'] as const;
export type HookSite = (typeof HOOK_SITES)[number];
export const hookName = (layer: number, site: string): string => `blocks.${layer}.hook_${site}`;

/**
 * Builds the ONNX graph of a llama2.c model. Input `input_ids` int64 [batch, seq]; output `logits`
 * [batch, seq, vocab]. Every hook is an Identity node named `blocks.L.hook_*`.
 * Rotary embedding is written as q*cos + (q R)*sin with R the fixed pair-swap matrix, and grouped-query
 * attention by repeating K/V weight rows per query head: both are plain MatMul/Mul/Add, no custom ops.
 */
export function buildLlamaOnnx(w: LlamaWeights, metadata: Record<string, string> = {}): Uint8Array {
  const c = w.config;
  const D = c.dim,
    H = c.hidden_dim,
    NH = c.n_heads,
    hs = D / NH,
    KV = c.n_kv_heads,
    kvMul = NH / KV,
    T = c.seq_len;
  const g = new GraphBuilder('llama2c');
  const ids = g.input('input_ids', DataType.INT64, ['batch', 'seq']);

  // Sequence length T_cur as a 1-D tensor, for slicing the position tables and the causal mask.
  const shape = g.op('Shape', [ids]);
  const seq1d = g.op('Slice', [shape, g.i64('one_1d', [1]), g.i64('two_1d', [2]), g.i64('zero_1d', [0])]);
  const zero1d = 'zero_1d';

  // Position tables [T, D]: cos/sin of each pair's angle, repeated for both members of the pair.
  const { real, imag } = ropeTables(T, hs, c.rope_theta);
  const cos = new Float32Array(T * D),
    sin = new Float32Array(T * D);
  for (let p = 0; p < T; p++)
    for (let h = 0; h < NH; h++)
      for (let j = 0; j < hs / 2; j++) {
        const k = p * D + h * hs + 2 * j;
        cos[k] = cos[k + 1] = real[p * (hs / 2) + j];
        sin[k] = sin[k + 1] = imag[p * (hs / 2) + j];
      }
  const cosT = g.op('Slice', [g.f32('rope_cos', cos, [T, D]), zero1d, seq1d, zero1d]);
  const sinT = g.op('Slice', [g.f32('rope_sin', sin, [T, D]), zero1d, seq1d, zero1d]);
  // R: (x R)[2j] = -x[2j+1], (x R)[2j+1] = x[2j]  => rotated = x*cos + (x R)*sin.
  const R = new Float32Array(D * D);
  for (let i = 0; i < D; i += 2) {
    R[(i + 1) * D + i] = -1; // out[i] gets -x[i+1]
    R[i * D + (i + 1)] = 1; // out[i+1] gets x[i]
  }
  const rot = g.f32('rope_swap', R, [D, D]);
  const mask = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -1e9;
  const maskT = g.op('Slice', [
    g.f32('causal_mask', mask, [T, T]),
    g.i64('zero_2d', [0, 0]),
    g.op('Concat', [seq1d, seq1d], { axis: 0 }),
    g.i64('axes_01', [0, 1]),
  ]);
  const scale = g.scalarF32(1 / Math.sqrt(hs), 'attn_scale');
  const eps = g.scalarF32(c.norm_eps, 'norm_eps');
  const shapeHeads = g.i64('shape_heads', [0, 0, NH, hs]);
  const shapeModel = g.i64('shape_model', [0, 0, D]);

  const rmsnorm = (x: string, weight: string): string => {
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, eps])])]);
    return g.op('Mul', [g.op('Mul', [x, inv]), weight]);
  };
  const layerSlice = (a: Float32Array, l: number, n: number) => a.subarray(l * n, (l + 1) * n);
  /** Repeats each kv head's rows kvMul times so K/V have one head per query head. */
  const repeatKv = (a: Float32Array): Float32Array => {
    const out = new Float32Array(NH * hs * D);
    for (let h = 0; h < NH; h++) out.set(a.subarray(Math.floor(h / kvMul) * hs * D, (Math.floor(h / kvMul) + 1) * hs * D), h * hs * D);
    return out;
  };

  let x = g.op('Gather', [g.f32('tok_embeddings', w.tok_embeddings, [c.vocab_size, D]), ids], { axis: 0 });
  for (let l = 0; l < c.n_layers; l++) {
    const p = `layers.${l}`;
    x = g.name(x, hookName(l, 'resid_pre'));
    const xn = rmsnorm(x, g.f32(`${p}.attention_norm.weight`, layerSlice(w.rms_att, l, D).slice(), [D]));
    const wq = g.f32(`${p}.attention.wq.T`, transpose(layerSlice(w.wq, l, D * D), D, D), [D, D]);
    const wk = g.f32(`${p}.attention.wk.T`, transpose(repeatKv(layerSlice(w.wk, l, KV * hs * D)), D, D), [D, D]);
    const wv = g.f32(`${p}.attention.wv.T`, transpose(repeatKv(layerSlice(w.wv, l, KV * hs * D)), D, D), [D, D]);
    const rope = (t: string) => g.op('Add', [g.op('Mul', [t, cosT]), g.op('Mul', [g.op('MatMul', [t, rot]), sinT])]);
    const q = rope(g.op('MatMul', [xn, wq]));
    const k = rope(g.op('MatMul', [xn, wk]));
    const v = g.op('MatMul', [xn, wv]);
    const qh = g.op('Transpose', [g.op('Reshape', [q, shapeHeads])], { perm: [0, 2, 1, 3] });
    const kh = g.op('Transpose', [g.op('Reshape', [k, shapeHeads])], { perm: [0, 2, 3, 1] });
    const vh = g.op('Transpose', [g.op('Reshape', [v, shapeHeads])], { perm: [0, 2, 1, 3] });
    const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qh, kh]), scale]), maskT]);
    const att = g.op('Softmax', [scores], { axis: -1 });
    const ctx = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [att, vh])], { perm: [0, 2, 1, 3] }), shapeModel]);
    const attnOut = g.name(g.op('MatMul', [ctx, g.f32(`${p}.attention.wo.T`, transpose(layerSlice(w.wo, l, D * D), D, D), [D, D])]), hookName(l, 'attn_out'));
    const mid = g.name(g.op('Add', [x, attnOut]), hookName(l, 'resid_mid'));
    const mlpIn = g.name(rmsnorm(mid, g.f32(`${p}.ffn_norm.weight`, layerSlice(w.rms_ffn, l, D).slice(), [D])), hookName(l, 'mlp_in'));
    const h1 = g.op('MatMul', [mlpIn, g.f32(`${p}.feed_forward.w1.T`, transpose(layerSlice(w.w1, l, H * D), H, D), [D, H])]);
    const h3 = g.op('MatMul', [mlpIn, g.f32(`${p}.feed_forward.w3.T`, transpose(layerSlice(w.w3, l, H * D), H, D), [D, H])]);
    const gated = g.op('Mul', [g.op('Mul', [h1, g.op('Sigmoid', [h1])]), h3]);
    const mlpOut = g.name(
      g.op('MatMul', [gated, g.f32(`${p}.feed_forward.w2.T`, transpose(layerSlice(w.w2, l, D * H), D, H), [H, D])]),
      hookName(l, 'mlp_out'),
    );
    x = g.name(g.op('Add', [mid, mlpOut]), hookName(l, 'resid_post'));
  }
  const xf = rmsnorm(x, g.f32('norm.weight', w.rms_final.slice(), [D]));
  g.op('MatMul', [xf, g.f32('output.weight.T', transpose(w.wcls, c.vocab_size, D), [D, c.vocab_size])], {}, 'logits');
  g.output('logits', DataType.FLOAT, ['batch', 'seq', c.vocab_size]);
  return g.toBytes({ 'sdlkit.architecture': 'llama2c', 'sdlkit.config': JSON.stringify(c), ...metadata });
}
