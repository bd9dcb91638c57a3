// Cross-layer transcoder training throughput: sdlkit's CLT step and update (the Engine the trainer uses, native
// kernels) against the PyTorch reference CLT step in bench/peers/clt_torch.py, same sizes and algorithm, 2 threads,
// alternating, repeated; medians and spread.
// Usage: node dist/bench/clt.js [--sizes 8x64x512,8x256x2048] [--activations topk,relu] [--k 32] [--batch 1024] [--steps 20] [--repeats 3] [--peer-coretype Haswell] [--json out.json]
import { writeFileSync } from 'node:fs';
import { createEngine } from '../src/sdl/engine.js';
import { TRAIN_DEFAULTS, makeDictConfig, type Activation } from '../src/sdl/config.js';
import { cltShape, cltToDense, decOffset } from '../src/sdl/clt.js';
import { Rng } from '../src/util/rng.js';
import { runPeer } from './peers/run.js';
import { median, spread } from './stats.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

async function sdlkit(L: number, d: number, n: number, activation: Activation, k: number, B: number, steps: number): Promise<{ tps: number; backend: string }> {
  const site = (kind: string) => Array.from({ length: L }, (_, l) => ({ name: `blocks.${l}.hook_${kind}`, width: d }));
  const cfg = makeDictConfig({ kind: 'clt', activation, sitesIn: site('mlp_in'), sitesOut: site('mlp_out'), latentsPerLayer: n, k });
  const s = cltShape(cfg);
  // The peer's initialisation: encoder columns of norm ~0.1, unit-norm random decoder rows, zero biases.
  const rng = new Rng(0);
  const W_encT = Float32Array.from({ length: L * n * d }, () => (rng.normal() * 0.1) / Math.sqrt(d));
  const W_dec = new Float32Array(decOffset(s, L));
  for (let j = 0; j < L * n; j++) {
    const l = Math.floor(j / n),
      len = (L - l) * d,
      off = decOffset(s, l) + (j % n) * len;
    let q = 0;
    for (let i = 0; i < len; i++) q += (W_dec[off + i] = rng.normal()) ** 2;
    for (let i = 0; i < len; i++) W_dec[off + i] /= Math.sqrt(q);
  }
  const dense = cltToDense(s, { W_encT, b_enc: new Float32Array(L * n), W_dec, b_dec: new Float32Array(L * d) });
  const train = { ...TRAIN_DEFAULTS, unitNormDecoder: true };
  const { engine } = await createEngine('native', {
    cfg,
    train,
    weights: { W_enc: dense.W_enc, b_enc: new Float32Array(L * n), W_dec: dense.W_dec, b_dec: new Float32Array(L * d) },
  });
  const batches = Array.from({ length: 4 }, () => [
    Float32Array.from({ length: B * L * d }, () => rng.normal()),
    Float32Array.from({ length: B * L * d }, () => rng.normal()),
  ]);
  const one = (i: number) => {
    const [X, Y] = batches[i % 4];
    engine.step(X, Y, B, { sparsity: activation === 'relu' ? 5 : 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
    engine.update(1e-3, 0);
  };
  for (let i = 0; i < 3; i++) one(i);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) one(i);
  return { tps: (steps * B) / ((performance.now() - t0) / 1000), backend: engine.backend };
}

function peer(L: number, d: number, n: number, activation: string, k: number, B: number, steps: number): number | string {
  const out = runPeer('clt_torch.py', [L, d, n, activation, k, B, steps], arg('peer-coretype', ''));
  return typeof out === 'string' ? out : out.tokens_per_second;
}

const sizes = arg('sizes', '8x64x512,8x256x2048')
  .split(',')
  .map((s) => s.split('x').map(Number));
const activations = arg('activations', 'topk,relu').split(',') as Activation[];
const k = Number(arg('k', '32')),
  B = Number(arg('batch', '1024')),
  steps = Number(arg('steps', '20')),
  repeats = Number(arg('repeats', '3'));
const rows: Record<string, unknown>[] = [];
for (const [L, d, n] of sizes)
  for (const act of activations) {
    const ours: number[] = [],
      theirs: number[] = [];
    let backend = '';
    let failed: string | undefined;
    for (let r = 0; r < repeats; r++) {
      const o = await sdlkit(L, d, n, act, k, B, act === 'relu' ? Math.max(3, steps >> 2) : steps);
      ours.push(o.tps);
      backend = o.backend;
      const p = peer(L, d, n, act, k, B, act === 'relu' ? Math.max(3, steps >> 2) : steps);
      if (typeof p === 'string') failed = p;
      else theirs.push(p);
    }
    const row = {
      size: `${L} layers x d ${d} x ${n} latents/layer`,
      activation: act === 'topk' ? `topk k ${k}/layer` : 'relu+L1',
      sdlkit_tok_s: Math.round(median(ours)),
      sdlkit_spread: spread(ours),
      torch_tok_s: theirs.length ? Math.round(median(theirs)) : null,
      torch_spread: theirs.length ? spread(theirs) : null,
      ratio: theirs.length ? Number((median(ours) / median(theirs)).toFixed(2)) : null,
      backend,
      ...(failed ? { peer: failed } : {}),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
const out = arg('json', '');
if (out) writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), batch: B, steps, repeats, rows }, null, 2)}\n`);
