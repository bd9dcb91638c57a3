// A harvest's token windows, in chunks of its shards. The harvest makes them on its own thread as the model needs
// them: the forward runs on worker threads (or, for a wide model, takes ~1,000x longer than tokenizing), so that
// thread is free between batches, and a thread of their own cost about as much again as the tokenizing (its start,
// its messages and its collector: ~0.15 s of CPU per million tokens of the bundled model, docs/BENCHMARKS.md).
import type { Tokenizer } from '../models/tokenizer.js';
import { UserError } from '../util/errors.js';
import { corpusFiles, documents, type Split } from './sources.js';
import { cachedWindows, windowCacheName } from './window-cache.js';
import { shuffleDocs, tokenWindows, type Window } from './windows.js';

export interface WindowPlan {
  corpus: string;
  split: Split;
  seed: number;
  ctx: number;
  /** The model's batch: chunks start at multiples of it within a shard, so no batch spans two chunks. */
  batch: number;
  /** The model's vocabulary: ids at or beyond it are refused or mapped (oovId). */
  modelVocab: number;
  modelName: string;
  /** Ids at or beyond the model's vocabulary become this id; undefined: they are refused. */
  oovId?: number;
  windowsPerShard: number;
  nWindows: number;
  /** Shards whose windows are derived, to keep the stream in order, but not yielded: finished ones, other parts'. */
  skip: number[];
  /**
   * Keep the windows in (and read them from) a cache folder (src/corpus/window-cache.ts); `warn` gets a line for a
   * damaged cache file. Set once the stream starts: `file`, the cache file, and `hit`, whether the windows are read from it.
   */
  cache?: { dir: string; tokenizer: unknown; warn: (line: string) => void; file?: string; hit?: boolean };
}

/** Windows first..first+n-1 of the stream (`ctx` tokens each), all in shard k. */
export interface WindowChunk {
  k: number;
  first: number;
  n: number;
  ids: Int32Array;
  docs: Int32Array;
  /** Ids mapped to --oov-id in these windows. */
  oov: number;
  /** The shard's last chunk (the shard may end early when the corpus runs out). */
  last: boolean;
}

/** Windows per chunk after the first: about 8k tokens (~1 ms of tokenizing), a whole number of batches. */
const chunkWindows = (batch: number) => batch * Math.max(1, Math.floor(64 / batch));

/**
 * The shards' windows in chunks, in order, skipped shards left out (finished ones, other parts': their windows are
 * still derived, to keep the stream in order); returns true when the corpus ran out first. The first chunk is one
 * batch, so the model starts as soon as possible.
 */
export function* windowChunks(plan: WindowPlan, tok: Tokenizer): Generator<WindowChunk, boolean> {
  const skip = new Set(plan.skip);
  const stream = windowStream(plan, tok);
  try {
    return yield* chunks(plan, tok, stream, skip);
  } finally {
    stream.return(undefined); // a cache file being written is removed unless the stream was taken to its end
  }
}

/** The stream of windows: tokenized, or from the cache (written there as it is tokenized). */
function windowStream(plan: WindowPlan, tok: Tokenizer): Generator<Window> {
  const tokenize = () => tokenWindows(shuffleDocs(documents({ source: plan.corpus, split: plan.split }), plan.seed), tok, plan.ctx);
  const c = plan.cache;
  if (!c) return tokenize();
  const { corpus, split, seed, ctx } = plan;
  const name = windowCacheName({ tokenizer: c.tokenizer, corpusFiles: corpusFiles(corpus), corpus, split, seed, ctx });
  const r = cachedWindows({ dir: c.dir, name, ctx, need: plan.nWindows, tokenize, warn: c.warn, unkept: () => (c.file = undefined) });
  c.file = r.path;
  c.hit = r.hit;
  return r.windows;
}

function* chunks(plan: WindowPlan, tok: Tokenizer, stream: Generator<Window>, skip: Set<number>): Generator<WindowChunk, boolean> {
  const { ctx, windowsPerShard, nWindows, batch } = plan;
  let ahead = stream.next(); // one window ahead: a chunk knows whether it ends its shard
  let made = 0;
  let size = batch;
  for (let k = 0; made < nWindows && !ahead.done; k++) {
    const count = Math.min(windowsPerShard, nWindows - made);
    for (let done = 0; done < count && !ahead.done; ) {
      const want = Math.min(size, count - done);
      size = chunkWindows(batch);
      const ids = new Int32Array(want * ctx);
      const docs = new Int32Array(want * ctx);
      let n = 0;
      let oov = 0;
      for (; n < want && !ahead.done; n++) {
        oov += checkVocab(ahead.value.ids, plan, tok);
        ids.set(ahead.value.ids, n * ctx);
        docs.set(ahead.value.docs, n * ctx);
        ahead = made + n + 1 < nWindows ? stream.next() : { done: true, value: undefined };
      }
      const first = made;
      made += n;
      done += n;
      const last = done === count || ahead.done === true;
      if (!skip.has(k)) yield { k, first, n, ids: n < want ? ids.slice(0, n * ctx) : ids, docs: n < want ? docs.slice(0, n * ctx) : docs, oov, last };
    }
  }
  return made < nWindows;
}

/** Refuses ids the model cannot embed, or maps them to plan.oovId; returns how many were mapped. */
function checkVocab(ids: Int32Array, plan: WindowPlan, tok: Tokenizer): number {
  let mapped = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id >= 0 && id < plan.modelVocab) continue;
    if (plan.oovId === undefined)
      throw new UserError(
        `token id ${id} ('${tok.piece(id)}') is beyond ${plan.modelName}'s vocabulary of ${plan.modelVocab} ids (the tokenizer has ${tok.vocabSize}); pass --oov-id N to map such ids to N, or use the model's own tokenizer`,
      );
    ids[i] = plan.oovId;
    mapped++;
  }
  return mapped;
}
