// Dead latents and resampling (paper section 5.3): the same SAE trained with no remedy, with Anthropic-style
// resampling of dead latents, and with AuxK, on a bench configuration that leaves many latents dead. Reports the
// dead fraction and held-out FVU over training (an SVG plot) and the final dictionaries against the truth.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { activationPatterns, readTruth, recovery } from '../analysis/truth.js';
import { fit } from '../sdl/trainer.js';
import { openActivations } from '../activations/manifest.js';
import type { Activation } from '../sdl/config.js';
import { lineChart, type Series } from '../util/svg-plot.js';
import { benchDict, benchTrain, ensureLrb, pm, runTracker, type BenchRunOptions } from './common.js';
import { ACTIVATIONS } from '../sdl/activations.js';
import { TRAINING_LOG_FILE } from '../util/files.js';

export interface ResampleOptions extends BenchRunOptions {
  activation: Activation;
  sparsity?: number;
  resampleEvery: number;
  deadWindow: number;
}

interface Arm {
  name: string;
  resample: number;
  auxk: number;
}
const ARMS: Arm[] = [
  { name: 'no remedy', resample: 0, auxk: 0 },
  { name: 'resampling', resample: 1, auxk: 0 },
  { name: 'AuxK', resample: 0, auxk: 1 / 32 },
];

export async function runResample(o: ResampleOptions, log: (s: string) => void = () => undefined) {
  const done = runTracker(o.seeds.length * 3, log);
  const t0 = performance.now();
  const arms = ACTIVATIONS[o.activation].auxk ? ARMS : ARMS.slice(0, 2);
  const results: {
    arm: string;
    seed: number;
    fvu: number;
    deadTrain: number;
    deadIsolated: number;
    mgt: number;
    mip: number;
    curves: { dead: [number, number][]; fvu: [number, number][] };
  }[] = [];
  for (const seed of o.seeds) {
    const dir = join(o.cache, `resample-${o.n}-${o.np}-${o.S}-${o.M}-${o.N}-${seed}`);
    ensureLrb(join(dir, 'data'), { n: o.n, np: o.np, S: o.S, M: o.M, N: o.N, seed, shardTokens: 65536 });
    const acts = join(dir, 'data');
    const m = openActivations(acts);
    const truth = readTruth(acts);
    for (const arm of arms) {
      const dict = benchDict(m, { act: o.activation, kind: 'sae' }, o.latents, o.k);
      const out = join(dir, `dict-${o.activation}-${arm.name.replace(/\W+/g, '-')}`);
      const res = await fit({
        actsDir: acts,
        manifest: m,
        dict,
        out,
        quiet: o.quiet ?? true,
        force: true,
        // Evaluated ~30 times along the run: its curves are the result.
        train: benchTrain(o, seed, {
          evalTokens: 8192,
          evalEvery: Math.max(1, Math.floor(o.steps / 30)),
          deadWindowTokens: o.deadWindow,
          auxkCoefficient: arm.auxk,
          resampleEvery: arm.resample ? o.resampleEvery : 0,
          ...(o.sparsity !== undefined ? { sparsityCoefficient: o.sparsity } : {}),
        }),
      });
      const recs = readFileSync(join(out, TRAINING_LOG_FILE), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { step: number; dead_fraction: number; eval?: { fvu: number } });
      const curves = {
        dead: recs.map((r) => [r.step, r.dead_fraction] as [number, number]),
        fvu: recs.filter((r) => r.eval).map((r) => [r.step, r.eval!.fvu] as [number, number]),
      };
      const rec = recovery(res.dictionary, truth, { using: 'decoder' });
      const pat = activationPatterns(res.dictionary, truth);
      results.push({
        arm: arm.name,
        seed,
        fvu: res.eval.fvu,
        deadTrain: res.deadFraction,
        deadIsolated: pat.dead / o.latents,
        mgt: rec.mgt,
        mip: rec.mip,
        curves,
      });
      done(
        `seed ${seed} ${arm.name}: FVU ${res.eval.fvu.toFixed(4)}, dead (last ${o.deadWindow} tokens) ${(100 * res.deadFraction).toFixed(1)}%, silent on every isolated feature ${pat.dead}/${o.latents}, decoder M_GT ${(100 * rec.mgt).toFixed(1)}% M_IP ${rec.mip.toFixed(3)}; ${res.seconds.toFixed(0)} s`,
      );
    }
  }
  const by = (arm: string) => results.filter((r) => r.arm === arm);
  const first = o.seeds[0];
  const series = (key: 'dead' | 'fvu'): Series[] => arms.map((a) => ({ name: a.name, points: by(a.name).find((r) => r.seed === first)!.curves[key] }));
  const svg = lineChart(
    [
      { title: 'dead latents', xLabel: 'step', yLabel: `fraction not fired in the last ${o.deadWindow} tokens`, series: series('dead'), yMin: 0, yMax: 1 },
      { title: 'held-out FVU', xLabel: 'step', yLabel: 'FVU (log scale)', series: series('fvu'), logY: true },
    ],
    {
      title: `${o.activation} SAE, ${o.latents} latents on ${o.n} features (n_p ${o.np})${ACTIVATIONS[o.activation].usesK ? `, k ${o.k}` : ''}, seed ${first}`,
    },
  );
  const markdown = [
    `${o.activation} SAE on the LRB (n ${o.n}, n_p ${o.np}, S ${o.S}, M ${o.M}, N ${o.N}), ${o.latents} latents, ${ACTIVATIONS[o.activation].usesK ? `k ${o.k}` : `L1 coefficient ${o.sparsity ?? 'default'}`}, ${o.steps} steps x ${o.batch}, Adam ${o.lr}; resampling every ${o.resampleEvery} steps until 75% of training; AuxK coefficient 1/32; dead = not fired in the last ${o.deadWindow} tokens; seeds ${o.seeds.join(', ')}${o.seeds.length > 1 ? ' (mean ± sd)' : ''}; ${((performance.now() - t0) / 1000).toFixed(0)} s in all.`,
    '',
    '| run | final held-out FVU | dead at the end | silent on every isolated feature | decoder M_GT % / M_IP |',
    '|---|---|---|---|---|',
    ...arms.map((a) => {
      const r = by(a.name);
      return `| ${a.name} | ${pm(
        r.map((x) => x.fvu),
        4,
      )} | ${pm(
        r.map((x) => x.deadTrain),
        1,
        100,
      )}% | ${pm(
        r.map((x) => x.deadIsolated),
        1,
        100,
      )}% | ${pm(
        r.map((x) => x.mgt),
        1,
        100,
      )} / ${pm(
        r.map((x) => x.mip),
        3,
      )} |`;
    }),
  ].join('\n');
  return { results, markdown, svg };
}
