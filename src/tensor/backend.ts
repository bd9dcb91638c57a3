// TensorFlow.js backend choice: tfjs-node where it is installed, else the wasm backend (XNNPACK, SIMD),
// else the plain cpu backend. `--backend` overrides; the choice is printed and recorded.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { UserError } from '../util/errors.js';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
const require = createRequire(import.meta.url);
let chosen: BackendName | undefined;

async function tryNode(): Promise<boolean> {
  try {
    await import('@tensorflow/tfjs-node' as string);
    return tf.findBackend('tensorflow') !== undefined && (await tf.setBackend('tensorflow'));
  } catch {
    return false;
  }
}

async function tryWasm(): Promise<boolean> {
  try {
    setWasmPaths(`${dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'))}/dist/`);
    // Node has no SharedArrayBuffer workers for the threaded build: use the single-threaded SIMD one.
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

/** Selects and initialises a backend; returns its name. */
export async function initBackend(requested?: string): Promise<BackendName> {
  if (chosen && (!requested || requested === chosen || (requested === 'node' && chosen === 'tensorflow'))) return chosen;
  const order: BackendName[] =
    requested === 'node' || requested === 'tensorflow'
      ? ['tensorflow']
      : requested === 'wasm'
        ? ['wasm']
        : requested === 'cpu'
          ? ['cpu']
          : ['tensorflow', 'wasm', 'cpu'];
  if (requested && !['node', 'tensorflow', 'wasm', 'cpu'].includes(requested)) throw new UserError(`unknown backend '${requested}'; use node, wasm or cpu`);
  for (const b of order) {
    const ok = b === 'tensorflow' ? await tryNode() : b === 'wasm' ? await tryWasm() : await tf.setBackend('cpu');
    if (ok) {
      await tf.ready();
      // The cpu backend prints a banner suggesting tfjs-node on first use; sdlkit reports its backend itself.
      if (b === 'cpu') (tf.backend() as unknown as { firstUse: boolean }).firstUse = false;
      chosen = b;
      return b;
    }
  }
  throw new UserError(
    requested === 'node'
      ? 'the tfjs-node backend is not installed (it is an optional dependency that needs to download libtensorflow); use --backend wasm'
      : `backend ${requested} could not start`,
  );
}

/**
 * Autograd's gradient kernels, needed by the language-model trainer only (the dictionary trainer's gradients
 * are hand-written). tfjs-core's node bundle leaves them out; the @tensorflow/tfjs bundle registers them into
 * the same core. It is required (CommonJS) rather than imported: its ESM entry brings a second copy of core.
 */
export function ensureGradients(): void {
  if (gradientsReady) return;
  require('@tensorflow/tfjs');
  // BatchMatMul's stock gradient multiplies with transposed operands, which tfjs-wasm runs 10-20x slower
  // than an explicit transpose followed by a plain matMul: register the explicit form instead.
  const swap = (t: tf.Tensor) => tf.transpose(t, [...Array(t.rank - 2).keys(), t.rank - 1, t.rank - 2]);
  tf.registerGradient({
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      if (transposeA || transposeB) throw new Error('sdlkit registers BatchMatMul gradients for plain matMuls only');
      const d = dy as tf.Tensor;
      // Broadcast batch dimensions are not used by sdlkit's models: shapes match except the last two.
      return { a: () => tf.matMul(d, swap(b)), b: () => tf.matMul(swap(a), d) };
    },
  });
  gradientsReady = true;
}
let gradientsReady = false;

export { tf };
