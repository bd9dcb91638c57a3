// The dashboard's data, read from a dictionary folder and its feature index: an overview (config, training curves,
// density and L0 histograms, evaluation), a compact feature list, and per-feature details in chunks the page loads
// on demand. Everything is plain JSON; write.ts wraps it in script files so the pages also open from file://.
import { targetNorms } from '../sdl/clt.js';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import { openIndex, tokenText, type FeatureRow } from '../index/query.js';
import { type Dictionary, WEIGHTS_FILE } from '../sdl/dictionary.js';
import { sha256File } from '../util/fsx.js';
import { UserError } from '../util/errors.js';
import { EVAL_FILE, SPLICE_EVAL_FILE, TRAINING_LOG_FILE } from '../util/files.js';

/** Features per detail file: small enough to load in a blink, few enough files at 16k+ features. */
export const CHUNK = 128;

export interface Overview {
  name: string;
  path: string;
  config: Record<string, unknown>;
  meta: Record<string, unknown>;
  training?: Record<string, unknown>;
  /** Columns of the training log over steps. */
  curves: { step: number[]; loss: (number | null)[]; l0: (number | null)[]; dead: (number | null)[]; fvu: (number | null)[] };
  /** log10 firing frequency per feature (dead ones as null). */
  logFreq: (number | null)[];
  l0Histogram: number[];
  heldOut?: Record<string, unknown>;
  inModel?: Record<string, unknown>;
  counts: { features: number; dead: number; dense: number; tokens: number };
  absorption?: Record<string, unknown>;
  logitLens?: string;
  histogramEdges: number[];
  quantileEdges: (number | null)[];
  /** Per-site widths of the decoder output (crosscoders: several). */
  sitesOut: { name: string; width: number }[];
  vocab: string[];
  chunk: number;
}

const readJson = <T>(p: string): T | undefined => (existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as T) : undefined);

/** Opens a dictionary's index, refusing one built from other weights. */
export function openCheckedIndex(dictDir: string): Database.Database {
  const db = openIndex(dictDir);
  const row = db.prepare("select value from dictionary where key = 'index_identity'").get() as { value: string } | undefined;
  const weights = sha256File(join(dictDir, WEIGHTS_FILE));
  if (!row?.value.startsWith(weights)) {
    db.close();
    throw new UserError(`the feature index in ${dictDir} was built from other weights; run 'sdl index ${dictDir} --force'`);
  }
  return db;
}

export function overview(dictDir: string, db: Database.Database, d: Dictionary): Overview {
  const meta = new Map((db.prepare('select key, value from dictionary').all() as { key: string; value: string }[]).map((r) => [r.key, r.value]));
  const j = (k: string) => (meta.has(k) ? JSON.parse(meta.get(k)!) : undefined);
  const curves: Overview['curves'] = { step: [], loss: [], l0: [], dead: [], fvu: [] };
  const logPath = join(dictDir, TRAINING_LOG_FILE);
  if (existsSync(logPath)) {
    for (const line of readFileSync(logPath, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const r = JSON.parse(line) as { step?: number; event?: string; loss?: number; l0?: number; dead_fraction?: number; eval?: { fvu?: number } };
      if (r.event || r.step === undefined) continue;
      curves.step.push(r.step);
      curves.loss.push(r.loss ?? null);
      curves.l0.push(r.l0 ?? null);
      curves.dead.push(r.dead_fraction ?? null);
      curves.fvu.push(r.eval?.fvu ?? null);
    }
  }
  const feats = db.prepare('select freq, dead, dense from features order by id').all() as { freq: number; dead: number; dense: number }[];
  const text = tokenText(db);
  const V = (db.prepare('select count(*) as n from tokens').get() as { n: number }).n;
  return {
    name: basename(resolve(dictDir)),
    path: resolve(dictDir),
    config: d.cfg as unknown as Record<string, unknown>,
    meta: d.meta,
    training: j('training'),
    curves,
    logFreq: feats.map((f) => (f.freq > 0 ? Math.log10(f.freq) : null)),
    l0Histogram: j('l0_histogram') ?? [],
    heldOut: readJson(join(dictDir, EVAL_FILE)),
    inModel: readJson(join(dictDir, SPLICE_EVAL_FILE)),
    counts: { features: feats.length, dead: feats.filter((f) => f.dead).length, dense: feats.filter((f) => f.dense).length, tokens: Number(j('tokens') ?? 0) },
    absorption: j('absorption'),
    logitLens: meta.get('logit_lens'),
    histogramEdges: j('histogram_edges') ?? [],
    quantileEdges: j('quantile_edges') ?? [],
    sitesOut: d.cfg.sitesOut,
    vocab: Array.from({ length: V }, (_, t) => text(t)),
    chunk: CHUNK,
  };
}

/** The feature list: one compact row per feature (columns named once). */
export function featureList(db: Database.Database): { columns: string[]; rows: unknown[][] } {
  const rows = db.prepare('select id, freq, max_act, mean_act, dead, dense, absorption, top_tokens from features order by id').all() as FeatureRow[];
  return {
    columns: ['id', 'freq', 'max', 'mean', 'dead', 'dense', 'absorption', 'top_tokens'],
    rows: rows.map((r) => [
      r.id,
      r.freq,
      r.max_act,
      r.mean_act,
      r.dead,
      r.dense,
      r.absorption,
      (JSON.parse(r.top_tokens) as { token: number }[]).slice(0, 5).map((t) => t.token),
    ]),
  };
}

/** Details of features [from, to): everything the feature page shows. */
export function featureDetails(db: Database.Database, d: Dictionary, from: number, to: number): Record<number, unknown> {
  const feat = db.prepare('select * from features where id = ?');
  const ex = db.prepare('select act, pos, context_start, context_tokens, context_acts from examples where feature = ? order by rank');
  const qx = db.prepare('select band, act, pos, context_start, context_tokens, context_acts from quantile_examples where feature = ? order by band desc, rank');
  const nb = db.prepare('select other, cosine from neighbors where feature = ? order by rank');
  const co = db.prepare('select other, count, jaccard from cooccurrence where feature = ? order by count desc');
  const example = (e: { act: number; pos: number; context_start: number; context_tokens: string; context_acts: string; band?: number }) => ({
    act: e.act,
    at: e.pos - e.context_start,
    tokens: JSON.parse(e.context_tokens),
    acts: JSON.parse(e.context_acts),
    ...(e.band !== undefined ? { band: e.band } : {}),
  });
  const out: Record<number, unknown> = {};
  const c = d.cfg;
  const norms = targetNorms(c, d.w.W_dec);
  for (let i = from; i < to; i++) {
    const f = feat.get(i) as FeatureRow;
    // Per-site decoder norms (CLTs write every later layer, crosscoders several sites; one value otherwise).
    const siteNorms = c.sitesOut.map((s, t) => ({ site: s.name, norm: norms[i * c.sitesOut.length + t] }));
    out[i] = {
      id: i,
      count: f.count,
      freq: f.freq,
      mean: f.mean_act,
      max: f.max_act,
      decoderNorm: f.decoder_norm,
      encDecCos: f.enc_dec_cos,
      dead: f.dead,
      dense: f.dense,
      absorption: f.absorption,
      histogram: JSON.parse(f.histogram),
      topTokens: JSON.parse(f.top_tokens),
      logitLens: f.logit_lens ? JSON.parse(f.logit_lens) : null,
      examples: (ex.all(i) as Parameters<typeof example>[0][]).map(example),
      quantiles: (qx.all(i) as Parameters<typeof example>[0][]).map(example),
      neighbors: nb.all(i),
      cooccurrence: co.all(i),
      siteNorms,
    };
  }
  return out;
}
