// `sdl run`, `sdl steer`, `sdl ablate`: reading features token by token and intervening on them inside the
// model, all through one intervened graph (intervene/intervener.ts).
import type { Argv } from 'yargs';
import { readFileSync, existsSync, statSync } from 'node:fs';
import { Dictionary } from '../sdl/dictionary.js';
import { bindModel } from '../intervene/bind.js';
import { Intervener, type Intervention } from '../intervene/intervener.js';
import { readout, ablate, steer, textWindows } from '../intervene/actions.js';
import { evalWindows } from '../eval/splice-eval.js';
import { defaultModel, printJson } from './common.js';
import { UserError } from '../util/errors.js';

/** "12:4,88:-2" or "123" (with --scale) into feature -> value. */
export function parseFeatureValues(spec: string | number, scale: string | number | undefined, what: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const part of String(spec)
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [f, v] = part.split(':');
    if (!/^\d+$/.test(f)) throw new UserError(`cannot read feature '${f}' in '${spec}'; write --feature 123 or --feature 12:4,88:-2`);
    const raw = v ?? scale;
    if (raw === undefined) throw new UserError(`feature ${f} has no ${what}; pass --scale or write ${f}:VALUE`);
    const n = Number(raw);
    if (String(raw).trim() === '' || !Number.isFinite(n)) throw new UserError(`the ${what} of feature ${f} must be a number (got '${raw}')`);
    out.set(Number(f), n);
  }
  if (!out.size) throw new UserError('name at least one feature (--feature 123)');
  return out;
}

function readText(text: string | undefined, file: string | undefined): string {
  if (file !== undefined) {
    if (!existsSync(file)) throw new UserError(`text file ${file} not found`);
    if (statSync(file).isDirectory()) throw new UserError(`text file ${file} is a folder; pass a text file`);
    text = readFileSync(file, 'utf8');
  }
  if (text === undefined || !text.trim()) throw new UserError('the text is empty; give it as an argument or with --file');
  return text;
}

async function open(dictDir: string, model: string | undefined): Promise<Intervener> {
  const d = Dictionary.load(dictDir);
  return Intervener.create(await bindModel(d, { spec: model, dictDir, fallback: defaultModel }), d);
}

const show = (s: string) => JSON.stringify(s);

export function register(y: Argv): Argv {
  return y
    .command(
      'run <dictionary> [text]',
      'Run text through the model: per token its top features, the reconstruction error and the next-token prediction',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .positional('text', { type: 'string' })
          .option('file', { type: 'string', describe: 'read the text from a file' })
          .option('feature', { type: 'number', describe: "show this one feature's activation on every token" })
          .option('top', { type: 'number', default: 5, describe: 'features per token' })
          .option('model', { type: 'string', describe: 'the model (default: the one the dictionary was trained on)' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl run cache/dicts/pipeline-sae-L6 "The whale swam under the ship."', '')
          .example('sdl run cache/dicts/pipeline-sae-L6 --feature 7 "again and against"', ''),
      async (argv) => {
        if (!Number.isInteger(argv.top) || argv.top < 1) throw new UserError(`--top must be a positive integer (got ${argv.top})`);
        const text = readText(argv.text, argv.file);
        const iv = await open(argv.dictionary!, argv.model);
        const { windows, note } = textWindows(iv.model, text);
        if (note) process.stderr.write(`sdl: ${note}\n`);
        const rows = await readout(iv, windows, { top: argv.top, feature: argv.feature });
        await iv.release();
        if (argv.json) return printJson(rows);
        for (const r of rows) {
          const feats =
            argv.feature !== undefined
              ? `f${argv.feature} ${r.features[0]?.act.toFixed(3) ?? '0'}`
              : r.features.map((f) => `${f.feature}:${f.act.toFixed(2)}`).join(' ');
          console.log(
            `${String(r.position).padStart(4)} ${show(r.token).padEnd(14)} err ${r.error.toFixed(3)}  next ${show(r.next.token).padEnd(12)} ${(100 * r.next.prob).toFixed(0).padStart(3)}%  ${feats}`,
          );
        }
      },
    )
    .command(
      'steer <dictionary> <prompt>',
      "Generate with features added or clamped at the dictionary's site, beside the unsteered text",
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .positional('prompt', { type: 'string', demandOption: true })
          .option('feature', { type: 'string', demandOption: true, describe: 'feature id (with --scale), or id:value pairs: 12:4,88:-2' })
          .option('scale', { type: 'string', describe: 'add: multiple of the unit decoder direction; clamp: the activation' })
          .option('mode', { choices: ['add', 'clamp'] as const, default: 'add' as const })
          .option('tokens', { type: 'number', default: 40, describe: 'tokens to generate' })
          .option('temperature', { type: 'number', default: 0 })
          .option('seed', { type: 'number', default: 1 })
          .option('model', { type: 'string', describe: 'the model (default: the one the dictionary was trained on)' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl steer cache/dicts/pipeline-sae-L6 --feature 7 --scale 8 "The ship"', '')
          .example('sdl steer cache/dicts/pipeline-sae-L6 --feature 7:4,12:-2 --mode clamp --temperature 0.8 "The ship"', ''),
      async (argv) => {
        if (!Number.isInteger(argv.tokens) || argv.tokens < 1) throw new UserError(`--tokens must be a positive integer (got ${argv.tokens})`);
        if (!(argv.temperature >= 0)) throw new UserError(`--temperature must be 0 or more (got ${argv.temperature})`);
        if (!Number.isInteger(argv.seed)) throw new UserError(`--seed must be an integer (got ${argv.seed})`);
        const values = parseFeatureValues(argv.feature, argv.scale, argv.mode === 'add' ? 'scale' : 'clamp value');
        const iv = await open(argv.dictionary!, argv.model);
        const intervention: Intervention = argv.mode === 'add' ? { add: values } : { clamp: values };
        const r = await steer(iv, readText(argv.prompt, undefined), intervention, { tokens: argv.tokens, temperature: argv.temperature, seed: argv.seed });
        await iv.release();
        if (argv.json) return printJson(r);
        console.log(`prompt:    ${show(r.prompt)}`);
        console.log(`unsteered: ${show(r.unsteered)}`);
        console.log(`steered:   ${show(r.steered)}  (${argv.mode} ${[...values].map(([f, v]) => `${f}:${v}`).join(',')})`);
      },
    )
    .command(
      'ablate <dictionary> [text]',
      'Zero-ablate features (error term kept): change in loss, KL to the clean model, the predictions that moved most',
      (a) =>
        a
          .positional('dictionary', { type: 'string', demandOption: true })
          .positional('text', { type: 'string', describe: 'one prompt (default: held-out windows of --corpus)' })
          .option('features', { type: 'string', demandOption: true, describe: 'feature ids: 12,34' })
          .option('corpus', { type: 'string', default: 'builtin' })
          .option('windows', { type: 'number', default: 16, describe: 'corpus windows of --ctx tokens' })
          .option('ctx', { type: 'number', default: 128 })
          .option('top', { type: 'number', default: 10, describe: 'predictions that moved most' })
          .option('model', { type: 'string', describe: 'the model (default: the one the dictionary was trained on)' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl ablate cache/dicts/pipeline-sae-L6 --features 7,12', 'over 16 held-out windows')
          .example('sdl ablate cache/dicts/pipeline-sae-L6 --features 7 "again and against"', 'on one prompt'),
      async (argv) => {
        for (const [k, v] of [
          ['windows', argv.windows],
          ['ctx', argv.ctx],
          ['top', argv.top],
        ] as const) {
          if (!Number.isInteger(v) || v < 1) throw new UserError(`--${k} must be a positive integer (got ${v})`);
        }
        if (argv.ctx < 2) throw new UserError('--ctx must be at least 2');
        const features = [...parseFeatureValues(argv.features, 0, 'value').keys()];
        const iv = await open(argv.dictionary!, argv.model);
        const { windows, ctx } =
          argv.text !== undefined
            ? textWindows(iv.model, readText(argv.text, undefined))
            : { windows: evalWindows(iv.model, argv.windows, argv.ctx, argv.corpus), ctx: argv.ctx };
        const r = await ablate(iv, windows, ctx, features, argv.top);
        await iv.release();
        if (argv.json) return printJson(r);
        console.log(`ablating ${features.join(', ')} over ${r.predictions} predictions (fired on ${r.firing_tokens} tokens):`);
        console.log(
          `  CE clean ${r.ce_clean.toFixed(4)}, ablated ${r.ce_ablated.toFixed(4)} nats: delta ${r.delta_ce >= 0 ? '+' : ''}${r.delta_ce.toFixed(4)}, KL ${r.kl.toFixed(5)}`,
        );
        if (r.moved.length) console.log('  predictions that moved most (p of the actual next token, clean -> ablated):');
        for (const m of r.moved) console.log(`    ${m.p_clean.toFixed(3)} -> ${m.p_ablated.toFixed(3)}  ${show(m.context)} -> ${show(m.next)}`);
      },
    );
}
