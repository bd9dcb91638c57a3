// The index's SQLite file is written by a worker thread (db-worker.ts) while the main thread goes on computing. The
// writer starts with the pass (the tokens table goes in then); the pass's rows follow in parts as soon as each is
// ready, and the per-feature rows, which wait on the analysis thread, come last. The examples (top and quantile: 300k
// rows of JSON contexts at 16,384 latents, half the inserting) go to two more writer threads, each with a file of its
// own, which the first copies in once each is closed, with one INSERT ... SELECT (SQLite moves the records without
// decoding them: 0.14 s against 0.9 s to insert them): the inserting after the pass runs on both cores.
import { rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { SMALL_YOUNG_GENERATION } from '../util/v8-heap.js';
import type { ExampleLists } from './examples.js';
import type { LetterResult } from '../analysis/absorption.js';

/** A part of the rows that do not wait on the analysis thread; `first` takes any number of them, in any grouping. */
export interface FirstRows {
  /** Top activating examples (the examples table). */
  examples?: ExampleLists;
  /** Quantile examples (quantile_examples). */
  quantiles?: ExampleLists;
  /** Feature-token pairs that fired, in (token, feature) order: firings and summed activation (token_features). */
  tokenFeatures?: { token: Int32Array; feature: Int32Array; count: Float32Array; sum: Float32Array };
  /** Each feature's n most frequent tokens, [m, n] (-1 past the last), with their firings and summed activation. */
  topTokens?: { n: number; token: Int32Array; count: Float32Array; sum: Float32Array };
  /** Each token id's text (the tokens table). */
  pieces?: string[];
  /** A file another writer closed (IndexDbWriter.close), whose rows of these tables are copied in. */
  copyFrom?: { path: string; tables: ('examples' | 'quantile_examples' | 'token_features')[] };
  /** Up to n neighbours per feature: [m, n] ids (-1 past the last) and cosines (from the analysis thread, early). */
  neighbors?: SecondRows['neighbors'];
}

/** Everything else, per feature and for the whole dictionary. */
export interface SecondRows {
  meta: [string, string][];
  features: {
    count: Float64Array;
    sum: Float64Array;
    max: Float32Array;
    /** [m, bins] activation histogram counts. */
    hist: Uint32Array;
    bins: number;
    tokens: number;
    denseThreshold: number;
    decoderNorm: Float32Array;
    /** NaN where undefined (input and output widths differ): stored as null. */
    encDecCos: Float32Array;
    /** Absorption score per feature; undefined when no probes ran (stored as null). */
    absorption?: Float64Array;
    /** Each feature's logit lens as JSON; undefined without a model. */
    lens?: string[];
  };
  /** Up to n neighbours per feature: [m, n] ids (-1 past the last) and cosines, unless a first part brought them. */
  neighbors?: { n: number; other: Int32Array; cosine: Float32Array };
  /** Up to n co-occurring features per feature: [m, n] ids (-1 past the last), counts and Jaccard indices. */
  cooccurrence?: { n: number; other: Int32Array; count: Float64Array; jaccard: Float64Array };
  /** [m, sites] decoder norm per output site (dictionaries writing several sites). */
  siteNorms?: { sites: number; norm: Float32Array };
  letters?: LetterResult[];
}

export type WriterMessage = { kind: 'first'; rows: FirstRows } | { kind: 'second'; rows: SecondRows } | { kind: 'end' } | { kind: 'close' };
/** The features written dead (never fired) and dense (above the threshold). */
export interface WriterCounts {
  dead: number;
  dense: number;
}

/** `closed`: the answer to close (the rows committed, the file closed, not synced). */
export type WriterReply = { done: WriterCounts } | { closed: true } | { error: string; code?: string };

/** Writes an index file at `path` (a temporary name; the caller renames it) on a worker thread. */
export class IndexDbWriter {
  private readonly worker: Worker;
  private readonly finished: Promise<WriterCounts | undefined>;
  private settled = false;

  constructor(readonly path: string) {
    rmSync(path, { force: true });
    this.worker = new Worker(new URL('./db-worker.js', import.meta.url), { workerData: { path }, resourceLimits: SMALL_YOUNG_GENERATION });
    this.finished = new Promise<WriterCounts | undefined>((resolve, reject) => {
      this.worker.on('message', (m: WriterReply) => {
        this.settled = true;
        if ('error' in m) reject(Object.assign(new Error(m.error), { code: m.code }));
        else resolve('done' in m ? m.done : undefined);
      });
      this.worker.on('error', (e) => {
        this.settled = true;
        reject(e);
      });
      this.worker.on('exit', (code) => {
        if (!this.settled) reject(new Error(`the index writer thread stopped (exit code ${code}) before the index was written`));
      });
    });
    // Awaited in finish(); a failure before then must not surface as an unhandled rejection.
    this.finished.catch(() => undefined);
  }

  /** Rows that do not wait on the analysis thread, in parts, inserted in the order sent; their arrays move to the worker (not copied). */
  first(rows: FirstRows): void {
    const moved = new Set<ArrayBufferLike>();
    for (const part of [rows.examples?.store, rows.examples, rows.quantiles?.store, rows.quantiles, rows.tokenFeatures, rows.topTokens, rows.neighbors])
      for (const a of Object.values(part ?? {})) if (ArrayBuffer.isView(a)) moved.add(a.buffer);
    this.worker.postMessage({ kind: 'first', rows } satisfies WriterMessage, [...moved] as ArrayBuffer[]);
  }

  /** The per-feature rows (once), inserted with the features' indexes; parts sent after them are still taken. */
  second(rows: SecondRows): void {
    this.worker.postMessage({ kind: 'second', rows } satisfies WriterMessage);
  }

  /** The per-feature rows, unless `second` sent them; resolves once the file is complete, closed and synced, with its dead and dense counts. */
  async finish(rows?: SecondRows): Promise<WriterCounts> {
    if (rows) this.second(rows);
    this.worker.postMessage({ kind: 'end' } satisfies WriterMessage);
    const counts = await this.finished;
    if (!counts) throw new Error('the index writer closed without its per-feature rows');
    return counts;
  }

  /** Commits what `first` sent and closes the file (a part for another writer's finish to copy in: not synced). */
  async close(): Promise<void> {
    this.worker.postMessage({ kind: 'close' } satisfies WriterMessage);
    await this.finished;
  }

  /** Stops the worker and removes what it wrote. */
  async abort(): Promise<void> {
    await this.worker.terminate();
    for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(`${this.path}${suffix}`, { force: true });
  }
}
