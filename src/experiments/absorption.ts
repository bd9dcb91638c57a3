// Feature absorption on the hierarchical bench (Definition 3.2: a parent is active exactly when one of its
// children is): per method, how often a child's presence silences the parent's latent (the child absorbed by
// another latent), and whether the absorbed child is the one the parent latent responds to most weakly
// (Theorem 3.8's construction).
import { join } from 'node:path';
import { absorption, activationPatterns, readTruth, recovery } from '../analysis/truth.js';
import { fit } from '../sdl/trainer.js';
import { openActivations } from '../activations/manifest.js';
import { METHODS, benchDict, benchTrain, ensureLrb, pm, runTracker, type BenchRunOptions } from './common.js';

export interface AbsorptionOptions extends BenchRunOptions {
  parents: number;
  children: number;
  methods: string[];
  /** ReLU L1 / JumpReLU L0 coefficient (default: fit's). */
  sparsity?: number;
}

export async function runAbsorption(o: AbsorptionOptions, log: (s: string) => void = () => undefined) {
  const done = runTracker(o.seeds.length * o.methods.length, log);
  const t0 = performance.now();
  const rows: {
    method: string;
    seed: number;
    rate: number;
    parentsWithAbsorption: number;
    predictionHeld: number;
    predictionTested: number;
    chance: number;
    fvu: number;
    mgt: number;
    poly: number;
  }[] = [];
  for (const seed of o.seeds) {
    const acts = join(o.cache, `absorption-${o.n}-${o.np}-${o.parents}x${o.children}-${o.S}-${o.M}-${o.N}-${seed}`);
    ensureLrb(acts, { n: o.n, np: o.np, S: o.S, M: o.M, N: o.N, seed, parents: o.parents, children: o.children, shardTokens: 65536 });
    const m = openActivations(acts);
    const truth = readTruth(acts);
    for (const name of o.methods) {
      const dict = benchDict(m, METHODS[name], o.latents, o.k);
      const res = await fit({
        actsDir: acts,
        manifest: m,
        dict,
        out: join(acts, `dict-${name}`),
        quiet: o.quiet ?? true,
        force: true,
        train: benchTrain(o, seed, o.sparsity !== undefined ? { sparsityCoefficient: o.sparsity } : {}),
      });
      const a = absorption(res.dictionary, truth);
      // The prediction is informative only where a parent lost some of its children but not all of them; by chance
      // the weakest child is among the lost with probability (lost / children).
      const tested = a.parents.filter((p) => p.absorbed.length > 0 && p.absorbed.length < o.children);
      const chance = tested.reduce((acc, p) => acc + p.absorbed.length / o.children, 0);
      const rec = recovery(res.dictionary, truth, { using: 'decoder' });
      const pat = activationPatterns(res.dictionary, truth);
      rows.push({
        method: name,
        seed,
        rate: a.rate,
        parentsWithAbsorption: a.parents.filter((p) => p.absorbed.length > 0).length,
        predictionHeld: tested.filter((p) => p.predictionHolds).length,
        predictionTested: tested.length,
        chance,
        fvu: res.eval.fvu,
        mgt: rec.mgt,
        poly: pat.polysemantic,
      });
      done(
        `seed ${seed} ${name}: absorption rate ${(100 * a.rate).toFixed(1)}% (${a.parents.filter((p) => p.absorbed.length > 0).length}/${a.parents.length} parents lose a child; weakest child among the absorbed in ${tested.filter((p) => p.predictionHolds).length} of ${tested.length} partly absorbed parents, chance ${chance.toFixed(1)}); FVU ${res.eval.fvu.toFixed(3)}; ${res.seconds.toFixed(0)} s`,
      );
    }
  }
  const markdown = [
    `Hierarchical LRB: n ${o.n} features in n_p ${o.np} (S ${o.S}, M ${o.M}, N ${o.N}) with ${o.parents} parents x ${o.children} children (a parent active exactly when one of its children is); ${o.latents} latents, k ${o.k}; ${o.steps} steps x ${o.batch}, Adam ${o.lr}; seeds ${o.seeds.join(', ')}${o.seeds.length > 1 ? ' (mean ± sd)' : ''}; ${((performance.now() - t0) / 1000).toFixed(0)} s in all.`,
    '',
    `A child is absorbed when the input parent + child (each at magnitude c_min + beta) leaves the parent's latent (the latent whose encoder direction best matches the parent) silent. Theorem 3.8's prediction: the absorbed child is the one the parent latent responds to most weakly. It is tested on parents that lost some but not all of their children (where it can fail); "chance" is the expected count if the lost children were random (sum of lost / ${o.children}).`,
    '',
    '| method | absorption rate (children) | parents losing a child | weakest child among the lost (partly absorbed parents) | chance | polysemantic latents | decoder M_GT % | FVU |',
    '|---|---|---|---|---|---|---|---|',
    ...o.methods.map((name) => {
      const r = rows.filter((x) => x.method === name);
      const held = r.reduce((a, x) => a + x.predictionHeld, 0),
        tested = r.reduce((a, x) => a + x.predictionTested, 0),
        chance = r.reduce((a, x) => a + x.chance, 0);
      return `| ${name} | ${pm(
        r.map((x) => x.rate),
        1,
        100,
      )}% | ${pm(
        r.map((x) => x.parentsWithAbsorption),
        1,
      )} / ${o.parents} | ${held} of ${tested} | ${chance.toFixed(1)} | ${pm(
        r.map((x) => x.poly),
        1,
      )} | ${pm(
        r.map((x) => x.mgt),
        1,
        100,
      )} | ${pm(
        r.map((x) => x.fvu),
        3,
      )} |`;
    }),
  ].join('\n');
  return { rows, markdown };
}
