import type { Argv } from 'yargs';
import { DEFAULT_SITES, HARVEST_DEFAULTS, harvest, hookSpecs } from '../activations/harvest.js';
import { checkPart, type HarvestPart } from '../activations/manifest.js';
import { mergeParts } from '../activations/merge.js';
import type { Split } from '../corpus/sources.js';
import { UserError } from '../util/errors.js';
import { fmtCount } from '../util/progress.js';
import { defaultModel, parseCount, parseLayers, printJson } from './common.js';

/** `--part i/n` (also accepts the environment's index: --part $JOB_COMPLETION_INDEX/4). */
function parsePart(v: string): HarvestPart {
  const m = /^(\d+)\/(\d+)$/.exec(v.trim());
  if (!m) throw new UserError(`--part ${v}: give i/n with 0 <= i < n (e.g. --part 0/4)`);
  const p = { index: Number(m[1]), count: Number(m[2]) };
  checkPart(p);
  return p;
}

/** `--workers auto` or a count (0: one session in the main thread). */
function parseWorkers(v: string): number | 'auto' {
  if (v === 'auto') return 'auto';
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n))
    throw new UserError(`--workers ${v}: give auto or a count of sessions (0 for one session in the main thread)`);
  return n;
}

export function register(y: Argv): Argv {
  return y
    .command(
      'harvest',
      'Run a model over text and write hook activations to Arrow shards (resumable)',
      (a) =>
        a
          .option('model', { type: 'string', describe: 'model folder or .onnx file (default: the bundled model)' })
          .option('tokenizer', { type: 'string', describe: 'tokenizer file, when not beside the model' })
          .option('layer', { type: 'number', describe: 'one layer (0-based)' })
          .option('layers', { type: 'string', describe: 'several layers: 2,4,6, 2-6 or all' })
          .option('sites', {
            type: 'string',
            default: DEFAULT_SITES.join(','),
            describe: 'hook sites per layer: resid_pre,attn_out,resid_mid,mlp_in,mlp_out,resid_post',
          })
          .option('tensor', { type: 'string', array: true, describe: 'a raw tensor name or a canonical hook name (repeatable)' })
          .option('corpus', { type: 'string', default: 'builtin', describe: 'builtin | sotu | moby-dick | a .txt or .jsonl file' })
          .option('split', {
            choices: ['train', 'heldout', 'all'] as const,
            describe: 'document split (default: heldout for the builtin corpora, all for files)',
          })
          .option('tokens', { type: 'string', default: String(HARVEST_DEFAULTS.tokens), describe: 'tokens to harvest (e.g. 256k, 1M)' })
          .option('ctx', { type: 'number', default: HARVEST_DEFAULTS.ctx, describe: 'context length of each window' })
          .option('batch', { type: 'number', default: HARVEST_DEFAULTS.batch, describe: 'windows per forward pass' })
          .option('dtype', { choices: ['f32', 'f16'] as const, default: HARVEST_DEFAULTS.dtype, describe: 'stored float type' })
          .option('seed', { type: 'number', default: HARVEST_DEFAULTS.seed, describe: 'document-order shuffle seed' })
          .option('shard-tokens', { type: 'string', default: String(HARVEST_DEFAULTS.shardTokens), describe: 'rows per shard' })
          .option('oov-id', { type: 'number', describe: 'map token ids the model cannot embed to this id (default: refuse)' })
          .option('threads', { type: 'number', describe: 'cores for the model (default: all)' })
          .option('workers', {
            type: 'string',
            default: 'auto',
            describe:
              'model sessions on their own threads, batches in parallel (0: one session, threads inside operators; auto: one per core for models of width <= 128)',
          })
          .option('out', { type: 'string', describe: 'output folder (default: cache/acts/<model>-<hooks>-<hash>)' })
          .option('force', { type: 'boolean', default: false, describe: 'replace an output folder that holds a different harvest' })
          .option('format', { choices: ['arrow', 'parquet'] as const, default: 'arrow' as const, describe: 'shard files: Arrow IPC or Parquet (uncompressed)' })
          .option('part', { type: 'string', describe: 'harvest part i of n (0-based, e.g. 0/4): shards k with k mod n = i; join with sdl merge' })
          .option('token-cache', {
            type: 'boolean',
            default: true,
            describe: "keep the corpus's token windows in cache/windows and read them from there next time (--no-token-cache: tokenize every time)",
          })
          .option('json', { type: 'boolean', default: false })
          .example('sdl harvest --layer 6 --tokens 1M --part 0/2 --out cache/acts/big', 'one of two parts; run --part 1/2 anywhere at once, then sdl merge')
          .example('sdl harvest --layer 6', 'residual and MLP activations of layer 6 of the bundled model')
          .example('sdl harvest --layers all --sites mlp_in,mlp_out', 'what a cross-layer transcoder (sdl fit --kind clt) needs, in one pass')
          .example('sdl harvest --model models/stories15M --layers 2,4 --sites resid_post --tokens 1M --dtype f16', '')
          .example('sdl harvest --layer 6 --workers 0 --threads 2', 'one session, onnxruntime threading inside each operator (the default for wide models)')
          .example('sdl harvest --model past.onnx --tensor /transformer/h.2/Add_1_output_0 --oov-id 0 --corpus my.txt', ''),
      async (argv) => {
        const layers = argv.layers === 'all' ? 'all' : argv.layers !== undefined ? parseLayers(argv.layers) : argv.layer !== undefined ? [argv.layer] : [];
        if (argv.layer !== undefined && argv.layers !== undefined) throw new UserError('pass --layer or --layers, not both');
        if (!layers.length && !argv.tensor?.length) throw new UserError('say what to harvest: --layer 6, --layers 2,4,6 or --tensor <name>');
        const sites = argv.sites
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        const builtin = ['builtin', 'sotu', 'moby-dick'].includes(argv.corpus);
        const r = await harvest({
          model: argv.model ?? defaultModel(),
          tokenizer: argv.tokenizer,
          hooks: hookSpecs(layers, layers.length ? sites : [], argv.tensor ?? []),
          corpus: argv.corpus,
          split: (argv.split ?? (builtin ? 'heldout' : 'all')) as Split,
          tokens: parseCount(argv.tokens, '--tokens'),
          ctx: argv.ctx,
          batch: argv.batch,
          dtype: argv.dtype,
          seed: argv.seed,
          shardTokens: parseCount(argv['shard-tokens'], '--shard-tokens'),
          out: argv.out,
          oovId: argv['oov-id'],
          threads: argv.threads,
          workers: parseWorkers(argv.workers),
          force: argv.force,
          quiet: argv.json,
          part: argv.part !== undefined ? parsePart(argv.part) : undefined,
          format: argv.format,
          tokenCache: argv['token-cache'],
        });
        if (argv.json)
          return printJson({
            out: r.out,
            tokens: r.manifest.tokens,
            shards: r.manifest.shards.length,
            reused_shards: r.reusedShards,
            seconds: r.seconds,
            tokens_per_second: r.tokensPerSecond,
            sites: r.manifest.sites,
            token_cache: r.tokenCache ?? null,
          });
        const sitesTxt = r.manifest.sites.map((s) => `${s.name}[${s.width}]`).join(', ');
        const windows = !r.tokenCache
          ? ''
          : r.tokenCache.hit
            ? `; token windows read from ${r.tokenCache.file}`
            : `; token windows kept in ${r.tokenCache.file}`;
        console.log(
          `harvested ${fmtCount(r.manifest.tokens)} tokens (${r.manifest.shards.length} shards, ${r.reusedShards} reused) of ${sitesTxt} in ${r.seconds.toFixed(1)}s (${fmtCount(r.tokensPerSecond)} tok/s)${windows} -> ${r.out}`,
        );
      },
    )
    .command(
      'merge <parts..>',
      'Join the parts of a partitioned harvest (sdl harvest --part i/n) into one harvest folder',
      (a) =>
        a
          .positional('parts', { type: 'string', array: true, demandOption: true, describe: 'folders holding the parts (one folder may hold several)' })
          .option('out', { type: 'string', demandOption: true, describe: 'the merged harvest folder (may be the folder the parts share)' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl merge cache/acts/big --out cache/acts/big', 'parts that wrote into one folder'),
      (argv) => {
        const r = mergeParts(argv.parts as string[], argv.out!);
        if (argv.json) return printJson({ out: r.out, parts: r.parts, shards: r.shards, tokens: r.manifest.tokens, linked: r.linked, copied: r.copied });
        console.log(`merged ${r.parts} parts: ${r.shards} shards, ${fmtCount(r.manifest.tokens)} tokens, checksums verified -> ${r.out}`);
      },
    );
}
