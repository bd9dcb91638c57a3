// Fit's peak memory over a long run, against the bound issue #20 sets: `sdl fit` runs as a child while this process
// reads its peak resident set (VmHWM, /proc/<pid>/status) every 200 ms and then resets it (`5` to
// /proc/<pid>/clear_refs), so that each read is the peak of its own 200 ms. From those windows it reports, for each
// million tokens, the peak within that million (what that part of the run needed) and the peak so far (VmHWM as a
// process without resets would show it), where the peak so far stepped up (the step as the fit's training log last
// gave it), and 1.5 x (weights + Adam moments + one batch). Linux only: the figures come from /proc.
// Why both: the peak so far is a maximum over thousands of steps whose own peaks vary with how the pool's threads
// interleave their allocations, so it creeps up as rarer interleavings occur even when no step needs more memory than
// the first million's did; the peak within each million separates such a creep from a trend.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCount } from '../src/commands/common.js';
import { UserError } from '../src/util/errors.js';
import { TRAINING_LOG_FILE } from '../src/util/files.js';
import { peakSinceLast } from './proc-memory.js';

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

/** The step of the last whole record of a training log being written; undefined before its first. */
function lastLoggedStep(path: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, 4096));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    const lines = buf.toString('utf8').split('\n');
    // The last element is what follows the last newline: empty, or a record still being written.
    for (let i = lines.length - 2; i >= 0; i--) {
      const m = /^\{"step":(\d+),/.exec(lines[i]);
      if (m) return Number(m[1]);
    }
    return undefined;
  } finally {
    closeSync(fd);
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
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => process.stderr.write(d)); // the fit's own progress, rate and ETA
  // The step a window ends in: the last record of the fit's training log (one every 10 steps and at each evaluation;
  // its progress line comes only every 5 s off a terminal).
  const log = join(out, TRAINING_LOG_FILE);
  let step = 0;
  // Each 200 ms window's peak, by the step it ended in; the peak so far is their running maximum.
  const windows: { step: number; hwm: number }[] = [];
  let failure: Error | undefined;
  const timer = setInterval(() => {
    try {
      const hwm = peakSinceLast(child.pid!);
      step = Math.max(step, lastLoggedStep(log) ?? 0);
      if (hwm !== undefined) windows.push({ step, hwm });
    } catch (e) {
      failure = e as Error;
      child.kill();
    }
  }, 200);
  const code: number = await new Promise((ok) => child.on('exit', (c) => ok(c ?? 1)));
  clearInterval(timer);
  if (failure) throw failure;
  if (code !== 0) throw new FitFailed(code);

  const millions = Math.ceil(tokens / 1e6);
  const within = new Array<number>(millions).fill(0);
  const soFar = new Array<number>(millions).fill(0);
  for (const w of windows) {
    const m = Math.min(Math.floor((w.step * batch) / 1e6), millions - 1);
    within[m] = Math.max(within[m], w.hwm);
  }
  // A million with no window would read as a peak of 0 (a fit too fast for 200 ms windows, or no training log where
  // the bench reads it): no figures rather than wrong ones.
  const empty = within.indexOf(0);
  if (empty >= 0)
    throw new UserError(
      `no 200 ms window fell in million ${empty + 1} of the fit's tokens (${windows.length} windows in all; the training log read at ${log}); pass more --latents or --tokens, and no --out after --`,
    );
  for (let m = 0; m < millions; m++) soFar[m] = Math.max(within[m], m ? soFar[m - 1] : 0);
  const end = soFar[millions - 1];
  const at1M = soFar[0];
  // Where the peak so far stepped up after the first million tokens (the run's start is its first allocations).
  const rises: { step: number; hwm: number }[] = [];
  let peak = 0;
  for (const w of windows) if (w.hwm > peak) rises.push({ step: w.step, hwm: (peak = w.hwm) });
  const later = rises.filter((x) => x.step * batch > 1e6);
  const laterMax = Math.max(0, ...within.slice(1));
  // The bound: 1.5 x (W_enc, W_dec, b_enc, b_dec in float32, their two Adam moments, and one float32 batch).
  const dIn = (JSON.parse(readFileSync(join(out, 'cfg.json'), 'utf8')) as { d_in: number }).d_in;
  const params = 2 * dIn * latents + latents + dIn;
  const boundBytes = 1.5 * (3 * params * 4 + batch * dIn * 4);
  const weights = join(out, 'sae_weights.safetensors');
  const sha = existsSync(weights) ? createHash('sha256').update(readFileSync(weights)).digest('hex').slice(0, 16) : '-';
  const row = {
    size: `${dIn} x ${latents}`,
    tokens,
    peakWithinMillionMiB: within.map((m) => Number(fmtMiB(m))),
    peakSoFarMiB: soFar.map((m) => Number(fmtMiB(m))),
    endMiB: Number(fmtMiB(end)),
    riseMiB: Number(fmtMiB(end - at1M)),
    risePercent: Number(((100 * (end - at1M)) / at1M).toFixed(2)),
    laterWithinOverFirstMiB: millions > 1 ? Number(fmtMiB(laterMax - within[0])) : 0,
    boundMiB: Number((boundBytes / MiB).toFixed(1)),
    stepsAfter1M: later.map((x) => `${x.hwm} KiB @${x.step}`),
    windowCount: windows.length,
    weightsSha256: sha,
    fit: stdout.trim().split('\n').slice(-2).join(' '),
  };
  console.log(
    '| size | tokens | peak within each million (MiB): 1st / 2nd / ... | peak so far at each million, end | 1M -> end | bound 1.5 x (weights + Adam + batch) |',
  );
  console.log('|---|---|---|---|---|---|');
  console.log(
    `| ${row.size} | ${tokens} | ${row.peakWithinMillionMiB.join(' / ')} | ${row.peakSoFarMiB.join(' / ')} | +${row.riseMiB} MiB, +${row.risePercent}% | ${row.boundMiB} MiB |`,
  );
  console.log(
    `later millions' largest peak against the first's: ${row.laterWithinOverFirstMiB >= 0 ? '+' : ''}${row.laterWithinOverFirstMiB} MiB; peak so far stepped up after 1M (KiB @ step): ${later.length ? row.stepsAfter1M.join(', ') : 'never'}; ${windows.length} windows of 200 ms; weights SHA-256 ${sha}...`,
  );
  console.log(`fit: ${row.fit}`);
  const json = arg('json', '');
  if (json) writeFileSync(json, JSON.stringify({ ...row, rises, windows }, null, 1));
}

main().catch((e) => {
  if (e instanceof FitFailed) process.exit(e.code);
  console.error(`bench:memory: ${String(e?.message ?? e)}`);
  process.exit(e instanceof UserError ? 2 : 1);
});
