#!/usr/bin/env node
// The `sdl` command line: yargs wiring only; each command lives in src/commands/<name>.ts.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { UserError } from './util/errors.js';
import * as importCmd from './commands/import.js';
import * as inspectCmd from './commands/inspect.js';
import * as harvestCmd from './commands/harvest.js';
import * as fitCmd from './commands/fit.js';
import * as modelCmd from './commands/model.js';
import * as pipelineCmd from './commands/pipeline.js';
import * as exportCmd from './commands/export.js';
import * as evalCmd from './commands/eval.js';
import * as compareCmd from './commands/compare.js';
import * as queryCmds from './commands/query.js';
import * as synthCmd from './commands/synth.js';
import * as indexCmds from './commands/index-cmds.js';
import * as benchCmd from './commands/bench.js';
import * as theoryCmd from './commands/theory.js';
import * as interveneCmds from './commands/intervene.js';
import * as dashboardCmds from './commands/dashboard.js';

function fail(e: unknown): never {
  if (e instanceof UserError) {
    process.stderr.write(`sdl: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  // A bug, not bad input: one line, and the stack only when asked for.
  const first = String((e as Error)?.message ?? e).split('\n')[0];
  if (process.env.SDL_DEBUG) process.stderr.write(`sdl: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  else process.stderr.write(`sdl: internal error: ${first} (rerun with SDL_DEBUG=1 for the stack, and report it)\n`);
  process.exit(70);
}

process.on('unhandledRejection', fail);

let y = yargs(hideBin(process.argv)).scriptName('sdl').strict().demandCommand(1, 'name a command; sdl --help lists them');
for (const c of [
  importCmd,
  inspectCmd,
  harvestCmd,
  fitCmd,
  modelCmd,
  pipelineCmd,
  exportCmd,
  evalCmd,
  compareCmd,
  queryCmds,
  synthCmd,
  indexCmds,
  interveneCmds,
  dashboardCmds,
  benchCmd,
  theoryCmd,
])
  y = c.register(y);
// yargs reads a boolean option given any value but true or false (--low-memory=maybe) as false, silently: refused.
y.middleware(() => {
  const booleans = new Set<string>((y as unknown as { getOptions(): { boolean: string[] } }).getOptions().boolean);
  for (const a of hideBin(process.argv)) {
    const m = /^--(?:no-)?([^=]+)=(.*)$/s.exec(a);
    if (m && booleans.has(m[1]) && !/^(true|false)$/.test(m[2])) throw new UserError(`--${m[1]} is a switch: give it alone, or =true / =false (got '${m[2]}')`);
  }
}, true);
// yargs makes an option given twice (--out a --out b) an array, which every command would then take for one value.
y.middleware((argv) => {
  const { array, count } = (y as unknown as { getOptions(): { array: string[]; count: string[] } }).getOptions();
  const many = new Set([...array, ...count]);
  for (const [k, v] of Object.entries(argv)) {
    if (k === '_' || k.includes('-') || !Array.isArray(v) || many.has(k)) continue;
    const flag = k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (many.has(flag)) continue;
    throw new UserError(`--${flag} was given ${v.length} times (${v.join(', ')}); give it once`);
  }
}, true);
y.fail((msg, err) => {
  if (err) fail(err);
  // yargs words some messages over several lines (Invalid values: / Argument: ...): one line, as every other.
  process.stderr.write(`sdl: ${String(msg).replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(2);
})
  .help()
  .wrap(Math.min(120, process.stdout.columns ?? 100));

// Synchronous handlers throw out of parseAsync() itself, asynchronous ones reject its promise: catch both.
try {
  await y.parseAsync();
} catch (e) {
  fail(e);
}
