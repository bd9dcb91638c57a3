// Harvest throughput against a bare onnxruntime-node forward pass of the same graph cut to the hooked layers, same batch and context.
// Usage: node dist/bench/harvest.js [--model <folder> | --gpt2-small] [--tokens 131072] [--repeats 3] [--layer 6] [--sites resid_post,mlp_in,mlp_out] [--dtype f32|f16] [--format arrow|parquet] [--shard-tokens 65536] [--token-cache cold|warm]
// --token-cache warm: each harvest reads its windows from the token cache, filled before the bare pass ahead of it
// (as an earlier harvest of the same text and tokenizer leaves it; src/corpus/window-cache.ts); cold (default): each
// harvest tokenizes its corpus.
// --gpt2-small: a random llama2.c model of GPT-2-small's shape (bench/gpt2-sized.ts) instead of the small models.
// --bare harvest: time the bare pass in the harvest's own layout only (default both: the faster of the two is the
// reference); at GPT-2-small width and 1M tokens each pass takes ~7 minutes, and the layout the harvest does not pick
// was measured slower there (src/onnx/forward.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { fillTokenCache, harvest, type HarvestConfig } from '../src/activations/harvest.js';
import { loadModel } from '../src/models/model.js';
import { importLlama2c } from '../src/models/import-llama2c.js';
import { hookSubgraph, runtimeInputs } from '../src/onnx/session.js';
import { autoWorkers, createForward } from '../src/onnx/forward.js';
import { availableParallelism } from 'node:os';
import { resolveHookSpecs } from '../src/activations/harvest.js';
import { Rng } from '../src/util/rng.js';
import { median, spread } from './stats.js';
import { UserError } from '../src/util/errors.js';
import { gpt2SmallSized } from './gpt2-sized.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

/** A bare pass's two rates: from the graph cut on, as the harvest's own clock counts; and warmed up. */
interface BareRate {
  /** Tokens over the time from cutting the graph to the last batch: the session's making and first batches included. */
  whole: number;
  /** Tokens after the first `depth` batches over the time after them: the steady rate, set-up excluded. */
  steady: number;
  /** CPU seconds of the whole process (every thread) per million tokens, the model's loading included. */
  cpu: number;
}

/** CPU seconds of every thread of this process (getrusage: the forward's workers, the harvest's threads, V8's). */
const cpuSeconds = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/**
 * The least work any harvester must do: onnxruntime on the graph cut to the layers the hooks need (the same cut the
 * harvest runs, `hookSubgraph`), fetching the hook tensors, no tokenizer and no writing. `hooks` empty: the whole model.
 * `workers`: the forward's layout (src/onnx/forward.ts: 0 one session threaded inside operators, n sessions on
 * worker threads), with as many batches in flight as the harvest keeps. The clock starts where the harvest's does
 * (before the graph is cut and the sessions made; the model file already read), so the two count the same set-up.
 */
async function bareForward(modelDir: string, tokens: number, ctx: number, batch: number, hooks: string[], workers: number): Promise<BareRate> {
  const cpu0 = cpuSeconds();
  const m = loadModel(modelDir);
  const points = resolveHookSpecs(m, hooks);
  const rng = new Rng(1);
  const ids = Int32Array.from({ length: ctx * batch }, () => rng.int(Math.min(m.vocabSize, m.tokenizer.vocabSize)));
  const t0 = performance.now();
  const bytes = hooks.length ? hookSubgraph(m.bytes, m.proto, points) : m.bytes;
  const fetches = hooks.length ? [...new Set(points.map((h) => h.tensor))] : m.proto.graph.outputs.map((o) => o.name);
  const f = await createForward(bytes, m.proto, runtimeInputs(m.proto), fetches, { threads: availableParallelism(), workers, modelName: m.name });
  const n = Math.max(Math.ceil(tokens / (ctx * batch)), 2 * f.depth);
  const inFlight: Promise<unknown>[] = [];
  let warm = 0;
  for (let i = 0; i < n; i++) {
    if (inFlight.length === f.depth) await inFlight.shift();
    if (i === f.depth) warm = performance.now(); // the first `depth` batches (every worker's first) are done
    inFlight.push(f.run(ids, batch, ctx));
  }
  await Promise.all(inFlight);
  const end = performance.now();
  await f.release();
  const cpu = ((cpuSeconds() - cpu0) * 1e6) / (n * ctx * batch);
  return { whole: (n * ctx * batch) / ((end - t0) / 1000), steady: ((n - f.depth) * ctx * batch) / ((end - warm) / 1000), cpu };
}

async function main() {
  const tokens = Number(arg('tokens', '131072'));
  const repeats = Number(arg('repeats', '3'));
  const ctx = Number(arg('ctx', '128'));
  const batch = Number(arg('batch', '16'));
  const layerArg = arg('layer', '');
  const sites = arg('sites', 'resid_post,mlp_in,mlp_out').split(',');
  const bareLayouts = arg('bare', 'both');
  const dtype = arg('dtype', 'f32');
  if (dtype !== 'f32' && dtype !== 'f16') throw new UserError(`--dtype ${dtype}: give f32 (default) or f16`);
  const shardTokens = Number(arg('shard-tokens', '65536'));
  const format = arg('format', 'arrow');
  if (format !== 'arrow' && format !== 'parquet') throw new UserError(`--format ${format}: give arrow (default) or parquet`);
  if (bareLayouts !== 'both' && bareLayouts !== 'harvest') throw new UserError(`--bare ${bareLayouts}: give both (default) or harvest`);
  const tokenCache = arg('token-cache', 'cold');
  if (tokenCache !== 'cold' && tokenCache !== 'warm') throw new UserError(`--token-cache ${tokenCache}: give cold (default) or warm`);
  // The warm cache's files in a folder of the bench's own, removed at the end.
  if (tokenCache === 'warm') process.env.SDL_CACHE = mkdtempSync(join(tmpdir(), 'bench-cache-'));
  const models: [string, string][] = [];
  const given = arg('model', '');
  if (given) models.push([given, given]);
  else if (process.argv.includes('--gpt2-small'))
    models.push(['GPT-2-small-sized (d 768, 12 layers, random)', gpt2SmallSized(mkdtempSync(join(tmpdir(), 'bench-g-')))]);
  else {
    const stories = join(process.cwd(), '../shared/models/stories260K');
    if (existsSync(stories)) {
      const dir = mkdtempSync(join(tmpdir(), 'bench-'));
      importLlama2c(join(stories, 'stories260K.bin'), join(stories, 'tok512.bin'), join(dir, 'stories260K'));
      models.push(['stories260K', join(dir, 'stories260K')]);
    }
    const bundled = join(process.cwd(), 'models/sdl-tiny');
    if (existsSync(join(bundled, 'config.json'))) models.push(['sdl-tiny (bundled)', bundled]);
  }
  const rows: string[] = [];
  const cores = availableParallelism();
  for (const [label, dir] of models) {
    const bareOne: BareRate[] = [],
      bareWorkers: BareRate[] = [],
      harv: number[] = [],
      bareCpu: number[] = [],
      harvCpu: number[] = [],
      extraCpu: number[] = [],
      ratios: number[] = [],
      steadyRatios: number[] = [];
    let layout = '';
    for (let r = 0; r < repeats; r++) {
      // Bare, harvest, bare: each harvest is compared with the bare passes right around it, so the machine's
      // drifting speed (this shared VM's bare pass ranges over +-30% within minutes) cancels in the ratio. The bare
      // pass runs both layouts (one session threaded inside operators; a session per core) and the ratio takes the
      // faster: the least work, whichever layout the harvest picked.
      // A middle layer unless --layer says otherwise: 3 of stories260K's 5, 6 of sdl-tiny's 8 (as `sdl harvest --layer 6`).
      const model = loadModel(dir);
      const nl = model.hooks.nLayers;
      const layer = layerArg ? Number(layerArg) : nl > 6 ? 6 : Math.floor(nl / 2) + 1;
      const hooks = sites.map((site) => `blocks.${layer}.hook_${site}`);
      const w = autoWorkers(model.proto, cores);
      layout = w ? `${w} workers x 1 thread` : `1 session x ${cores} threads`;
      const bare = async (): Promise<BareRate> => {
        const runs: BareRate[] = [];
        if (bareLayouts === 'both' || !w) runs.push(await bareForward(dir, tokens, ctx, batch, hooks, 0));
        if (bareLayouts === 'both' || w) runs.push(await bareForward(dir, tokens, ctx, batch, hooks, cores));
        if (bareLayouts === 'both' || !w) bareOne.push(runs[0]);
        if (bareLayouts === 'both' || w) bareWorkers.push(runs[runs.length - 1]);
        // The CPU of the harvest's own layout: the pass whose work the harvest repeats.
        const own = w ? runs[runs.length - 1] : runs[0];
        return { whole: Math.max(...runs.map((x) => x.whole)), steady: Math.max(...runs.map((x) => x.steady)), cpu: own.cpu };
      };
      const out = mkdtempSync(join(tmpdir(), 'bench-h-'));
      const cfg: HarvestConfig = {
        model: dir,
        hooks,
        corpus: 'builtin',
        split: 'all',
        tokens,
        ctx,
        batch,
        dtype,
        format,
        seed: r,
        shardTokens,
        out,
        quiet: true,
        tokenCache: tokenCache === 'warm',
      };
      if (tokenCache === 'warm') fillTokenCache(cfg);
      const before = await bare();
      const cpu0 = cpuSeconds();
      const res = await harvest(cfg);
      harv.push(res.tokensPerSecond);
      const cpu = ((cpuSeconds() - cpu0) * 1e6) / res.manifest.tokens;
      harvCpu.push(cpu);
      rmSync(out, { recursive: true, force: true });
      const after = await bare();
      bareCpu.push(before.cpu, after.cpu);
      extraCpu.push(cpu - (before.cpu + after.cpu) / 2);
      ratios.push(res.tokensPerSecond / ((before.whole + after.whole) / 2));
      steadyRatios.push(res.tokensPerSecond / ((before.steady + after.steady) / 2));
    }
    const rate = (xs: BareRate[], k: keyof BareRate) => {
      if (!xs.length) return 'not run';
      const v = xs.map((x) => x[k]);
      return `${Math.round(median(v))} (${spread(v)})`;
    };
    // CPU seconds per million tokens, every thread: each harvest's over the mean of its own layout's bare passes around it.
    const cpuFigure = (xs: number[]) => `${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
    const paired = (xs: number[]) => `${median(xs).toFixed(2)}x (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
    rows.push(
      `| ${label} | ${ctx} | ${batch} | ${rate(bareOne, 'whole')}; ${rate(bareOne, 'steady')} | ${rate(bareWorkers, 'whole')}; ${rate(bareWorkers, 'steady')} | ${Math.round(median(harv))} (${spread(harv)}; ${layout}) | ${paired(ratios)} | ${paired(steadyRatios)} | ${cpuFigure(bareCpu)}; ${cpuFigure(harvCpu)}; ${cpuFigure(extraCpu)} |`,
    );
  }
  console.log(
    `harvest vs a bare onnxruntime forward of the same graph cut to the hooked layers (fetching the hooks), ${tokens} tokens, ${repeats} repeats of bare-harvest-bare; medians (min-max), tokens/s. Bare rates: from the graph cut on, as the harvest's clock counts (sessions made, first batches); then warmed up (set-up excluded). Ratios: each harvest over the faster bare layout's mean of the passes around it. CPU: seconds of every thread per million tokens (the model's loading included): the bare pass in the harvest's layout, the harvest, and the harvest's extra over the bare passes around it (on cores the forward keeps busy, that extra is what the harvest's other threads take from it)`,
  );
  console.log(
    `| model | ctx | batch | bare, 1 session x ${cores} threads: from the cut; warm | bare, ${cores} workers x 1 thread: from the cut; warm | sdl harvest (${sites.join(', ')}; ${dtype} ${format} shards; ${tokenCache === 'warm' ? 'windows from the token cache' : 'tokenize'} + write; layout) | harvest / bare from the cut, paired | harvest / bare warm, paired | CPU s per 1M tokens: bare; harvest; harvest's extra, paired |`,
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
  if (tokenCache === 'warm') rmSync(process.env.SDL_CACHE!, { recursive: true, force: true });
}

main().catch((e) => {
  // A bad option is one line and exit 2; anything else keeps its stack.
  if (e instanceof UserError) {
    console.error(`bench:harvest: ${e.message}`);
    process.exit(2);
  }
  console.error(e);
  process.exit(1);
});
