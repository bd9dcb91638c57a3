// The README is executed: every `npx sdl ...` example and `npm start` run in order, in a fresh working folder,
// with smaller sizes where an example's size is not its point (listed in SHRINK), the same flags otherwise.
// The files the examples name (past.onnx, notes.txt, stories15M.bin, tokenizer.bin, models/, ../shared) are put
// there first. A README that lies fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, SHARED, STORIES, corpusFile, haveShared, tmp } from './helpers.js';

/** Splits a command line as a shell would for the quoting the README uses ("..." and '...'). */
export function shellWords(line: string): string[] {
  const out: string[] = [];
  let cur = '',
    quote = '',
    any = false;
  for (const ch of line) {
    if (quote) {
      if (ch === quote) quote = '';
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      any = true;
    } else if (ch === ' ') {
      if (cur || any) out.push(cur);
      cur = '';
      any = false;
    } else cur += ch;
  }
  if (cur || any) out.push(cur);
  return out;
}

/** The README's example commands, in order: `npx sdl ...` lines and `npm start`, comments stripped. */
function examples(): string[][] {
  const lines = readFileSync(join(ROOT, 'README.md'), 'utf8').split('\n');
  const out: string[][] = [];
  for (const l of lines) {
    const m = /^ {4}(npx sdl .*|npm start)\s*$/.exec(l.replace(/\s+#.*$/, ''));
    if (!m) continue;
    out.push(m[1] === 'npm start' ? ['pipeline'] : shellWords(m[1]).slice(2));
  }
  return out;
}

const set = (args: string[], flag: string, value: string) => {
  const i = args.indexOf(flag);
  if (i >= 0) args[i + 1] = value;
  else args.push(flag, value);
};

/** Sizes cut for the test; everything else runs as written. */
function shrink(args: string[]): string[] {
  const a = [...args];
  const cmd = a[0] === 'bench' ? `bench ${a[1]}` : a[0];
  if (cmd === 'harvest') set(a, '--tokens', '48k');
  if (cmd === 'pipeline') {
    set(a, '--tokens', '48k');
    set(a, '--steps', '40');
  }
  if (cmd === 'fit') {
    set(a, '--steps', '20');
    set(a, '--eval-tokens', '2048');
  }
  if (cmd === 'synth') set(a, '--N', '20k');
  if (cmd === 'serve') set(a, '--port', '0');
  if (cmd.startsWith('bench')) {
    set(a, '--steps', '5');
    set(a, '--N', '8k');
    set(a, '--batch', '256');
    if (a.includes('--seeds')) set(a, '--seeds', '0');
  }
  return a;
}

const NEEDS_SHARED = /\.\.\/shared|stories15M/;

/** Starts `sdl serve ...`, waits for the line with its URL, stops it; status 0 when the line came. */
function untilServing(args: string[], cwd: string): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (b) => {
      stdout += b;
      if (/serving \d+ dictionar\w+ at http:\/\/127\.0\.0\.1:\d+\//.test(stdout)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (b) => (stderr += b));
    child.on('exit', () => {
      clearTimeout(timer);
      ok({ status: /serving/.test(stdout) ? 0 : 1, stdout, stderr });
    });
  });
}

test('every README example runs, in order, on a fresh cache', { timeout: 600_000 }, async () => {
  const root = tmp('sdl-readme-');
  const cwd = join(root, 'work');
  mkdirSync(cwd);
  // models/ holds a link to the bundled model only: examples that write under models/ stay in the test folder.
  mkdirSync(join(cwd, 'models'));
  symlinkSync(join(ROOT, 'models', 'sdl-tiny'), join(cwd, 'models', 'sdl-tiny'));
  corpusFile(cwd, 60);
  symlinkSync(join(cwd, 'corpus.txt'), join(cwd, 'notes.txt'));
  if (haveShared) {
    symlinkSync(SHARED, join(root, 'shared'));
    symlinkSync(join(STORIES, 'stories260K.bin'), join(cwd, 'stories15M.bin'));
    symlinkSync(join(STORIES, 'tok512.bin'), join(cwd, 'tokenizer.bin'));
  }
  const all = examples();
  assert.ok(all.length >= 35, `found ${all.length} examples`);
  const ran: string[] = [];
  for (const ex of all) {
    const line = ex.join(' ');
    if (!haveShared && NEEDS_SHARED.test(line)) continue;
    const args = shrink(ex);
    const t0 = performance.now();
    // A server runs until stopped: it must come up and say where; then it is stopped.
    const r = args[0] === 'serve' ? await untilServing(args, cwd) : spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8' });
    assert.equal(r.status, 0, `README example 'sdl ${line}' (run as 'sdl ${args.join(' ')}') failed:\n${r.stderr}`);
    assert.ok(r.stdout.trim().length > 0 || /--out|export|import/.test(line), `'sdl ${line}' printed nothing`);
    ran.push(`${((performance.now() - t0) / 1000).toFixed(1)}s sdl ${line}`);
  }
  console.log(`# ran ${ran.length} README examples:\n${ran.map((r) => `#   ${r}`).join('\n')}`);
});
