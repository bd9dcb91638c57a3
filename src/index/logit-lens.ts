// Every feature's logit lens for the index: the tokens whose logits its decoder direction raises and lowers most
// (analysis/logit-lens.ts), computed as one blocked GEMM of the decoder rows against the unembedding, each row's most
// raised and most lowered tokens selected natively where the kernels are built (topN below is the reference).
import type { LoadedModel } from '../models/model.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { findUnembedding, type Unembedding } from '../analysis/logit-lens.js';
import { gemm } from '../tensor/linalg.js';
import { native, nativeThreads } from '../native/kernels.js';
import { UserError } from '../util/errors.js';
import { topIndices } from './select.js';
import { round4Text } from '../util/format.js';

/** What the lens needs besides the decoder: the unembedding, and where the residual-width site lies in a decoder row. */
export interface LensInputs {
  u: Unembedding;
  /** First column of the decoder row that writes a residual-width site (the last such site, for crosscoders over several layers). */
  off: number;
}

/** The lens's inputs, or undefined with a note when the model's head or a residual-width site cannot be found. */
export function lensInputs(model: LoadedModel, d: Dictionary, onNote?: (s: string) => void): LensInputs | undefined {
  let u: Unembedding;
  try {
    u = findUnembedding(model);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    onNote?.(`no logit lens: ${e.message}`);
    return undefined;
  }
  let off = -1,
    acc = 0;
  for (const s of d.cfg.sitesOut) {
    if (s.width === u.d) off = acc;
    acc += s.width;
  }
  if (off < 0) {
    onNote?.(`no logit lens: no site the dictionary writes is ${u.d} wide (the residual width of ${model.name})`);
    return undefined;
  }
  return { u, off };
}

/**
 * Per feature (decoder rows [m, dOut]), the `n` most raised and most lowered tokens as the index stores them, JSON
 * `{"pos":[[token,logit],...],"neg":[...]}` (logits rounded to 1e-4), and where the lens came from.
 */
export function lensRows(l: LensInputs, W_dec: Float32Array, dOut: number, m: number, n: number): { rows: string[]; source: string } {
  const { u, off } = l;
  const D = u.d,
    V = u.vocab;
  const rows: string[] = [];
  // Blocks of about 2^20 logits (4 MB, reused block after block; at least 256 rows, which keeps the GEMM efficient at
  // a large vocabulary): the whole [16,384, 512] at once was a 32 MB array, and 8,192 page faults, of the index's
  // analysis thread.
  const block = Math.max(1, Math.min(m, Math.max(256, Math.floor(2 ** 20 / V))));
  const A = new Float32Array(block * D),
    C = new Float32Array(block * V),
    neg = new Float32Array(V);
  for (let i0 = 0; i0 < m; i0 += block) {
    const b = Math.min(block, m - i0);
    for (let r = 0; r < b; r++) for (let j = 0; j < D; j++) A[r * D + j] = W_dec[(i0 + r) * dOut + off + j] * u.scale[j];
    gemm(b, V, D, A, D, 1, u.W_U, V, 1, C, V);
    const mod = native();
    if (mod) {
      // Both selections natively (the TypeScript below is their reference): only the printing is left here.
      const pos = mod.rowsLargest(C, b, V, n, false, nativeThreads()),
        low = mod.rowsLargest(C, b, V, n, true, nativeThreads());
      for (let r = 0; r < b; r++) {
        const e = C.subarray(r * V, (r + 1) * V);
        rows.push(`{"pos":${pairs(e, pos.index.subarray(r * n, (r + 1) * n))},"neg":${pairs(e, low.index.subarray(r * n, (r + 1) * n))}}`);
      }
    } else
      for (let r = 0; r < b; r++) {
        const e = C.subarray(r * V, (r + 1) * V);
        rows.push(`{"pos":${topN(e, n, 1, neg)},"neg":${topN(e, n, -1, neg)}}`);
      }
  }
  return { rows, source: `${u.source}; direction: decoder columns ${off}-${off + D - 1}` };
}

/** The n entries with the largest sign * value, best first (ties: the lower index first), as JSON [[index, value], ...]. */
function topN(e: Float32Array, n: number, sign: 1 | -1, scratch: Float32Array): string {
  let a = e;
  if (sign < 0) {
    a = scratch; // negation is exact: the same order as -value
    for (let t = 0; t < e.length; t++) a[t] = -e[t];
  }
  return pairs(e, topIndices(a, n, true));
}

/** Tokens (up to the first -1) with their logits in e, as JSON [[token, logit], ...], logits rounded to 1e-4. */
function pairs(e: Float32Array, tokens: Int32Array): string {
  const parts: string[] = [];
  for (const t of tokens) {
    if (t < 0) break;
    parts.push(`[${t},${round4Text(e[t])}]`);
  }
  return `[${parts.join(',')}]`;
}
