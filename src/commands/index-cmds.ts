import type { Argv } from 'yargs';
import { dirname, join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { Dictionary } from '../sdl/dictionary.js';
import { buildIndex, INDEX_DEFAULTS, HIST_EDGES } from '../index/build.js';
import { openIndex, featureDetail, featuresForToken, queryWithTimeout, tokenText, type FeatureRow } from '../index/query.js';
import { bindModel } from '../intervene/bind.js';
import { Intervener } from '../intervene/intervener.js';
import { checkOptions } from '../util/check.js';
import { UserError } from '../util/errors.js';
import { printJson } from './common.js';
import { CFG_FILE, MANIFEST_FILE } from '../util/files.js';

const SPARK = '▁▂▃▄▅▆▇█';
const sparkline = (h: number[]) => {
  const mx = Math.max(1, ...h);
  return h.map((v) => (v === 0 ? ' ' : SPARK[Math.min(7, Math.floor((v / mx) * 7.999))])).join('');
};
const tty = Boolean(process.stdout.isTTY);
/** A context with the firing token highlighted (bold on a terminal, [brackets] otherwise). */
function renderContext(tokens: string[], acts: number[], at: number): string {
  return tokens
    .map((t, i) => {
      const s = t.replace(/\n/g, '\\n');
      if (i === at) return tty ? `\x1b[1;33m${s}\x1b[0m` : `[[${s}]]`;
      if (acts[i] > 0 && tty) return `\x1b[33m${s}\x1b[0m`;
      return s;
    })
    .join('');
}

export function trainingActs(dictDir: string): string {
  const cfg = JSON.parse(readFileSync(join(dictDir, CFG_FILE), 'utf8'));
  const acts = cfg.sdlkit?.training?.activations;
  if (!acts || !existsSync(acts))
    throw new UserError(`no --acts given and the activations ${dictDir} was trained on are not at ${acts ?? '(unrecorded)'}; pass --acts <harvest folder>`);
  return acts;
}

export function register(y: Argv): Argv {
  return y
    .command(
      'index <dictionary>',
      'Build the SQLite feature index of a dictionary over activation shards',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .option('acts', { type: 'string', describe: 'harvest folder (default: the one the dictionary was trained on)' })
          .option('top-k', { type: 'number', default: INDEX_DEFAULTS.topK, describe: 'top activating examples kept per feature' })
          .option('context', { type: 'number', default: INDEX_DEFAULTS.contextRadius, describe: 'tokens either side of each example' })
          .option('dense', { type: 'number', default: INDEX_DEFAULTS.denseThreshold, describe: 'firing frequency above which a latent is dense' })
          .option('force', { type: 'boolean', default: false, describe: 'rebuild even when the index is up to date' })
          .option('verify', { type: 'boolean', default: true, describe: "--no-verify: skip the shards' checksums" })
          .option('json', { type: 'boolean', default: false })
          .example('sdl index cache/dicts/pipeline-sae-L6', ''),
      async (argv) => {
        for (const [k, v] of [
          ['top-k', argv['top-k']],
          ['context', argv.context],
        ] as const)
          if (!Number.isInteger(v) || v < (k === 'context' ? 0 : 1))
            throw new UserError(`--${k} must be a ${k === 'context' ? 'non-negative' : 'positive'} integer (got ${v})`);
        if (!(argv.dense > 0 && argv.dense <= 1)) throw new UserError(`--dense must be a frequency in (0, 1] (got ${argv.dense})`);
        const d = Dictionary.load(argv.dictionary!);
        const r = await buildIndex(argv.dictionary!, d, argv.acts ?? trainingActs(argv.dictionary!), {
          ...INDEX_DEFAULTS,
          topK: argv['top-k'],
          contextRadius: argv.context,
          denseThreshold: argv.dense,
          force: argv.force,
          quiet: argv.json,
          verify: argv.verify,
          onNote: (n) => console.error(`note: ${n}`),
        });
        if (argv.json) return printJson(r);
        if (r.upToDate) return console.log(`${r.path} is up to date (${r.tokens} tokens); --force rebuilds it`);
        console.log(`indexed ${d.cfg.dSae} features over ${r.tokens} tokens in ${r.seconds.toFixed(1)}s: ${r.dead} dead, ${r.dense} dense -> ${r.path}`);
      },
    )
    .command(
      'features <dictionary>',
      'List features from the index: dead, dense, by frequency or maximum',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .option('dead', { type: 'boolean', default: false })
          .option('dense', { type: 'boolean', default: false })
          .option('absorbed', { type: 'boolean', default: false })
          .option('sort', { choices: ['id', 'freq', 'max', 'mean', 'absorption'] as const, default: 'id' as const })
          .option('limit', { type: 'number', default: 20 })
          .option('where', { type: 'string', describe: 'a condition on the columns, e.g. "freq > 0.01 and max_act > 2"' })
          .option('timeout', { type: 'number', default: 30, describe: 'seconds before a query is stopped' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl features cache/dicts/pipeline-sae-L6 --dead', '')
          .example('sdl features cache/dicts/pipeline-sae-L6 --sort freq --limit 10', ''),
      async (argv) => {
        checkOptions(argv, { limit: 'int>0' });
        const q = { dead: argv.dead, dense: argv.dense, absorbed: argv.absorbed, sort: argv.sort, limit: argv.limit, where: argv.where };
        const rows = (await queryWithTimeout(argv.dictionary!, { features: q }, argv.timeout)) as FeatureRow[];
        if (argv.json) return printJson(rows.map((r) => ({ ...r, histogram: JSON.parse(r.histogram), top_tokens: JSON.parse(r.top_tokens) })));
        if (!rows.length)
          return console.log(
            `no features match (${[argv.dead && 'dead', argv.dense && 'dense', argv.absorbed && 'absorbed', argv.where].filter(Boolean).join(', ') || 'all'})`,
          );
        const db = openIndex(argv.dictionary!);
        const text = tokenText(db);
        for (const r of rows) {
          const toks = (JSON.parse(r.top_tokens) as { token: number }[])
            .slice(0, 5)
            .map((t) => JSON.stringify(text(t.token)))
            .join(' ');
          console.log(
            `${String(r.id).padStart(6)}  freq ${r.freq.toExponential(2)}  max ${r.max_act.toFixed(2)}  ${sparkline(JSON.parse(r.histogram))}  ${r.dead ? 'DEAD ' : ''}${r.dense ? 'DENSE ' : ''}${toks}`,
          );
        }
      },
    )
    .command(
      'feature <dictionary> <id>',
      'One feature: statistics, activation histogram, top contexts, neighbours',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .positional('id', { type: 'string', demandOption: true })
          .option('json', { type: 'boolean', default: false })
          .example('sdl feature cache/dicts/pipeline-sae-L6 123', ''),
      (argv) => {
        if (!/^\d+$/.test(argv.id!)) throw new UserError(`a feature id is a non-negative integer (got '${argv.id}')`);
        const db = openIndex(argv.dictionary!);
        const r = featureDetail(db, Number(argv.id));
        if (argv.json) return printJson(r);
        const text = tokenText(db);
        const f = r.feature;
        console.log(
          `feature ${f.id}: fires on ${f.count} tokens (freq ${f.freq.toExponential(2)}), mean ${f.mean_act.toFixed(3)}, max ${f.max_act.toFixed(3)}, decoder norm ${f.decoder_norm.toFixed(3)}${f.enc_dec_cos !== null ? `, encoder/decoder cosine ${f.enc_dec_cos.toFixed(3)}` : ''}${f.dead ? ', DEAD' : ''}${f.dense ? ', DENSE' : ''}`,
        );
        console.log(`activation histogram (${HIST_EDGES[0]} .. ${HIST_EDGES[HIST_EDGES.length - 1]}, log scale): ${sparkline(JSON.parse(f.histogram))}`);
        console.log(
          `top tokens: ${(JSON.parse(f.top_tokens) as { token: number; count: number }[]).map((t) => `${JSON.stringify(text(t.token))} x${t.count}`).join(', ')}`,
        );
        console.log('top contexts:');
        for (const e of r.examples) {
          const toks = (JSON.parse(e.context_tokens) as number[]).map(text);
          console.log(`  ${e.act.toFixed(3).padStart(8)}  ${renderContext(toks, JSON.parse(e.context_acts), e.pos - e.context_start)}`);
        }
        if (r.logitLens) {
          const fmt = (xs: [number, number][]) => xs.map(([t, e]) => `${JSON.stringify(text(t))} ${e >= 0 ? '+' : ''}${e.toFixed(2)}`).join(', ');
          console.log(`logit lens, raises: ${fmt(r.logitLens.pos)}`);
          console.log(`logit lens, lowers: ${fmt(r.logitLens.neg)}`);
        }
        if (r.quantiles.length) {
          console.log('examples across the activation range (one per band, strongest band first):');
          const seen = new Set<number>();
          for (const e of r.quantiles) {
            if (seen.has((e as { band: number }).band)) continue;
            seen.add((e as { band: number }).band);
            const toks = (JSON.parse(e.context_tokens) as number[]).map(text);
            console.log(`  ${e.act.toFixed(3).padStart(8)}  ${renderContext(toks, JSON.parse(e.context_acts), e.pos - e.context_start)}`);
          }
        }
        console.log(
          `nearest by decoder cosine: ${(r.neighbors as { other: number; cosine: number }[]).map((n) => `${n.other} (${n.cosine.toFixed(2)})`).join(', ')}`,
        );
        console.log(
          `fires together with: ${(r.cooccurrence as { other: number; count: number; jaccard: number }[]).map((n) => `${n.other} (${n.count}, J ${n.jaccard.toFixed(2)})`).join(', ')}`,
        );
      },
    )
    .command(
      'search <dictionary>',
      'Features most associated with a token, or the features firing on each token of a sentence',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .option('token', { type: 'string', describe: 'a vocabulary token, e.g. " the"' })
          .option('text', { type: 'string', describe: 'a sentence to run through the model and the dictionary' })
          .option('model', { type: 'string', describe: 'with --text: the model (default: the one the activations came from)' })
          .option('limit', { type: 'number', default: 10 })
          .option('json', { type: 'boolean', default: false })
          .example('sdl search cache/dicts/pipeline-sae-L6 --token " the"', '')
          .example('sdl search cache/dicts/pipeline-sae-L6 --text "The whale swam under the ship."', ''),
      async (argv) => {
        if (!argv.token === !argv.text) throw new UserError('pass --token or --text');
        checkOptions(argv, { limit: 'int>0' });
        if (argv.token !== undefined) {
          const db = openIndex(argv.dictionary!);
          const rows = featuresForToken(db, argv.token, argv.limit) as { token: number; feature: number; count: number; mean_act: number; share: number }[];
          if (argv.json) return printJson(rows);
          if (!rows.length) return console.log(`no feature fired on ${JSON.stringify(argv.token)} in the indexed tokens`);
          for (const r of rows)
            console.log(
              `feature ${String(r.feature).padStart(6)}  fires ${r.count}x on it (mean ${r.mean_act.toFixed(3)}; ${(100 * r.share).toFixed(1)}% of the feature's firings)`,
            );
          return;
        }
        const d = Dictionary.load(argv.dictionary!);
        const db = openIndex(argv.dictionary!);
        const acts = (db.prepare("select value from dictionary where key = 'activations'").get() as { value: string }).value;
        const harvestModel = () => {
          const man = JSON.parse(readFileSync(join(acts, MANIFEST_FILE), 'utf8'));
          return existsSync(join(dirname(man.model_path), 'config.json')) ? dirname(man.model_path) : man.model_path;
        };
        const iv = await Intervener.create(await bindModel(d, { spec: argv.model, dictDir: argv.dictionary!, fallback: harvestModel }), d);
        const m = iv.model;
        const ids = m.tokenizer.encode(argv.text!);
        const f = (await iv.forward(Int32Array.from(ids), 1, ids.length)).features;
        await iv.release();
        const res = ids.map((id, t) => ({
          position: t,
          token: m.tokenizer.piece(id),
          features: Array.from({ length: d.cfg.dSae }, (_, i) => ({ feature: i, act: f[t * d.cfg.dSae + i] }))
            .filter((a) => a.act > 0)
            .sort((a, b) => b.act - a.act)
            .slice(0, argv.limit),
        }));
        if (argv.json) return printJson(res);
        for (const r of res)
          console.log(
            `${String(r.position).padStart(4)} ${JSON.stringify(r.token).padEnd(14)} ${r.features.map((a) => `${a.feature}:${a.act.toFixed(2)}`).join('  ')}`,
          );
      },
    )
    .command(
      'sql <dictionary> <query>',
      'Run a read-only SELECT on the feature index',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .positional('query', { type: 'string', demandOption: true })
          .option('timeout', { type: 'number', default: 30, describe: 'seconds before the query is stopped' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl sql cache/dicts/pipeline-sae-L6 "select id, freq from features order by freq desc limit 5"', ''),
      async (argv) => {
        const rows = await queryWithTimeout(argv.dictionary!, { sql: argv.query! }, argv.timeout);
        if (argv.json) return printJson(rows);
        if (!rows.length) return console.log('(no rows)');
        const cols = Object.keys(rows[0] as object);
        console.log(cols.join('\t'));
        for (const r of rows) console.log(cols.map((c) => String((r as Record<string, unknown>)[c])).join('\t'));
      },
    );
}
