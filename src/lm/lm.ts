// The llama2.c architecture in TensorFlow.js, for training the bundled model and checking its ONNX graph:
// RMSNorm, rotary embeddings (pairs (2j, 2j+1) of each head), SwiGLU, grouped-query attention, tied classifier.
// Every matMul goes through `mm`, whose gradient uses explicit transposes (see DEVELOPERS.md on tfjs-wasm).
import { tf } from '../tensor/backend.js';
import { ropeTables, type LlamaConfig, type LlamaWeights } from '../models/llama2c.js';
import { Rng } from '../util/rng.js';

/** Plain matMul; its gradient is re-registered with explicit transposes by ensureGradients(). */
export const mm = (a: tf.Tensor, b: tf.Tensor): tf.Tensor => tf.matMul(a, b);

export interface LmParams {
  tok_embeddings: tf.Variable; // [V, D]
  layers: {
    rms_att: tf.Variable;
    wq: tf.Variable;
    wk: tf.Variable;
    wv: tf.Variable;
    wo: tf.Variable; // stored [in, out]
    rms_ffn: tf.Variable;
    w1: tf.Variable;
    w2: tf.Variable;
    w3: tf.Variable;
  }[];
  rms_final: tf.Variable;
}

export function initLm(c: LlamaConfig, seed: number): LmParams {
  const rng = new Rng(seed);
  const hs = c.dim / c.n_heads;
  const normal = (shape: number[], std: number) =>
    tf.variable(
      tf.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * std),
        shape,
      ),
    );
  const ones = (n: number) => tf.variable(tf.ones([n]));
  // GPT-2 style init: 0.02, with the residual projections scaled by 1/sqrt(2 L).
  const std = 0.02,
    proj = 0.02 / Math.sqrt(2 * c.n_layers);
  return {
    tok_embeddings: normal([c.vocab_size, c.dim], std),
    layers: Array.from({ length: c.n_layers }, () => ({
      rms_att: ones(c.dim),
      wq: normal([c.dim, c.dim], std),
      wk: normal([c.dim, c.n_kv_heads * hs], std),
      wv: normal([c.dim, c.n_kv_heads * hs], std),
      wo: normal([c.dim, c.dim], proj),
      rms_ffn: ones(c.dim),
      w1: normal([c.dim, c.hidden_dim], std),
      w2: normal([c.hidden_dim, c.dim], proj),
      w3: normal([c.dim, c.hidden_dim], std),
    })),
    rms_final: ones(c.dim),
  };
}

export function lmVariables(p: LmParams): tf.Variable[] {
  return [p.tok_embeddings, ...p.layers.flatMap((l) => [l.rms_att, l.wq, l.wk, l.wv, l.wo, l.rms_ffn, l.w1, l.w2, l.w3]), p.rms_final];
}

function rmsnorm(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), w);
}

/** Logits [B, T, V] for ids [B, T]. */
export function lmForward(c: LlamaConfig, p: LmParams, ids: tf.Tensor2D): tf.Tensor3D {
  const [B, T] = ids.shape;
  const D = c.dim,
    NH = c.n_heads,
    KV = c.n_kv_heads,
    hs = D / NH,
    rep = NH / KV;
  // Rotary embedding as x*cos + (x R)*sin with R the pair swap ((x R)[2j] = -x[2j+1], (x R)[2j+1] = x[2j]):
  // the same form as the ONNX graph, and far faster in tfjs than splitting the pairs apart.
  const { real, imag } = ropeTables(T, hs, c.rope_theta);
  const cosT = new Float32Array(B * T * D),
    sinT = new Float32Array(B * T * D);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < NH; h++)
        for (let j = 0; j < hs / 2; j++) {
          const k = (b * T + t) * D + h * hs + 2 * j;
          cosT[k] = cosT[k + 1] = real[t * (hs / 2) + j];
          sinT[k] = sinT[k + 1] = imag[t * (hs / 2) + j];
        }
  const cos = tf.tensor(cosT, [B * T, D]),
    sin = tf.tensor(sinT, [B * T, D]);
  const R = new Float32Array(D * D);
  for (let i = 0; i < D; i += 2) {
    R[(i + 1) * D + i] = -1;
    R[i * D + i + 1] = 1;
  }
  const swapPairs = tf.tensor(R, [D, D]);
  const rope = (t: tf.Tensor) => tf.reshape(tf.add(tf.mul(t, cos), tf.mul(mm(t, swapPairs), sin)), [B, T, NH, hs]);
  const maskData = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) maskData[i * T + j] = -1e9;
  const mask = tf.tensor(maskData, [1, 1, T, T]);
  let repeatKv: tf.Tensor | undefined;
  if (rep > 1) {
    const r = new Float32Array(KV * hs * NH * hs);
    for (let q = 0; q < NH; q++) for (let j = 0; j < hs; j++) r[(Math.floor(q / rep) * hs + j) * NH * hs + q * hs + j] = 1;
    repeatKv = tf.tensor(r, [KV * hs, NH * hs]);
  }
  // Embedding lookup as one-hot x table: gather's gradient (UnsortedSegmentSum) has no wasm kernel.
  let x = mm(tf.oneHot(tf.cast(tf.reshape(ids, [-1]), 'int32'), c.vocab_size), p.tok_embeddings);
  for (const l of p.layers) {
    const h = rmsnorm(x, l.rms_att, c.norm_eps);
    const q = tf.transpose(rope(mm(h, l.wq)), [0, 2, 1, 3]); // [B, NH, T, hs]
    // Grouped-query attention: each kv head serves `rep` query heads (a fixed 0/1 matrix copies it).
    const kvFull = (t: tf.Tensor) => (rep > 1 ? mm(t, repeatKv!) : t);
    const k = rope(kvFull(mm(h, l.wk)));
    const v = tf.reshape(kvFull(mm(h, l.wv)), [B, T, NH, hs]);
    const kT = tf.transpose(k, [0, 2, 3, 1]); // [B, NH, hs, T]
    const vh = tf.transpose(v, [0, 2, 1, 3]);
    const att = tf.softmax(tf.add(tf.mul(mm(q, kT), 1 / Math.sqrt(hs)), mask));
    const ctx = tf.reshape(tf.transpose(mm(att, vh), [0, 2, 1, 3]), [B * T, D]);
    x = tf.add(x, mm(ctx, l.wo));
    const g = rmsnorm(x, l.rms_ffn, c.norm_eps);
    const h1 = mm(g, l.w1);
    x = tf.add(x, mm(tf.mul(tf.mul(h1, tf.sigmoid(h1)), mm(g, l.w3)), l.w2));
  }
  const logits = mm(rmsnorm(x, p.rms_final, c.norm_eps), tf.transpose(p.tok_embeddings));
  return tf.reshape(logits, [B, T, c.vocab_size]) as tf.Tensor3D;
}

/** Mean next-token cross-entropy (nats) of windows ids [B, T+1]. */
export function lmLoss(c: LlamaConfig, p: LmParams, windows: tf.Tensor2D): tf.Scalar {
  const [B, T1] = windows.shape;
  const T = T1 - 1;
  const inp = tf.slice(windows, [0, 0], [B, T]) as tf.Tensor2D;
  const tgt = tf.reshape(tf.slice(windows, [0, 1], [B, T]), [-1]);
  const logp = tf.logSoftmax(tf.reshape(lmForward(c, p, inp), [B * T, c.vocab_size]));
  return tf.div(tf.neg(tf.sum(tf.mul(logp, tf.oneHot(tf.cast(tgt, 'int32'), c.vocab_size)))), B * T) as tf.Scalar;
}

/** tfjs parameters -> llama2.c weights (matrices back to [out, in]). */
export function lmToLlama(c: LlamaConfig, p: LmParams): LlamaWeights {
  const cat = (f: (l: LmParams['layers'][number]) => tf.Tensor, transpose: boolean) => {
    const parts = p.layers.map((l) => (transpose ? tf.transpose(f(l)) : f(l)).dataSync() as Float32Array);
    const out = new Float32Array(parts.reduce((a, x) => a + x.length, 0));
    let o = 0;
    for (const x of parts) {
      out.set(x, o);
      o += x.length;
    }
    return out;
  };
  const emb = p.tok_embeddings.dataSync().slice() as Float32Array;
  return {
    config: c,
    tok_embeddings: emb,
    rms_att: cat((l) => l.rms_att, false),
    wq: cat((l) => l.wq, true),
    wk: cat((l) => l.wk, true),
    wv: cat((l) => l.wv, true),
    wo: cat((l) => l.wo, true),
    rms_ffn: cat((l) => l.rms_ffn, false),
    w1: cat((l) => l.w1, true),
    w2: cat((l) => l.w2, true),
    w3: cat((l) => l.w3, true),
    rms_final: p.rms_final.dataSync().slice() as Float32Array,
    wcls: emb,
  };
}

/** llama2.c weights -> tfjs parameters (for resuming and for checking the ONNX graph against tfjs). */
export function llamaToLm(w: LlamaWeights): LmParams {
  const c = w.config;
  const hs = c.dim / c.n_heads,
    kv = c.n_kv_heads * hs;
  const mat = (a: Float32Array, l: number, rows: number, cols: number) =>
    tf.variable(tf.transpose(tf.tensor(a.slice(l * rows * cols, (l + 1) * rows * cols), [rows, cols])));
  const vec = (a: Float32Array, l: number, n: number) => tf.variable(tf.tensor(a.slice(l * n, (l + 1) * n)));
  return {
    tok_embeddings: tf.variable(tf.tensor(w.tok_embeddings, [c.vocab_size, c.dim])),
    layers: Array.from({ length: c.n_layers }, (_, l) => ({
      rms_att: vec(w.rms_att, l, c.dim),
      wq: mat(w.wq, l, c.dim, c.dim),
      wk: mat(w.wk, l, kv, c.dim),
      wv: mat(w.wv, l, kv, c.dim),
      wo: mat(w.wo, l, c.dim, c.dim),
      rms_ffn: vec(w.rms_ffn, l, c.dim),
      w1: mat(w.w1, l, c.hidden_dim, c.dim),
      w2: mat(w.w2, l, c.dim, c.hidden_dim),
      w3: mat(w.w3, l, c.hidden_dim, c.dim),
    })),
    rms_final: tf.variable(tf.tensor(w.rms_final)),
  };
}
