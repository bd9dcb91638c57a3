// `sdl convert` (Arrow IPC <-> Parquet shards) and `sdl query` (DuckDB SQL over a harvest's Parquet shards).
import type { Argv } from 'yargs';
import { convertHarvest } from '../activations/convert.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { dictionaryHarvest, querySources } from '../activations/query.js';
import { CFG_FILE, INDEX_FILE } from '../util/files.js';
import { UserError } from '../util/errors.js';
import { trainingActs } from './index-cmds.js';
import { fmtCount } from '../util/progress.js';
import { printJson } from './common.js';

export function register(y: Argv): Argv {
  return y
    .command(
      'convert <harvest>',
      "Rewrite a harvest's shards as Parquet (or back to Arrow; Parquet shards from before 2026-12-06, zstd, as ones read in place): same rows, checksums and manifest",
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
      'query <source> <sql>',
      "SQL (DuckDB, read-only) over a Parquet harvest (activations, sites, shards) or a dictionary (its feature index's tables, and its harvest's)",
      (a) =>
        a
          .positional('source', { type: 'string', demandOption: true, describe: 'a harvest folder, or a dictionary folder' })
          .option('acts', { type: 'string', describe: "a dictionary's harvest, when not the one it was trained on" })
          .positional('sql', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false })
          .example('sdl query cache/acts/L6-parquet "select token, count(*) n from activations group by token order by n desc limit 5"', '')
          .example('sdl query cache/dicts/pipeline-sae-L6 "select id, freq, max_act from features order by max_act desc limit 5"', ''),
      async (argv) => {
        const src = argv.source!;
        let sources: { harvest?: string; index?: string; noHarvest?: string };
        if (existsSync(join(src, CFG_FILE))) {
          const index = join(src, INDEX_FILE);
          if (!existsSync(index)) throw new UserError(`${src} has no feature index; build it with: sdl index ${src}`);
          const recorded = (() => {
            try {
              return trainingActs(src);
            } catch {
              return undefined;
            }
          })();
          sources = { index, ...dictionaryHarvest(src, argv.acts ?? recorded) };
        } else sources = { harvest: src };
        const r = await querySources(sources, argv.sql!);
        if (argv.json) return printJson(r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]]))));
        const cells = r.rows.map((row) => row.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))));
        const widths = r.columns.map((c, i) => Math.min(60, Math.max(c.length, ...cells.map((row) => row[i].length))));
        const line = (vals: string[]) => vals.map((v, i) => (v.length > 60 ? `${v.slice(0, 57)}...` : v).padEnd(widths[i])).join('  ');
        console.log(line(r.columns));
        for (const row of cells) console.log(line(row));
      },
    );
}
