// Fit's peak memory over a long run, against the bound issue #20 sets: `sdl fit` runs as a child while this process
// reads its peak resident set (VmHWM, /proc/<pid>/status) every 200 ms, and reports it at each million tokens, where
// it stepped up (the step as the fit's progress line last gave it), the 1M -> end change, and 1.5 x (weights + Adam
// moments + one batch). Linux only: the figures come from /proc.
// Usage: node dist/bench/memory.js [--acts DIR] [--latents 24576] [--k 32] [--batch 4096] [--tokens 10M]
//          [--json out.json] [-- extra sdl fit options]
// Without --acts it makes a 400k-token synthetic 768-wide harvest first (`sdl synth`), which the fit passes over
// repeatedly. Defaults: the research size of docs/BENCHMARKS.md (768 x 24,576, k 32, batch 4,096, `--low-memory
// --buffer 4096 --eval-tokens 4096`).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCount } from '../src/commands/common.js';
import { UserError } from '../src/util/errors.js';

const CLI = join(import.meta.dirname, '../src/cli.js');
const dashdash = process.argv.indexOf('--');
const own = dashdash >= 0 ? process.argv.slice(2, dashdash) : process.argv.slice(2);
const extra = dashdash >= 0 ? process.argv.slice(dashdash + 1) : ['--low-memory', '--buffer', '4096', '--eval-tokens', '4096'];
const arg = (name: string, def: string) => {
  const i = own.indexOf(`--${name}`);
  return i >= 0 ? own[i + 1] : def;
};

const MiB = 1024 * 1024;
const fmtMiB = (kib: number) => (kib / 1024).toFixed(1);

/** The peak resident set (VmHWM) of a live process in KiB; undefined once it is gone. */
function peakResident(pid: number): number | undefined {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

/** The fit failed and said why on stderr (passed through): the bench exits with its code and adds nothing. */
class FitFailed extends Error {
  constructor(readonly code: number) {
    super(`sdl fit exited ${code}`);
  }
}

async function main() {
  if (!existsSync('/proc/self/status')) throw new Error('bench:memory reads /proc/<pid>/status: Linux only');
  const latents = parseCount(arg('latents', '24576'), '--latents');
  const k = arg('k', '32');
  const batch = parseCount(arg('batch', '4096'), '--batch');
  const tokens = parseCount(arg('tokens', '10M'), '--tokens');
  const acts = arg('acts', '');
  // The synthetic harvest, the dictionary and its checkpoint (~0.9 GB at 768 x 24,576) are not kept, whatever happens.
  const dir = mkdtempSync(join(tmpdir(), 'sdl-bench-memory-'));
  try {
    await measure(dir, acts, latents, k, batch, tokens);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(dir: string, givenActs: string, latents: number, k: string, batch: number, tokens: number) {
  let acts = givenActs;
  if (!acts) {
    acts = join(dir, 's768');
    const r = spawnSync(process.execPath, [CLI, 'synth', '-n', '2000', '--np', '768', '-S', '0.99', '-N', '400k', '--out', acts], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`sdl synth failed: ${r.stderr}`);
  }
  const out = join(dir, 'dict');
  const args = [
    'fit',
    '--acts',
    acts,
    '--site',
    arg('site', 'x_p'),
    '--latents',
    String(latents),
    '--k',
    k,
    '--batch',
    String(batch),
    '--tokens',
    String(tokens),
    '--lr',
    '1e-3',
    '--no-lr-race',
    '--out',
    out,
    ...extra,
  ];
  process.stderr.write(`sdl ${args.join(' ')}\n`);
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  // The fit's progress line ("... step 300/2442 ...", every 5 s off a terminal) gives the step the samples belong to.
  let step = 0;
  let tail = '';
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => {
    process.stderr.write(d); // the fit's own progress, rate and ETA
    tail = (tail + d.toString()).slice(-4000);
    const m = [...tail.matchAll(/step (\d+)\//g)];
    if (m.length) step = Number(m[m.length - 1][1]);
  });
  const rises: { step: number; hwm: number }[] = [];
  // The kernel's VmHWM can read a few hundred KiB lower than an earlier read (its RSS counters are summed lazily per
  // CPU): the peak is the largest read so far.
  let peak = 0;
  const timer = setInterval(() => {
    const hwm = peakResident(child.pid!);
    if (hwm === undefined || !(hwm > peak)) return;
    peak = hwm;
    rises.push({ step, hwm });
  }, 200);
  const code: number = await new Promise((ok) => child.on('exit', (c) => ok(c ?? 1)));
  clearInterval(timer);
  if (code !== 0) throw new FitFailed(code);

  // VmHWM once each million tokens had been trained: the last rise at or before that step.
  const hwmAt = (t: number) => rises.filter((x) => x.step * batch <= t).reduce((a, x) => Math.max(a, x.hwm), 0);
  const marks: number[] = [];
  for (let t = 1e6; t < tokens; t += 1e6) marks.push(hwmAt(t));
  const end = rises.reduce((a, x) => Math.max(a, x.hwm), 0);
  const at1M = marks[0] ?? end;
  // The bound: 1.5 x (W_enc, W_dec, b_enc, b_dec in float32, their two Adam moments, and one float32 batch).
  const dIn = (JSON.parse(readFileSync(join(out, 'cfg.json'), 'utf8')) as { d_in: number }).d_in;
  const params = 2 * dIn * latents + latents + dIn;
  const boundBytes = 1.5 * (3 * params * 4 + batch * dIn * 4);
  const weights = join(out, 'sae_weights.safetensors');
  const sha = existsSync(weights) ? createHash('sha256').update(readFileSync(weights)).digest('hex').slice(0, 16) : '-';
  // Where the peak stepped up after the first million tokens (the run's start is its first allocations).
  const later = rises.filter((x, i) => i > 0 && x.step * batch > 1e6 && x.hwm > rises[i - 1].hwm);
  const row = {
    size: `${dIn} x ${latents}`,
    tokens,
    hwmMiBPerMillion: marks.map((m) => Number(fmtMiB(m))),
    endMiB: Number(fmtMiB(end)),
    riseMiB: Number(fmtMiB(end - at1M)),
    risePercent: Number(((100 * (end - at1M)) / at1M).toFixed(2)),
    boundMiB: Number((boundBytes / MiB).toFixed(1)),
    stepsAfter1M: later.map((x) => `${x.hwm} KiB @${x.step}`),
    weightsSha256: sha,
    fit: stdout.trim().split('\n').slice(-2).join(' '),
  };
  console.log(`| size | tokens | VmHWM (MiB) at 1 / 2 / ... M tokens, end | 1M -> end | bound 1.5 x (weights + Adam + batch) |`);
  console.log('|---|---|---|---|---|');
  console.log(
    `| ${row.size} | ${tokens} | ${row.hwmMiBPerMillion.join(' / ')}, end ${row.endMiB} | +${row.riseMiB} MiB, +${row.risePercent}% | ${row.boundMiB} MiB |`,
  );
  console.log(`peak steps after 1M tokens (KiB @ step): ${later.length ? row.stepsAfter1M.join(', ') : 'none'}; weights SHA-256 ${sha}...`);
  console.log(`fit: ${row.fit}`);
  const json = arg('json', '');
  if (json) writeFileSync(json, JSON.stringify({ ...row, rises }, null, 1));
}

main().catch((e) => {
  if (e instanceof FitFailed) process.exit(e.code);
  console.error(`bench:memory: ${String(e?.message ?? e)}`);
  process.exit(e instanceof UserError ? 2 : 1);
});
