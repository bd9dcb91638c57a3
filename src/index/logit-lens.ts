// Every feature's logit lens for the index: the tokens whose logits its decoder direction raises and lowers most
// (analysis/logit-lens.ts), computed as one blocked GEMM of the decoder rows against the unembedding.
import type { LoadedModel } from '../models/model.js';
import type { Dictionary } from '../sdl/dictionary.js';
import { findUnembedding, type Unembedding } from '../analysis/logit-lens.js';
import { gemm } from '../tensor/linalg.js';
import { UserError } from '../util/errors.js';

export interface LensRow {
  pos: [number, number][];
  neg: [number, number][];
}

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

/** Per feature (decoder rows [m, dOut]), the `n` most raised and most lowered tokens, and where the lens came from. */
export function lensRows(l: LensInputs, W_dec: Float32Array, dOut: number, m: number, n: number): { rows: LensRow[]; source: string } {
  const { u, off } = l;
  const D = u.d,
    V = u.vocab;
  const rows: LensRow[] = [];
  const block = Math.max(1, Math.min(m, Math.floor(2 ** 24 / V)));
  const A = new Float32Array(block * D),
    C = new Float32Array(block * V);
  for (let i0 = 0; i0 < m; i0 += block) {
    const b = Math.min(block, m - i0);
    for (let r = 0; r < b; r++) for (let j = 0; j < D; j++) A[r * D + j] = W_dec[(i0 + r) * dOut + off + j] * u.scale[j];
    gemm(b, V, D, A, D, 1, u.W_U, V, 1, C, V);
    for (let r = 0; r < b; r++) {
      const e = C.subarray(r * V, (r + 1) * V);
      rows.push({ pos: topN(e, n, 1), neg: topN(e, n, -1) });
    }
  }
  return { rows, source: `${u.source}; direction: decoder columns ${off}-${off + D - 1}` };
}

/** The n entries with the largest sign * value, best first, as [index, value] (one pass, a small sorted list). */
function topN(e: Float32Array, n: number, sign: 1 | -1): [number, number][] {
  const best: [number, number][] = [];
  for (let t = 0; t < e.length; t++) {
    const v = sign * e[t];
    if (best.length === n && v <= best[n - 1][1]) continue;
    let at = best.length;
    while (at > 0 && best[at - 1][1] < v) at--;
    best.splice(at, 0, [t, v]);
    if (best.length > n) best.pop();
  }
  return best.map(([t, v]) => [t, Math.round(sign * v * 1e4) / 1e4]);
}
