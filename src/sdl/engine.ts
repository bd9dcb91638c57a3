// The compute engine behind the trainer: one training step (loss and gradients), the optimiser update,
// inference, and the parameter/optimiser state. Two implementations share this interface and the trainer:
// sdlkit's native CPU kernels (engine-native.ts, the default where they are built) and TensorFlow.js
// (engine-tf.ts: tfjs-node, wasm or cpu), which is also the reference the native kernels are tested against.
import type { Engine, EngineInit } from './engine-types.js';
import type { DictConfig, TrainConfig } from './config.js';
import { native, nativeStatus } from '../native/kernels.js';
import { ACTIVATIONS } from './activations.js';
import { UserError } from '../util/errors.js';
import { usesCltKernels } from './clt.js';
import { holdYoungGeneration } from '../util/v8-heap.js';

export type * from './engine-types.js';

/**
 * The engine for a backend request: 'native', 'node' (tfjs-node), 'wasm', 'cpu', or undefined for the best
 * available (native, then tfjs-node, wasm, cpu). `note` says why the native kernels were not used, if not.
 */
/**
 * Refuses train.lowMemory where no engine can honour it, rather than ignoring it (the user asked for the memory and
 * would otherwise find out from running out of it). `sdl fit` calls it where its config is built, before writing.
 */
export function checkLowMemory(cfg: DictConfig, train: TrainConfig, requested: string | undefined): void {
  if (!train.lowMemory) return;
  const sel = ACTIVATIONS[cfg.activation].selection;
  if (usesCltKernels(cfg) || cfg.tied || (sel !== 'topk' && sel !== 'batch') || (requested && requested !== 'native'))
    throw new UserError('--low-memory applies to untied TopK, BatchTopK and Matryoshka SAEs, transcoders and crosscoders on the native backend; drop it');
  if (!native()) throw new UserError(`--low-memory needs the native kernels, which are ${nativeStatus()}; drop it`);
}

/**
 * --low-memory's process-wide settings: the C library's fixed mmap threshold and two arenas (addon.cc mallocLean) and
 * V8's young generation held at its size. The engine sets them when it is made; `sdl fit` sets them first thing, before
 * it opens the harvest, because what malloc's heap holds by then stays under the rest of the run: set at the engine,
 * a 1.31M-token fit at 768 x 24,576 rose 8.4 MiB over the run against 2.3, and a 10M one ended 6.3 MiB higher
 * (docs/BENCHMARKS.md).
 * Does nothing without the native kernels (checkLowMemory then refuses the option).
 */
export function leanMemory(): void {
  native()?.mallocLean();
  holdYoungGeneration();
}

export async function createEngine(requested: string | undefined, init: EngineInit): Promise<{ engine: Engine; note?: string }> {
  if (requested && !['native', 'node', 'tensorflow', 'wasm', 'cpu'].includes(requested))
    throw new UserError(`unknown backend '${requested}'; use native, node, wasm or cpu`);
  checkLowMemory(init.cfg, init.train, requested);
  if (usesCltKernels(init.cfg)) {
    // CLTs and skip transcoders: the native CLT kernels, else their TypeScript reference (TensorFlow.js has no CLT step).
    const mod = requested && requested !== 'native' ? undefined : native();
    if (requested === 'native' && !mod) throw new UserError(`the native kernels are ${nativeStatus()}; use --backend cpu`);
    const { CltEngine } = await import('./engine-clt.js');
    return { engine: new CltEngine(mod, init), note: mod ? undefined : `native kernels ${nativeStatus()}; training with the TypeScript reference (slow)` };
  }
  if (!requested || requested === 'native') {
    const mod = native();
    if (mod) {
      const { NativeTrainEngine } = await import('./engine-native.js');
      const status = nativeStatus();
      return { engine: new NativeTrainEngine(mod, init), note: status.includes('missing') ? `native kernels: ${status}` : undefined };
    }
    if (requested === 'native') throw new UserError(`the native kernels are ${nativeStatus()}; use --backend wasm`);
  }
  // TensorFlow.js loads only here, when it is the engine.
  const { initBackend } = await import('../tensor/backend.js');
  const backend = await initBackend(requested);
  const { TfEngine } = await import('./engine-tf.js');
  return { engine: new TfEngine(backend, init), note: requested ? undefined : `native kernels ${nativeStatus()}; using TensorFlow.js (${backend})` };
}
