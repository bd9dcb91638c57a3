// Harvest: run a model over text and write hook activations to Arrow shards, resumably.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { loadModel, rawTensorHook, tokenizerIdentity, type LoadedModel } from '../models/model.js';
import { canonical, describeAvailable, parseCanonical, SITES, type HookPoint } from '../onnx/hooks.js';
import { checkStaticShape, hookSubgraph, runtimeInputs } from '../onnx/session.js';
import { createForward, type Fetched, type Into } from '../onnx/forward.js';
import { f16ToF32 } from '../util/f16.js';
import { describeCorpus, type Split } from '../corpus/sources.js';
import { windowChunks, type WindowPlan } from '../corpus/window-chunks.js';
import { UserError } from '../util/errors.js';
import { checkNumber } from '../util/check.js';
import { checkOutput, lockFolder, removeStaleTemps, writeAtomic } from '../util/fsx.js';
import { Progress, fmtCount } from '../util/progress.js';
import { apacheArrow } from './arrow.js';
import { SHARD_FORMATS, arrowBodyOffset, shardFile, type ShardBuffer, type Dtype, type ShardFormat } from './shard.js';
import { ShardWriter, type Written } from './shard-writer.js';
import {
  checkPart,
  identityHash,
  newManifest,
  manifestName,
  readManifest,
  shardFileMatches,
  writeManifest,
  type HarvestIdentity,
  type HarvestPart,
  type Manifest,
  type SiteInfo,
} from './manifest.js';
import { LATEST_HARVEST_FILE, cacheDir } from '../util/files.js';
import { copyCountingNonFinite, countNonFinite, firstNonFinite } from '../util/finite.js';

export interface HarvestConfig {
  /** Model folder or .onnx file. */
  model: string;
  tokenizer?: string;
  /** Canonical hook names or raw tensor names. */
  hooks: string[];
  /** builtin | sotu | moby-dick | path to .txt/.jsonl */
  corpus: string;
  split: Split;
  tokens: number;
  ctx: number;
  batch: number;
  dtype: Dtype;
  seed: number;
  /** Rows per shard (rounded down to whole windows). */
  shardTokens: number;
  /** Output folder (default: cache/acts/<model>-<hooks>-<identity hash>). */
  out?: string;
  /** Replace token ids the model cannot embed with this id (default: refuse them). */
  oovId?: number;
  /** Cores for the forward passes (default: all). */
  threads?: number;
  /** Sessions on worker threads, each with threads / workers intra-op threads; 0: one session in this thread; 'auto' (default): one per core for narrow models (src/onnx/forward.ts). */
  workers?: number | 'auto';
  /** Overwrite an output folder that holds a different harvest. */
  force?: boolean;
  quiet?: boolean;
  /** Shard file format (default arrow). */
  format?: ShardFormat;
  /** Harvest only part `index` (0-based) of `count`: the shards k with k mod count = index (`sdl merge` joins them). */
  part?: HarvestPart;
  /** Read the token windows from the cache folder's windows/ when a harvest of this text and tokenizer left them there, and leave them there (default true). */
  tokenCache?: boolean;
}

/** A short folder-name summary of the hooks: L6-resid_post+mlp_in+mlp_out. */
function hookSummary(hooks: HookPoint[]): string {
  const layers = [...new Set(hooks.filter((h) => h.layer >= 0).map((h) => h.layer))];
  const sites = [...new Set(hooks.filter((h) => h.layer >= 0).map((h) => h.site))];
  const raw = hooks.filter((h) => h.layer < 0).length;
  return [layers.length ? `L${layers.join('_')}` : '', sites.join('+'), raw ? `${raw}raw` : ''].filter(Boolean).join('-');
}

export const HARVEST_DEFAULTS = { ctx: 128, batch: 16, dtype: 'f32' as Dtype, seed: 0, shardTokens: 65536, tokens: 262144 };

/** The sites a transcoder and an SAE of one layer need. */
export const DEFAULT_SITES = ['resid_post', 'mlp_in', 'mlp_out'] as const;

/** Turns layer/site flags into hook names (validated against the model later); 'all' layers become blocks.*.hook_<site>. */
export function hookSpecs(layers: number[] | 'all', sites: string[], tensors: string[]): string[] {
  for (const s of sites) if (!(SITES as readonly string[]).includes(s)) throw new UserError(`unknown site '${s}'; sites are ${SITES.join(', ')}`);
  const specs = layers === 'all' ? sites.map((s) => `blocks.*.hook_${s}`) : layers.flatMap((l) => sites.map((s) => canonical(l, s)));
  return [...specs, ...tensors];
}

export function resolveHookSpecs(model: LoadedModel, specs: string[]): HookPoint[] {
  const out: HookPoint[] = [];
  const layers = model.hooks.nLayers;
  // Every layer of the model, in layer order then site order (as --layers 0-(L-1) would give).
  const all = specs.filter((s) => s.startsWith('blocks.*.'));
  const expanded = [
    ...Array.from({ length: all.length ? layers : 0 }, (_, l) => all.map((s) => s.replace('blocks.*.', `blocks.${l}.`))).flat(),
    ...specs.filter((s) => !s.startsWith('blocks.*.')),
  ];
  for (const spec of expanded) {
    const c = parseCanonical(spec);
    if (c) {
      if (c.layer >= layers) throw new UserError(`layer ${c.layer} does not exist: ${model.name} has ${layers} layers (0-${layers - 1})`);
      const p = model.hooks.points.get(spec);
      if (p) {
        out.push(p);
        continue;
      }
      const why = model.hooks.missing.get(spec);
      throw new UserError(
        `${spec} does not exist as a tensor in ${model.name}${why ? `: ${why}` : ''}; hooks that exist for layer ${c.layer}: ${describeAvailable(model.hooks, c.layer)}`,
      );
    }
    if (/^blocks\./.test(spec)) throw new UserError(`'${spec}' is not a hook name; use blocks.L.hook_{${SITES.join('|')}} or a raw tensor name`);
    const raw = rawTensorHook(model, spec);
    if (!raw) throw new UserError(`tensor '${spec}' is not in ${model.name}; 'sdl inspect ${model.onnxPath}' lists its hooks and tensors`);
    out.push(raw);
  }
  if (!out.length) throw new UserError('no hooks to harvest; pass --layer/--layers with --sites, or --tensor');
  return out;
}

export interface HarvestResult {
  out: string;
  manifest: Manifest;
  reusedShards: number;
  newShards: number;
  seconds: number;
  tokensPerSecond: number;
  /** Where the token windows came from: the token cache file read, or the one written as they were tokenized (none: --no-token-cache). */
  tokenCache?: { file: string; hit: boolean };
}

/** The most threads (and worker sessions) a harvest starts. */
const MAX_THREADS = 256;

/**
 * A model's NaN or infinite hook values are refused as each batch lands (counted as they are placed in the shard):
 * stored, every dictionary fit on them would fail or be wrong, and harvesting again would give them again.
 */
function refuseNonFinite(hook: string, shard: number, row: number): never {
  throw new UserError(
    `the model gave NaN or Inf for ${hook} (shard ${shard}, row ${row}); check the model (one that computes in float16 overflows past 65504: export it in float32)`,
  );
}

/** Where a harvest keeps its token windows (undefined: cfg.tokenCache false); a damaged cache file is one line on stderr. */
function tokenCacheOf(cfg: HarvestConfig, tokenizer: HarvestIdentity['tokenizer']): WindowPlan['cache'] {
  if (cfg.tokenCache === false) return undefined;
  return { dir: join(cacheDir(), 'windows'), tokenizer, warn: (line) => cfg.quiet || process.stderr.write(`${line}\n`) };
}

/** A harvest's windows: per shard (rows per shard rounded down to whole windows), and in all. */
function windowCounts(cfg: HarvestConfig): { windowsPerShard: number; nWindows: number } {
  return { windowsPerShard: Math.max(1, Math.floor(cfg.shardTokens / cfg.ctx)), nWindows: Math.ceil(cfg.tokens / cfg.ctx) };
}

/** The harvest's windows in chunks of its shards (skipped shards' windows made and passed over), through the token cache unless cfg.tokenCache is false. */
function harvestWindows(cfg: HarvestConfig, model: LoadedModel, cache: WindowPlan['cache'], skip: number[]) {
  return windowChunks(
    {
      corpus: cfg.corpus,
      split: cfg.split,
      seed: cfg.seed,
      ctx: cfg.ctx,
      batch: cfg.batch,
      modelVocab: model.vocabSize,
      modelName: model.name,
      oovId: cfg.oovId,
      ...windowCounts(cfg),
      skip,
      cache,
    },
    model.tokenizer,
  );
}

/**
 * Makes the token windows a harvest of `cfg` would read and leaves them in the token cache, running no model: what
 * an earlier harvest of the same text and tokenizer leaves there (bench:harvest times harvests from a warm cache so).
 */
export function fillTokenCache(cfg: HarvestConfig): void {
  const model = loadModel(cfg.model, { tokenizer: cfg.tokenizer });
  const windows = harvestWindows(cfg, model, tokenCacheOf(cfg, tokenizerIdentity(model)), []);
  while (!windows.next().done);
}

export async function harvest(cfg: HarvestConfig): Promise<HarvestResult> {
  checkNumber(cfg.ctx, 'int>=2', '--ctx');
  checkNumber(cfg.batch, 'int>0', '--batch');
  checkNumber(cfg.tokens, 'int>0', '--tokens');
  checkNumber(cfg.seed, 'int>=0', '--seed');
  checkNumber(cfg.shardTokens, 'int>0', '--shard-tokens');
  checkNumber(cfg.oovId, 'int>=0', '--oov-id');
  checkNumber(cfg.threads, 'int>0', '--threads');
  if (cfg.workers !== 'auto') checkNumber(cfg.workers, 'int>=0', '--workers');
  // Each thread and worker is a real one (a worker holds a session and a copy of the weights): a count far past the
  // cores is a typo, refused before the model is read rather than failing on the thousandth thread.
  for (const [v, option] of [
    [cfg.threads, '--threads'],
    [cfg.workers === 'auto' ? undefined : cfg.workers, '--workers'],
  ] as const)
    if (v !== undefined && v > MAX_THREADS)
      throw new UserError(`${option} ${v} is more than sdlkit runs (at most ${MAX_THREADS}; this machine has ${availableParallelism()} cores)`);
  if (cfg.shardTokens < cfg.ctx) throw new UserError(`--shard-tokens ${cfg.shardTokens} is less than one window of --ctx ${cfg.ctx} tokens`);
  describeCorpus(cfg.corpus); // fails early on a missing, empty or binary corpus
  const model = loadModel(cfg.model, { tokenizer: cfg.tokenizer });
  if (cfg.oovId !== undefined && cfg.oovId >= model.vocabSize)
    throw new UserError(`--oov-id ${cfg.oovId} is not a token of ${model.name}: its vocabulary has ids 0-${model.vocabSize - 1}`);
  if (cfg.ctx > model.contextLength) throw new UserError(`--ctx ${cfg.ctx} exceeds ${model.name}'s context length ${model.contextLength}`);
  checkStaticShape(model, cfg.batch, cfg.ctx);
  const hooks = resolveHookSpecs(model, cfg.hooks);
  const { windowsPerShard, nWindows } = windowCounts(cfg);
  const nShards = Math.ceil(nWindows / windowsPerShard);

  const format = cfg.format ?? 'arrow';
  if (!SHARD_FORMATS.includes(format)) throw new UserError(`--format ${format}: choose ${SHARD_FORMATS.join(' or ')}`);
  const identity: HarvestIdentity = {
    model: { name: model.name, sha256: model.sha256 },
    tokenizer: tokenizerIdentity(model),
    corpus: { source: cfg.corpus, split: cfg.split },
    hooks: hooks.map((h) => h.name),
    ctx: cfg.ctx,
    batch: cfg.batch,
    dtype: cfg.dtype,
    seed: cfg.seed,
    tokens: cfg.tokens,
    shard_tokens: windowsPerShard * cfg.ctx,
    oov_id: cfg.oovId ?? null,
    // Part of the identity only when not the default, so Arrow harvests keep their identity.
    ...(format === 'parquet' ? { format } : {}),
  };
  // The job (what every part shares, and what the shards' bytes record) and this run's identity (the job plus its part).
  const jobHash = identityHash(identity);
  const part = cfg.part;
  if (part) {
    checkPart(part);
    if (part.index >= nShards)
      throw new UserError(
        `part ${part.index}/${part.count} has no shards: the job has ${nShards} shard${nShards === 1 ? '' : 's'}; use at most ${nShards} parts`,
      );
    identity.part = part;
  }
  const idHash = part ? identityHash(identity) : jobHash;
  const out = cfg.out ?? join(cacheDir(), 'acts', `${model.name}-${hookSummary(hooks)}-${jobHash.slice(0, 8)}`);
  const manifestFile = manifestName(part);

  checkOutput(out, 'dir');
  // The output folder: empty, or this same harvest (resume), or a different one (refuse unless --force).
  // Parts share a folder: each has its own manifest and shard numbers, and never touches another's.
  let manifest = readManifest(out, manifestFile);
  if (manifest && manifest.identity_sha256 !== idHash) {
    if (!cfg.force)
      throw new UserError(
        `${out} holds a different harvest (${manifest.identity.model.name}, ${manifest.identity.hooks.join(',')}, ${manifest.identity.tokens} tokens); pass another --out, or --force to replace it`,
      );
    if (part) rmSync(join(out, manifestFile), { force: true });
    else rmSync(out, { recursive: true, force: true });
    manifest = undefined;
  } else if (!part && !manifest && existsSync(out) && readdirSync(out).some((f) => /^shard-\d+\.(arrow|parquet)$/.test(f))) {
    if (!cfg.force) throw new UserError(`${out} holds shards but no manifest; pass another --out, or --force to replace it`);
    rmSync(out, { recursive: true, force: true });
  }
  mkdirSync(out, { recursive: true });
  // One writer per folder (per part); temporary files of killed runs are never complete: remove them (not a live run's).
  const unlock = lockFolder(out, 'sdl harvest', part ? `.lock.part-${part.index}-of-${part.count}` : undefined);
  removeStaleTemps(out);
  try {
    // Finished shards are reused only if their bytes still match the recorded checksum.
    const good = new Map<number, Manifest['shards'][number]>();
    for (const s of manifest?.shards ?? []) {
      const p = join(out, s.file);
      const k = Number(/(\d+)/.exec(s.file)?.[1]);
      if (shardFileMatches(p, s)) good.set(k, s);
      else if (!cfg.quiet) process.stderr.write(`shard ${s.file} is missing or corrupt (checksum mismatch): redoing it\n`);
    }
    const m: Manifest =
      manifest ??
      newManifest(identity, {
        job_sha256: part ? jobHash : undefined,
        model_path: model.onnxPath,
        tokenizer_path: model.tokenizerPath as string,
        context_length: cfg.ctx,
        dtype: cfg.dtype,
        sites: [],
      });
    m.complete = false;
    // The manifest lands before any shard, so a run killed after its first shard still resumes as itself.
    writeManifest(out, m, manifestFile);
    // The shard encoder's library, loaded before the clock as an import at start-up would be (~0.25 s of CPU): a
    // harvest's rate is its forward and writes.
    apacheArrow();
    const t0 = performance.now();
    const elapsedBefore = m.elapsed_s;
    const ownShard = (k: number) => !part || k % part.count === part.index;
    const bytes = hookSubgraph(model.bytes, model.proto, hooks);
    const fetches = [...new Set(hooks.map((h) => h.tensor))];
    const threads = cfg.threads ?? availableParallelism();
    const forward = await createForward(bytes, model.proto, runtimeInputs(model.proto), fetches, {
      threads,
      workers: cfg.workers ?? 'auto',
      modelName: model.name,
    });

    let sites: SiteInfo[] | undefined = m.sites.length ? m.sites : undefined;
    /** The buffers of the shards being filled (this one, and the next once batches of it are in flight). */
    const buffers = new Map<number, ShardBuffer>();
    const shardRows = windowsPerShard * cfg.ctx;
    let totalRows = 0;
    for (let k = 0; k < nShards; k++) if (ownShard(k)) totalRows += Math.min(windowsPerShard, nWindows - k * windowsPerShard) * cfg.ctx;
    const doneRowsAtStart = [...good.values()].reduce((a, s) => a + s.rows, 0);
    const progress = new Progress('harvest', totalRows, 'tok', doneRowsAtStart, cfg.quiet);
    let doneRows = doneRowsAtStart;

    const writer = new ShardWriter();
    let released: Promise<void> | undefined;
    let inFlight: Promise<{ k: number; file: string; w: Written; oov: number }> | undefined;
    let newShards = 0;
    const recordWrite = async () => {
      if (!inFlight) return;
      const { k, file, w, oov: o } = await inFlight;
      inFlight = undefined;
      good.set(k, { file, rows: w.rows, crc32c: w.crc32c });
      newShards++;
      m.shards = [...good.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
      m.tokens = m.shards.reduce((a, s) => a + s.rows, 0);
      m.oov_mapped += o;
      m.elapsed_s = elapsedBefore + (performance.now() - t0) / 1000;
      writeManifest(out, m, manifestFile);
    };
    // The work as a stream of batches across shards; the last batch of a shard carries the shard's OOV count.
    interface Job {
      k: number;
      /** Window index of the batch's first window, its window count, and its ids and document numbers. */
      first: number;
      n: number;
      ids: Int32Array;
      docs: Int32Array;
      last: boolean;
      oov: number;
    }
    // The windows are made here as the forward needs them (src/corpus/window-chunks.ts). Finished shards are re-derived
    // (tokenizing is cheap next to the model) and skipped, so the stream stays in order.
    const tokenCache = tokenCacheOf(cfg, identity.tokenizer);
    const windows = harvestWindows(
      cfg,
      model,
      tokenCache,
      Array.from({ length: nShards }, (_, k) => k).filter((k) => good.has(k) || !ownShard(k)),
    );
    /** Set once the windows ran out because the corpus did (not because every shard was made). */
    let exhausted = false;
    function* jobs(): Generator<Job> {
      let oov = 0;
      for (let r = windows.next(); ; r = windows.next()) {
        if (r.done) {
          exhausted = r.value;
          return;
        }
        const c = r.value;
        oov += c.oov;
        for (let b = 0; b < c.n; b += cfg.batch) {
          const nb = Math.min(cfg.batch, c.n - b);
          const [at, end] = [b * cfg.ctx, (b + nb) * cfg.ctx];
          const last = c.last && b + cfg.batch >= c.n;
          yield { k: c.k, first: c.first + b, n: nb, ids: c.ids.subarray(at, end), docs: c.docs.subarray(at, end), last, oov: last ? oov : 0 };
          if (last) oov = 0;
        }
      }
    }
    const shardMetadata = (k: number) => ({ sdlkit_identity: jobHash, shard: String(k) });
    /** Where a float32 Arrow shard's body starts in its file, by its rows and the digits of its number (the metadata's only change). */
    const bodyOffsets = new Map<string, number | undefined>();
    /** Shard k's buffer, its arrays laid where the writer can send them to the disk without a copy (fit, alignBody). */
    const takeBuffer = (k: number, onlyIfFree: boolean): ShardBuffer | undefined => {
      const b = writer.buffer(shardRows, sites!, onlyIfFree);
      if (!b) return undefined;
      if (format === 'arrow' && cfg.dtype === 'f32') {
        // The rows shard k will hold (the last is shorter; a corpus that runs out early leaves it shorter still, and
        // that shard is written through the staging copy).
        b.fit(Math.min(windowsPerShard, nWindows - k * windowsPerShard) * cfg.ctx);
        const key = `${b.laidRows}:${String(k).length}`;
        if (!bodyOffsets.has(key)) bodyOffsets.set(key, arrowBodyOffset(b, shardMetadata(k)));
        const at = bodyOffsets.get(key);
        if (at !== undefined) b.alignBody(at);
      }
      buffers.set(k, b);
      return b;
    };
    try {
      const it = jobs();
      /** Where a batch's hooks land in its shard's buffer: the forward writes them there (once the widths are known). */
      const placeFor = (job: Job): Into | undefined => {
        if (!sites) return undefined;
        let b = buffers.get(job.k);
        if (!b) {
          b = takeBuffer(job.k, true);
          if (!b) return undefined; // the writer still holds the other buffer: this batch is copied in when it returns
        }
        const [row, n] = [(job.first - job.k * windowsPerShard) * cfg.ctx, job.n * cfg.ctx];
        const into: Into = {};
        sites.forEach((s, si) => (into[s.tensor] ??= b.values[si].subarray(row * s.width, (row + n) * s.width)));
        return into;
      };
      // Batches in flight, in job order: the forward always has the next ones while this thread takes one in.
      const queue: { job: Job; out: Promise<Record<string, Fetched>> }[] = [];
      const refill = () => {
        while (queue.length < forward.depth) {
          const next = it.next();
          if (next.done) return;
          const out = forward.run(next.value.ids, next.value.n, cfg.ctx, placeFor(next.value));
          out.catch(() => undefined); // awaited in its turn; not unhandled meanwhile
          queue.push({ job: next.value, out });
        }
      };
      const positions = Int32Array.from({ length: cfg.ctx }, (_, p) => p);
      /** Takes a batch's hooks into its shard's buffer (checked; copied where the forward did not place them), with its tokens and positions. */
      const take = (job: Job, res: Record<string, Fetched>): ShardBuffer => {
        const { k, n: nw, ids, docs, first } = job;
        if (!sites) {
          sites = hooks.map((h) => {
            const dims = res[h.tensor].dims;
            return { name: h.name, tensor: h.tensor, width: Number(dims[dims.length - 1]), ...(h.layer >= 0 ? { layer: h.layer, site: h.site } : {}) };
          });
          m.sites = sites;
        }
        refill(); // the widths known, the next batches are placed in their shard
        const buf = buffers.get(k) ?? takeBuffer(k, false)!;
        if (buf.rows !== (first - k * windowsPerShard) * cfg.ctx) throw new Error(`harvest: shard ${k}'s batches arrived out of order`);
        for (let si = 0; si < sites.length; si++) {
          const at = buf.rows * sites[si].width;
          const n = nw * cfg.ctx * sites[si].width;
          const t = res[sites[si].tensor];
          if ((t.type !== 'float32' && t.type !== 'float16') || t.data.length !== n) {
            throw new UserError(
              `hook ${sites[si].name} (tensor ${sites[si].tensor}) has shape [${t.dims}] and type ${t.type}; sdlkit harvests float32 or float16 tensors of shape [batch, seq, width]`,
            );
          }
          const dst = buf.values[si];
          // Placed by the forward where this site's rows go: nothing to copy, and its NaN/Inf already counted (a second
          // site of the same tensor copies).
          let nonFinite: number;
          if (t.placed && t.data.buffer === dst.buffer && t.data.byteOffset === dst.byteOffset + 4 * at) {
            nonFinite = t.nonFinite ?? countNonFinite(dst.subarray(at, at + n));
          } else {
            // A model that computes in float16 gives float16 hooks: widen them (exactly) before storing.
            const values = t.type === 'float16' && !t.placed ? f16ToF32(t.data as Uint16Array) : (t.data as Float32Array);
            nonFinite = copyCountingNonFinite(values, dst.subarray(at, at + n));
          }
          if (nonFinite) refuseNonFinite(sites[si].name, k, buf.rows + Math.floor(firstNonFinite(dst.subarray(at, at + n)) / sites[si].width));
        }
        buf.token.set(ids, buf.rows);
        buf.doc.set(docs, buf.rows);
        for (let i = 0; i < nw; i++) {
          const r = buf.rows + i * cfg.ctx;
          buf.window.fill(first + i, r, r + cfg.ctx);
          buf.pos.set(positions, r);
        }
        buf.rows += nw * cfg.ctx;
        if (cfg.dtype === 'f16') buf.roundToHalf(); // each batch as it lands: a value past float16's range stops the harvest at once
        doneRows += nw * cfg.ctx;
        progress.update(doneRows, `shard ${k + 1}/${nShards}`);
        return buf;
      };
      /** Hands a full shard to the writer (its slices written between batches), once the previous one is safely on disk. */
      const handOver = async (job: Job, full: ShardBuffer) => {
        await recordWrite();
        const { k, oov } = job;
        const file = shardFile(k, format);
        buffers.delete(k);
        // The shard records the job, not the part: a part's shard is byte for byte the whole run's.
        inFlight = writer.write(out, file, full, cfg.dtype, shardMetadata(k)).then((w) => ({ k, file, w, oov }));
      };
      // The loop that waits on the forward is a small function of its own: V8 optimizes a function its awaits resume
      // often, and optimizing all of harvest() took ~150 ms of compiling a harvest (twice, once deoptimized;
      // docs/BENCHMARKS.md).
      const drain = async () => {
        while (queue.length) {
          const { job, out: pending } = queue.shift()!;
          const buf = take(job, await pending);
          if (job.last) await handOver(job, buf);
        }
      };
      refill();
      await drain();
      // The forward's threads end while the last shard is written (ending them takes 5-25 ms of waiting).
      released = forward.release();
      await recordWrite();
    } finally {
      windows.return(false); // a window cache file left half written by an early stop is removed
      // A shard still being written when the harvest stops early (an error) lands or is removed before the folder is unlocked.
      await Promise.all([released ?? forward.release(), inFlight?.catch(() => undefined)]);
    }
    if (exhausted && !cfg.quiet)
      process.stderr.write(`the corpus (${cfg.corpus}, split ${cfg.split}) ran out after ${fmtCount(m.tokens)} tokens; the harvest holds what there was\n`);
    if (m.tokens === 0)
      throw new UserError(
        `the corpus ${cfg.corpus} (split ${cfg.split}) gave no complete ${cfg.ctx}-token window; use a larger corpus, another --split, or a smaller --ctx`,
      );
    m.complete = true;
    m.elapsed_s = elapsedBefore + (performance.now() - t0) / 1000;
    writeManifest(out, m, manifestFile);
    const seconds = (performance.now() - t0) / 1000;
    progress.done();
    if (!part) writeAtomic(join(cacheDir(), LATEST_HARVEST_FILE), `${out}\n`);
    return {
      out,
      manifest: m,
      reusedShards: m.shards.length - newShards,
      newShards,
      seconds,
      tokensPerSecond: (doneRows - doneRowsAtStart) / seconds,
      tokenCache: tokenCache?.file ? { file: tokenCache.file, hit: tokenCache.hit === true } : undefined,
    };
  } finally {
    unlock();
  }
}
