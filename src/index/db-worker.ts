// The index's writer thread (see db-writer.ts): one transaction over its messages, rows inserted many to a statement
// (one call into SQLite per 32 rows instead of per row), secondary indexes made after the rows, then the file is
// closed and synced. Any failure is sent back as the reply; the caller removes the file.
import Database, { type Database as Db, type Statement } from 'better-sqlite3';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { fsyncFile } from '../util/fsx.js';
import { INDEXES, SCHEMA, TOKEN_FEATURES_INDEX } from './schema.js';
import { contextTexts } from './context-text.js';
import type { FirstRows, SecondRows, WriterCounts, WriterMessage, WriterReply } from './db-writer.js';
import type { ExampleLists } from './examples.js';

const ROWS_PER_STATEMENT = 32;

/** Rows of one table, inserted ROWS_PER_STATEMENT at a time by one multi-row statement. */
class Inserter {
  private readonly args: unknown[] = [];
  private rows = 0;
  private readonly many: Statement;

  constructor(
    private readonly db: Db,
    private readonly table: string,
    private readonly columns: string[],
  ) {
    this.many = db.prepare(this.sql(ROWS_PER_STATEMENT));
  }

  private sql(rows: number): string {
    const one = `(${this.columns.map(() => '?').join(',')})`;
    return `insert into ${this.table} (${this.columns.join(',')}) values ${Array(rows).fill(one).join(',')}`;
  }

  add(...values: unknown[]): void {
    for (const v of values) this.args.push(v);
    if (++this.rows === ROWS_PER_STATEMENT) {
      // Spread, not an array: better-sqlite3 reads an array's values one property lookup at a time (22% slower here).
      this.many.run(...this.args);
      this.args.length = 0;
      this.rows = 0;
    }
  }

  end(): void {
    if (this.rows) this.db.prepare(this.sql(this.rows)).run(...this.args);
    this.args.length = 0;
    this.rows = 0;
  }
}

/** Examples (top or quantile) with their contexts as JSON arrays (context-text.ts), made a block of slots at a time. */
function insertExamples(db: Db, table: 'examples' | 'quantile_examples', l: ExampleLists): void {
  const band = l.band;
  const cols = ['feature', ...(band ? ['band'] : []), 'rank', 'act', 'doc', 'window', 'pos', 'token', 'context_start', 'context_tokens', 'context_acts'];
  const ins = new Inserter(db, table, cols);
  const s = l.store;
  const BLOCK = 4096;
  let i = 0;
  for (let q0 = 0; q0 < l.slots.length; q0 += BLOCK) {
    const q1 = Math.min(l.slots.length, q0 + BLOCK);
    const text = contextTexts(s, l.slots.subarray(q0, q1));
    for (let q = q0; q < q1; q++) {
      while (l.off[i + 1] <= q) i++; // example q is feature i's
      const slot = l.slots[q],
        rank = q - l.off[i],
        tokens = text.tokens[q - q0],
        acts = text.acts[q - q0];
      if (band) ins.add(i, band[q], rank, s.act[slot], s.doc[slot], s.window[slot], s.pos[slot], s.token[slot], s.ctxStart[slot], tokens, acts);
      else ins.add(i, rank, s.act[slot], s.doc[slot], s.window[slot], s.pos[slot], s.token[slot], s.ctxStart[slot], tokens, acts);
    }
  }
  ins.end();
}

/** Each feature's top tokens, [{token, count, mean}, ...] as JSON. */
function topTokensJson(tk: NonNullable<FirstRows['topTokens']>): string[] {
  const m = tk.token.length / tk.n;
  return Array.from({ length: m }, (_, i) => {
    const top: { token: number; count: number; mean: number }[] = [];
    for (let q = i * tk.n; q < (i + 1) * tk.n && tk.token[q] >= 0; q++) top.push({ token: tk.token[q], count: tk.count[q], mean: tk.sum[q] / tk.count[q] });
    return JSON.stringify(top);
  });
}

function insertNeighbors(db: Db, { n, other, cosine }: NonNullable<SecondRows['neighbors']>): void {
  const nb = new Inserter(db, 'neighbors', ['feature', 'rank', 'other', 'cosine']);
  const m = other.length / n;
  for (let i = 0; i < m; i++) for (let q = 0; q < n && other[i * n + q] >= 0; q++) nb.add(i, q, other[i * n + q], cosine[i * n + q]);
  nb.end();
}

class IndexFile {
  private readonly db: Db;
  /** Each feature's top tokens as the features table stores them (JSON), made when they arrive: the writer has
   * time then, while the per-feature rows wait on the analysis thread. */
  private topTokensJson?: string[];
  private tokenIndexMade = false;

  constructor(private readonly path: string) {
    this.db = new Database(path);
    // A temporary file, renamed over the index only once complete and synced: no journal or per-commit sync is needed.
    this.db.pragma('journal_mode = OFF');
    this.db.pragma('synchronous = OFF');
    this.db.exec(SCHEMA);
    this.db.exec('begin');
  }

  first(r: FirstRows): void {
    if (r.examples) insertExamples(this.db, 'examples', r.examples);
    if (r.quantiles) insertExamples(this.db, 'quantile_examples', r.quantiles);
    if (r.topTokens) this.topTokensJson = topTokensJson(r.topTokens);
    if (r.tokenFeatures) {
      const { token, feature, count, sum } = r.tokenFeatures;
      const ins = new Inserter(this.db, 'token_features', ['token', 'feature', 'count', 'mean_act']);
      for (let e = 0; e < token.length; e++) ins.add(token[e], feature[e], count[e], sum[e] / count[e]);
      ins.end();
      this.db.exec(TOKEN_FEATURES_INDEX);
      this.tokenIndexMade = true;
    }
    if (r.neighbors) insertNeighbors(this.db, r.neighbors);
    if (r.copyFrom) {
      // Same tables, empty here: SQLite's transfer optimisation copies the records as they are. A database is attached
      // and detached outside a transaction (journal off: a commit here costs nothing).
      const db = this.db;
      // token_features comes with its secondary index made in the part: made here too (on the empty table), so that
      // the transfer copies the index's pages as well instead of building it again.
      if (r.copyFrom.tables.includes('token_features') && !this.tokenIndexMade) {
        db.exec(TOKEN_FEATURES_INDEX);
        this.tokenIndexMade = true;
      }
      db.exec('commit');
      db.prepare('attach ? as part').run(r.copyFrom.path);
      db.exec('begin');
      for (const t of r.copyFrom.tables) db.exec(`insert into main.${t} select * from part.${t}`);
      db.exec('commit');
      db.exec('detach part');
      db.exec('begin');
    }
    if (r.pieces) {
      const ins = new Inserter(this.db, 'tokens', ['id', 'text']);
      r.pieces.forEach((p, t) => ins.add(t, p));
      ins.end();
    }
  }

  /** The rows so far committed and the file closed: a part another writer copies in (not synced: it is read and removed). */
  close(): void {
    this.db.exec('commit');
    this.db.close();
  }

  second(r: SecondRows): WriterCounts {
    const db = this.db;
    const put = db.prepare('insert into dictionary (key, value) values (?, ?)');
    for (const [k, v] of r.meta) put.run(k, v);
    const f = r.features;
    const m = f.count.length;
    if (r.siteNorms) {
      const S = r.siteNorms.sites,
        norm = r.siteNorms.norm;
      const ins = new Inserter(db, 'site_norms', ['feature', 'site', 'norm']);
      for (let i = 0; i < m; i++) for (let t = 0; t < S; t++) if (norm[i * S + t] > 0) ins.add(i, t, norm[i * S + t]);
      ins.end();
    }
    const feats = new Inserter(db, 'features', [
      'id',
      'count',
      'freq',
      'mean_act',
      'max_act',
      'decoder_norm',
      'enc_dec_cos',
      'dead',
      'dense',
      'histogram',
      'top_tokens',
      'absorption',
      'logit_lens',
    ]);
    const counts = { dead: 0, dense: 0 };
    for (let i = 0; i < m; i++) {
      const freq = f.count[i] / Math.max(1, f.tokens);
      const dead = f.count[i] === 0 ? 1 : 0,
        dense = freq > f.denseThreshold ? 1 : 0;
      counts.dead += dead;
      counts.dense += dense;
      feats.add(
        i,
        f.count[i],
        freq,
        f.count[i] ? f.sum[i] / f.count[i] : 0,
        f.max[i],
        f.decoderNorm[i],
        Number.isNaN(f.encDecCos[i]) ? null : f.encDecCos[i],
        dead,
        dense,
        `[${f.hist.subarray(i * f.bins, (i + 1) * f.bins).join(',')}]`,
        this.topTokensJson?.[i] ?? '[]',
        f.absorption ? f.absorption[i] : null,
        f.lens ? f.lens[i] : null,
      );
    }
    feats.end();
    if (r.neighbors) insertNeighbors(db, r.neighbors);
    if (r.cooccurrence) {
      const co = r.cooccurrence;
      const ins = new Inserter(db, 'cooccurrence', ['feature', 'other', 'count', 'jaccard']);
      for (let i = 0; i < m; i++)
        for (let q = 0; q < co.n && co.other[i * co.n + q] >= 0; q++) ins.add(i, co.other[i * co.n + q], co.count[i * co.n + q], co.jaccard[i * co.n + q]);
      ins.end();
    }
    if (r.letters) {
      const ins = db.prepare(
        'insert into absorption_letters (letter, probe_f1, main_latents, main_f1, tokens, mean_absorption, full_absorption_rate) values (?,?,?,?,?,?,?)',
      );
      for (const l of r.letters) ins.run(l.letter, l.probeF1, JSON.stringify(l.main), l.mainF1, l.tokens, l.meanAbsorption, l.fullAbsorptionRate);
    }
    db.exec(INDEXES);
    return counts;
  }

  /** Commits everything, closes the file and syncs it: the index is complete. */
  end(): void {
    const db = this.db;
    if (!this.tokenIndexMade) db.exec(TOKEN_FEATURES_INDEX); // no token rows came (no tokenizer): the index all the same
    db.exec('commit');
    db.pragma('journal_mode = WAL');
    db.close();
    fsyncFile(this.path);
  }
}

// The lowest priority, as the analysis thread's (analysis-worker.ts): the writers work after the pass, beside the
// analysis thread's last probes, and at equal priority the three share the cores instead of the probes waiting for the
// inserts to end. A scheduling hint only: where it is refused, the same rows are written at normal priority.
try {
  setPriority(0, 19);
} catch {
  /* not permitted here: no effect on the file */
}

const port = parentPort!;
let file: IndexFile | undefined;
let counts: WriterCounts | undefined;
let failed = false;
port.on('message', (msg: WriterMessage) => {
  if (failed) return;
  try {
    file ??= new IndexFile(workerData.path as string);
    if (msg.kind === 'first') file.first(msg.rows);
    else if (msg.kind === 'close') {
      file.close();
      port.postMessage({ closed: true } satisfies WriterReply);
      port.close();
    } else if (msg.kind === 'second') counts = file.second(msg.rows);
    else {
      if (!counts) throw new Error('the index writer was ended before its per-feature rows');
      file.end();
      port.postMessage({ done: counts } satisfies WriterReply);
      port.close();
    }
  } catch (e) {
    failed = true;
    port.postMessage({ error: (e as Error).message, code: (e as NodeJS.ErrnoException).code } satisfies WriterReply);
    port.close();
  }
});
