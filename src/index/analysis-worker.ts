// The index's analysis thread (see analysis.ts): nearest neighbours and the logit lens when the weights arrive (sent
// at once), the absorption probes when their samples do (sent when done). A failure is the reply.
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { measureAbsorption } from '../analysis/absorption.js';
import { type AnalysisInit, type AnalysisMessage, type AnalysisReply, absorptionSample } from './analysis.js';
import { lensRows } from './logit-lens.js';
import { nearestByCosine } from './neighbors.js';

// This thread (and the kernels' threads it starts, which inherit it) runs at the lowest priority: on Linux a nice
// value is a thread's own. The pass's encoder then keeps both cores, and this work fills the pass's single-threaded
// stretches and the writer's time after it (256k tokens, 16,384 latents: the pass 3.9 -> 3.4-3.5 s). A scheduling
// hint only: where it is refused, the same work runs at normal priority.
try {
  setPriority(0, 19);
} catch {
  /* not permitted here: no effect on the results */
}

const port = parentPort!;
let init: AnalysisInit | undefined;
let ready = false;
port.on('message', (msg: AnalysisMessage) => {
  try {
    if (msg.kind === 'init') {
      init = msg.init;
      const { unit, W_dec, m, dOut, lens } = init;
      const neighbors = nearestByCosine(unit, m, dOut, init.neighbors);
      const l = lens ? lensRows(lens, W_dec, dOut, m, init.lensTokens) : undefined;
      port.postMessage({ partial: { neighbors, lens: l } } satisfies AnalysisReply, [
        neighbors.other.buffer as ArrayBuffer,
        neighbors.cosine.buffer as ArrayBuffer,
      ]);
      ready = true;
    } else {
      if (!init || !ready) throw new Error('the analysis thread got its samples before the weights');
      const a = msg.input;
      const absorption = a ? measureAbsorption(absorptionSample(a), a.dIn, init.W_dec, init.dOut, init.m) : undefined;
      port.postMessage({ result: { absorption } } satisfies AnalysisReply);
      port.close();
    }
  } catch (e) {
    port.postMessage({ error: (e as Error).message } satisfies AnalysisReply);
    port.close();
  }
});
