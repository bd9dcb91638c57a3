// A harvest's token windows, in chunks of its shards, made on a worker thread ahead of the model. onnxruntime-node runs a
// session on the calling thread, so whatever else that thread does adds to the harvest's time: tokenizing there (and
// collecting its garbage) cost about 2% of a harvest of the bundled model (docs/BENCHMARKS.md).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { loadTokenizer, type Tokenizer } from '../models/tokenizer.js';
import { UserError } from '../util/errors.js';
import { documents, type Split } from './sources.js';
import { shuffleDocs, tokenWindows } from './windows.js';

export interface WindowPlan {
  corpus: string;
  split: Split;
  seed: number;
  ctx: number;
  /** The model's batch: chunks start at multiples of it within a shard, so no batch spans two chunks. */
  batch: number;
  /** The model's tokenizer file, and the vocabulary a llama2.c tokenizer needs to be read. */
  tokenizerPath: string;
  modelVocab: number;
  modelName: string;
  /** Ids at or beyond the model's vocabulary become this id; undefined: they are refused. */
  oovId?: number;
  windowsPerShard: number;
  nWindows: number;
  /** Shards whose windows are derived, to keep the stream in order, but not sent: finished ones, other parts'. */
  skip: number[];
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

/** Windows per chunk after the first: about 8k tokens, a whole number of batches. */
const chunkWindows = (batch: number) => batch * Math.max(1, Math.floor(64 / batch));

/**
 * The shards' windows in chunks, in order, skipped shards left out; returns true when the corpus ran out first. The
 * first chunk is one batch, so the model can start while the rest of the first shard is tokenized.
 */
export function* windowChunks(plan: WindowPlan, tok: Tokenizer): Generator<WindowChunk, boolean> {
  const { ctx, windowsPerShard, nWindows, batch } = plan;
  const skip = new Set(plan.skip);
  const stream = tokenWindows(shuffleDocs(documents({ source: plan.corpus, split: plan.split }), plan.seed), tok, ctx);
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

type Message = { type: 'chunk'; chunk: WindowChunk } | { type: 'end'; exhausted: boolean } | { type: 'error'; message: string; user: boolean };

/** Chunks made ahead of the model: two shards' worth (2 x 0.5 MB at 65,536 tokens a shard). */
const aheadChunks = (plan: WindowPlan) => Math.ceil((2 * plan.windowsPerShard) / chunkWindows(plan.batch)) + 1;

if (!isMainThread && parentPort && (workerData as { windowPlan?: WindowPlan } | undefined)?.windowPlan) {
  const port = parentPort;
  const plan = (workerData as { windowPlan: WindowPlan }).windowPlan;
  let credit = aheadChunks(plan);
  let it: Generator<WindowChunk, boolean> | undefined;
  let finished = false;
  const produce = () => {
    if (finished) return;
    try {
      it ??= windowChunks(plan, loadTokenizer(plan.tokenizerPath, plan.modelVocab));
      for (; credit > 0; credit--) {
        const r = it.next();
        if (r.done) {
          finished = true;
          port.postMessage({ type: 'end', exhausted: r.value } satisfies Message);
          return;
        }
        port.postMessage({ type: 'chunk', chunk: r.value } satisfies Message, [r.value.ids.buffer, r.value.docs.buffer] as ArrayBuffer[]);
      }
    } catch (e) {
      finished = true;
      port.postMessage({ type: 'error', message: String((e as Error).message), user: e instanceof UserError } satisfies Message);
    }
  };
  port.on('message', () => {
    credit++;
    produce();
  });
  produce();
}

/** The main thread's end: next() gives the chunks in order, then undefined. */
export class WindowSource {
  private worker: Worker;
  private ready: Message[] = [];
  private waiting?: { resolve: (m: Message) => void; reject: (e: Error) => void };
  private failure?: Error;
  private ended = false;
  /** True once the stream ended because the corpus ran out (not because every shard was made). */
  exhausted = false;

  constructor(plan: WindowPlan) {
    this.worker = new Worker(new URL(import.meta.url), { workerData: { windowPlan: plan } });
    this.worker.unref(); // never keeps the process alive after an error elsewhere
    this.worker.on('message', (m: Message) => {
      if (this.waiting) {
        this.waiting.resolve(m);
        this.waiting = undefined;
      } else this.ready.push(m);
    });
    this.worker.on('error', (e) => {
      this.failure = new Error(`making token windows failed: ${e.message}`);
      this.waiting?.reject(this.failure);
      this.waiting = undefined;
    });
  }

  async next(): Promise<WindowChunk | undefined> {
    if (this.ended) return undefined;
    const m = this.ready.shift() ?? (await this.message());
    if (m.type === 'error') {
      this.ended = true;
      throw m.user ? new UserError(m.message) : new Error(`making token windows failed: ${m.message}`);
    }
    if (m.type === 'end') {
      this.ended = true;
      this.exhausted = m.exhausted;
      return undefined;
    }
    this.worker.postMessage('next');
    return m.chunk;
  }

  private message(): Promise<Message> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
