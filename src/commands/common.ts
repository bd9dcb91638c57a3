// Shared CLI pieces: the default model, number parsing, JSON output.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BUNDLED_MODEL_DIR } from '../models/model.js';
import { UserError } from '../util/errors.js';

/** The bundled model's folder name under models/. */
export const BUNDLED_MODEL_NAME = 'sdl-tiny';

export function defaultModel(): string {
  const dir = join(BUNDLED_MODEL_DIR, BUNDLED_MODEL_NAME);
  if (!existsSync(join(dir, 'config.json'))) {
    throw new UserError(`no --model given and the bundled model ${dir} is missing; pass --model <folder|file.onnx> (sdl import llama2c makes one)`);
  }
  return dir;
}

/** Parses "2,4,6" or "2-4" into layer numbers. */
export function parseLayers(s: string): number[] {
  const out: number[] = [];
  for (const part of s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new UserError(`cannot read layers '${s}'; write them as 6, 2,4,6 or 2-6`);
    const a = Number(m[1]),
      b = m[2] !== undefined ? Number(m[2]) : a;
    if (b < a) throw new UserError(`cannot read layers '${s}': the range ${part} runs backwards; write it as ${b}-${a}`);
    for (let l = a; l <= b; l++) out.push(l);
  }
  return out;
}

/** Parses counts like 1000, 64k, 1.5M. */
export function parseCount(s: string | number, what: string): number {
  if (typeof s === 'number') return s;
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(s.trim());
  if (!m) throw new UserError(`${what} must be a number like 100000, 64k or 1M (got '${s}')`);
  const mult = { '': 1, k: 1e3, K: 1e3, m: 1e6, M: 1e6, g: 1e9, G: 1e9 }[m[2]]!;
  // Products like 1.5k are exact to within float rounding (1.1k is 1100.0000000000002); anything further from a
  // whole count (0.5, 1.2345k) is refused rather than rounded to a count the user did not write.
  const v = Number(m[1]) * mult;
  const n = Math.round(v);
  if (Math.abs(v - n) > 1e-6 * Math.max(1, n)) throw new UserError(`${what} must be a whole count like 100000, 64k or 1.5M (got '${s}')`);
  return n;
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}
