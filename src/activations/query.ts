// SQL over a harvest's Parquet shards with DuckDB (read-only): one view, `activations`, over every shard in the
// manifest (columns doc, window, pos, token and one FLOAT[] per hook), plus `sites` (name, width) and `shards`
// (file, rows). Only SELECT and EXPLAIN statements run. DuckDB reads Parquet natively; Arrow IPC shards need an
// extension it would download, so Arrow harvests are pointed at `sdl convert` instead.
import { join, resolve } from 'node:path';
import { DuckDBInstance, StatementType, type DuckDBConnection } from '@duckdb/node-api';
import { UserError } from '../util/errors.js';
import { openActivations } from './manifest.js';
import { formatOf } from './shard.js';

export interface QueryResult {
  columns: string[];
  rows: unknown[][];
}

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`;

async function open(dir: string): Promise<DuckDBConnection> {
  const m = openActivations(dir);
  if (m.shards.some((s) => formatOf(s.file) !== 'parquet'))
    throw new UserError(
      `${dir} holds Arrow shards, which DuckDB reads only through an extension it downloads; convert them once: sdl convert ${dir} --format parquet --out ${dir}-parquet`,
    );
  const con = await (await DuckDBInstance.create(':memory:')).connect();
  const files = m.shards.map((s) => quote(resolve(join(dir, s.file)))).join(', ');
  await con.run(`create view activations as select * from read_parquet([${files}])`);
  await con.run(`create table sites as select * from (values ${m.sites.map((s) => `(${quote(s.name)}, ${s.width})`).join(', ')}) t(name, width)`);
  await con.run(`create table shards as select * from (values ${m.shards.map((s) => `(${quote(s.file)}, ${s.rows})`).join(', ')}) t(file, rows)`);
  return con;
}

export async function queryHarvest(dir: string, sql: string): Promise<QueryResult> {
  const con = await open(dir);
  try {
    let prepared: Awaited<ReturnType<DuckDBConnection['prepare']>>;
    try {
      prepared = await con.prepare(sql);
    } catch (e) {
      throw new UserError(`the query is not valid SQL for DuckDB: ${String((e as Error).message).split('\n')[0]}`);
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
  }
}
