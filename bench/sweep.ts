// A sweep against the same dictionaries fitted one by one: 6 TopK SAEs (k 16/32/64 x 2 widths) at d_in 64
// (the bundled model's resid_post) and at d_in 512 (a synthetic bench), each set timed as six `sdl fit`
// processes in a row and as one `sdl fit --sweep`, alternating, in one run. Also checks each member's FVU
// against its solo run (same seed: they must be equal).
// Usage: node dist/bench/sweep.js [--tokens 256k] [--repeats 2] [--json out.json]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median } from './stats.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const CLI = join(import.meta.dirname, '../src/cli.js');
const tokens = arg('tokens', '256k');
const repeats = Number(arg('repeats', '2'));
const dir = mkdtempSync(join(tmpdir(), 'sdl-bench-sweep-'));

function sdl(...args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

const sets = [
  { name: 'd_in 64 (bundled model, layer 6 resid_post)', acts: join(dir, 'acts64'), site: 'blocks.6.hook_resid_post', widths: [512, 1024] },
  { name: 'd_in 512 (synthetic bench)', acts: join(dir, 'acts512'), site: 'x_p', widths: [2048, 4096] },
];
sdl('harvest', '--layer', '6', '--sites', 'resid_post', '--tokens', '300k', '--ctx', '128', '--out', sets[0].acts);
sdl('synth', '-n', '2048', '--np', '512', '-N', '300k', '--out', sets[1].acts);

const results = [];
for (const set of sets) {
  const common = ['--acts', set.acts, '--site', set.site, '--tokens', tokens, '--batch', '4096', '--eval-tokens', '8192', '--checkpoint-every', '100000'];
  const members = [16, 32, 64].flatMap((k) => set.widths.map((w) => ({ k, latents: w })));
  const solo: number[] = [],
    sweep: number[] = [];
  const fvu: { member: string; solo: number; sweep: number }[] = [];
  for (let r = 0; r < repeats; r++) {
    let sum = 0;
    for (const m of members)
      sum += sdl('fit', ...common, '--k', String(m.k), '--latents', String(m.latents), '--out', join(dir, `solo-${m.k}-${m.latents}`), '--force');
    solo.push(sum);
    const out = join(dir, `sweep-${set.acts.slice(-2)}`);
    sweep.push(sdl('fit', ...common, '--sweep', `k=16,32,64 latents=${set.widths.join(',')}`, '--out', out, '--force'));
    if (r === 0)
      for (const m of members) {
        const ev = (d: string) => JSON.parse(readFileSync(join(d, 'eval.json'), 'utf8')).fvu as number;
        fvu.push({
          member: `k${m.k}-latents${m.latents}`,
          solo: ev(join(dir, `solo-${m.k}-${m.latents}`)),
          sweep: ev(join(out, `k${m.k}-latents${m.latents}`)),
        });
      }
  }
  const row = { set: set.name, tokens, solo_sum_s: median(solo), sweep_s: median(sweep), ratio: median(sweep) / median(solo), runs: { solo, sweep }, fvu };
  results.push(row);
  console.log(
    `${set.name}: six solo fits ${row.solo_sum_s.toFixed(1)} s, one sweep ${row.sweep_s.toFixed(1)} s, ratio ${row.ratio.toFixed(2)} (medians of ${repeats}); FVU equal to solo: ${fvu.every((f) => f.solo === f.sweep)}`,
  );
}
const json = arg('json', '');
if (json) writeFileSync(json, JSON.stringify(results, null, 1));
