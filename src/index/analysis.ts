// The index's per-feature analyses that need no pass over the activations, or only its first part, run on a worker
// thread (analysis-worker.ts) while the main thread runs the pass: nearest neighbours and the logit lens need only the
// weights and start with the pass; the first-letter absorption probes start as soon as the pass has gathered their
// samples. On 2 cores the pass's single-threaded stretches (examples, quantiles, reading) leave a core to them.
import { Worker } from 'node:worker_threads';
import { SMALL_YOUNG_GENERATION } from '../util/v8-heap.js';
import type { AbsorptionResult, AbsorptionSample } from '../analysis/absorption.js';
import type { LensInputs } from './logit-lens.js';
import type { Neighbors } from './neighbors.js';

export interface AnalysisInit {
  /** Unit decoder rows [m, dOut], for the nearest neighbours. */
  unit: Float32Array;
  /** Decoder rows [m, dOut] as trained, for the lens and the absorption probes. */
  W_dec: Float32Array;
  m: number;
  dOut: number;
  neighbors: number;
  lens?: LensInputs;
  /** Tokens per feature in each direction of the lens. */
  lensTokens: number;
}

/** The absorption samples with their sparse features as one CSR (feats[r] = ids/vals[start[r] .. start[r+1])). */
export interface AbsorptionInput {
  x: Float32Array;
  label: Int32Array;
  token: Int32Array;
  start: Int32Array;
  ids: Int32Array;
  vals: Float32Array;
  dIn: number;
}

export interface AnalysisResult {
  neighbors: Neighbors;
  /** Each feature's lens as JSON, and where the lens came from. */
  lens?: { rows: string[]; source: string };
  absorption?: AbsorptionResult;
}

export type AnalysisMessage = { kind: 'init'; init: AnalysisInit } | { kind: 'absorption'; input?: AbsorptionInput };
/** Neighbours and lens as soon as they are made (the writer can insert the neighbours before the probes end), then the probes'. */
export type AnalysisReply = { partial: Omit<AnalysisResult, 'absorption'> } | { result: Pick<AnalysisResult, 'absorption'> } | { error: string };

/** The absorption samples as measureAbsorption takes them (views of the CSR arrays). */
export function absorptionSample(a: AbsorptionInput): AbsorptionSample {
  const feats = Array.from({ length: a.label.length }, (_, r) => ({
    ids: a.ids.subarray(a.start[r], a.start[r + 1]),
    vals: a.vals.subarray(a.start[r], a.start[r + 1]),
  }));
  return { x: a.x, label: a.label, token: a.token, feats };
}

export class FeatureAnalysis {
  private readonly worker: Worker;
  private readonly first: Promise<Omit<AnalysisResult, 'absorption'>>;
  private readonly done: Promise<AnalysisResult>;
  private settled = false;
  private sentAbsorption = false;

  /** Starts the thread; its work begins with start(). */
  constructor() {
    // One kernel thread: the thread runs in the gaps the pass leaves (analysis-worker.ts); a kernel split over two
    // threads there waits at every join for whichever thread the scheduler set aside (the absorption probes' 240
    // small GEMMs took 0.57 s that way against 0.06 s on one thread alone).
    this.worker = new Worker(new URL('./analysis-worker.js', import.meta.url), {
      env: { ...process.env, SDLKIT_THREADS: '1' },
      resourceLimits: SMALL_YOUNG_GENERATION,
    });
    let firstIn: (p: Omit<AnalysisResult, 'absorption'>) => void = () => undefined;
    let failFirst: (e: Error) => void = () => undefined;
    this.first = new Promise((resolve, reject) => {
      firstIn = resolve;
      failFirst = reject;
    });
    this.done = new Promise<AnalysisResult>((resolve, reject) => {
      const fail = (e: Error) => {
        this.settled = true;
        failFirst(e);
        reject(e);
      };
      this.worker.on('message', (m: AnalysisReply) => {
        if ('error' in m) fail(new Error(m.error));
        else if ('partial' in m) firstIn(m.partial);
        else {
          this.settled = true;
          this.first.then((p) => resolve({ ...p, ...m.result }), reject);
        }
      });
      this.worker.on('error', fail);
      this.worker.on('exit', (code) => {
        if (!this.settled) fail(new Error(`the index's analysis thread stopped (exit code ${code}) before it answered`));
      });
    });
    // Awaited in partial() and result(); a failure before then must not surface as an unhandled rejection.
    this.first.catch(() => undefined);
    this.done.catch(() => undefined);
  }

  /** The weights: the neighbours and the lens begin. */
  start(init: AnalysisInit): void {
    this.worker.postMessage({ kind: 'init', init } satisfies AnalysisMessage);
  }

  /** The absorption samples (once; undefined: no probes), moved to the worker. */
  absorption(input?: AbsorptionInput): void {
    if (this.sentAbsorption) return;
    this.sentAbsorption = true;
    const moved = input ? [input.x, input.label, input.token, input.start, input.ids, input.vals].map((a) => a.buffer as ArrayBuffer) : [];
    this.worker.postMessage({ kind: 'absorption', input } satisfies AnalysisMessage, moved);
  }

  get absorptionSent(): boolean {
    return this.sentAbsorption;
  }

  /** The neighbours and the lens, which do not wait on the absorption samples. */
  async partial(): Promise<Omit<AnalysisResult, 'absorption'>> {
    return await this.first;
  }

  async result(): Promise<AnalysisResult> {
    if (!this.sentAbsorption) this.absorption(undefined);
    try {
      return await this.done;
    } finally {
      await this.worker.terminate();
    }
  }

  async abort(): Promise<void> {
    await this.worker.terminate();
  }
}
