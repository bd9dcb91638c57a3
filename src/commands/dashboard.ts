// `sdl dashboard` (a static folder) and `sdl serve` (the same pages over HTTP, with live text and steering).
import type { Argv } from 'yargs';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dictionary } from '../sdl/dictionary.js';
import { buildIndex, INDEX_DEFAULTS, INDEX_FILE } from '../index/build.js';
import { writeDashboard } from '../dashboard/write.js';
import { serveDashboard } from '../dashboard/serve.js';
import { trainingActs } from './index-cmds.js';
import { checkOptions } from '../util/check.js';
import { UserError } from '../util/errors.js';
import { defaultModel, printJson } from './common.js';
import { cacheDir } from '../util/files.js';

/** Dictionaries without a feature index get one first, and the user is told. */
async function ensureIndexes(dicts: string[], quiet: boolean): Promise<void> {
  for (const dir of dicts) {
    if (existsSync(join(dir, INDEX_FILE))) continue;
    const dict = Dictionary.load(dir); // a folder that is no dictionary is refused before the note
    process.stderr.write(`note: ${dir} has no feature index; building it now (sdl index ${dir})\n`);
    await buildIndex(dir, dict, trainingActs(dir), { ...INDEX_DEFAULTS, quiet, onNote: (n) => process.stderr.write(`note: ${n}\n`) });
  }
}

export function register(y: Argv): Argv {
  return y
    .command(
      'dashboard <dictionaries..>',
      'Write a feature dashboard (HTML, opens from file:// with no network) for one or more dictionaries',
      (a) =>
        a
          .positional('dictionaries', { type: 'string', array: true, demandOption: true })
          .option('out', { type: 'string', describe: 'folder (default: <dictionary>/dashboard, or cache/dashboard for several)' })
          .option('json', { type: 'boolean', default: false })
          .example('sdl dashboard cache/dicts/pipeline-sae-L6', 'then open cache/dicts/pipeline-sae-L6/dashboard/index.html')
          .example(
            'sdl dashboard cache/dicts/pipeline-sae-L6 cache/dicts/pipeline-transcoder-L6 --out cache/dashboard',
            'two dictionaries, with a comparison page',
          ),
      async (argv) => {
        const dicts = argv.dictionaries as string[];
        await ensureIndexes(dicts, argv.json);
        const out = argv.out ?? (dicts.length === 1 ? join(dicts[0], 'dashboard') : join(cacheDir(), 'dashboard'));
        const r = writeDashboard(dicts, out, { quiet: argv.json });
        if (argv.json) return printJson(r);
        console.log(
          `wrote ${r.out}: ${r.dictionaries} dictionar${r.dictionaries === 1 ? 'y' : 'ies'}, ${r.features} features, ${r.files} files, ${(r.bytes / 1e6).toFixed(1)} MB in ${r.seconds.toFixed(1)} s; open ${join(r.out, 'index.html')}`,
        );
      },
    )
    .command(
      'serve <dictionaries..>',
      'Serve the feature dashboard on a local port, with live "test this text" and steering',
      (a) =>
        a
          .positional('dictionaries', { type: 'string', array: true, demandOption: true })
          .option('port', { type: 'number', default: 8787 })
          .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to listen on (127.0.0.1: this machine only)' })
          .option('model', { type: 'string', describe: 'default model for dictionaries that record none' })
          .example('sdl serve cache/dicts/pipeline-sae-L6', 'then open http://127.0.0.1:8787/')
          .example('sdl serve cache/dicts/pipeline-sae-L6 --port 0', 'any free port'),
      async (argv) => {
        checkOptions(argv, { port: 'int>=0' });
        if (argv.port > 65535) throw new UserError(`--port must be at most 65535 (got ${argv.port})`);
        const dicts = argv.dictionaries as string[];
        await ensureIndexes(dicts, false);
        const root = mkdtempSync(join(tmpdir(), 'sdl-serve-'));
        const cleanup = () => rmSync(root, { recursive: true, force: true });
        process.once('exit', cleanup);
        writeDashboard(dicts, join(root, 'site'), { quiet: true });
        const { url } = await serveDashboard({
          root: join(root, 'site'),
          dicts,
          port: argv.port,
          host: argv.host,
          defaultModel: () => argv.model ?? defaultModel(),
        });
        for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(0));
        console.log(`serving ${dicts.length} dictionar${dicts.length === 1 ? 'y' : 'ies'} at ${url} (Ctrl-C stops)`);
      },
    );
}
