// The paper's Table 1 grid on the Linear Representation Bench: every method with and without feature anchoring,
// M_GT / M_IP by encoder rows (the paper's metric) and by decoder rows, over one or more seeds.
import { join } from 'node:path';
import { readTruth, recovery } from '../analysis/truth.js';
import { fit } from '../sdl/trainer.js';
import { openActivations } from '../activations/manifest.js';
import { METHODS, anchorsFor, benchDict, benchTrain, ensureLrb, pm, runTracker, type BenchRunOptions } from './common.js';

/** The paper's Table 1 (n = 1000, n_p = n_r = 768, n_q = 16,000, S = 0.99, M = 0.1): M_GT % / M_IP, without and with FA. */
export const PAPER_TABLE1: Record<string, [string, string]> = {
  relu: ['0.00 / 0.205', '0.00 / 0.246'],
  jumprelu: ['0.00 / 0.237', '0.00 / 0.333'],
  topk: ['84.90 / 0.983', '87.63 / 0.986'],
  batchtopk: ['84.80 / 0.981', '89.38 / 0.988'],
  matryoshka: ['83.70 / 0.982', '87.32 / 0.985'],
  transcoder: ['23.6 / 0.838', '25.05 / 0.838'],
  crosscoder: ['56.4 / 0.940', '57.69 / 0.941'],
};

export interface GridOptions extends BenchRunOptions {
  anchors: number;
  anchorWeight: number;
  methods: string[];
}

export interface GridRow {
  method: string;
  anchoring: boolean;
  using: 'encoder' | 'decoder';
  mgt: number[];
  mip: number[];
  mgtDecoder: number[];
  mipDecoder: number[];
  fvu: number[];
  l0: number[];
  seconds: number[];
}

export async function runLrbGrid(o: GridOptions, log: (s: string) => void = () => undefined): Promise<{ rows: GridRow[]; markdown: string }> {
  const t0 = performance.now();
  const done = runTracker(o.seeds.length * o.methods.length * 2, log);
  const rows: GridRow[] = [];
  for (const seed of o.seeds) {
    const dir = join(o.cache, `lrb-${o.n}-${o.np}-${o.S}-${o.M}-${o.N}-${seed}`);
    const base = { n: o.n, S: o.S, M: o.M, N: o.N, seed, shardTokens: 65536 };
    if (o.methods.some((m) => m !== 'crosscoder')) ensureLrb(join(dir, 'sae'), { ...base, np: o.np, nr: o.methods.includes('transcoder') ? o.np : 0 });
    if (o.methods.includes('crosscoder')) ensureLrb(join(dir, 'cc'), { ...base, np: Math.floor(o.np / 2), sources: 2 });
    for (const name of o.methods)
      for (const fa of [false, true]) {
        const method = METHODS[name];
        const acts = join(dir, method.kind === 'crosscoder' ? 'cc' : 'sae');
        const m = openActivations(acts);
        const truth = readTruth(acts);
        const dict = benchDict(m, method, o.latents, o.k);
        const res = await fit({
          actsDir: acts,
          manifest: m,
          dict,
          out: join(dir, `dict-${name}${fa ? '-fa' : ''}`),
          quiet: o.quiet ?? true,
          force: true,
          train: benchTrain(o, seed, fa ? { anchors: anchorsFor(truth, dict, o.anchors), anchorWeight: o.anchorWeight } : {}),
        });
        const exclude = fa ? Array.from({ length: o.anchors }, (_, i) => i) : [];
        // Transcoders' encoders live in x_p and their decoders in x_r: the paper's W_E^T metric is read on the decoder.
        const using = method.kind === 'transcoder' ? 'decoder' : 'encoder';
        const rec = recovery(res.dictionary, truth, { exclude, using });
        const dec = recovery(res.dictionary, truth, { exclude, using: 'decoder' });
        let row = rows.find((r) => r.method === name && r.anchoring === fa);
        if (!row) rows.push((row = { method: name, anchoring: fa, using, mgt: [], mip: [], mgtDecoder: [], mipDecoder: [], fvu: [], l0: [], seconds: [] }));
        row.mgt.push(rec.mgt);
        row.mip.push(rec.mip);
        row.mgtDecoder.push(dec.mgt);
        row.mipDecoder.push(dec.mip);
        row.fvu.push(res.eval.fvu);
        row.l0.push(res.eval.l0);
        row.seconds.push(res.seconds);
        done(
          `seed ${seed} ${name}${fa ? ' + FA' : ''}: M_GT ${(100 * rec.mgt).toFixed(1)}% M_IP ${rec.mip.toFixed(3)} (${using}); decoder ${(100 * dec.mgt).toFixed(1)}% / ${dec.mip.toFixed(3)}; FVU ${res.eval.fvu.toFixed(3)}; ${res.seconds.toFixed(0)} s`,
        );
      }
  }
  const secs = (performance.now() - t0) / 1000;
  const seedsTxt = o.seeds.length > 1 ? `seeds ${o.seeds.join(', ')} (mean ± sd)` : `seed ${o.seeds[0]}`;
  const markdown = [
    `Linear Representation Bench: n ${o.n}, n_p ${o.np}, n_q ${o.latents}, S ${o.S}, M ${o.M}, N ${o.N}, k ${o.k}; ${o.steps} steps x ${o.batch}, Adam ${o.lr}; ${seedsTxt}; ${o.anchors} anchors at weight ${o.anchorWeight} in +FA rows; M_GT at tau 0.95 over non-anchored features; ${secs.toFixed(0)} s in all.`,
    '',
    "| method | FA | M_GT % / M_IP (paper's metric) | decoder rows M_GT % / M_IP | FVU | L0 | paper Table 1 |",
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.method} | ${r.anchoring ? 'yes' : 'no'} | ${pm(r.mgt, 1, 100)} / ${pm(r.mip, 3)} (${r.using}) | ${pm(r.mgtDecoder, 1, 100)} / ${pm(r.mipDecoder, 3)} | ${pm(r.fvu, 3)} | ${pm(r.l0, 1)} | ${PAPER_TABLE1[r.method]?.[r.anchoring ? 1 : 0] ?? '-'} |`,
    ),
  ].join('\n');
  return { rows, markdown };
}
