// Harvest throughput against a bare onnxruntime-node forward pass of the same graph cut to the hooked layers, same batch and context.
// Usage: node dist/bench/harvest.js [--model <folder> | --gpt2-small] [--tokens 131072] [--repeats 3] [--layer 6] [--sites resid_post,mlp_in,mlp_out]
// --gpt2-small: a random llama2.c model of GPT-2-small's shape (bench/gpt2-sized.ts) instead of the small models.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { harvest } from '../src/activations/harvest.js';
import { loadModel } from '../src/models/model.js';
import { importLlama2c } from '../src/models/import-llama2c.js';
import { createSession, hookSubgraph, makeFeeds, runtimeInputs } from '../src/onnx/session.js';
import { resolveHookSpecs } from '../src/activations/harvest.js';
import { Rng } from '../src/util/rng.js';
import { median, spread } from './stats.js';
import { gpt2SmallSized } from './gpt2-sized.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

/**
 * The least work any harvester must do: onnxruntime on the graph cut to the layers the hooks need (the same cut the
 * harvest runs, `hookSubgraph`), fetching the hook tensors, no tokenizer and no writing. `hooks` empty: the whole model.
 */
async function bareForward(modelDir: string, tokens: number, ctx: number, batch: number, hooks: string[] = []): Promise<number> {
  const m = loadModel(modelDir);
  const points = resolveHookSpecs(m, hooks);
  const s = await createSession(hooks.length ? hookSubgraph(m.bytes, m.proto, points) : m.bytes);
  const inputs = runtimeInputs(m.proto);
  const rng = new Rng(1);
  const n = Math.ceil(tokens / (ctx * batch));
  const ids = Int32Array.from({ length: ctx * batch }, () => rng.int(Math.min(m.vocabSize, m.tokenizer.vocabSize)));
  await s.run(makeFeeds(inputs, ids, batch, ctx)); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await s.run(makeFeeds(inputs, ids, batch, ctx));
  const secs = (performance.now() - t0) / 1000;
  await s.release();
  return (n * ctx * batch) / secs;
}

async function main() {
  const tokens = Number(arg('tokens', '131072'));
  const repeats = Number(arg('repeats', '3'));
  const ctx = Number(arg('ctx', '128'));
  const batch = Number(arg('batch', '16'));
  const layerArg = arg('layer', '');
  const sites = arg('sites', 'resid_post,mlp_in,mlp_out').split(',');
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
  for (const [label, dir] of models) {
    const bare: number[] = [],
      harv: number[] = [],
      ratios: number[] = [];
    for (let r = 0; r < repeats; r++) {
      // Bare, harvest, bare: each harvest is compared with the bare passes right around it, so the machine's
      // drifting speed (this shared VM's bare pass ranges over +-30% within minutes) cancels in the ratio.
      // A middle layer unless --layer says otherwise: 3 of stories260K's 5, 6 of sdl-tiny's 8 (as `sdl harvest --layer 6`).
      const nl = loadModel(dir).hooks.nLayers;
      const layer = layerArg ? Number(layerArg) : nl > 6 ? 6 : Math.floor(nl / 2) + 1;
      const hooks = sites.map((site) => `blocks.${layer}.hook_${site}`);
      const before = await bareForward(dir, tokens, ctx, batch, hooks);
      const out = mkdtempSync(join(tmpdir(), 'bench-h-'));
      const res = await harvest({
        model: dir,
        hooks,
        corpus: 'builtin',
        split: 'all',
        tokens,
        ctx,
        batch,
        dtype: 'f32',
        seed: r,
        shardTokens: 65536,
        out,
        quiet: true,
      });
      harv.push(res.tokensPerSecond);
      rmSync(out, { recursive: true, force: true });
      const after = await bareForward(dir, tokens, ctx, batch, hooks);
      bare.push(before, after);
      ratios.push(res.tokensPerSecond / ((before + after) / 2));
    }
    const b = median(bare),
      h = median(harv);
    const rr = median(ratios);
    rows.push(
      `| ${label} | ${ctx} | ${batch} | ${Math.round(b)} (${spread(bare)}) | ${Math.round(h)} (${spread(harv)}) | ${(h / b).toFixed(2)}x | ${rr.toFixed(2)}x (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}) |`,
    );
  }
  console.log(
    `harvest vs a bare onnxruntime forward of the same graph cut to the hooked layers (fetching the hooks), ${tokens} tokens, ${repeats} repeats of bare-harvest-bare; medians (min-max), tokens/s`,
  );
  console.log(
    `| model | ctx | batch | bare pruned forward | sdl harvest (${sites.join(', ')}; tokenize + write) | ratio of medians | median of paired ratios |`,
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
