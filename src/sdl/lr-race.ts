// The default learning rate of the TopK family: a race. Measured (docs/fit.md), no single rate is within a few percent
// of the best on both the bundled model and the synthetic bench at every budget (the best rate differs by 4-8x
// between them), but the best of three rates spaced over that range always is. So a `sdl fit` of the TopK family
// without --lr trains three members on one stream (a sweep: one read of the shards, both cores busy) and keeps the
// one with the lowest held-out FVU; L0 is fixed by k, so FVU alone compares them. The winner is bit for bit the run
// `sdl fit --lr <its rate>` makes alone.
import { existsSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.js';
import { CFG_FILE, EVAL_FILE } from '../util/files.js';
import { checkOutput, lockFolder, writeJsonAtomic } from '../util/fsx.js';
import { ACTIVATIONS } from './activations.js';
import { ruleLr } from './config.js';
import { type FitJob, type FitResult, type SweepMember, fit, fitSweep } from './trainer.js';
import { Dictionary } from './dictionary.js';

/** The rates raced, as multiples of the rule's rate (defaultLr): 2x, 8x and 16x sparsify's constant. */
export const LR_RACE_MULTIPLES = [0.5, 2, 4] as const;

/** The folder a race trains its members in, beside the dictionary's. */
const raceDirOf = (out: string) => `${out}.lr-race`;

/** The race recorded in a finished dictionary's cfg.json, if it was raced. */
function recordedRace(out: string): RaceRecord | undefined {
  if (!existsSync(join(out, CFG_FILE))) return undefined;
  try {
    return JSON.parse(readFileSync(join(out, CFG_FILE), 'utf8')).sdlkit?.lr_race;
  } catch {
    return undefined;
  }
}

/**
 * Whether this fit races learning rates: no --lr, the TopK family (L0 fixed by k), no resampling (it draws extra rows
 * from the stream members share), and, on --resume, only a run that was a race (an unfinished race beside `out`, or a
 * raced dictionary in it); a single run resumes as a single run.
 */
export function racesLearningRate(job: FitJob, allowed: boolean): boolean {
  if (!allowed || job.train.lr !== undefined || !ACTIVATIONS[job.dict.activation].usesK || job.train.resampleEvery > 0) return false;
  return !job.resume || existsSync(raceDirOf(job.out)) || recordedRace(job.out) !== undefined;
}

interface RaceRecord {
  multiples_of_rule: number[];
  rule_lr: number;
  race: { lr: number; fvu: number }[];
  chosen: number;
}

/** Adds the race to a dictionary's cfg.json (sdlkit.lr_race). */
function recordRace(dir: string, rec: RaceRecord): void {
  const path = join(dir, CFG_FILE);
  const cfg = JSON.parse(readFileSync(path, 'utf8'));
  cfg.sdlkit.lr_race = rec;
  writeJsonAtomic(path, cfg);
}

export interface LrRaceResult extends FitResult {
  lr: number;
  race: { lr: number; fvu: number }[];
}

export async function fitWithLrRace(job: FitJob): Promise<LrRaceResult> {
  const { out } = job;
  const raceDir = raceDirOf(out);
  checkOutput(out, 'dir');
  if (!job.resume && existsSync(join(out, CFG_FILE)) && !job.force)
    throw new UserError(`${out} already holds a dictionary; pass --force to replace it, --resume to continue its run, or choose another --out`);
  // The dictionary's folder is held for the whole race, as a single fit holds it.
  const unlock = lockFolder(out, 'sdl fit');
  try {
    return await race(job, raceDir, unlock);
  } finally {
    unlock();
  }
}

async function race(job: FitJob, raceDir: string, unlock: () => void): Promise<LrRaceResult> {
  const { out } = job;
  const base = ruleLr(job.dict);
  if (job.resume) {
    // A race that finished (its winner in `out`, the race folder perhaps not yet removed): --resume continues the
    // winner's own run from its checkpoint, as `sdl fit --lr <its rate> --resume` would.
    const done = recordedRace(out);
    if (done) {
      rmSync(raceDir, { recursive: true, force: true });
      unlock(); // the single run takes the folder's lock itself
      const r = await fit({ ...job, train: { ...job.train, lr: done.chosen } });
      recordRace(out, done);
      return { ...r, lr: done.chosen, race: done.race };
    }
    if (!existsSync(raceDir))
      throw new UserError(
        `there is no learning-rate race to resume beside ${out} (no ${raceDir}); run without --resume to start, or give --lr to resume a single run`,
      );
  }
  const members: SweepMember[] = LR_RACE_MULTIPLES.map((m) => {
    const lr = Number((base * m).toPrecision(4));
    return { name: `lr-${lr}`, dict: job.dict, train: { ...job.train, lr }, out: join(raceDir, `lr-${lr}`) };
  });
  // On resume, finished members stay as they are; the others continue from their checkpoints (or start).
  const todo = members
    .filter((m) => !(job.resume && existsSync(join(m.out, CFG_FILE))))
    .map((m) => ({ ...m, resume: Boolean(job.resume) && existsSync(join(m.out, 'checkpoint', 'state.json')) }));
  const results = new Map<string, FitResult>();
  if (todo.length) {
    const r = await fitSweep({ ...job, members: todo, resume: false, force: true });
    todo.forEach((m, i) => results.set(m.name, r[i]));
  }
  const fvu = (m: SweepMember) => results.get(m.name)?.eval.fvu ?? (JSON.parse(readFileSync(join(m.out, EVAL_FILE), 'utf8')) as { fvu: number }).fvu;
  const race = members.map((m) => ({ lr: m.train.lr!, fvu: fvu(m) }));
  // The lowest held-out FVU; on a tie the smaller rate.
  let best = 0;
  race.forEach((r, i) => {
    if (r.fvu < race[best].fvu) best = i;
  });
  const winner = members[best];
  // Record the race in the winner's cfg.json, then move it into place (the only step that touches `out`).
  recordRace(winner.out, { multiples_of_rule: [...LR_RACE_MULTIPLES], rule_lr: base, race, chosen: race[best].lr });
  // The winner's files replace what `out` held (its lock stays until the caller releases it); cfg.json moves last,
  // so a kill in between never leaves a folder that looks finished with the wrong weights.
  rmSync(join(out, CFG_FILE), { force: true });
  for (const f of readdirSync(out)) if (f !== '.lock') rmSync(join(out, f), { recursive: true, force: true });
  for (const f of readdirSync(winner.out)) if (f !== CFG_FILE && f !== '.lock') renameSync(join(winner.out, f), join(out, f));
  renameSync(join(winner.out, CFG_FILE), join(out, CFG_FILE));
  rmSync(raceDir, { recursive: true, force: true });
  // A winner that finished before a resume has its figures in its training record, not in this process.
  const res = results.get(winner.name) ?? finishedResult(out);
  return { ...res, dictionary: Dictionary.load(out), lr: race[best].lr, race };
}

/** A finished dictionary's result, from its cfg.json training record and eval.json. */
function finishedResult(dir: string): FitResult {
  const t = JSON.parse(readFileSync(join(dir, CFG_FILE), 'utf8')).sdlkit.training as {
    steps: number;
    tokens: number;
    seconds: number;
    backend: string;
    dead_fraction: number;
  };
  return {
    dictionary: Dictionary.load(dir),
    eval: JSON.parse(readFileSync(join(dir, EVAL_FILE), 'utf8')),
    steps: t.steps,
    tokens: t.tokens,
    seconds: t.seconds,
    tokensPerSecond: t.tokens / t.seconds,
    backend: t.backend,
    deadFraction: t.dead_fraction,
  };
}
