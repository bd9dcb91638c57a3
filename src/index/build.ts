// The feature index: runs a dictionary over activation shards and writes per-feature statistics to SQLite
// (better-sqlite3): frequency, mean and max activation, a histogram, decoder norm, encoder/decoder cosine,
// top activating examples with their token contexts and per-token activations, top tokens, nearest
// features by decoder cosine, co-occurrence, dead and dense flags. Built in a temporary file and renamed.
import Database from 'better-sqlite3';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readShard } from '../activations/reader.js';
import { openActivations, type Manifest } from '../activations/manifest.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { loadModel, type LoadedModel } from '../models/model.js';
import type { Tokenizer } from '../models/tokenizer.js';
import { encodeSparse } from '../sdl/encoder.js';
import { gemm } from '../tensor/linalg.js';
import { createIndexStats } from './stats.js';
import { checkOutput, fsyncFile, outputError, removeStaleTemps, sha256 } from '../util/fsx.js';
import { Progress } from '../util/progress.js';
import { UserError } from '../util/errors.js';
import { INDEXES, SCHEMA } from './schema.js';
import { QUANTILE_EDGES, QuantileSampler, type ContextExample } from './quantiles.js';
import { featureLogitLens } from './logit-lens.js';
import { ExampleStore, TopExamples } from './examples.js';
import { targetNorms } from '../sdl/clt.js';
import { firstLetter, measureAbsorption } from '../analysis/absorption.js';
import { CFG_FILE, INDEX_FILE, WEIGHTS_FILE } from '../util/files.js';

export { INDEX_FILE };

/** Above this many latents the m x m co-occurrence counters (4 m^2 bytes) are not kept. */
export const MAX_COOCCURRENCE_LATENTS = 8192;

export interface IndexOptions {
  topK: number;
  /** Tokens either side of the firing token stored with each example. */
  contextRadius: number;
  /** Firing frequency above which a latent is flagged dense. */
  denseThreshold: number;
  neighbors: number;
  force?: boolean;
  quiet?: boolean;
  /** Check each shard's checksum against the harvest manifest (default true). */
  verify?: boolean;
  /** Quantile examples kept per activation band (default 5). */
  perBand?: number;
  /** Called with one-line notes for the user (what the index leaves out, and why). */
  onNote?: (note: string) => void;
}

export const INDEX_DEFAULTS: IndexOptions = { topK: 20, contextRadius: 8, denseThreshold: 0.1, neighbors: 10 };

/** Histogram bin edges for activation values (log-spaced), shared by every feature. */
export const HIST_EDGES = Array.from({ length: 21 }, (_, i) => 10 ** (-3 + (i * 6) / 20));

/** A top activating example (the same record as a quantile example, without its band). */
export type Example = ContextExample;

export interface IndexResult {
  path: string;
  tokens: number;
  seconds: number;
  upToDate: boolean;
  dead: number;
  dense: number;
}

export async function buildIndex(dictDir: string, d: Dictionary, actsDir: string, opts: IndexOptions): Promise<IndexResult> {
  const manifest: Manifest = openActivations(actsDir);
  const sites = d.cfg.sitesIn;
  for (const s of sites)
    if (!manifest.sites.some((m) => m.name === s.name && m.width === s.width))
      throw new UserError(`the harvest in ${actsDir} has no site ${s.name}[${s.width}]; index with the activations the dictionary reads`);
  const path = join(dictDir, INDEX_FILE);
  const identity = `${sha256(readFileSync(join(dictDir, WEIGHTS_FILE)))}:${manifest.identity_sha256}:${JSON.stringify(`${opts.topK}/${opts.contextRadius}`)}`;
  if (existsSync(path) && !opts.force) {
    const db = new Database(path, { readonly: true });
    const row = db.prepare("select value from dictionary where key = 'index_identity'").get() as { value: string } | undefined;
    const tokens = Number((db.prepare("select value from dictionary where key = 'tokens'").get() as { value: string } | undefined)?.value ?? 0);
    db.close();
    if (row?.value === identity) return { path, tokens, seconds: 0, upToDate: true, dead: -1, dense: -1 };
  }
  checkOutput(path, 'file');
  removeStaleTemps(dictDir);
  // Token texts and the absorption probes need the harvest's tokenizer; a model that has moved away is said, not hidden.
  let tok: Tokenizer | undefined, model: LoadedModel | undefined;
  if (manifest.model_path && existsSync(manifest.model_path)) {
    const dir = dirname(manifest.model_path);
    model = loadModel(existsSync(join(dir, 'config.json')) ? dir : manifest.model_path);
    tok = model.tokenizer;
  } else if (manifest.model_path) {
    opts.onNote?.(`the harvest's model ${manifest.model_path} is gone: the index holds token ids without their text, and no absorption scores`);
  }
  const m = d.cfg.dSae;
  const tops = new TopExamples(m, opts.topK, new ExampleStore(2 * opts.contextRadius + 1));
  const V = tok?.vocabSize ?? 0;
  const keepTokens = V > 0 && V * m <= 1 << 26;
  // Co-occurrence counts for pairs i < j (upper triangle); skipped for very wide dictionaries (m^2 counters).
  const coOn = m <= MAX_COOCCURRENCE_LATENTS;
  const stats = createIndexStats({
    m,
    vocab: keepTokens ? V : 0,
    topK: opts.topK,
    radius: opts.contextRadius,
    cooccurrence: coOn,
    edges: Float32Array.from(HIST_EDGES),
  });
  const progress = new Progress('index', manifest.tokens, 'tok', 0, opts.quiet);
  const t0 = performance.now();
  let done = 0;
  // Rows at word tokens, for first-letter absorption (SAEs whose input and output are the same site).
  const letterOf = new Int8Array(V).fill(-1);
  if (tok) for (let t = 0; t < V; t++) letterOf[t] = firstLetter(tok.piece(t));
  const doAbsorption = Boolean(tok) && d.cfg.kind !== 'transcoder' && d.cfg.dIn === d.cfg.dOut;
  const ABS_MAX = 12000;
  const absX = new Float32Array(doAbsorption ? ABS_MAX * d.cfg.dIn : 0);
  const absLabel: number[] = [],
    absToken: number[] = [];
  const absFeats: { ids: Int32Array; vals: Float32Array }[] = [];
  // Chunks of whole windows, so every context lies inside the chunk; large chunks amortise the native calls.
  const ctx = Math.max(1, manifest.context_length);
  const chunkRows = Math.max(ctx, Math.floor(16384 / ctx) * ctx);
  const x = new Float32Array(chunkRows * d.cfg.dIn);
  const quantiles = new QuantileSampler(m, opts.perBand ?? 5, opts.contextRadius);
  const l0Hist = new Float64Array(257);
  for (let si = 0; si < manifest.shards.length; si++) {
    const shardRows = manifest.shards[si].rows;
    for (let r0 = 0; r0 < shardRows; r0 += chunkRows) {
      // One chunk of the shard at a time, read from disk by range: memory follows the chunk, not the shard.
      const s = readShard(
        actsDir,
        manifest,
        si,
        sites.map((x) => x.name),
        { verify: opts.verify },
        { from: r0, to: r0 + chunkRows },
      );
      const n = s.rows;
      let off = 0;
      for (const site of sites) {
        const v = s.values.get(site.name)!;
        if (sites.length === 1) x.set(v);
        else for (let r = 0; r < n; r++) x.set(v.subarray(r * site.width, (r + 1) * site.width), r * d.cfg.dIn + off);
        off += site.width;
      }
      const f = encodeSparse(d, x, n);
      quantiles.add(f, { doc: s.doc, window: s.window, pos: s.pos, token: s.token });
      for (let r = 0; r < n; r++) l0Hist[Math.min(256, f.start[r + 1] - f.start[r])]++;
      const ev = stats.add(f.start, f.idx, f.val, s.token, s.window);
      // Entries into a feature's top K, in order: keep the example (tokens and activations of its context) in the slot
      // of the feature's weakest one.
      for (let e = 0; e < ev.acts.length; e++) {
        const i = ev.events[e * 5],
          row = ev.events[e * 5 + 1],
          lo = ev.events[e * 5 + 2],
          hi = ev.events[e * 5 + 3],
          co = ev.events[e * 5 + 4];
        tops.store.set(
          tops.slotFor(i),
          ev.acts[e],
          s.doc[row],
          s.window[row],
          s.pos[row],
          s.token[row],
          s.pos[lo],
          s.token.subarray(lo, hi + 1),
          ev.ctx.subarray(co, co + hi - lo + 1),
        );
      }
      if (doAbsorption && absLabel.length < ABS_MAX) {
        for (let r = 0; r < n && absLabel.length < ABS_MAX; r++) {
          const row = r0 + r,
            t = s.token[r];
          if (!(t >= 0 && t < V && letterOf[t] >= 0 && ((row * 2654435761) >>> 0) % 4 === 0)) continue;
          absX.set(x.subarray(r * d.cfg.dIn, (r + 1) * d.cfg.dIn), absLabel.length * d.cfg.dIn);
          absLabel.push(letterOf[t]);
          absToken.push(t);
          absFeats.push({ ids: f.idx.slice(f.start[r], f.start[r + 1]), vals: f.val.slice(f.start[r], f.start[r + 1]) });
        }
      }
      done += n;
      progress.update(done);
    }
  }
  progress.done();
  const { count, sum, max, hist, tokCount, tokSum, co } = stats.result();
  const coAt = (i: number, j: number) => (i < j ? co[i * m + j] : co[j * m + i]);

  // Decoder geometry: norms, encoder/decoder cosine, nearest features by decoder cosine.
  const dOut = d.cfg.dOut;
  const dn = new Float32Array(m),
    ec = new Float32Array(m);
  const unit = new Float32Array(m * dOut);
  for (let i = 0; i < m; i++) {
    let q = 0;
    for (let j = 0; j < dOut; j++) q += d.w.W_dec[i * dOut + j] ** 2;
    dn[i] = Math.sqrt(q);
    for (let j = 0; j < dOut; j++) unit[i * dOut + j] = d.w.W_dec[i * dOut + j] / (dn[i] || 1);
    if (d.cfg.dIn === dOut) {
      let dot = 0,
        en = 0;
      for (let j = 0; j < dOut; j++) {
        dot += d.w.W_enc[j * m + i] * unit[i * dOut + j];
        en += d.w.W_enc[j * m + i] ** 2;
      }
      ec[i] = dot / (Math.sqrt(en) || 1);
    } else ec[i] = NaN;
  }
  const nearest = nearestByCosine(unit, m, dOut, opts.neighbors);
  // Dictionaries that write several sites (CLTs: every later layer; crosscoders): each feature's decoder norm per site.
  const siteNorms = d.cfg.sitesOut.length > 1 ? targetNorms(d.cfg, d.w.W_dec) : undefined;

  const abs =
    doAbsorption && absLabel.length >= 200
      ? measureAbsorption(
          { x: absX.subarray(0, absLabel.length * d.cfg.dIn), label: Int32Array.from(absLabel), token: Int32Array.from(absToken), feats: absFeats },
          d.cfg.dIn,
          d.w.W_dec,
          d.cfg.dOut,
          m,
        )
      : undefined;

  const tmpPath = `${path}.tmp-${process.pid}`;
  rmSync(tmpPath, { force: true });
  const lens = model ? featureLogitLens(model, d, 10, opts.onNote) : undefined;
  const total = done;
  let counts: { dead: number; dense: number };
  try {
    counts = writeIndexDb(tmpPath);
  } catch (e) {
    // Out of space or killed half-way: no half-written index is left behind.
    for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${tmpPath}${suffix}`, { force: true });
    throw outputError(path, e);
  }
  renameSync(tmpPath, path);
  for (const suffix of ['-wal', '-shm']) rmSync(`${tmpPath}${suffix}`, { force: true });
  return { path, tokens: total, seconds: (performance.now() - t0) / 1000, upToDate: false, ...counts };

  function writeIndexDb(tmpPath: string): { dead: number; dense: number } {
    const db = new Database(tmpPath);
    // A temporary file, renamed over the index only once complete and synced (below): no journal or per-commit sync is
    // needed while it is built.
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    db.exec(SCHEMA);
    const put = db.prepare('insert into dictionary (key, value) values (?, ?)');
    const meta: Record<string, unknown> = {
      index_identity: identity,
      tokens: total,
      dictionary: dictDir,
      activations: actsDir,
      model: manifest.identity.model.name,
      corpus: manifest.identity.corpus,
      config: d.cfg,
      meta: d.meta,
      top_k: opts.topK,
      context_radius: opts.contextRadius,
      dense_threshold: opts.denseThreshold,
      histogram_edges: HIST_EDGES,
      dead_window: `never fired over the ${total} indexed tokens`,
      l0_histogram: trimZeros(Array.from(l0Hist)),
      quantile_edges: QUANTILE_EDGES.map((e) => (Number.isFinite(e) ? e : null)),
      logit_lens: lens ? lens.source : undefined,
    };
    try {
      const saved = JSON.parse(readFileSync(join(dictDir, CFG_FILE), 'utf8'));
      meta.training = saved.sdlkit?.training;
    } catch {
      /* a dictionary without training record */
    }
    const insFeat = db.prepare(
      'insert into features (id, count, freq, mean_act, max_act, decoder_norm, enc_dec_cos, dead, dense, histogram, top_tokens, absorption, logit_lens) values (?,?,?,?,?,?,?,?,?,?,?,?,?)',
    );
    const insQ = db.prepare(
      'insert into quantile_examples (feature, band, rank, act, doc, window, pos, token, context_start, context_tokens, context_acts) values (?,?,?,?,?,?,?,?,?,?,?)',
    );
    const insLetter = db.prepare(
      'insert into absorption_letters (letter, probe_f1, main_latents, main_f1, tokens, mean_absorption, full_absorption_rate) values (?,?,?,?,?,?,?)',
    );
    const insEx = db.prepare(
      'insert into examples (feature, rank, act, doc, window, pos, token, context_start, context_tokens, context_acts) values (?,?,?,?,?,?,?,?,?,?)',
    );
    const insNb = db.prepare('insert into neighbors (feature, rank, other, cosine) values (?,?,?,?)');
    const insNorm = db.prepare('insert into site_norms (feature, site, norm) values (?,?,?)');
    const insCo = db.prepare('insert into cooccurrence (feature, other, count, jaccard) values (?,?,?,?)');
    const insTf = db.prepare('insert into token_features (token, feature, count, mean_act) values (?,?,?,?)');
    const insTok = db.prepare('insert into tokens (id, text) values (?, ?)');
    let dead = 0,
      dense = 0;
    db.transaction(() => {
      for (const [k, v] of Object.entries(meta)) if (v !== undefined) put.run(k, typeof v === 'string' ? v : JSON.stringify(v));
      if (siteNorms) {
        const S = d.cfg.sitesOut.length;
        for (let i = 0; i < m; i++) for (let t = 0; t < S; t++) if (siteNorms[i * S + t] > 0) insNorm.run(i, t, siteNorms[i * S + t]);
      }
      for (let i = 0; i < m; i++) {
        const freq = count[i] / Math.max(1, total);
        const isDead = count[i] === 0 ? 1 : 0,
          isDense = freq > opts.denseThreshold ? 1 : 0;
        dead += isDead;
        dense += isDense;
        let topTokens: { token: number; count: number; mean: number }[] = [];
        if (keepTokens) {
          const c = tokCount.subarray(i * V, (i + 1) * V);
          // The 10 most frequent tokens (ties: lower id first), selected without an object per vocabulary entry.
          const best = topIndices(c, 10);
          topTokens = Array.from(best, (t) => ({ token: t, count: c[t], mean: tokSum[i * V + t] / c[t] }));
        }
        insFeat.run(
          i,
          count[i],
          freq,
          count[i] ? sum[i] / count[i] : 0,
          max[i],
          dn[i],
          Number.isNaN(ec[i]) ? null : ec[i],
          isDead,
          isDense,
          JSON.stringify(Array.from(hist.subarray(i * (HIST_EDGES.length + 1), (i + 1) * (HIST_EDGES.length + 1)))),
          JSON.stringify(topTokens),
          abs ? (abs.latentScore.get(i) ?? 0) : null,
          lens ? JSON.stringify(lens.rows[i]) : null,
        );
        const round = (v: number) => Math.round(v * 1e4) / 1e4;
        quantiles
          .examples(i)
          .forEach((e, rank) =>
            insQ.run(i, e.band, rank, e.act, e.doc, e.window, e.pos, e.token, e.ctxStart, JSON.stringify(e.ctxTokens), JSON.stringify(e.ctxActs.map(round))),
          );
        tops
          .examples(i)
          .forEach((e, rank) =>
            insEx.run(
              i,
              rank,
              e.act,
              e.doc,
              e.window,
              e.pos,
              e.token,
              e.ctxStart,
              JSON.stringify(e.ctxTokens),
              JSON.stringify(e.ctxActs.map((v) => Math.round(v * 1e4) / 1e4)),
            ),
          );
        nearest[i].forEach(({ j, score }, rank) => insNb.run(i, rank, j, score));
        if (coOn) {
          for (const { j, score: c } of largest(m, opts.neighbors, (j) => (j === i ? 0 : coAt(i, j)))) {
            if (c > 0) insCo.run(i, j, c, c / (count[i] + count[j] - c));
          }
        }
      }
      // In the table's key order (token, feature): appends, not inserts into the middle of the B-tree.
      if (keepTokens)
        for (let t = 0; t < V; t++)
          for (let i = 0; i < m; i++) {
            const c = tokCount[i * V + t];
            if (c > 0) insTf.run(t, i, c, tokSum[i * V + t] / c);
          }
      if (tok) for (let t = 0; t < tok.vocabSize; t++) insTok.run(t, tok.piece(t));
      if (abs) {
        for (const l of abs.letters) insLetter.run(l.letter, l.probeF1, JSON.stringify(l.main), l.mainF1, l.tokens, l.meanAbsorption, l.fullAbsorptionRate);
        put.run(
          'absorption',
          JSON.stringify({
            method: 'first-letter (SAEBench, adapted: natural word occurrences)',
            samples: absLabel.length,
            letters_evaluated: abs.letters.length,
            mean_absorption_fraction: abs.meanAbsorption,
            mean_full_absorption: abs.meanFullAbsorption,
          }),
        );
      }
      db.exec(INDEXES);
    })();
    db.pragma('journal_mode = WAL');
    db.close();
    fsyncFile(tmpPath);
    return { dead, dense };
  }
}

const trimZeros = (a: number[]): number[] => {
  let n = a.length;
  while (n > 1 && a[n - 1] === 0) n--;
  return a.slice(0, n);
};

/** The n largest scores among j in [0, m) with their indices, best first (ties: lower j first); a partial selection. */
export function largest(m: number, n: number, score: (j: number) => number): { j: number; score: number }[] {
  const best: { j: number; score: number }[] = [];
  for (let j = 0; j < m; j++) {
    const s = score(j);
    if (best.length === n && s <= best[n - 1].score) continue;
    let p = best.length;
    while (p > 0 && best[p - 1].score < s) p--;
    best.splice(p, 0, { j, score: s });
    if (best.length > n) best.pop();
  }
  return best;
}

/**
 * Indices of the n largest values of a (ties: lower index first), best first; only positive values unless `any`.
 * A bounded insertion list with a threshold test per value: no allocation per element, O(len) for small n.
 */
export function topIndices(a: Float32Array, n: number, any = false): Int32Array {
  const idx = new Int32Array(n),
    val = new Float64Array(n);
  let size = 0;
  for (let j = 0; j < a.length; j++) {
    const v = a[j];
    if (!any && !(v > 0)) continue;
    if (size === n && !(v > val[n - 1])) continue;
    let p = size < n ? size++ : n - 1;
    while (p > 0 && val[p - 1] < v) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      p--;
    }
    val[p] = v;
    idx[p] = j;
  }
  return idx.slice(0, size);
}

/** Each latent's nearest latents by decoder cosine (unit rows [m, d]), in blocks of rows so memory stays O(m). */
function nearestByCosine(unit: Float32Array, m: number, d: number, n: number): { j: number; score: number }[][] {
  const out: { j: number; score: number }[][] = [];
  const blk = 256;
  const C = new Float32Array(blk * m);
  for (let i0 = 0; i0 < m; i0 += blk) {
    const rows = Math.min(blk, m - i0);
    gemm(rows, m, d, unit.subarray(i0 * d), d, 1, unit, 1, d, C, m); // cosines of this block with every row
    for (let r = 0; r < rows; r++) {
      const row = C.subarray(r * m, (r + 1) * m);
      row[i0 + r] = Number.NEGATIVE_INFINITY; // not its own neighbour
      out.push(Array.from(topIndices(row, n, true), (j) => ({ j, score: row[j] })));
    }
  }
  return out;
}
