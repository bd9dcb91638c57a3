// Which model a dictionary belongs to, checked: the model a command runs a dictionary in must be the one it was
// trained on (the sha256 recorded at fit time), hold every hook the dictionary reads or writes, at the same width.
// Every command that puts a dictionary back into a model (eval, export --splice, run, steer, ablate, search --text)
// goes through here, so a dictionary is never measured or steered in the wrong model with exit 0.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadModel, mapOutOfVocabulary, siteHook, type LoadedModel } from '../models/model.js';
import type { HookPoint } from '../onnx/hooks.js';
import { createSession, hookSubgraph, makeFeeds, runtimeInputs } from '../onnx/session.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { UserError } from '../util/errors.js';
import { ACTS_MANIFEST_FILE } from '../util/files.js';

export interface BoundModel {
  model: LoadedModel;
  /** Hooks of the sites the dictionary reads, in cfg order. */
  inputs: HookPoint[];
  /** Hooks of the sites the dictionary writes, in cfg order. */
  outputs: HookPoint[];
}

/** The harvest manifest a dictionary folder keeps a copy of (undefined for dictionaries from elsewhere). */
function recordedHarvest(dictDir: string): { model_path?: string; identity?: { oov_id?: number | null } } | undefined {
  const p = join(dictDir, ACTS_MANIFEST_FILE);
  return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : undefined;
}

/** The model a dictionary folder was trained on: its harvest's model file (its folder when that is a model folder). */
export function recordedModelPath(dictDir: string): string | undefined {
  const path = recordedHarvest(dictDir)?.model_path;
  if (!path) return undefined;
  return existsSync(join(dirname(path), 'config.json')) ? dirname(path) : path;
}

/**
 * Loads the model for `d`: `spec` if given, else the recorded one, else `fallback` (the bundled model).
 * Refuses a model whose bytes differ from the recorded sha256, a missing hook, or another width.
 */
export async function bindModel(d: Dictionary, opts: { spec?: string; dictDir?: string; tokenizer?: string; fallback: () => string }): Promise<BoundModel> {
  const recorded = opts.dictDir ? recordedModelPath(opts.dictDir) : undefined;
  const spec = opts.spec ?? (recorded && existsSync(recorded) ? recorded : opts.fallback());
  let model = loadModel(spec, { tokenizer: opts.tokenizer });
  // A harvest made with --oov-id fed the model mapped ids; so does every command after it.
  const oov = opts.dictDir ? recordedHarvest(opts.dictDir)?.identity?.oov_id : undefined;
  if (typeof oov === 'number') model = mapOutOfVocabulary(model, oov);
  return { model, ...(await checkBinding(d, model)) };
}

/** The hooks a dictionary needs in `model`, after checking the model's identity and the hooks' widths. */
export async function checkBinding(d: Dictionary, model: LoadedModel): Promise<Omit<BoundModel, 'model'>> {
  const want = d.meta.model_sha256;
  if (typeof want === 'string' && want !== model.sha256) {
    throw new UserError(
      `the dictionary was trained on model ${String(d.meta.model_name ?? '?')} (sha256 ${want.slice(0, 12)}…) but ${model.name} is another model (sha256 ${model.sha256.slice(0, 12)}…); pass --model with the model it was trained on`,
    );
  }
  const hook = (s: { name: string }): HookPoint => {
    const h = siteHook(model, s.name);
    if (!h) throw new UserError(`${model.name} has no hook ${s.name}, which the dictionary reads or writes; pass --model with the model it was trained on`);
    return h;
  };
  const inputs = d.cfg.sitesIn.map(hook),
    outputs = d.cfg.sitesOut.map(hook);
  const widths = await hookWidths(model, [...inputs, ...outputs]);
  [...d.cfg.sitesIn, ...d.cfg.sitesOut].forEach((s, i) => {
    const w = widths[i];
    if (w !== s.width)
      throw new UserError(`${s.name} is ${w} wide in ${model.name} but the dictionary expects ${s.width}; pass --model with the model it was trained on`);
  });
  return { inputs, outputs };
}

/** The last dimension of each hook's tensor, from a two-token pass of the graph cut down to the hooks. */
export async function hookWidths(model: LoadedModel, hooks: HookPoint[]): Promise<number[]> {
  const s = await createSession(hookSubgraph(model.bytes, model.proto, hooks), { threads: 1 });
  const bos = model.tokenizer.bosId;
  const out = await s.run(makeFeeds(runtimeInputs(model.proto), Int32Array.from([bos, bos]), 1, 2));
  await s.release();
  return hooks.map((h) => out[h.tensor].dims.at(-1)!);
}
