// Figures for docs/scale.md: harvest tokens/s per node on the bundled model and on a GPT-2-small-sized model (a
// random-weight llama2.c checkpoint, 12 layers x d 768, hidden 2048, vocabulary 512, imported by sdlkit), bytes per
// token per site, and two `--part`s at once on the two cores against one whole harvest (wall time ratio).
// Usage: node dist/bench/scale.js [--tokens 64k] [--big-tokens 8k] [--json out.json]
import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gpt2SmallSized } from './gpt2-sized.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const CLI = join(import.meta.dirname, '../src/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'sdl-bench-scale-'));

function timed(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}
const concurrently = (runs: string[][]) =>
  new Promise<number>((ok, fail) => {
    const t0 = performance.now();
    let left = runs.length;
    for (const args of runs)
      spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' }).on('exit', (code) => {
        if (code !== 0) fail(new Error(`sdl ${args.join(' ')} exited ${code}`));
        if (--left === 0) ok((performance.now() - t0) / 1000);
      });
  });

const shardBytes = (d: string) =>
  readdirSync(d)
    .filter((f) => f.endsWith('.arrow'))
    .reduce((a, f) => a + statSync(join(d, f)).size, 0);

const tokens = arg('tokens', '64k');
const results: Record<string, unknown> = {};
// 1. The bundled model: whole harvest vs two parts at once (each part gets one core: --threads 1).
const job = ['harvest', '--layer', '6', '--sites', 'resid_post', '--tokens', tokens, '--ctx', '128', '--shard-tokens', '8k'];
const whole = timed([...job, '--out', join(dir, 'whole')]);
const parts = await concurrently([0, 1].map((i) => [...job, '--part', `${i}/2`, '--threads', '1', '--out', join(dir, 'parts')]));
const man = JSON.parse(readFileSync(join(dir, 'whole', 'manifest.json'), 'utf8'));
results.bundled = {
  tokens: man.tokens,
  whole_s: whole,
  two_parts_s: parts,
  ratio: parts / whole,
  tokens_per_s_whole: man.tokens / whole,
  bytes_per_token_f32: shardBytes(join(dir, 'whole')) / man.tokens,
};
console.log(`bundled (d 64), ${man.tokens} tokens: whole ${whole.toFixed(1)} s, two parts at once ${parts.toFixed(1)} s (ratio ${(parts / whole).toFixed(2)})`);
for (const dtype of ['f16']) {
  timed([...job, '--dtype', dtype, '--out', join(dir, `whole-${dtype}`)]);
  console.log(
    `  bytes/token: f32 ${(results.bundled as { bytes_per_token_f32: number }).bytes_per_token_f32.toFixed(0)}, ${dtype} ${(shardBytes(join(dir, `whole-${dtype}`)) / man.tokens).toFixed(0)} (one d-64 site plus token/doc/window/pos columns)`,
  );
}
// 2. GPT-2-small-sized: harvest layer 6 resid_post.
const big = gpt2SmallSized(dir);
const bigTokens = arg('big-tokens', '8k');
const bigJob = ['harvest', '--model', big, '--layer', '6', '--sites', 'resid_post', '--tokens', bigTokens, '--ctx', '128', '--batch', '8'];
const tBig = timed([...bigJob, '--out', join(dir, 'big-acts')]);
const bigMan = JSON.parse(readFileSync(join(dir, 'big-acts', 'manifest.json'), 'utf8'));
results.gpt2_small_sized = {
  tokens: bigMan.tokens,
  seconds: tBig,
  tokens_per_s: bigMan.tokens / tBig,
  bytes_per_token_f32: shardBytes(join(dir, 'big-acts')) / bigMan.tokens,
};
console.log(
  `GPT-2-small-sized (12 x 768, layer 6 resid_post), ${bigMan.tokens} tokens: ${tBig.toFixed(1)} s, ${(bigMan.tokens / tBig).toFixed(0)} tok/s (process start included), ${(shardBytes(join(dir, 'big-acts')) / bigMan.tokens).toFixed(0)} bytes/token`,
);
const json = arg('json', '');
if (json) writeFileSync(json, JSON.stringify(results, null, 1));
