// Dictionary training throughput: sdlkit's training step and update (the Engine the trainer uses) against the
// PyTorch reference in bench/peers/sae_torch.py, on the same sizes, in one run, alternating, repeated.
// The peer needs Debian's python3-torch; without it the bench says how to get it and reports sdlkit alone.
// Usage: node dist/bench/fit.js [--steps 20] [--relu-steps 200] [--repeats 3] [--sizes 64,128,512,768,768x32] [--activations topk,batchtopk,relu] [--backends native,wasm] [--peers dense,sparsify|none] [--peer-coretype Haswell] [--per-step] [--products] [--json out.json] [--plot prefix]
// --per-step: after each sdlkit run, its dense-path steps, and its sparse ones by the fraction of latents firing
// (ReLU+L1's run starts dense and gets sparse: where its time goes).
// --products: before each ReLU+L1 repeat, the five GEMMs of its dense step timed alone in their own layouts, against
// that run's dense steps (the floor a dense step cannot go under at this GEMM's speed).
// --plot prefix: each ReLU+L1 run of the first backend drawn as prefix-<d_in>x<d_sae>-r<repeat>.svg: the run's time
// so far against the dense peer's (at the rate it measured in the same repeat) and 2.5x it, each step's time, and
// the fraction of latents firing.
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createEngine } from '../src/sdl/engine.js';
import { transpose, unitRows } from '../src/tensor/linalg.js';
import { TRAIN_DEFAULTS, type Activation, type DictConfig } from '../src/sdl/config.js';
import { Rng } from '../src/util/rng.js';
import { lineChart } from '../src/util/svg-plot.js';
import { runPeer } from './peers/run.js';
import { median, spread } from './stats.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

/** One timed step: the fraction of latents firing, its milliseconds, and whether it ran the dense (GEMM) path. */
type StepTime = { firing: number; ms: number; dense: boolean };

/** Tokens per second of `steps` training steps (after 3 warm-up steps), the way PyTorch's loop is timed. */
async function sdlkit(
  backend: string,
  dIn: number,
  expansion: number,
  activation: Activation,
  k: number,
  B: number,
  steps: number,
): Promise<{ tps: number; name: string; perStep: StepTime[] }> {
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
  const W_dec = unitRows(
    Float32Array.from({ length: dSae * dIn }, () => rng.normal()),
    dSae,
    dIn,
  );
  const W_enc = transpose(W_dec, dSae, dIn);
  const train = { ...TRAIN_DEFAULTS, unitNormDecoder: true };
  const { engine } = await createEngine(backend, { cfg, train, weights: { W_enc, b_enc: new Float32Array(dSae), W_dec, b_dec: new Float32Array(dIn) } });
  // Four fixed batches of standard normal rows, cycled (as the peer does).
  const batches = Array.from({ length: 4 }, () => Float32Array.from({ length: B * dIn }, () => rng.normal()));
  const perStep: StepTime[] = [];
  const one = (i: number) => {
    const X = batches[i % 4];
    const t = performance.now();
    const r = engine.step(X, X, B, { sparsity: activation === 'relu' ? 5 : 0, bandwidth: 1, auxkCoefficient: 0, auxkK: 0 });
    engine.update(1e-3, 0);
    return { firing: r.l0 / dSae, ms: performance.now() - t, dense: r.dense === true };
  };
  for (let i = 0; i < 3; i++) one(i);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) perStep.push(one(i));
  const tps = (steps * B) / ((performance.now() - t0) / 1000);
  const name = engine.backend;
  engine.dispose();
  return { tps, name, perStep };
}

/** A run's steps (--per-step): the dense (GEMM) path's, then the sparse path's in bands of the fraction firing: how many, their time, a step's mean. */
function printPerStep(label: string, perStep: StepTime[]) {
  console.log(`${label}, by path and fraction of latents firing:`);
  console.log('| steps | count | time s | ms a step |\n|---|---|---|---|');
  const row = (name: string, sel: StepTime[]) => {
    const t = sel.reduce((a, s) => a + s.ms, 0);
    if (sel.length) console.log(`| ${name} | ${sel.length} | ${(t / 1000).toFixed(1)} | ${(t / sel.length).toFixed(0)} |`);
  };
  row(
    'dense path',
    perStep.filter((s) => s.dense),
  );
  const sparse = perStep.filter((s) => !s.dense);
  const edges = [Number.POSITIVE_INFINITY, 0.1, 0.05, 0.03, 0.02, 0.01, 0];
  for (let i = 1; i < edges.length; i++) {
    const [lo, hi] = [edges[i], edges[i - 1]];
    row(
      i === 1 ? `sparse, ${100 * lo}% and more` : `sparse, ${100 * lo}-${100 * hi}%`,
      sparse.filter((s) => s.firing >= lo && s.firing < hi),
    );
  }
}

/**
 * A ReLU+L1 run as an SVG (--plot): its time so far against the dense peer's at the peer's measured rate (NaN when
 * the peer did not run: its lines are left out), each step's milliseconds (dense-path and sparse-path steps apart),
 * and the fraction of latents firing.
 */
function plotRun(path: string, title: string, perStep: StepTime[], B: number, peerTps: number) {
  const steps = perStep.map((_, i) => i + 1);
  let t = 0;
  const cumulative = perStep.map((s, i): [number, number] => [steps[i], (t += s.ms / 1000)]);
  const peerStep = Number.isFinite(peerTps) && peerTps > 0 ? B / peerTps : NaN;
  const line = (perStepS: number): [number, number][] => [
    [1, perStepS],
    [perStep.length, perStep.length * perStepS],
  ];
  const peerLines = Number.isFinite(peerStep)
    ? [
        { name: 'PyTorch dense', points: line(peerStep) },
        { name: '2.5x the dense peer', points: line(peerStep / 2.5) },
      ]
    : [];
  const svg = lineChart(
    [
      { title: 'Time so far', xLabel: 'step', yLabel: 'seconds', series: [{ name: 'sdlkit', points: cumulative }, ...peerLines] },
      {
        title: 'Each step',
        xLabel: 'step',
        yLabel: 'ms',
        series: [
          ...(['dense', 'sparse'] as const).map((path) => ({
            name: `sdlkit, ${path} steps`,
            points: perStep.flatMap((s, i): [number, number][] => (s.dense === (path === 'dense') ? [[steps[i], s.ms]] : [])),
          })),
          ...(Number.isFinite(peerStep) ? [{ name: 'PyTorch dense', points: line(0).map(([x]): [number, number] => [x, 1000 * peerStep]) }] : []),
        ],
      },
      {
        title: 'Latents firing',
        xLabel: 'step',
        yLabel: '% of the batch',
        series: [{ name: 'sdlkit', points: perStep.map((s, i): [number, number] => [steps[i], 100 * s.firing]) }],
      },
    ],
    { title },
  );
  writeFileSync(path, svg);
  console.log(`wrote ${path}`);
}

/** The dense step's products timed alone against the run's dense steps (--products). */
function printProducts(label: string, macs: number, products: { name: string; ms: number }[], perStep: StepTime[]) {
  if (products.some((p) => !Number.isFinite(p.ms))) {
    console.log(`${label}: the native kernels are not built, no products timed`);
    return;
  }
  const dense = perStep.filter((s) => s.dense);
  const sum = products.reduce((a, p) => a + p.ms, 0);
  const each = products.map((p) => `${p.name} ${p.ms.toPrecision(3)} ms (${((2 * macs) / p.ms / 1e6).toFixed(0)} GFLOP/s)`).join(', ');
  const stepMs = dense.length ? dense.reduce((a, s) => a + s.ms, 0) / dense.length : NaN;
  const share = dense.length
    ? `; its ${dense.length} dense steps ${stepMs.toFixed(0)} ms a step: the products are ${((100 * sum) / stepMs).toFixed(0)}% of one`
    : '; no dense step';
  console.log(`${label}, the dense step's products alone: ${each}; together ${sum.toPrecision(4)} ms${share}`);
}

/** The PyTorch peers: the dense loop (every activation) and the sparsify-style step (the TopK family). */
const PEERS = { dense: 'sae_torch.py', sparsify: 'sae_sparsify_torch.py' } as const;

function peer(dIn: number, expansion: number, activation: string, k: number, B: number, steps: number, which: keyof typeof PEERS = 'dense'): number | string {
  const out = runPeer(PEERS[which], [dIn, expansion, activation, k, B, steps], arg('peer-coretype', ''));
  if (typeof out === 'string') return out;
  peerBlas.cores.add(out.blas.openblas_core ?? 'not OpenBLAS');
  peerBlas.gflops.push(out.blas.gemm_gflops);
  return out.tokens_per_second;
}

/**
 * The processor's own ceiling (native/src/peak.h): GFLOP/s of its fastest multiply-add in registers, the bf16 dot
 * product where it has one (the TopK encoder's screen runs on it), else float32 FMA, on both cores at once. No exact
 * TopK step can run faster than its encoder GEMM at that rate: every pre-activation is computed.
 */
async function peakRate(): Promise<number> {
  const { native } = await import('../src/native/kernels.js');
  const mod = native();
  if (!mod) return NaN;
  const r = mod.instructionPeak(availableParallelism(), 0.15);
  // 0 from both: a processor without FMA (or not x86), where there is no ceiling to print (NaN, as gemmRate without the kernels).
  return r.bf16 || r.fp32 || NaN;
}

/** What the peers' BLAS measured and which kernel OpenBLAS picked, printed under the table (bench/peers/blas.py). */
const peerBlas = { cores: new Set<string>(), gflops: [] as number[] };

/**
 * Seconds of one native product C[M, N] = A[M, K] B[K, N] in the given strides (as gemm's binding), the median of 9
 * timed products after one warm-up (3 gave 252 and 356 GFLOP/s a minute apart at 512 x 4,096); NaN without the
 * kernels.
 */
async function productSeconds(M: number, N: number, K: number, a: [number, number], b: [number, number]): Promise<number> {
  const { native } = await import('../src/native/kernels.js');
  const mod = native();
  if (!mod) return NaN;
  const A = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i));
  const W = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i));
  const C = new Float32Array(M * N);
  const times: number[] = [];
  for (let r = 0; r < 10; r++) {
    const t0 = performance.now();
    mod.gemm(M, N, K, A, a[0], a[1], W, b[0], b[1], C, N, false, 2);
    if (r > 0) times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** GFLOP/s of the native GEMM on the encoder's shape ([B, d] x [d, m], W_enc stored transposed): the roofline's rate. */
async function gemmRate(B: number, d: number, m: number): Promise<number> {
  return (2 * B * d * m) / (await productSeconds(B, m, d, [d, 1], [1, d])) / 1e9;
}

/**
 * The dense ReLU step's five products (native/src/step.cc's dense path), each in the layout the step gives it: the
 * encoder x W_enc, the decoder acts W_dec, dL/dact = dL/dy^ W_dec^T, and the weight gradients acts^T dL/dy^ and
 * dL/dpre^T x (the [B, m] operand read transposed). Milliseconds each (--products).
 */
async function denseProducts(B: number, d: number, m: number): Promise<{ name: string; ms: number }[]> {
  const shapes: [string, number, number, number, [number, number], [number, number]][] = [
    ['encoder', B, m, d, [d, 1], [1, d]],
    ['decoder', B, d, m, [m, 1], [d, 1]],
    ['dL/dact', B, m, d, [d, 1], [1, d]],
    ['W_dec gradient', m, d, B, [1, m], [d, 1]],
    ['W_enc gradient', m, d, B, [1, m], [d, 1]],
  ];
  const out: { name: string; ms: number }[] = [];
  for (const [name, M, N, K, a, b] of shapes) out.push({ name, ms: 1000 * (await productSeconds(M, N, K, a, b)) });
  return out;
}

async function main() {
  const steps = Number(arg('steps', '20'));
  const reluSteps = Number(arg('relu-steps', '200'));
  const repeats = Number(arg('repeats', '3'));
  const B = Number(arg('batch', '4096'));
  // d_in, or d_in x expansion (default 8): 768x32 is 768 x 24,576.
  const sizes = arg('sizes', '64,128,512,768,768x32')
    .split(',')
    .map((s) => s.split('x').map(Number))
    .map(([d, e]) => ({ d, e: e || 8 }));
  const backends = arg('backends', 'native').split(',');
  const acts = arg('activations', 'topk,batchtopk,relu').split(',') as ('topk' | 'batchtopk' | 'relu')[];
  // `--peers none` times sdlkit alone (a quick check while working on a kernel).
  const peers = arg('peers', 'dense,sparsify').split(',');
  // --products times the dense ReLU step's GEMMs natively: it needs a ReLU+L1 row and the native backend.
  const wantProducts = process.argv.includes('--products');
  if (wantProducts && !(acts.includes('relu') && backends.includes('native'))) {
    console.error('bench:fit: --products times the dense ReLU+L1 step of the native backend; add relu to --activations and native to --backends');
    process.exit(2);
  }
  const plotPrefix = arg('plot', '');
  if (process.argv.includes('--plot') && (!plotPrefix || plotPrefix.startsWith('--') || !acts.includes('relu'))) {
    console.error('bench:fit: --plot takes a path prefix (--plot docs/img/relu-run) and draws ReLU+L1 runs; add relu to --activations');
    process.exit(2);
  }
  const rows: Record<string, unknown>[] = [];
  const stepTables: (() => void)[] = []; // --per-step: printed under the table
  const plots: (() => void)[] = []; // --plot: drawn once each repeat's peer has run
  console.log(
    `fit throughput, tokens/s, batch ${B}, TopK family ${steps} timed steps after 3 warm-up, ReLU+L1 a whole run of ${reluSteps} steps; median of ${repeats} (min-max); PyTorch fp32 on 2 threads`,
  );
  console.log(
    `| size | activation | ${backends.map((b) => `sdlkit ${b}`).join(' | ')} | PyTorch dense | PyTorch sparsify-style | ${backends.map((b) => `${b} / faster peer (ratio of medians; paired per repeat)`).join(' | ')} | GEMM GFLOP/s (before each repeat) | bound tok/s | fraction of the bound (paired) | instruction peak GFLOP/s (bf16 dot, else fp32 FMA) | ceiling tok/s (the encoder alone at that peak) | 5x the faster peer, tok/s |`,
  );
  console.log(`|---|---|${backends.map(() => '---|').join('')}---|---|${backends.map(() => '---|').join('')}---|---|---|---|---|---|`);
  for (const { d, e } of sizes) {
    // The bound's GEMM is measured again right before each repeat's sdlkit runs and each repeat's fraction taken
    // against it: this VM's speed drifts by 15% within minutes, and a rate measured once would leave that drift in
    // every fraction. The table gives the median rate, its bound and the median of the paired fractions.
    const boundOf = (rate: number) => (rate * 1e9) / (2 * d * d * e);
    for (const act of acts) {
      const k = act === 'relu' ? 0 : 32;
      const n = act === 'relu' ? reluSteps : steps;
      const ours: Record<string, number[]> = Object.fromEntries(backends.map((b) => [b, []]));
      const names: Record<string, string> = {};
      const dense: number[] = [],
        sparse: number[] = [];
      let peerNote = '';
      const fractions: number[] = [];
      const actRates: number[] = [];
      const peaks: number[] = [];
      const productsMs: Record<string, number>[] = []; // --products, per repeat
      for (let r = 0; r < repeats; r++) {
        const rate = await gemmRate(B, d, d * e);
        actRates.push(rate);
        peaks.push(await peakRate());
        const products = act === 'relu' && wantProducts ? await denseProducts(B, d, d * e) : undefined;
        if (products) productsMs.push(Object.fromEntries(products.map((p) => [p.name, p.ms])));
        for (const b of backends) {
          const s = await sdlkit(b, d, e, act as Activation, k, B, n);
          if (process.argv.includes('--per-step')) stepTables.push(() => printPerStep(`sdlkit ${s.name}, ${d} x ${d * e} ${act}, repeat ${r + 1}`, s.perStep));
          if (plotPrefix && act === 'relu' && b === backends[0])
            plots.push(() =>
              plotRun(`${plotPrefix}-${d}x${d * e}-r${r + 1}.svg`, `ReLU+L1, ${d} x ${d * e}, ${s.name}, repeat ${r + 1}`, s.perStep, B, dense[r]),
            );
          if (products && s.name.startsWith('native'))
            stepTables.push(() => printProducts(`sdlkit ${s.name}, ${d} x ${d * e} ReLU+L1, repeat ${r + 1}`, B * d * d * e, products, s.perStep));
          ours[b].push(s.tps);
          names[b] = s.name;
          if (b === backends[0]) fractions.push(s.tps / boundOf(rate));
        }
        const pd = peers.includes('dense') ? peer(d, e, act, k, B, n, 'dense') : 'not run';
        if (typeof pd === 'number') dense.push(pd);
        else peerNote = pd;
        if (act !== 'relu' && peers.includes('sparsify')) {
          const ps = peer(d, e, act, k, B, n, 'sparsify');
          if (typeof ps === 'number') sparse.push(ps);
          else peerNote = ps;
        }
      }
      const best = Math.max(dense.length ? median(dense) : 0, sparse.length ? median(sparse) : 0);
      const cell = (xs: number[]) => (xs.length ? `${Math.round(median(xs))} (${spread(xs)})` : '-');
      // Each repeat's sdlkit run against the faster of the peer runs right after it: the VM's drift between repeats
      // cancels in these (the ratio of medians keeps it).
      const pairedOf = (b: string) => ours[b].map((t, r) => t / Math.max(dense[r] ?? 0, sparse[r] ?? 0)).filter((x) => Number.isFinite(x) && x > 0);
      const ratios = backends.map((b) => {
        if (!best) return '-';
        const pr = pairedOf(b);
        const paired = pr.length ? `; paired ${median(pr).toFixed(2)}x (${Math.min(...pr).toFixed(2)}-${Math.max(...pr).toFixed(2)})` : '';
        return `${(median(ours[b]) / best).toFixed(2)}x${paired}`;
      });
      const rate = median(actRates);
      const bound = boundOf(rate);
      const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
      const frac = act === 'relu' ? '-' : `${pct(median(fractions))} (${pct(Math.min(...fractions))}-${pct(Math.max(...fractions))})`;
      console.log(
        `| ${d} x ${d * e} | ${act === 'relu' ? 'ReLU+L1' : `${act === 'topk' ? 'TopK' : 'BatchTopK'} k=32`} | ${backends.map((b) => cell(ours[b])).join(' | ')} | ${cell(dense) === '-' ? peerNote : cell(dense)} | ${cell(sparse)} | ${ratios.join(' | ')} | ${rate.toFixed(0)} | ${Math.round(bound)} | ${frac} | ${median(peaks).toFixed(0)} | ${act === 'relu' || !(median(peaks) > 0) ? '-' : Math.round(boundOf(median(peaks)))} | ${best && act !== 'relu' ? Math.round(5 * best) : '-'} |`,
      );
      rows.push({
        d_in: d,
        d_sae: d * e,
        activation: act,
        steps: n,
        sdlkit: Object.fromEntries(backends.map((b) => [names[b], ours[b]])),
        pytorch_dense: dense,
        pytorch_sparsify: sparse,
        paired_ratio: Object.fromEntries(backends.map((b) => [names[b], pairedOf(b)])),
        gemm_gflops: actRates,
        bound_tok_s: actRates.map(boundOf),
        instruction_peak_gflops: peaks,
        dense_products_ms: productsMs.length ? productsMs : undefined,
        ceiling_tok_s: act === 'relu' ? undefined : peaks.map(boundOf),
        roofline_fraction: act === 'relu' ? undefined : fractions,
      });
    }
  }
  for (const print of stepTables) print();
  for (const draw of plots) draw();
  if (peerBlas.gflops.length)
    console.log(
      `PyTorch peers' BLAS: kernel ${[...peerBlas.cores].join(', ')}, one 1024 x 1024 x 512 GEMM as each started ${Math.round(median(peerBlas.gflops))} GFLOP/s (${spread(peerBlas.gflops)})`,
    );
  const out = arg('json', '');
  if (out) writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), batch: B, steps, repeats, rows }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
