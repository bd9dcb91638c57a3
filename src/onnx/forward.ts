// The forward passes a harvest runs: one onnxruntime session in this thread using every core (intra-op threads), or
// one single-threaded session per core, each on its own worker thread, with whole batches in flight at once.
//
// Why both: onnxruntime parallelises inside each operator, and on a narrow model (d_model 64-128) the operators are
// too small to share: its threads spend the forward waking each other. Whole batches on separate cores scale
// instead. Bare pruned forward, 2 cores, batch 16 x 128 (2026-12-02, docs/BENCHMARKS.md): d 64 (the bundled model)
// 123-128k tok/s on one session vs 193-201k on two workers; d 128 54-55k vs 64-71k; d 288 17.3-17.6k vs 16.5k; d 768
// 2.8-2.9k vs 2.7k. onnxruntime-node runs one session's batches one after another, so the parallel sessions need
// threads of their own. Both give the same bits (a session's outputs do not depend on its thread count: checked).
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';
import { createSession, makeFeeds } from './session.js';
import { embeddingTable } from './graph.js';
import type { ModelProto, ValueInfo } from './proto.js';
import { UserError } from '../util/errors.js';
import { f16ToF32 } from '../util/f16.js';
import { copyCountingNonFinite, countNonFinite } from '../util/finite.js';
import { native } from '../native/kernels.js';

/** One fetched tensor, as it crosses threads. */
export interface Fetched {
  type: string;
  dims: number[];
  data: Float32Array | Uint16Array;
  /** The values were written (widened to float32 if float16) into the caller's `into` array, and `data` is it. */
  placed?: boolean;
  /** Placed: how many of the values are NaN or infinite, counted as they were placed (no second read for the caller's check). */
  nonFinite?: number;
}

/**
 * Where a batch's fetched tensors should land, by name: float32 arrays of exactly the tensor's element count (views of
 * a SharedArrayBuffer when the forward runs on worker threads). A tensor of another size or type is not placed and
 * comes back as its own data, for the caller to check. Placing lets a harvest's workers copy their outputs straight
 * into the shard being filled: the main thread neither copies them nor collects 768 MB of transferred buffers per
 * million tokens of the bundled model (docs/BENCHMARKS.md).
 */
export type Into = Record<string, Float32Array>;

export interface Forward {
  /** Batches worth keeping in flight (the caller queues this many ahead). */
  readonly depth: number;
  /** How the forward runs, for logs and benchmarks: "1 session x 2 threads" or "2 workers x 1 thread". */
  readonly layout: string;
  /** The fetched tensors of one [batch, seq] window of ids, placed in `into` where it names them. */
  run(ids: Int32Array, batch: number, seq: number, into?: Into): Promise<Record<string, Fetched>>;
  release(): Promise<void>;
}

export interface ForwardOptions {
  /** Cores to use in all (default: all). */
  threads: number;
  /** Sessions on worker threads; 0 runs one session in this thread; 'auto' picks by the model's width. */
  workers: number | 'auto';
  /** Where onnxruntime's failures are named ("onnxruntime failed running <model>: ..."). */
  modelName: string;
}

/** Widths up to this use one session per core ('auto'): measured faster at d 64 and 128, slower at 288 and 768. */
export const PARALLEL_SESSIONS_MAX_WIDTH = 128;

/** The model's width (d_model): its embedding table's second dimension, when the graph has one. */
export function modelWidth(proto: ModelProto): number | undefined {
  const table = embeddingTable(proto);
  return table?.dims.length === 2 ? table.dims[1] : undefined;
}

/** How many worker sessions 'auto' gives a model on `threads` cores: one per core when it is narrow, else none. */
export function autoWorkers(proto: ModelProto, threads: number): number {
  const d = modelWidth(proto);
  return threads > 1 && d !== undefined && d <= PARALLEL_SESSIONS_MAX_WIDTH ? threads : 0;
}

/** A forward over `bytes` (the graph already cut to the hooks) fetching `fetches`, laid out as `o` asks. */
export async function createForward(bytes: Uint8Array, proto: ModelProto, inputs: ValueInfo[], fetches: string[], o: ForwardOptions): Promise<Forward> {
  const workers = o.workers === 'auto' ? autoWorkers(proto, o.threads) : o.workers;
  if (workers > 0) return WorkerForward.start(bytes, inputs, fetches, workers, Math.max(1, Math.floor(o.threads / workers)), o.modelName);
  const session = await createSession(bytes, { threads: o.threads });
  return new SessionForward(session, inputs, fetches, o.threads, o.modelName);
}

/**
 * The fetched tensors, those `into` names placed there. A placed tensor's own buffer is freed at once (addon.cc
 * detach), not at this thread's next collection: a harvest's worker piled up ~20 batches of them between collections
 * as new memory, 20-60k page faults a million tokens of the bundled model against ~5k freed at once
 * (docs/BENCHMARKS.md). A buffer that also holds a tensor not placed is kept.
 */
function fetched(res: ort.InferenceSession.OnnxValueMapType, fetches: string[], into?: Into): Record<string, Fetched> {
  const out: Record<string, Fetched> = {};
  const used = new Set<ArrayBufferLike>();
  const spent = new Set<ArrayBufferLike>();
  for (const f of fetches) {
    const t = res[f];
    const data = t.data as Float32Array | Uint16Array;
    const dst = into?.[f];
    const dims = t.dims.map(Number);
    if (dst && dst.length === data.length && (t.type === 'float32' || t.type === 'float16')) {
      const nonFinite = t.type === 'float16' ? countNonFinite(f16ToF32(data as Uint16Array, dst)) : copyCountingNonFinite(data as Float32Array, dst);
      out[f] = { type: t.type, dims, data: dst, placed: true, nonFinite };
      spent.add(data.buffer);
    } else {
      out[f] = { type: t.type, dims, data };
      used.add(data.buffer);
    }
  }
  for (const b of spent) if (!used.has(b) && !(b instanceof SharedArrayBuffer)) native()?.detach?.(b as ArrayBuffer);
  return out;
}

function runFailed(modelName: string, message: string): UserError {
  return new UserError(`onnxruntime failed running ${modelName}: ${message.split('\n')[0]}`);
}

class SessionForward implements Forward {
  readonly depth = 1;
  readonly layout: string;
  constructor(
    private session: ort.InferenceSession,
    private inputs: ValueInfo[],
    private fetches: string[],
    threads: number,
    private modelName: string,
  ) {
    this.layout = `1 session x ${threads} thread${threads === 1 ? '' : 's'}`;
  }
  async run(ids: Int32Array, batch: number, seq: number, into?: Into): Promise<Record<string, Fetched>> {
    try {
      return fetched(await this.session.run(makeFeeds(this.inputs, ids, batch, seq), this.fetches), this.fetches, into);
    } catch (e) {
      throw e instanceof UserError ? e : runFailed(this.modelName, String((e as Error).message));
    }
  }
  release(): Promise<void> {
    return this.session.release();
  }
}

/** Where a worker places a fetched tensor: [shared buffer number, byte offset, length]. */
type PlacedAt = Record<string, [number, number, number]>;

/** A batch for a worker: its ids, where its tensors go, and the shared buffers the worker has not had yet. */
interface BatchMessage {
  id: number;
  ids: Int32Array;
  batch: number;
  seq: number;
  into?: PlacedAt;
  share: [number, SharedArrayBuffer][];
  /** Drop the buffers sent before (the list is bounded: SHARED_KEPT). */
  forget: boolean;
}

/** Shared buffers a worker keeps by number before it is told to forget them (a harvest uses two). */
const SHARED_KEPT = 8;

interface WorkerSetup {
  forwardSession: true;
  bytes: Uint8Array;
  inputs: ValueInfo[];
  fetches: string[];
  threads: number;
}
type Reply = { ready: true } | { id: number; out: Record<string, Fetched | Omit<Fetched, 'data'>> } | { id?: number; error: string; user: boolean };

// The worker's side: make the session, then answer each batch with its fetched tensors (their buffers transferred).
if (!isMainThread && parentPort && (workerData as Partial<WorkerSetup> | undefined)?.forwardSession) {
  const port = parentPort;
  const w = workerData as WorkerSetup;
  const fail = (e: unknown, id?: number) => port.postMessage({ id, error: String((e as Error).message), user: e instanceof UserError });
  createSession(w.bytes, { threads: w.threads }).then(
    (session) => {
      /** The shared buffers batches are placed in, sent once each and named by number afterwards (WorkerForward.run). */
      const shared = new Map<number, SharedArrayBuffer>();
      port.on('message', (m: BatchMessage) => {
        if (m.forget) shared.clear();
        for (const [n, b] of m.share) shared.set(n, b);
        let into: Into | undefined;
        if (m.into) {
          into = {};
          for (const [f, [n, offset, length]] of Object.entries(m.into)) into[f] = new Float32Array(shared.get(n)!, offset, length);
        }
        let feeds: Record<string, ort.Tensor>;
        try {
          feeds = makeFeeds(w.inputs, m.ids, m.batch, m.seq);
        } catch (e) {
          return fail(e, m.id);
        }
        session.run(feeds, w.fetches).then(
          (res) => {
            const out = fetched(res, w.fetches, into);
            // Placed tensors are already in the caller's shared memory: only their type and shape go back.
            const back: Record<string, Fetched | Omit<Fetched, 'data'>> = {};
            for (const [f, t] of Object.entries(out)) back[f] = t.placed ? { type: t.type, dims: t.dims, placed: true, nonFinite: t.nonFinite } : t;
            const transfer = Object.values(out).flatMap((t) => (t.placed ? [] : [t.data.buffer as ArrayBuffer]));
            port.postMessage({ id: m.id, out: back }, [...new Set(transfer)]);
          },
          (e) => fail(e, m.id),
        );
      });
      port.postMessage({ ready: true });
    },
    (e) => fail(e),
  );
}

class WorkerForward implements Forward {
  readonly depth: number;
  readonly layout: string;
  private next = 0;
  private waiting = new Map<number, { resolve: (o: Record<string, Fetched>) => void; reject: (e: Error) => void; worker: number; into?: Into }>();
  private load: number[];
  private sent: Map<SharedArrayBuffer, number>[];
  private failure?: Error;

  private constructor(
    private workers: Worker[],
    threads: number,
    private modelName: string,
  ) {
    // One batch running on each worker and one queued behind it: a worker never waits for the main thread.
    this.depth = 2 * workers.length;
    this.layout = `${workers.length} workers x ${threads} thread${threads === 1 ? '' : 's'}`;
    this.load = workers.map(() => 0);
    this.sent = workers.map(() => new Map());
    workers.forEach((w, i) => {
      w.on('message', (m: Reply) => this.reply(m));
      w.on('error', (e) => this.fail(new Error(`a forward worker stopped: ${e.message}`)));
      w.on('exit', (code) => {
        if (this.waiting.size) this.fail(new Error(`forward worker ${i} exited (code ${code}) with batches in flight`));
      });
    });
  }

  static async start(bytes: Uint8Array, inputs: ValueInfo[], fetches: string[], n: number, threads: number, modelName: string): Promise<WorkerForward> {
    // Each worker frees its batch's output tensors itself (once placed): the C library is told to keep that memory
    // for the next batch rather than return it and fault it in again (addon.cc mallocKeep; without the native build,
    // glibc's defaults).
    native()?.mallocKeep();
    const setup: WorkerSetup = { forwardSession: true, bytes, inputs, fetches, threads };
    const workers = Array.from({ length: n }, () => new Worker(new URL(import.meta.url), { workerData: setup }));
    for (const w of workers) w.unref(); // never keeps the process alive after an error elsewhere
    const ready = workers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          w.once('message', (m: Reply) =>
            'ready' in m
              ? resolve()
              : reject('error' in m && m.user ? new UserError(m.error) : new Error(`a forward worker failed to start: ${'error' in m ? m.error : ''}`)),
          );
          w.once('error', reject);
        }),
    );
    try {
      await Promise.all(ready);
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new WorkerForward(workers, threads, modelName);
  }

  run(ids: Int32Array, batch: number, seq: number, into?: Into): Promise<Record<string, Fetched>> {
    if (this.failure) return Promise.reject(this.failure);
    // An array in ordinary memory would reach the worker as a copy, and the values written there would be lost.
    for (const [f, a] of Object.entries(into ?? {}))
      if (!(a.buffer instanceof SharedArrayBuffer)) return Promise.reject(new Error(`forward: 'into' for ${f} must be a view of a SharedArrayBuffer`));
    // The least loaded worker; ties to the lowest index.
    let w = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i] < this.load[w]) w = i;
    const id = this.next++;
    this.load[w]++;
    // A copy of just these ids (a view would send its whole buffer, the tokenizer's chunk), handed over.
    const own = ids.slice();
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, worker: w, into });
      // The shard buffers go to each worker once and are named by number afterwards: a view of shared memory in
      // every batch's message cost the main thread ~0.1 s of CPU a million tokens of the bundled model, and each
      // worker as much to take in (docs/BENCHMARKS.md).
      const message: BatchMessage = { id, ids: own, batch, seq, share: [], forget: false };
      if (into) {
        const known = this.sent[w];
        const buffers = new Set(Object.values(into).map((a) => a.buffer as SharedArrayBuffer));
        if ([...buffers].filter((b) => !known.has(b)).length + known.size > SHARED_KEPT) {
          known.clear();
          message.forget = true;
        }
        message.into = {};
        for (const [f, a] of Object.entries(into)) {
          const b = a.buffer as SharedArrayBuffer;
          let n = known.get(b);
          if (n === undefined) {
            known.set(b, (n = known.size));
            message.share.push([n, b]);
          }
          message.into[f] = [n, a.byteOffset, a.length];
        }
      }
      this.workers[w].postMessage(message, [own.buffer]);
    });
  }

  private reply(m: Reply): void {
    if ('ready' in m) return;
    const w = m.id === undefined ? undefined : this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id!);
    this.load[w.worker]--;
    if ('out' in m) {
      const out: Record<string, Fetched> = {};
      for (const [f, t] of Object.entries(m.out)) out[f] = 'data' in t ? t : { ...t, data: w.into![f] };
      w.resolve(out);
    } else w.reject(m.user ? new UserError(m.error) : runFailed(this.modelName, m.error));
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  async release(): Promise<void> {
    this.failure ??= new Error('the forward was released');
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
