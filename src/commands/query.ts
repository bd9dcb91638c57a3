// `sdl convert` (Arrow IPC <-> Parquet shards) and `sdl query` (DuckDB SQL over a harvest's Parquet shards).
import type { Argv } from 'yargs';
import { convertHarvest } from '../activations/convert.js';
import { queryHarvest } from '../activations/query.js';
import { fmtCount } from '../util/progress.js';
import { printJson } from './common.js';

export function register(y: Argv): Argv {
  return y
    .command(
      'convert <harvest>',
      "Rewrite a harvest's shards as Parquet (or back to Arrow): same rows, checksums and manifest",
      (a) =>
        a
          .positional('harvest', { type: 'string', demandOption: true })
          .option('format', { choices: ['parquet', 'arrow'] as const, demandOption: true })
          .option('out', { type: 'string', demandOption: true, describe: 'the converted harvest folder' })
          .option('verify', { type: 'boolean', default: true, describe: "--no-verify: skip the shards' checksums" })
          .option('json', { type: 'boolean', default: false })
          .example('sdl convert cache/acts/L6 --format parquet --out cache/acts/L6-parquet', ''),
      (argv) => {
        const m = convertHarvest(argv.harvest!, argv.format!, argv.out!, { verify: argv.verify });
        if (argv.json) return printJson({ out: argv.out, format: argv.format, shards: m.shards.length, tokens: m.tokens });
        console.log(`converted ${m.shards.length} shards (${fmtCount(m.tokens)} tokens) to ${argv.format} -> ${argv.out}`);
      },
    )
    .command(
      'query <harvest> <sql>',
      'SQL (DuckDB, read-only) over a Parquet harvest: tables activations, sites, shards',
      (a) =>
        a
          .positional('harvest', { type: 'string', demandOption: true })
          .positional('sql', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false })
          .example('sdl query cache/acts/L6-parquet "select token, count(*) n from activations group by token order by n desc limit 5"', ''),
      async (argv) => {
        const r = await queryHarvest(argv.harvest!, argv.sql!);
        if (argv.json) return printJson(r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]]))));
        const cells = r.rows.map((row) => row.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))));
        const widths = r.columns.map((c, i) => Math.min(60, Math.max(c.length, ...cells.map((row) => row[i].length))));
        const line = (vals: string[]) => vals.map((v, i) => (v.length > 60 ? `${v.slice(0, 57)}...` : v).padEnd(widths[i])).join('  ');
        console.log(line(r.columns));
        for (const row of cells) console.log(line(row));
      },
    );
}
