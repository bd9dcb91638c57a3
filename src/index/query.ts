// Read-only queries over a feature index.
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { INDEX_FILE } from './build.js';
import { UserError } from '../util/errors.js';

export function openIndex(dictDir: string): Database.Database {
  const p = join(dictDir, INDEX_FILE);
  if (!existsSync(p)) throw new UserError(`${dictDir} has no feature index; run 'sdl index ${dictDir}' first`);
  return new Database(p, { readonly: true, fileMustExist: true });
}

export interface FeatureRow {
  id: number;
  count: number;
  freq: number;
  mean_act: number;
  max_act: number;
  decoder_norm: number;
  enc_dec_cos: number | null;
  dead: number;
  dense: number;
  histogram: string;
  top_tokens: string;
  absorption: number | null;
  logit_lens: string | null;
}

const SORTS: Record<string, string> = { freq: 'freq desc', max: 'max_act desc', absorption: 'absorption desc', id: 'id asc', mean: 'mean_act desc' };

export interface FeatureQuery {
  dead?: boolean;
  dense?: boolean;
  absorbed?: boolean;
  sort?: string;
  limit?: number;
  where?: string;
}

export function listFeatures(db: Database.Database, q: FeatureQuery): FeatureRow[] {
  const conds: string[] = [];
  if (q.dead) conds.push('dead = 1');
  if (q.dense) conds.push('dense = 1');
  if (q.absorbed) conds.push('absorption > 0');
  if (q.where) {
    if (/;|--|\b(attach|pragma|insert|update|delete|drop|create)\b/i.test(q.where))
      throw new UserError('--where takes a condition on the features columns, e.g. "freq > 0.01 and max_act < 2"');
    conds.push(`(${q.where})`);
  }
  const order = SORTS[q.sort ?? 'id'];
  if (!order) throw new UserError(`--sort takes ${Object.keys(SORTS).join(', ')}`);
  const sql = `select * from features ${conds.length ? `where ${conds.join(' and ')}` : ''} order by ${order} limit ?`;
  try {
    return db.prepare(sql).all(q.limit ?? 50) as FeatureRow[];
  } catch (e) {
    throw new UserError(
      `the query failed: ${(e as Error).message} (columns: id, count, freq, mean_act, max_act, decoder_norm, enc_dec_cos, dead, dense, absorption)`,
    );
  }
}

export function tokenText(db: Database.Database): (id: number) => string {
  const rows = db.prepare('select id, text from tokens').all() as { id: number; text: string }[];
  const m = new Map(rows.map((r) => [r.id, r.text]));
  return (id) => m.get(id) ?? `<${id}>`;
}

export function featureDetail(db: Database.Database, id: number) {
  const f = db.prepare('select * from features where id = ?').get(id) as FeatureRow | undefined;
  if (!f) {
    const n = (db.prepare('select count(*) as n from features').get() as { n: number }).n;
    throw new UserError(`feature ${id} does not exist; the dictionary has features 0-${n - 1}`);
  }
  const examples = db.prepare('select * from examples where feature = ? order by rank').all(id) as {
    act: number;
    pos: number;
    context_start: number;
    context_tokens: string;
    context_acts: string;
    doc: number;
    window: number;
  }[];
  const neighbors = db.prepare('select other, cosine from neighbors where feature = ? order by rank').all(id);
  const cooc = db.prepare('select other, count, jaccard from cooccurrence where feature = ? order by count desc').all(id);
  const quantiles = db
    .prepare(
      'select band, act, pos, context_start, context_tokens, context_acts, doc, window from quantile_examples where feature = ? order by band desc, rank',
    )
    .all(id) as typeof examples & { band: number }[];
  const lens = f.logit_lens ? (JSON.parse(f.logit_lens) as { pos: [number, number][]; neg: [number, number][] }) : null;
  // Per target site (CLTs: per later layer), where the dictionary writes several; indexes made before the table have none.
  const hasNorms = db.prepare("select 1 from sqlite_master where type = 'table' and name = 'site_norms'").get();
  const siteNorms = hasNorms
    ? (db.prepare('select site, norm from site_norms where feature = ? order by site').all(id) as { site: number; norm: number }[])
    : [];
  return { feature: f, examples, quantiles, logitLens: lens, neighbors, cooccurrence: cooc, siteNorms };
}

export function featuresForToken(db: Database.Database, text: string, limit: number) {
  const ids = (db.prepare('select id from tokens where text = ? or text = ?').all(text, ` ${text.trimStart()}`) as { id: number }[]).map((r) => r.id);
  if (!ids.length) throw new UserError(`no token '${text}' in the tokenizer's vocabulary (try with or without a leading space)`);
  return db
    .prepare(`select tf.token, tf.feature, tf.count, tf.mean_act, f.count as feature_count, 1.0 * tf.count / f.count as share
    from token_features tf join features f on f.id = tf.feature where tf.token in (${ids.map(() => '?').join(',')})
    order by tf.count * tf.mean_act desc limit ?`)
    .all(...ids, limit);
}

/** Runs a read-only SELECT. */
export function runSql(db: Database.Database, sql: string): unknown[] {
  if (!/^\s*(select|with)\b/i.test(sql)) throw new UserError('sdl sql runs read-only SELECT queries');
  try {
    return db.prepare(sql).all();
  } catch (e) {
    throw new UserError(`the query failed: ${(e as Error).message}`);
  }
}

/**
 * A query with a time limit (`sdl sql`, `sdl features --where`): it runs in a child process (query-worker.ts),
 * killed past `seconds`; the command then stops with one line.
 */
/** The longest --timeout a query takes, in seconds. */
const MAX_TIMEOUT_S = Math.floor((2 ** 31 - 1) / 1000);

export function queryWithTimeout(dir: string, job: { sql: string } | { features: FeatureQuery }, seconds: number): Promise<unknown[]> {
  // Node's timers take at most 2^31 - 1 ms (24.8 days); a longer one fires at once, with a warning.
  if (!(seconds > 0 && seconds <= MAX_TIMEOUT_S))
    throw new UserError(`--timeout must be a positive number of seconds up to ${MAX_TIMEOUT_S} (24 days) (got ${seconds})`);
  openIndex(dir).close(); // a missing index is reported before a worker starts
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL('./query-worker.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new UserError(`the query ran longer than ${seconds} s and was stopped; narrow it, or pass --timeout with more seconds`));
    }, seconds * 1000);
    child.once('message', (m: { rows?: unknown[]; error?: string; user?: boolean }) => {
      clearTimeout(timer);
      if (m.rows) resolve(m.rows);
      else reject(m.user ? new UserError(m.error!) : new Error(m.error));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.send({ dir, ...job });
  });
}
