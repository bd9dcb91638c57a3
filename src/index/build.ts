// The feature index: runs a dictionary over activation shards and writes per-feature statistics to SQLite
// (better-sqlite3): frequency, mean and max activation, a histogram, decoder norm, encoder/decoder cosine,
// top activating examples with their token contexts and per-token activations, top tokens, nearest
// features by decoder cosine, co-occurrence, dead and dense flags. Built in a temporary file and renamed.
// Three threads: this one runs the pass over the activations; the analysis thread (analysis.ts) computes neighbours,
// logit lens and absorption meanwhile; the writer thread (db-writer.ts) owns the SQLite file.
import Database from 'better-sqlite3';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ReadBuffers, readShard } from '../activations/reader.js';
import { openActivations, type Manifest } from '../activations/manifest.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { loadModel, type LoadedModel } from '../models/model.js';
import type { Tokenizer } from '../models/tokenizer.js';
import { encodeSparse, SparseBuffers } from '../sdl/encoder.js';
import { createIndexStats } from './stats.js';
import { checkOutput, outputError, removeStaleTemps, sha256File } from '../util/fsx.js';
import { Progress } from '../util/progress.js';
import { UserError } from '../util/errors.js';
import { IndexDbWriter, type FirstRows, type SecondRows, type WriterCounts } from './db-writer.js';
import { INNER_EDGES, QUANTILE_EDGES } from './quantiles.js';
import { lensInputs, type LensInputs } from './logit-lens.js';
import { type AbsorptionInput, FeatureAnalysis } from './analysis.js';
import { targetNorms } from '../sdl/clt.js';
import { COOCCURRENCE_MAX_ENTRIES } from '../native/kernels.js';
import { firstLetter } from '../analysis/absorption.js';
import { CFG_FILE, INDEX_FILE, WEIGHTS_FILE } from '../util/files.js';

export { INDEX_FILE };

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
  const identity = `${sha256File(join(dictDir, WEIGHTS_FILE))}:${manifest.identity_sha256}:${JSON.stringify(`${opts.topK}/${opts.contextRadius}`)}`;
  if (existsSync(path) && !opts.force) {
    const db = new Database(path, { readonly: true });
    const row = db.prepare("select value from dictionary where key = 'index_identity'").get() as { value: string } | undefined;
    const tokens = Number((db.prepare("select value from dictionary where key = 'tokens'").get() as { value: string } | undefined)?.value ?? 0);
    db.close();
    if (row?.value === identity) return { path, tokens, seconds: 0, upToDate: true, dead: -1, dense: -1 };
  }
  checkOutput(path, 'file');
  removeStaleTemps(dictDir);
  // The worker threads start first: each takes ~0.14 s of CPU to start (an isolate of its own, 2,600 page faults),
  // which the setup below, on this thread alone, leaves the other core for. The writer takes the schema and the tokens
  // table during the pass; the top and quantile examples go to files of their own on two more writer threads, copied
  // in (db-writer.ts); the analysis thread begins once it has the weights.
  const tmpPath = `${path}.tmp-${process.pid}`;
  const writer = new IndexDbWriter(tmpPath);
  const partWriter = (name: string) => new IndexDbWriter(join(dictDir, `${INDEX_FILE}-${name}.tmp-${process.pid}`));
  const topWriter = partWriter('examples'),
    quantileWriter = partWriter('quantiles');
  const analysis = new FeatureAnalysis();
  const abort = () => Promise.all([writer.abort(), topWriter.abort(), quantileWriter.abort(), analysis.abort()]);
  try {
    return await index();
  } catch (e) {
    await abort(); // each thread stopped and its file removed, whatever failed
    throw e;
  }

  /** The setup, the pass and the writing, with the threads started. */
  async function index(): Promise<IndexResult> {
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
    const V = tok?.vocabSize ?? 0;
    const keepTokens = V > 0 && V * m <= 1 << 26;
    const stats = createIndexStats({
      m,
      vocab: keepTokens ? V : 0,
      topK: opts.topK,
      radius: opts.contextRadius,
      // Each feature's most co-occurring features, exact over every token (stats.ts): as many as its neighbours.
      cooccurrence: opts.neighbors,
      edges: Float32Array.from(HIST_EDGES),
      perBand: opts.perBand ?? 5,
      bandEdges: INNER_EDGES,
    });
    const t0 = performance.now();
    // Decoder geometry: norms, encoder/decoder cosine, and the unit rows the analysis thread finds neighbours among.
    // The unit rows, and the decoder and unembedding the thread's lens and probes read, in memory shared with it: sent in
    // its message, each was copied twice (into the message and out of it), 4,100 of the index's page faults at 16,384 x 64.
    const dOut = d.cfg.dOut;
    const dn = new Float32Array(m),
      ec = new Float32Array(m);
    const unit = new Float32Array(new SharedArrayBuffer(4 * m * dOut));
    for (let i = 0; i < m; i++) {
      let q = 0;
      for (let j = 0; j < dOut; j++) q += d.w.W_dec[i * dOut + j] ** 2;
      dn[i] = Math.sqrt(q);
      for (let j = 0; j < dOut; j++) unit[i * dOut + j] = d.w.W_dec[i * dOut + j] / (dn[i] || 1);
    }
    if (d.cfg.dIn === dOut) {
      // W_enc is [dIn, m]: its column i is read along rows, a block of latents at a time (a column read alone strides
      // m floats per element: about 0.15 s of the index's start at 16,384 latents). Each sum still runs in j order.
      const B = 64,
        dot = new Float64Array(B),
        en = new Float64Array(B);
      for (let i0 = 0; i0 < m; i0 += B) {
        const b = Math.min(B, m - i0);
        dot.fill(0);
        en.fill(0);
        for (let j = 0; j < dOut; j++)
          for (let r = 0; r < b; r++) {
            const w = d.w.W_enc[j * m + i0 + r];
            dot[r] += w * unit[(i0 + r) * dOut + j];
            en[r] += w ** 2;
          }
        for (let r = 0; r < b; r++) ec[i0 + r] = dot[r] / (Math.sqrt(en[r]) || 1);
      }
    } else ec.fill(NaN);
    // Neighbours and the logit lens start now on the analysis thread, the absorption probes once their samples are in.
    analysis.start({
      unit,
      W_dec: shared(d.w.W_dec),
      m,
      dOut,
      neighbors: opts.neighbors,
      lens: model ? shareLens(lensInputs(model, d, opts.onNote)) : undefined,
      lensTokens: 10,
    });
    let done = 0;
    // Rows at word tokens, for first-letter absorption (SAEs whose input and output are the same site).
    const letterOf = new Int8Array(V).fill(-1);
    if (tok) for (let t = 0; t < V; t++) letterOf[t] = firstLetter(tok.piece(t));
    const doAbsorption = Boolean(tok) && d.cfg.kind !== 'transcoder' && d.cfg.dIn === d.cfg.dOut;
    const ABS_MAX = 12000,
      ABS_MIN = 200;
    const absX = new Float32Array(doAbsorption ? ABS_MAX * d.cfg.dIn : 0);
    const absLabel: number[] = [],
      absToken: number[] = [];
    const absFeats: { ids: Int32Array; vals: Float32Array }[] = [];
    /** The samples gathered, as the analysis thread takes them (undefined: too few for the probes). */
    const absorptionInput = (): AbsorptionInput | undefined => {
      const n = absLabel.length;
      if (!doAbsorption || n < ABS_MIN) return undefined;
      const start = new Int32Array(n + 1);
      absFeats.forEach((f, r) => {
        start[r + 1] = start[r] + f.ids.length;
      });
      const ids = new Int32Array(start[n]),
        vals = new Float32Array(start[n]);
      absFeats.forEach((f, r) => {
        ids.set(f.ids, start[r]);
        vals.set(f.vals, start[r]);
      });
      return { x: absX.subarray(0, n * d.cfg.dIn), label: Int32Array.from(absLabel), token: Int32Array.from(absToken), start, ids, vals, dIn: d.cfg.dIn };
    };
    // Chunks of whole windows, so every context lies inside the chunk; large chunks amortise the native calls.
    const ctx = Math.max(1, manifest.context_length);
    const chunkRows = Math.max(ctx, Math.floor(16384 / ctx) * ctx);
    const x = new Float32Array(chunkRows * d.cfg.dIn);
    const l0Hist = new Float64Array(257);
    if (tok) writer.first({ pieces: Array.from({ length: tok.vocabSize }, (_, t) => tok.piece(t)) });
    pass();
    const { count, sum, max, hist, tok: tokStats, examples, quantiles } = stats.result();
    const total = done;
    let counts: WriterCounts;
    try {
      // The pass's rows go to the writer threads part by part: each is inserted while the next is made here.
      topWriter.first({ examples });
      quantileWriter.first({ quantiles });
      // The token-feature pairs go with the quantile examples (the lighter part); each feature's top tokens, which its
      // row holds, to the first writer.
      const { tokenFeatures, topTokens } = keepTokens ? tokenRows(tokStats, m, V) : {};
      if (tokenFeatures) quantileWriter.first({ tokenFeatures });
      if (topTokens) writer.first({ topTokens });
      // Each part copied in by the first writer as soon as it is closed, while the analysis thread may still run.
      const copied = (w: IndexDbWriter, tables: NonNullable<FirstRows['copyFrom']>['tables']) =>
        w.close().then(() => writer.first({ copyFrom: { path: w.path, tables } }));
      const examplesDone = Promise.all([
        copied(topWriter, ['examples']),
        copied(quantileWriter, tokenFeatures ? ['quantile_examples', 'token_features'] : ['quantile_examples']),
      ]);
      examplesDone.catch(() => undefined); // awaited below; a failure meanwhile is not an unhandled rejection
      // The neighbours were made during the pass: inserted now, while the absorption probes may still run.
      writer.first({ neighbors: (await analysis.partial()).neighbors });
      // The per-feature rows as soon as the analysis thread has them, before or after the parts are copied in.
      writer.second(await perFeatureRows());
      await examplesDone;
      counts = await writer.finish();
    } catch (e) {
      // Out of space or killed half-way: said as such; no half-written index is left behind (buildIndex aborts).
      throw outputError(path, e);
    }
    for (const w of [topWriter, quantileWriter]) rmSync(w.path, { force: true });
    renameSync(tmpPath, path);
    for (const suffix of ['-wal', '-shm']) rmSync(`${tmpPath}${suffix}`, { force: true });
    return { path, tokens: total, seconds: (performance.now() - t0) / 1000, upToDate: false, ...counts };

    /** The pass over the activations: per-token statistics, top and quantile examples, the absorption samples. */
    function pass(): void {
      const progress = new Progress('index', manifest.tokens, 'tok', 0, opts.quiet);
      // Each chunk is read into the same arrays: nothing of it is kept past its turn (examples and samples are copied).
      const buffers = new ReadBuffers(),
        sparse = new SparseBuffers();
      for (let si = 0; si < manifest.shards.length; si++) {
        const shardRows = manifest.shards[si].rows;
        for (let r0 = 0; r0 < shardRows; r0 += chunkRows) {
          // One chunk of the shard at a time, read from disk by range: memory follows the chunk, not the shard.
          const s = readShard(
            actsDir,
            manifest,
            si,
            sites.map((x) => x.name),
            { verify: opts.verify, buffers },
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
          const f = encodeSparse(d, x, n, sparse);
          for (let r = 0; r < n; r++) l0Hist[Math.min(256, f.start[r + 1] - f.start[r])]++;
          // The per-token statistics, and the examples that enter a feature's top K or a band's sample, with their contexts.
          stats.add(f.start, f.idx, f.val, s.token, s.window, s.doc, s.pos);
          if (doAbsorption && !analysis.absorptionSent) {
            for (let r = 0; r < n && absLabel.length < ABS_MAX; r++) {
              const row = r0 + r,
                t = s.token[r];
              if (!(t >= 0 && t < V && letterOf[t] >= 0 && ((row * 2654435761) >>> 0) % 4 === 0)) continue;
              absX.set(x.subarray(r * d.cfg.dIn, (r + 1) * d.cfg.dIn), absLabel.length * d.cfg.dIn);
              absLabel.push(letterOf[t]);
              absToken.push(t);
              absFeats.push({ ids: f.idx.slice(f.start[r], f.start[r + 1]), vals: f.val.slice(f.start[r], f.start[r + 1]) });
            }
            // All the samples are in: the probes run on the analysis thread while the pass goes on.
            if (absLabel.length === ABS_MAX) analysis.absorption(absorptionInput());
          }
          done += n;
          progress.update(done);
        }
      }
      progress.done();
      if (!analysis.absorptionSent) analysis.absorption(absorptionInput());
    }

    /** The rows besides the pass's: the analysis thread's neighbours, lens and absorption, co-occurrence, site norms. */
    async function perFeatureRows(): Promise<SecondRows> {
      const co = stats.cooccurrence();
      if (co.tokens < total)
        opts.onNote?.(
          `co-occurrence is counted over the first ${co.tokens} of the ${total} tokens (the rows it keeps reached ${COOCCURRENCE_MAX_ENTRIES} latent ids); the other statistics cover every token`,
        );
      const { n, other } = co;
      const cooccurrence: SecondRows['cooccurrence'] = { n, other, count: Float64Array.from(co.count), jaccard: new Float64Array(m * n) };
      for (let i = 0; i < m; i++)
        for (let q = i * n; q < (i + 1) * n && other[q] >= 0; q++) {
          const c = co.count[q];
          cooccurrence.jaccard[q] = c / (count[i] + count[other[q]] - c);
        }
      // Dictionaries that write several sites (CLTs: every later layer; crosscoders): each feature's decoder norm per site.
      const siteNorms = d.cfg.sitesOut.length > 1 ? { sites: d.cfg.sitesOut.length, norm: targetNorms(d.cfg, d.w.W_dec) } : undefined;
      const { lens, absorption: abs } = await analysis.result();
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
        cooccurrence_tokens: co.tokens,
        l0_histogram: trimZeros(Array.from(l0Hist)),
        quantile_edges: QUANTILE_EDGES.map((e) => (Number.isFinite(e) ? e : null)),
        logit_lens: lens ? lens.source : undefined,
        absorption: abs
          ? {
              method: 'first-letter (SAEBench, adapted: natural word occurrences)',
              samples: absLabel.length,
              letters_evaluated: abs.letters.length,
              mean_absorption_fraction: abs.meanAbsorption,
              mean_full_absorption: abs.meanFullAbsorption,
            }
          : undefined,
      };
      try {
        const saved = JSON.parse(readFileSync(join(dictDir, CFG_FILE), 'utf8'));
        meta.training = saved.sdlkit?.training;
      } catch {
        /* a dictionary without training record */
      }
      let absorption: Float64Array | undefined;
      if (abs) {
        absorption = new Float64Array(m);
        for (const [i, v] of abs.latentScore) absorption[i] = v;
      }
      return {
        meta: Object.entries(meta)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
        features: {
          count,
          sum,
          max,
          hist,
          bins: HIST_EDGES.length + 1,
          tokens: total,
          denseThreshold: opts.denseThreshold,
          decoderNorm: dn,
          encDecCos: ec,
          absorption,
          lens: lens?.rows,
        },
        cooccurrence,
        siteNorms,
        letters: abs?.letters,
      };
    }
  }
}

/**
 * The feature-token pairs that fired, in (token, feature) order, and each feature's 10 most frequent tokens (ties:
 * lower id first), from tok [V, m, 2] (firings, summed activation), read once in its own order. A feature's list
 * takes a pair only when it beats the list's last (tokens arrive in increasing order, so a tie keeps the lower id).
 */
function tokenRows(tok: Float32Array, m: number, V: number): Pick<FirstRows, 'tokenFeatures' | 'topTokens'> {
  let nnz = 0;
  for (let e = 0; e < m * V; e++) if (tok[2 * e] > 0) nnz++;
  const tf = { token: new Int32Array(nnz), feature: new Int32Array(nnz), count: new Float32Array(nnz), sum: new Float32Array(nnz) };
  const n = 10;
  const top = { n, token: new Int32Array(m * n).fill(-1), count: new Float32Array(m * n), sum: new Float32Array(m * n) };
  const size = new Int32Array(m);
  let e = 0;
  for (let t = 0; t < V; t++)
    for (let i = 0; i < m; i++) {
      const c = tok[2 * (t * m + i)];
      if (!(c > 0)) continue;
      const s = tok[2 * (t * m + i) + 1];
      tf.token[e] = t;
      tf.feature[e] = i;
      tf.count[e] = c;
      tf.sum[e++] = s;
      // Feature i's running top n, best first.
      const b = i * n;
      if (size[i] === n && !(c > top.count[b + n - 1])) continue;
      let p = size[i] < n ? size[i]++ : n - 1;
      while (p > 0 && top.count[b + p - 1] < c) {
        top.token[b + p] = top.token[b + p - 1];
        top.count[b + p] = top.count[b + p - 1];
        top.sum[b + p] = top.sum[b + p - 1];
        p--;
      }
      top.token[b + p] = t;
      top.count[b + p] = c;
      top.sum[b + p] = s;
    }
  return { tokenFeatures: tf, topTokens: top };
}

/** A copy of a in memory a worker can read without its own copy (SharedArrayBuffer). */
function shared(a: Float32Array): Float32Array {
  const c = new Float32Array(new SharedArrayBuffer(a.byteLength));
  c.set(a);
  return c;
}

/** The lens's unembedding in shared memory (154 MB at GPT-2's vocabulary and width). */
const shareLens = (l: LensInputs | undefined): LensInputs | undefined => l && { ...l, u: { ...l.u, W_U: shared(l.u.W_U) } };

const trimZeros = (a: number[]): number[] => {
  let n = a.length;
  while (n > 1 && a[n - 1] === 0) n--;
  return a.slice(0, n);
};
