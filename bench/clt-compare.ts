// A CLT against per-layer transcoders on the bundled model, at equal total L0 (k per layer the same) and equal
// training tokens: CE loss recovered, KL and FVU per layer of each replacement model (every MLP output replaced at
// once). The eight transcoders train as one sweep (one stream); the CLT reads the same harvest.
// Usage: node dist/bench/clt-compare.js [--tokens 2M] [--latents 512] [--k 16] [--activation topk] [--windows 64] [--json out.json]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const CLI = join(import.meta.dirname, '../src/cli.js');
function sdl(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const tokens = arg('tokens', '2M'),
  latents = arg('latents', '512'),
  k = arg('k', '16'),
  activation = arg('activation', 'topk'),
  windows = arg('windows', '64');
const dir = mkdtempSync(join(tmpdir(), 'sdl-clt-compare-'));
const acts = join(dir, 'acts');
console.error(`harvesting every layer's mlp_in/mlp_out (${tokens} tokens)...`);
sdl('harvest', '--layers', 'all', '--sites', 'mlp_in,mlp_out', '--tokens', tokens, '--out', acts);
const common = ['--acts', acts, '--activation', activation, '--k', k, '--json'];
let t0 = performance.now();
const clt = JSON.parse(sdl('fit', ...common, '--kind', 'clt', '--latents-per-layer', latents, '--out', join(dir, 'clt')));
const cltSeconds = (performance.now() - t0) / 1000;
const sweep = join(dir, 'tcs');
writeFileSync(
  join(dir, 'sweep.json'),
  JSON.stringify(Array.from({ length: 8 }, (_, l) => ({ name: `tc${l}`, kind: 'transcoder', layer: l, latents: Number(latents) }))),
);
t0 = performance.now();
sdl('fit', ...common.filter((a) => a !== '--json'), '--sweep-file', join(dir, 'sweep.json'), '--out', sweep);
const tcSeconds = (performance.now() - t0) / 1000;
const ev = (args: string[]) => JSON.parse(sdl('eval', ...args, '--windows', windows, '--json'));
const eClt = ev([join(dir, 'clt')]);
const eTc = ev(Array.from({ length: 8 }, (_, l) => join(sweep, `tc${l}`)));
const row = (name: string, e: Record<string, unknown>, seconds: number) => ({
  name,
  ce_loss_recovered: e.ce_loss_recovered,
  kl: e.kl_spliced,
  delta_ce: e.delta_ce,
  fvu: e.fvu,
  l0: e.l0,
  fvu_by_layer: e.fvu_by_site,
  train_seconds: Math.round(seconds),
});
const out = {
  date: new Date().toISOString(),
  tokens,
  latents_per_layer: Number(latents),
  k: Number(k),
  activation,
  clt_fit: clt.eval,
  rows: [row('CLT', eClt, cltSeconds), row('8 per-layer transcoders', eTc, tcSeconds)],
};
console.log(JSON.stringify(out, null, 2));
const json = arg('json', '');
if (json) writeFileSync(json, `${JSON.stringify(out, null, 2)}\n`);
