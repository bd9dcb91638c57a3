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
    setWasmPaths(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')) + '/dist/');
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
  const order: BackendName[] = requested === 'node' || requested === 'tensorflow' ? ['tensorflow'] : requested === 'wasm' ? ['wasm'] : requested === 'cpu' ? ['cpu'] : ['tensorflow', 'wasm', 'cpu'];
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
  throw new UserError(requested === 'node' ? 'the tfjs-node backend is not installed (it is an optional dependency that needs to download libtensorflow); use --backend wasm' : `backend ${requested} could not start`);
}

export { tf };
