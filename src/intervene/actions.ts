// What the intervention commands compute, apart from printing: per-token readout, steered generation beside
// the clean one, and zero-ablation's effect on the loss. Shared by the CLI and `sdl serve`.
import type { LoadedModel } from '../models/model.js';
import { generate } from '../models/generate.js';
import { CeAccumulator, logSoftmaxRow } from '../eval/splice-eval.js';
import type { Intervener, Intervention } from './intervener.js';
import { UserError } from '../util/errors.js';

/** Windows of token ids: `count` windows of `ctx` tokens, row-major. */
export interface Windows {
  ids: Int32Array;
  count: number;
}

/** Longest window sdlkit builds for a model of unknown context. */
const MAX_WINDOW = 1024;

/**
 * A text as windows of the model's context: one window when it fits, else consecutive pieces of ctx - 1 tokens,
 * each after a BOS (the model's context restarts at each window: `note` says so). The last window is shorter.
 */
export function textWindows(model: LoadedModel, text: string): { windows: Int32Array[]; ctx: number; note?: string } {
  const toks = model.tokenizer.encode(text, { bos: false });
  if (!toks.length) throw new UserError('the text gives no tokens');
  const ctx = Math.min(model.contextLength, MAX_WINDOW);
  const piece = ctx - 1;
  const windows: Int32Array[] = [];
  for (let s = 0; s < toks.length; s += piece) windows.push(Int32Array.from([model.tokenizer.bosId, ...toks.slice(s, s + piece)]));
  const note =
    windows.length > 1
      ? `the text is ${toks.length} tokens, more than ${model.name}'s context of ${ctx}: read in ${windows.length} windows of up to ${piece} tokens, each starting again from BOS`
      : undefined;
  return { windows, ctx, note };
}

export interface TokenReadout {
  /** Token number in the text (0 = its first token; the BOS the model reads first is not listed). */
  position: number;
  token: string;
  id: number;
  features: { feature: number; act: number }[];
  /** ||y - reconstruction||^2 / ||y||^2 at this token. */
  error: number;
  /** The model's most likely next token and its probability. */
  next: { token: string; id: number; prob: number };
}

export async function readout(iv: Intervener, windows: Int32Array[], opts: { top: number; feature?: number }): Promise<TokenReadout[]> {
  const m = iv.dict.cfg.dSae;
  if (opts.feature !== undefined && (!Number.isInteger(opts.feature) || opts.feature < 0 || opts.feature >= m)) {
    throw new UserError(`feature ${opts.feature} does not exist: the dictionary has features 0-${m - 1}`);
  }
  const tok = iv.model.tokenizer;
  const rows: TokenReadout[] = [];
  for (const ids of windows) {
    const r = await iv.forward(ids, 1, ids.length);
    const err = iv.reconstructionError(r);
    for (let t = 1; t < ids.length; t++) {
      const f = r.features.subarray(t * m, (t + 1) * m);
      const features =
        opts.feature !== undefined
          ? [{ feature: opts.feature, act: f[opts.feature] }]
          : Array.from(f.keys())
              .filter((i) => f[i] > 0)
              .sort((a, b) => f[b] - f[a])
              .slice(0, opts.top)
              .map((i) => ({ feature: i, act: f[i] }));
      const lp = logSoftmaxRow(r.logits.subarray(t * r.vocab, (t + 1) * r.vocab));
      let best = 0;
      for (let v = 1; v < r.vocab; v++) if (lp[v] > lp[best]) best = v;
      rows.push({
        position: rows.length,
        token: tok.piece(ids[t]),
        id: ids[t],
        features,
        error: err[t],
        next: { token: tok.piece(best), id: best, prob: Math.exp(lp[best]) },
      });
    }
  }
  return rows;
}

export interface SteerResult {
  prompt: string;
  unsteered: string;
  steered: string;
  unsteered_ids: number[];
  steered_ids: number[];
}

export async function steer(
  iv: Intervener,
  prompt: string,
  intervention: Intervention,
  opts: { tokens: number; temperature: number; seed: number },
): Promise<SteerResult> {
  const model = iv.model;
  const ids = model.tokenizer.encode(prompt);
  if (ids.length >= model.contextLength)
    throw new UserError(`the prompt is ${ids.length} tokens but ${model.name}'s context is ${model.contextLength}; shorten it`);
  const run = (v: Intervention) =>
    generate(model, (x) => iv.logits(x, v), ids, { steps: ids.length - 1 + opts.tokens, temperature: opts.temperature, seed: opts.seed });
  const clean = await run({});
  const steered = await run(intervention);
  const text = (out: number[]) => model.tokenizer.decode(out.slice(ids.length));
  return { prompt, unsteered: text(clean), steered: text(steered), unsteered_ids: clean.slice(ids.length), steered_ids: steered.slice(ids.length) };
}

export interface AblateResult {
  features: number[];
  predictions: number;
  /** Tokens (BOS excluded) where at least one of the features fired in the clean run. */
  firing_tokens: number;
  ce_clean: number;
  ce_ablated: number;
  delta_ce: number;
  kl: number;
  /** The predictions of the actual next token that moved most. */
  moved: { context: string; next: string; p_clean: number; p_ablated: number }[];
}

/** Zero-ablates `features` (clamped to 0, error term kept) over windows of equal length `ctx`. */
export async function ablate(
  iv: Intervener,
  windows: Int32Array | Int32Array[],
  ctx: number,
  features: number[],
  top: number,
  batch = 8,
): Promise<AblateResult> {
  const m = iv.dict.cfg.dSae;
  const groups: { ids: Int32Array; B: number; T: number }[] = Array.isArray(windows)
    ? windows.map((w) => ({ ids: w, B: 1, T: w.length }))
    : Array.from({ length: Math.ceil(windows.length / ctx / batch) }, (_, i) => {
        const ids = windows.subarray(i * batch * ctx, Math.min(windows.length, (i + 1) * batch * ctx));
        return { ids, B: ids.length / ctx, T: ctx };
      });
  const clamp = new Map(features.map((f) => [f, 0]));
  const acc = new CeAccumulator(2);
  let firing = 0;
  const moved: AblateResult['moved'] = [];
  const tok = iv.model.tokenizer;
  for (const { ids, B, T } of groups) {
    const clean = await iv.forward(ids, B, T);
    const abl = await iv.forward(ids, B, T, { clamp });
    acc.add(ids, B, T, clean.logits, abl.logits);
    const V = clean.vocab;
    for (let b = 0; b < B; b++)
      for (let t = 1; t < T; t++) {
        const r = b * T + t;
        if (features.some((f) => clean.features[r * m + f] > 0)) firing++;
        if (t + 1 === T) continue;
        const y = ids[r + 1];
        const pc = Math.exp(logSoftmaxRow(clean.logits.subarray(r * V, (r + 1) * V))[y]);
        const pa = Math.exp(logSoftmaxRow(abl.logits.subarray(r * V, (r + 1) * V))[y]);
        if (pc === pa) continue;
        moved.push({ context: tok.decode(Array.from(ids.subarray(Math.max(b * T + 1, r - 7), r + 1))), next: tok.piece(y), p_clean: pc, p_ablated: pa });
        if (moved.length > 4 * top) {
          moved.sort((a, z) => Math.abs(z.p_ablated - z.p_clean) - Math.abs(a.p_ablated - a.p_clean));
          moved.length = top;
        }
      }
  }
  moved.sort((a, z) => Math.abs(z.p_ablated - z.p_clean) - Math.abs(a.p_ablated - a.p_clean));
  const [ceC, ceA] = acc.ce.map((v) => v / acc.preds);
  return {
    features,
    predictions: acc.preds,
    firing_tokens: firing,
    ce_clean: ceC,
    ce_ablated: ceA,
    delta_ce: ceA - ceC,
    kl: acc.kl[0] / acc.preds,
    moved: moved.slice(0, top),
  };
}
