// Choosing fit's defaults by measurement: for the bundled model (layer 6 resid_post, TopK k 32, 512 latents) and
// a synthetic bench with known features (TopK k 16), at three training budgets, sweep the learning rate at two batch
// sizes (one `sdl fit --sweep` per batch size and budget) and report each setting's held-out FVU (and, on the bench,
// the share of true features recovered, M_GT at |cos| > 0.9) beside the default's.
// Usage: node dist/bench/defaults.js [--budgets 100k,1M,10M] [--batches 1024,4096] [--lr-mults 0.25,0.5,1,2,4] [--sets bundled,synth] [--json out.json]
//        node dist/bench/defaults.js --race [--budgets ...]      # the current defaults (the learning-rate race) against the rule alone
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultLr } from '../src/sdl/config.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const CLI = join(import.meta.dirname, '../src/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'sdl-bench-defaults-'));
const budgets = arg('budgets', '100k,1M,10M').split(',');
const batches = arg('batches', '1024,4096').split(',').map(Number);
const mults = arg('lr-mults', '0.25,0.5,1,2,4').split(',').map(Number);
const only = arg('sets', 'bundled,synth').split(',');

function sdl(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const sets = [
  { name: 'bundled model, layer 6 resid_post (d 64)', acts: join(dir, 'bundled'), site: 'blocks.6.hook_resid_post', latents: 512, k: 32, truth: false },
  { name: 'synthetic bench (600 features, d 128, S 0.99)', acts: join(dir, 'synth'), site: 'x_p', latents: 1024, k: 16, truth: true },
];
console.error('making the data...');
sdl('harvest', '--layer', '6', '--sites', 'resid_post', '--tokens', '2M', '--ctx', '128', '--out', sets[0].acts);
sdl('synth', '-n', '600', '--np', '128', '-S', '0.99', '-N', '2M', '--out', sets[1].acts);

const rows: Record<string, unknown>[] = [];
/** `sdl fit` on one data set at one budget, as every cell is trained. */
const fitArgs = (set: (typeof sets)[number], budget: string) => [
  'fit',
  '--acts',
  set.acts,
  '--site',
  set.site,
  '--latents',
  String(set.latents),
  '--k',
  String(set.k),
  '--tokens',
  budget,
  '--eval-tokens',
  '16k',
  '--checkpoint-every',
  '100000',
];
// --race: the defaults as they are now (batch 1,024; for the TopK family the learning-rate race), beside the rule's
// rate alone (--no-lr-race): FVU, the rate chosen, M_GT on the bench, and wall time.
if (process.argv.includes('--race')) {
  for (const set of sets.filter((s) => only.includes(s.truth ? 'synth' : 'bundled')))
    for (const budget of budgets)
      for (const mode of ['race', 'rule']) {
        const out = join(dir, `${set.truth ? 'synth' : 'bundled'}-${budget}-${mode}`);
        const t0 = performance.now();
        const r = JSON.parse(sdl(...fitArgs(set, budget), ...(mode === 'rule' ? ['--no-lr-race'] : []), '--out', out, '--json'));
        const seconds = (performance.now() - t0) / 1000;
        const mgt = set.truth ? JSON.parse(sdl('eval', out, '--truth', set.acts, '--tau', '0.9', '--json')).recovery.mgt : null;
        const row = { set: set.name, budget, mode, fvu: r.eval.fvu, race: r.lr_race, mgt, seconds };
        rows.push(row);
        console.log(
          `${set.truth ? 'synth' : 'bundled'}\t${budget}\t${mode}\tFVU ${r.eval.fvu.toFixed(4)}${r.lr_race ? `\traced ${r.lr_race.map((x: { lr: number; fvu: number }) => `${x.lr}:${x.fvu.toFixed(4)}`).join(' ')}` : ''}${mgt !== null ? `\tM_GT(0.9) ${(100 * mgt).toFixed(1)}%` : ''}\t${seconds.toFixed(0)} s`,
        );
      }
  const json = arg('json', '');
  if (json) writeFileSync(json, JSON.stringify(rows, null, 1));
  process.exit(0);
}
for (const set of sets.filter((s) => only.includes(s.truth ? 'synth' : 'bundled'))) {
  const lr0 = defaultLr(set.latents);
  const lrs = mults.map((f) => Number((lr0 * f).toPrecision(3)));
  for (const budget of budgets)
    for (const batch of batches) {
      const out = join(dir, `${set.truth ? 'synth' : 'bundled'}-${budget}-${batch}`);
      const rec = JSON.parse(sdl(...fitArgs(set, budget), '--batch', String(batch), '--sweep', `lr=${lrs.join(',')}`, '--out', out, '--json')) as {
        members: { name: string; out: string; settings: { lr: number }; result: { fvu: number; l0: number; dead_fraction: number } }[];
      };
      for (const m of rec.members) {
        let mgt: number | null = null;
        if (set.truth) mgt = JSON.parse(sdl('eval', m.out, '--truth', set.acts, '--tau', '0.9', '--json')).recovery.mgt;
        const row = {
          set: set.name,
          budget,
          batch,
          lr: m.settings.lr,
          default_lr: m.settings.lr === Number(lr0.toPrecision(3)),
          fvu: m.result.fvu,
          dead: m.result.dead_fraction,
          mgt,
        };
        rows.push(row);
        console.log(
          `${set.truth ? 'synth' : 'bundled'}\t${budget}\tbatch ${batch}\tlr ${m.settings.lr}${row.default_lr ? ' (default)' : ''}\tFVU ${m.result.fvu.toFixed(4)}\tdead ${(100 * m.result.dead_fraction).toFixed(1)}%${mgt !== null ? `\tM_GT(0.9) ${(100 * mgt).toFixed(1)}%` : ''}`,
        );
      }
    }
}
const json = arg('json', '');
if (json) writeFileSync(json, JSON.stringify(rows, null, 1));
