import type { Argv } from 'yargs';
import { join } from 'node:path';
import { generateLrb } from '../synth/lrb.js';
import { readTruth, recovery } from '../analysis/truth.js';
import { fit } from '../sdl/trainer.js';
import { openActivations } from '../activations/manifest.js';
import { cacheDir } from '../activations/harvest.js';
import { TRAIN_DEFAULTS, defaultMatryoshkaWidths, type Activation, type DictConfig, type Kind } from '../sdl/config.js';
import { writeAtomic } from '../util/fsx.js';
import { printJson } from './common.js';

/** The paper's Table 1 (n = 1000, n_p = n_r = 768, n_q = 16,000, S = 0.99, M = 0.1): M_GT % / M_IP, without and with FA. */
const PAPER: Record<string, [string, string]> = {
  'relu sae': ['0.00 / 0.205', '0.00 / 0.246'], 'jumprelu sae': ['0.00 / 0.237', '0.00 / 0.333'], 'topk sae': ['84.90 / 0.983', '87.63 / 0.986'],
  'batchtopk sae': ['84.80 / 0.981', '89.38 / 0.988'], 'matryoshka sae': ['83.70 / 0.982', '87.32 / 0.985'], 'topk transcoder': ['23.6 / 0.838', '25.05 / 0.838'],
  'topk crosscoder': ['56.4 / 0.940', '57.69 / 0.941'],
};

export function register(y: Argv): Argv {
  return y.command('bench <which>', 'The paper\'s Linear Representation Bench grid: every method with and without feature anchoring', (a) => a
    .positional('which', { choices: ['lrb'] as const, demandOption: true })
    .option('n', { type: 'number', default: 128, describe: 'features (the paper: 1000)' })
    .option('np', { type: 'number', default: 96, describe: 'input width (the paper: 768)' })
    .option('latents', { type: 'number', default: 512, describe: 'n_q (the paper: 16,000)' })
    .option('k', { type: 'number', default: 4, describe: 'TopK family k' })
    .option('S', { type: 'number', default: 0.99 })
    .option('M', { type: 'number', default: 0.1 })
    .option('N', { type: 'number', default: 100000 })
    .option('steps', { type: 'number', default: 400 })
    .option('anchors', { type: 'number', default: 10, describe: 'anchored features in the +FA runs (the paper: 100)' })
    .option('seed', { type: 'number', default: 0 })
    .option('out', { type: 'string', describe: 'write the table as markdown here' })
    .option('json', { type: 'boolean', default: false })
    .example('sdl bench lrb', 'a small grid (minutes)')
    .example('sdl bench lrb --n 1000 --np 768 --latents 16000 --k 32', 'the paper\'s size (hours on 2 cores)'), async (argv) => {
    const dir = join(cacheDir(), 'bench', `lrb-${argv.n}-${argv.np}-${argv.seed}`);
    const t0 = performance.now();
    generateLrb(join(dir, 'sae'), { n: argv.n, np: argv.np, S: argv.S, M: argv.M, N: argv.N, seed: argv.seed, nr: argv.np, shardTokens: 65536 });
    generateLrb(join(dir, 'cc'), { n: argv.n, np: Math.floor(argv.np / 2), S: argv.S, M: argv.M, N: argv.N, seed: argv.seed, sources: 2, shardTokens: 65536 });
    const rows: Record<string, unknown>[] = [];
    const runs: { act: Activation; kind: Kind }[] = [
      ...(['relu', 'jumprelu', 'topk', 'batchtopk', 'matryoshka'] as Activation[]).map((act) => ({ act, kind: 'sae' as Kind })),
      { act: 'topk', kind: 'transcoder' }, { act: 'topk', kind: 'crosscoder' },
    ];
    for (const r of runs) for (const fa of [false, true]) {
      const acts = join(dir, r.kind === 'crosscoder' ? 'cc' : 'sae');
      const m = openActivations(acts);
      const truth = readTruth(acts);
      const sIn = r.kind === 'crosscoder' ? m.sites : [m.sites[0]];
      const sOut = r.kind === 'transcoder' ? [m.sites[1]] : sIn;
      const sitesIn = sIn.map((s) => ({ name: s.name, width: s.width })), sitesOut = sOut.map((s) => ({ name: s.name, width: s.width }));
      const dIn = sitesIn.reduce((a, s) => a + s.width, 0), dOut = sitesOut.reduce((a, s) => a + s.width, 0);
      const dict: DictConfig = { kind: r.kind, activation: r.act, sitesIn, sitesOut, dIn, dOut, dSae: argv.latents, k: argv.k, matryoshkaWidths: defaultMatryoshkaWidths(argv.latents), applyBDecToInput: r.kind !== 'transcoder', noBias: false, tied: false };
      // Anchors: the first `anchors` true features (a random subset in the paper; the bench's features are exchangeable).
      const dirOf = (key: string, f: number, w: number) => truth.W[key].subarray(f * w, (f + 1) * w);
      const encA = Array.from({ length: argv.anchors }, (_, f) => r.kind === 'crosscoder' ? Float32Array.from([...dirOf('W_p.0', f, dIn / 2), ...dirOf('W_p.1', f, dIn / 2)]) : Float32Array.from(dirOf('W_p', f, dIn)));
      const decA = r.kind === 'transcoder' ? Array.from({ length: argv.anchors }, (_, f) => Float32Array.from(dirOf('W_r', f, dOut))) : encA;
      const norm = (v: Float32Array) => { const n = Math.hypot(...v) || 1; return v.map((x) => x / n); };
      const res = await fit({
        actsDir: acts, manifest: m, dict, out: join(dir, `dict-${r.kind}-${r.act}${fa ? '-fa' : ''}`), quiet: true,
        train: { ...TRAIN_DEFAULTS, steps: argv.steps, batchTokens: 2048, lr: 3e-3, seed: argv.seed, evalTokens: 4096, evalEvery: argv.steps, checkpointEvery: 1e9, excludeBos: false,
          ...(fa ? { anchors: { encoder: encA.map(norm), decoder: decA.map(norm) }, anchorWeight: 0.1 } : {}) },
      });
      const exclude = fa ? Array.from({ length: argv.anchors }, (_, i) => i) : [];
      const using = r.kind === 'transcoder' ? 'decoder' : 'encoder';
      const rec = recovery(res.dictionary, truth, { exclude, using });
      const dec = recovery(res.dictionary, truth, { exclude, using: 'decoder' });
      const key = `${r.act} ${r.kind}`;
      rows.push({ method: key, anchoring: fa, mgt: rec.mgt, mip: rec.mip, using, mgt_decoder: dec.mgt, mip_decoder: dec.mip, fvu: res.eval.fvu, l0: res.eval.l0, paper: PAPER[key]?.[fa ? 1 : 0] ?? '-', seconds: res.seconds });
      if (!argv.json) process.stderr.write(`${key}${fa ? ' + FA' : ''}: M_GT ${(100 * rec.mgt).toFixed(1)}% M_IP ${rec.mip.toFixed(3)} (${using}); decoder ${(100 * dec.mgt).toFixed(1)}% / ${dec.mip.toFixed(3)}; FVU ${res.eval.fvu.toFixed(3)}\n`);
    }
    const md = [
      `Linear Representation Bench: n ${argv.n}, n_p ${argv.np}, n_q ${argv.latents}, S ${argv.S}, M ${argv.M}, N ${argv.N}, k ${argv.k}, ${argv.steps} steps x 2,048, Adam 3e-3, seed ${argv.seed}, ${argv.anchors} anchors at weight 0.1 in +FA rows; M_GT at tau 0.95 over non-anchored features; ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
      '',
      '| method | FA | M_GT % / M_IP (paper\'s metric) | decoder directions M_GT % / M_IP | FVU | L0 | paper Table 1 |',
      '|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.method} | ${r.anchoring ? 'yes' : 'no'} | ${(100 * (r.mgt as number)).toFixed(1)} / ${(r.mip as number).toFixed(3)} (${r.using}) | ${(100 * (r.mgt_decoder as number)).toFixed(1)} / ${(r.mip_decoder as number).toFixed(3)} | ${(r.fvu as number).toFixed(3)} | ${(r.l0 as number).toFixed(1)} | ${r.paper} |`),
    ].join('\n');
    if (argv.out) writeAtomic(argv.out, md + '\n');
    if (argv.json) return printJson(rows);
    console.log(md);
  });
}
