// Sweep specifications: `--sweep "k=16,32,64 latents=2048,4096"` (the cross product) or a sweep file (a list of
// members, each any per-dictionary option of `sdl fit`), and the sweep folder's record, sweep.json.
import { existsSync, readFileSync } from 'node:fs';
import { UserError } from '../util/errors.js';

/** Per-dictionary options of `sdl fit` a member may set, with how a value is read from the --sweep string. */
export const MEMBER_OPTIONS: Record<string, 'number' | 'string' | 'boolean'> = {
  kind: 'string',
  site: 'string',
  sites: 'string',
  layer: 'number',
  layers: 'string',
  input: 'string',
  'latents-per-layer': 'number',
  skip: 'boolean',
  activation: 'string',
  k: 'number',
  expansion: 'number',
  latents: 'number',
  'matryoshka-widths': 'string',
  bias: 'boolean',
  tied: 'boolean',
  'unit-norm-decoder': 'boolean',
  'b-dec-init': 'string',
  normalize: 'boolean',
  lr: 'number',
  'lr-warmup': 'number',
  'lr-decay': 'number',
  sparsity: 'number',
  'sparsity-warmup': 'number',
  bandwidth: 'number',
  'threshold-init': 'number',
  clip: 'number',
  tokens: 'string',
  steps: 'number',
  seed: 'number',
  'dead-window': 'string',
  'auxk-coef': 'number',
  'auxk-k': 'number',
  // Shared by every member (one data stream); accepted so a sweep file may state them, checked equal.
  batch: 'string',
  buffer: 'string',
  'eval-tokens': 'string',
  'include-bos': 'boolean',
  'checkpoint-every': 'number',
};

export type MemberSettings = Record<string, string | number | boolean>;

function value(key: string, raw: string | number | boolean, where: string): string | number | boolean {
  const type = MEMBER_OPTIONS[key];
  if (!type) throw new UserError(`${where}: '${key}' is not an option a sweep member can set; use any of: ${Object.keys(MEMBER_OPTIONS).join(', ')}`);
  if (type === 'number') {
    const n = typeof raw === 'number' ? raw : Number(raw);
    if (typeof raw === 'boolean' || raw === '' || !Number.isFinite(n)) throw new UserError(`${where}: ${key}=${raw} is not a number`);
    return n;
  }
  if (type === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === 'false') return raw === 'true';
    throw new UserError(`${where}: ${key}=${raw} must be true or false`);
  }
  return String(raw);
}

/** `k=16,32 latents=2048,4096` -> the four members, in order (later keys vary fastest). */
export function parseSweep(spec: string): MemberSettings[] {
  const axes = spec
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map((part) => {
      const m = /^([a-z][a-z0-9-]*)=(.+)$/.exec(part);
      if (!m) throw new UserError(`--sweep: '${part}' is not key=value[,value...] (example: --sweep "k=16,32,64 latents=2048,4096")`);
      return { key: m[1], values: m[2].split(',').map((v) => value(m[1], v, '--sweep')) };
    });
  if (!axes.length) throw new UserError('--sweep is empty (example: --sweep "k=16,32,64 latents=2048,4096")');
  const keys = axes.map((a) => a.key);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  if (dup) throw new UserError(`--sweep names ${dup} twice`);
  let members: MemberSettings[] = [{}];
  for (const a of axes) members = members.flatMap((m) => a.values.map((v) => ({ ...m, [a.key]: v })));
  return members;
}

/** A sweep file: a JSON list of members (or {"members": [...]}), each an object of fit options, optionally "name". */
export function readSweepFile(path: string): { name?: string; settings: MemberSettings }[] {
  if (!existsSync(path)) throw new UserError(`sweep file ${path} not found`);
  let j: unknown;
  try {
    j = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new UserError(`${path} is not JSON; a sweep file is a list of members like [{"k": 16}, {"activation": "relu", "sparsity": 5}]`);
  }
  const list = Array.isArray(j) ? j : (j as { members?: unknown })?.members;
  if (!Array.isArray(list) || !list.length) throw new UserError(`${path} holds no members; write a list like [{"k": 16}, {"k": 32}]`);
  return list.map((m, i) => {
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new UserError(`${path}: member ${i} is not an object of fit options`);
    const { name, ...rest } = m as Record<string, unknown>;
    if (name !== undefined && (typeof name !== 'string' || !/^[\w.+-]+$/.test(name)))
      throw new UserError(`${path}: member ${i} has name ${JSON.stringify(name)}; use letters, digits, . + - _`);
    const settings: MemberSettings = {};
    for (const [k, v] of Object.entries(rest)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean')
        throw new UserError(`${path}: member ${i} sets ${k} to ${JSON.stringify(v)}; give a number, string or boolean`);
      settings[k] = value(k, v, `${path}: member ${name ?? i}`);
    }
    return { name: name as string | undefined, settings };
  });
}

/** A member's folder name from its settings: k16-latents2048 (the first member with no settings is 'base'). */
export function memberName(settings: MemberSettings): string {
  const parts = Object.entries(settings).map(([k, v]) => `${k}${String(v)}`.replace(/[^\w.+-]+/g, '_'));
  return parts.length ? parts.join('-') : 'base';
}

/** sweep.json: the members, their settings and, once finished, their results. */
export interface SweepRecord {
  format: 'sdlkit-sweep/1';
  acts: string;
  acts_sha256: string;
  /** The options given to `sdl fit` besides the sweep (shared by every member). */
  base: Record<string, unknown>;
  members: {
    name: string;
    settings: MemberSettings;
    out: string;
    status: 'pending' | 'finished';
    result?: { fvu: number; l0: number; dead_fraction: number; steps: number; tokens: number; seconds: number; tokens_per_second: number };
  }[];
  started: string;
  updated: string;
  seconds?: number;
}
