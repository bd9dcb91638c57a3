// Dictionary training throughput: sdlkit's step (tfjs, the backend fit uses) against the PyTorch reference in
// bench/peers/sae_torch.py on the same sizes, in one run. The peer needs Debian's python3-torch; without it the
// bench says how to get it and reports sdlkit alone. Usage: node dist/bench/fit.js [--steps 20] [--sizes 64,128,512]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tf, initBackend } from '../src/sdl/backend.js';
import { step, type Params } from '../src/sdl/step.js';
import { Adam, normalizeRows, projectDecoderGrad } from '../src/sdl/adam.js';
import type { Activation, DictConfig } from '../src/sdl/config.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

function sdlkit(dIn: number, expansion: number, activation: Activation, k: number, B: number, steps: number): number {
  const dSae = dIn * expansion;
  const cfg: DictConfig = { kind: 'sae', activation, sitesIn: [], sitesOut: [], dIn, dOut: dIn, dSae, k, matryoshkaWidths: [dSae], applyBDecToInput: true, noBias: false, tied: false };
  const W_dec = normalizeRows(tf.randomNormal([dSae, dIn]) as tf.Tensor2D);
  const p: Params = { W_enc: tf.transpose(W_dec) as tf.Tensor2D, b_enc: tf.zeros([dSae]), W_dec, b_dec: tf.zeros([dIn]) };
  const X = tf.randomNormal([B, dIn]) as tf.Tensor2D;
  const adam = new Adam(0.9, 0.999, 1e-8);
  const one = () => {
    const r = step(cfg, p, X, X, { sparsity: activation === 'relu' ? 5 : 0, bandwidth: 0.05, auxkCoefficient: 0, auxkK: 0 });
    const g = r.grads;
    const pg = projectDecoderGrad(p.W_dec, g.W_dec as tf.Tensor2D);
    g.W_dec!.dispose();
    g.W_dec = pg;
    adam.update(p, g, 1e-3, 0);
    tf.dispose(Object.values(g) as tf.Tensor[]);
    const wn = normalizeRows(p.W_dec);
    p.W_dec.dispose();
    p.W_dec = wn;
  };
  for (let i = 0; i < 3; i++) one();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) one();
  const tps = (steps * B) / ((performance.now() - t0) / 1000);
  tf.dispose([...Object.values(p), X] as tf.Tensor[]);
  adam.dispose();
  return tps;
}

function peer(dIn: number, expansion: number, activation: string, k: number, B: number, steps: number): number | string {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE; // with them set, OpenBLAS picks a slower kernel on this processor (DEVELOPERS.md)
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync('/usr/bin/python3', [join(process.cwd(), 'bench/peers/sae_torch.py'), String(dIn), String(expansion), activation, String(k), String(B), String(steps)], { encoding: 'utf8', env });
  if (r.status !== 0) return /No module named 'torch'/.test(r.stderr) ? 'torch missing: apt-get install python3-torch libopenblas0-pthread' : `peer failed: ${r.stderr.trim().split('\n').pop()}`;
  return JSON.parse(r.stdout).tokens_per_second;
}

async function main() {
  const backend = await initBackend(arg('backend', '') || undefined);
  const steps = Number(arg('steps', '20'));
  const B = Number(arg('batch', '4096'));
  const sizes = arg('sizes', '64,128,512').split(',').map(Number);
  console.log(`fit throughput, tokens/s, batch ${B}, 8x expansion, ${steps} timed steps after 3 warm-up; sdlkit backend ${backend}; PyTorch fp32 on 2 threads`);
  console.log('| d_in | activation | sdlkit | PyTorch | sdlkit / PyTorch |');
  console.log('|---|---|---|---|---|');
  for (const d of sizes) for (const [act, k] of [['topk', 32], ['relu', 0]] as const) {
    const s = sdlkit(d, 8, act, k, B, steps);
    const pt = peer(d, 8, act, k, B, steps);
    console.log(`| ${d} | ${act === 'topk' ? 'TopK k=32' : 'ReLU+L1'} | ${Math.round(s)} | ${typeof pt === 'number' ? Math.round(pt) : pt} | ${typeof pt === 'number' ? (s / pt).toFixed(2) + 'x' : '-'} |`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
