// V8's young generation doubles (up to 16 MiB a semi-space) whenever the bytes surviving its scavenges since the last
// growth pass its size: however steady a program's allocation, a long run steps up in memory now and then. A 10M-token
// `sdl fit --low-memory` at 768 x 24,576 took +16 MiB of RSS ~8M tokens in (the semi-spaces 8 -> 16 MiB) for nothing:
// its loop allocates a few MB/s of short-lived objects, which the size it has when training starts takes in full.
// `--semi-space-growth-factor=1` stops the young generation growing: V8 reads that flag each time it would grow, so
// it takes effect when set while running (checked by test/v8-heap.test.ts). In that 10M-token fit the heap's
// committed size then stayed at ~29 MB, and fell to ~16 MB (1 MiB semi-spaces) where it would have doubled.
// Process-wide and one-way: only for the runs whose flat peak is asked for.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export function holdYoungGeneration(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * For worker threads whose garbage is short-lived (the index's writers build and drop each block's rows; its analysis
 * thread, its lens's JSON): a young generation of 4 MiB. Each isolate otherwise grows its own to 16 MiB semi-spaces,
 * fresh pages that are faulted in once each: with the index's four workers, 20,000 of its 130,000 page faults at 256k
 * tokens x 16,384 latents (5.58-5.64 s against 5.74-5.79 s, measured in turn).
 */
export const SMALL_YOUNG_GENERATION = { maxYoungGenerationSizeMb: 4 } as const;

let gc: (() => void) | undefined;

/**
 * A full garbage collection now. A fit's rare work (a checkpoint: its state.json, sinceFired as a 24,576-long array;
 * an evaluation) leaves ~3 MB of garbage that V8 collects only steps later; meanwhile it lies under the next steps'
 * peak, and each time V8 grew its old generation for it, a long run's peak stepped up (a 10M-token `sdl fit
 * --low-memory` at 768 x 24,576: +1.2-1.4 MiB after several checkpoints, docs/BENCHMARKS.md). Node gives `gc` only to
 * processes started with --expose-gc; the flag set while running exposes it to contexts made afterwards, so a new
 * context hands it over (test/v8-heap.test.ts checks that it collects). Costs a few ms on a fit's ~30 MB heap.
 */
export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
    if (typeof gc !== 'function') throw new Error('V8 did not expose gc to a new context');
  }
  gc();
}
