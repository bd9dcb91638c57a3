// Range checks for numeric settings, one table for the whole tool: configs (sdl/config.ts) and command options
// use the same rules and the same one-line message.
import { totalmem } from 'node:os';
import { UserError } from './errors.js';
import { fmtBytes } from './progress.js';

export type Rule = 'int>0' | 'int>=0' | 'int>=2' | '>0' | '>=0' | '[0,1]' | '(0,1)' | '[0,1)' | '(0,1]' | 'int';
export const RULES: Record<Rule, [(v: number) => boolean, string]> = {
  'int>0': [(v) => Number.isInteger(v) && v > 0, 'a positive integer'],
  'int>=0': [(v) => Number.isInteger(v) && v >= 0, 'a non-negative integer'],
  'int>=2': [(v) => Number.isInteger(v) && v >= 2, 'an integer of at least 2'],
  int: [(v) => Number.isInteger(v), 'an integer'],
  '>0': [(v) => Number.isFinite(v) && v > 0, 'a positive number'],
  '>=0': [(v) => Number.isFinite(v) && v >= 0, 'zero or a positive number'],
  '[0,1]': [(v) => v >= 0 && v <= 1, 'between 0 and 1'],
  '(0,1)': [(v) => v > 0 && v < 1, 'strictly between 0 and 1'],
  '[0,1)': [(v) => v >= 0 && v < 1, 'in [0, 1)'],
  '(0,1]': [(v) => v > 0 && v <= 1, 'in (0, 1]'],
};

/** Throws the one-line message when `value` breaks `rule`; undefined passes (an unset optional setting). */
export function checkNumber(value: unknown, rule: Rule, option: string): void {
  if (value === undefined) return;
  const [ok, what] = RULES[rule];
  if (typeof value !== 'number' || !ok(value)) throw new UserError(`${option} must be ${what} (got ${String(value)})`);
}

/** Checks a config's fields against a table of [field, rule, the option that sets it]: one line naming the option. */
export function checkFields<T>(obj: T, spec: readonly (readonly [keyof T, Rule, string])[]): void {
  for (const [key, rule, option] of spec) checkNumber(obj[key], rule, option);
}

/** Checks several command options at once: { windows: 'int>0', ctx: 'int>=2' } against argv. */
export function checkOptions(argv: Record<string, unknown>, spec: Record<string, Rule>): void {
  for (const [name, rule] of Object.entries(spec)) checkNumber(argv[name], rule, `--${name}`);
}

/**
 * Refuses settings whose arrays could never fit: `bytes` (what they need at the least) above this machine's memory.
 * Checked where the config is built, so a typo like --latents 1e12 is one line naming it instead of a failed
 * allocation deep inside (or a machine swapping for minutes first).
 */
export function checkFitsInMemory(bytes: number, what: string, fix: string): void {
  const have = totalmem();
  if (bytes > have) throw new UserError(`${what} would take ${fmtBytes(bytes)} and this machine has ${fmtBytes(have)} of memory; ${fix}`);
}
