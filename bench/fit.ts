// Dictionary training throughput: sdlkit's training step and update (the Engine the trainer uses) against the
// PyTorch reference in bench/peers/sae_torch.py, on the same sizes, in one run, alternating, repeated.
// The peer needs Debian's python3-torch; without it the bench says how to get it and reports sdlkit alone.
// Usage: node dist/bench/fit.js [--steps 20] [--repeats 3] [--sizes 64,128,512] [--backends native,wasm] [--json out.json]
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEngine } from '../src/sdl/engine.js';
import { TRAIN_DEFAULTS, type Activation, type DictConfig } from '../src/sdl/config.js';
import { Rng } from '../src/util/rng.js';
import { median, spread } from './stats.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

/** Tokens per second of `steps` training steps (after 3 warm-up steps), the way PyTorch's loop is timed. */
async function sdlkit(
  backend: string,
  dIn: number,
  expansion: number,
  activation: Activation,
  k: number,
  B: number,
  steps: number,
): Promise<{ tps: number; name: string }> {
  const dSae = dIn * expansion;
  const cfg: DictConfig = {
    kind: 'sae',
    activation,
    sitesIn: [{ name: 'x', width: dIn }],
    sitesOut: [{ name: 'x', width: dIn }],
    dIn,
    dOut: dIn,
    dSae,
    k,
    matryoshkaWidths: [dSae],
    applyBDecToInput: true,
    noBias: false,
    tied: false,
  };
  // The peer's initialisation: unit-norm random decoder rows, W_enc = W_dec^T, zero biases.
  const rng = new Rng(0);
  const W_dec = Float32Array.from({ length: dSae * dIn }, () => rng.normal());
  for (let j = 0; j < dSae; j++) {
    const row = W_dec.subarray(j * dIn, (j + 1) * dIn);
    const n = Math.hypot(...row);
    row.forEach((v, i) => (row[i] = v / n));
  }
  const W_enc = new Float32Array(dIn * dSae);
  for (let j = 0; j < dSae; j++) for (let i = 0; i < dIn; i++) W_enc[i * dSae + j] = W_dec[j * dIn + i];
  const train = { ...TRAIN_DEFAULTS, unitNormDecoder: true };
  const { engine } = await createEngine(backend, { cfg, train, weights: { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) } });
  // Four fixed batches of standard normal rows, cycled (as the peer does).
  const batches = Array.from({ length: 4 }, () => Float32Array.from({ length: B * dIn }, () => rng.normal()));
  const one = (i: number) => {
    const X = batches[i % 4];
    engine.step(X, X, B, { sparsity: activation === 'relu' ? 5 : 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
    engine.update(1e-3, 0);
  };
  for (let i = 0; i < 3; i++) one(i);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) one(i);
  const tps = (steps * B) / ((performance.now() - t0) / 1000);
  const name = engine.backend;
  engine.dispose();
  return { tps, name };
}

function peer(dIn: number, expansion: number, activation: string, k: number, B: number, steps: number): number | string {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE; // with them set, OpenBLAS picks a slower kernel on this processor (DEVELOPERS.md)
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync(
    '/usr/bin/python3',
    [join(process.cwd(), 'bench/peers/sae_torch.py'), String(dIn), String(expansion), activation, String(k), String(B), String(steps)],
    { encoding: 'utf8', env },
  );
  if (r.status !== 0)
    return /No module named 'torch'/.test(r.stderr)
      ? 'torch missing: apt-get install python3-torch libopenblas0-pthread'
      : `peer failed: ${r.stderr.trim().split('\n').pop()}`;
  return JSON.parse(r.stdout).tokens_per_second;
}

async function main() {
  const steps = Number(arg('steps', '20'));
  const repeats = Number(arg('repeats', '3'));
  const B = Number(arg('batch', '4096'));
  const sizes = arg('sizes', '64,128,512').split(',').map(Number);
  const backends = arg('backends', 'native').split(',');
  const acts = arg('activations', 'topk,relu').split(',') as ('topk' | 'relu')[];
  const rows: Record<string, unknown>[] = [];
  console.log(
    `fit throughput, tokens/s, batch ${B}, 8x expansion, ${steps} timed steps after 3 warm-up, median of ${repeats} (min-max); PyTorch fp32 on 2 threads`,
  );
  console.log(`| d_in | activation | ${backends.map((b) => `sdlkit ${b}`).join(' | ')} | PyTorch | ${backends.map((b) => `${b} / PyTorch`).join(' | ')} |`);
  console.log(`|---|---|${backends.map(() => '---|').join('')}---|${backends.map(() => '---|').join('')}`);
  for (const d of sizes)
    for (const act of acts) {
      const k = act === 'topk' ? 32 : 0;
      const ours: Record<string, number[]> = Object.fromEntries(backends.map((b) => [b, []]));
      const names: Record<string, string> = {};
      const theirs: number[] = [];
      let peerNote = '';
      for (let r = 0; r < repeats; r++) {
        for (const b of backends) {
          const s = await sdlkit(b, d, 8, act, k, B, steps);
          ours[b].push(s.tps);
          names[b] = s.name;
        }
        const pt = peer(d, 8, act, k, B, steps);
        if (typeof pt === 'number') theirs.push(pt);
        else peerNote = pt;
      }
      const pm = theirs.length ? median(theirs) : NaN;
      const cells = backends.map((b) => `${Math.round(median(ours[b]))} (${spread(ours[b])})`);
      const ratios = backends.map((b) => (theirs.length ? `${(median(ours[b]) / pm).toFixed(2)}x` : '-'));
      console.log(
        `| ${d} | ${act === 'topk' ? 'TopK k=32' : 'ReLU+L1'} | ${cells.join(' | ')} | ${theirs.length ? `${Math.round(pm)} (${spread(theirs)})` : peerNote} | ${ratios.join(' | ')} |`,
      );
      rows.push({ d_in: d, activation: act, sdlkit: Object.fromEntries(backends.map((b) => [names[b], ours[b]])), pytorch: theirs });
    }
  const out = arg('json', '');
  if (out) writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), batch: B, steps, repeats, rows }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
