// SQL over a harvest's Parquet shards with DuckDB (read-only): one view, `activations`, over every shard in the
// manifest (columns doc, window, pos, token and one FLOAT[] per hook), plus `sites` (name, width) and `shards`
// (file, rows); for a dictionary, also every table of its feature index (features, examples, neighbors, ...).
// Only SELECT and EXPLAIN statements run. DuckDB reads Parquet natively; Arrow IPC shards and SQLite files need
// extensions it would download, so Arrow harvests are pointed at `sdl convert`, and the index's tables are handed
// to DuckDB as Parquet files written for the query (parquet-wasm) and removed after it.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type { DuckDBConnection } from '@duckdb/node-api';
import { apacheArrow } from './arrow.js';
import { parquetWasm } from './parquet.js';
import { UserError } from '../util/errors.js';
import { ACTS_MANIFEST_FILE } from '../util/files.js';
import { identityHash, openActivations, type HarvestIdentity } from './manifest.js';
import { formatOf } from './shard.js';

export interface QueryResult {
  columns: string[];
  rows: unknown[][];
}

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** A harvest's identity regardless of its shard format (a converted harvest holds the same rows). */
const rowsIdentity = (id: HarvestIdentity): string => {
  const { format: _f, part: _p, ...rest } = id;
  return identityHash(rest as HarvestIdentity);
};

/**
 * Which harvest joins a dictionary's index in `sdl query`: `acts` (given, or where it was trained) when it is a
 * Parquet copy of the dictionary's own harvest; otherwise none, with the line to say when a query needs it.
 * A harvest of other rows is refused: its activations would be joined to another harvest's features.
 */
export function dictionaryHarvest(dictDir: string, acts: string | undefined): { harvest?: string; noHarvest?: string } {
  if (!acts) return { noHarvest: `${dictDir}'s harvest is not where it was trained; pass --acts <a Parquet copy of it>` };
  const m = openActivations(acts);
  const own = join(dictDir, ACTS_MANIFEST_FILE);
  if (existsSync(own)) {
    const trained = JSON.parse(readFileSync(own, 'utf8')) as { identity: HarvestIdentity };
    if (rowsIdentity(trained.identity) !== rowsIdentity(m.identity))
      throw new UserError(
        `${acts} holds other rows than the harvest ${dictDir} was trained and indexed on; pass that harvest (or its sdl convert copy) as --acts`,
      );
  }
  if (m.shards.some((s) => formatOf(s.file) !== 'parquet'))
    return {
      noHarvest: `${dictDir}'s harvest (${acts}) holds Arrow shards, which DuckDB cannot read here; convert it (sdl convert ${acts} --format parquet --out ${acts}-parquet) and pass --acts ${acts}-parquet`,
    };
  return { harvest: acts };
}

/** The harvest's shards as the view `activations`, and its sites and shards as tables. */
async function addHarvest(con: DuckDBConnection, dir: string): Promise<void> {
  const m = openActivations(dir);
  if (m.shards.some((s) => formatOf(s.file) !== 'parquet'))
    throw new UserError(
      `${dir} holds Arrow shards, which DuckDB reads only through an extension it downloads; convert them once: sdl convert ${dir} --format parquet --out ${dir}-parquet`,
    );
  const files = m.shards.map((s) => quote(resolve(join(dir, s.file)))).join(', ');
  await con.run(`create view activations as select * from read_parquet([${files}])`);
  await con.run(`create table sites as select * from (values ${m.sites.map((s) => `(${quote(s.name)}, ${s.width})`).join(', ')}) t(name, width)`);
  await con.run(`create table shards as select * from (values ${m.shards.map((s) => `(${quote(s.file)}, ${s.rows})`).join(', ')}) t(file, rows)`);
}

/** Every table of a feature index (SQLite) as a view over a Parquet copy in `tmp`. */
async function addIndex(con: DuckDBConnection, indexPath: string, tmp: string): Promise<string[]> {
  const db = new Database(indexPath, { readonly: true, fileMustExist: true });
  try {
    const tables = (db.prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'").all() as { name: string }[]).map(
      (t) => t.name,
    );
    for (const name of tables) {
      const stmt = db.prepare(`select * from "${name}"`);
      const cols = stmt.columns().map((c) => c.name);
      const rows = stmt.raw().all() as unknown[][];
      if (!rows.length) continue;
      const arrays = Object.fromEntries(cols.map((c, j) => [c, rows.map((r) => r[j] as string | number | null)]));
      const { Table: WasmTable, WriterPropertiesBuilder, Compression, writeParquet } = parquetWasm();
      const { tableFromArrays, tableToIPC } = apacheArrow();
      const table = WasmTable.fromIPCStream(tableToIPC(tableFromArrays(arrays as Parameters<typeof tableFromArrays>[0]), 'stream'));
      const file = join(tmp, `${name}.parquet`);
      writeFileSync(file, writeParquet(table, new WriterPropertiesBuilder().setCompression(Compression.SNAPPY).build()));
      await con.run(`create view "${name}" as select * from read_parquet(${quote(file)})`);
    }
    return tables;
  } finally {
    db.close();
  }
}
/** Runs one read-only statement over a harvest (Parquet) and/or a feature index. */
export async function querySources(src: { harvest?: string; index?: string; noHarvest?: string }, sql: string): Promise<QueryResult> {
  // Loaded here, not at start-up: every other command would load DuckDB's 70 MB library (10 MB of it resident in a fit) for nothing.
  const { DuckDBInstance, StatementType } = await import('@duckdb/node-api');
  const con = await (await DuckDBInstance.create(':memory:')).connect();
  const tmp = mkdtempSync(join(tmpdir(), 'sdl-query-'));
  try {
    if (src.harvest) await addHarvest(con, src.harvest);
    if (src.index) await addIndex(con, src.index, tmp);
    let prepared: Awaited<ReturnType<DuckDBConnection['prepare']>>;
    try {
      prepared = await con.prepare(sql);
    } catch (e) {
      const msg = String((e as Error).message).split('\n')[0];
      // A dictionary whose harvest DuckDB cannot read here: say so where the query needs it.
      if (src.noHarvest && /Table with name (activations|sites|shards) does not exist/i.test(msg)) throw new UserError(src.noHarvest);
      throw new UserError(`the query is not valid SQL for DuckDB: ${msg}`);
    }
    if (prepared.statementType !== StatementType.SELECT && prepared.statementType !== StatementType.EXPLAIN)
      throw new UserError('sdl query is read-only: give one SELECT (or EXPLAIN) statement');
    let reader: Awaited<ReturnType<typeof prepared.runAndReadAll>>;
    try {
      reader = await prepared.runAndReadAll();
    } catch (e) {
      throw new UserError(`DuckDB could not run the query: ${String((e as Error).message).split('\n')[0]}`);
    }
    return { columns: reader.columnNames(), rows: reader.getRowsJson() };
  } finally {
    con.closeSync();
    rmSync(tmp, { recursive: true, force: true });
  }
}
