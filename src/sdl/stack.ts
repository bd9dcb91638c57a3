// Per-layer transcoders as one CLT whose cross-layer decoder blocks are zero: the replacement model of a set of
// transcoders is then the CLT's (one implementation of "replace every MLP at once"), and a CLT and the per-layer
// transcoders it competes with are measured by the same code.
import { UserError } from '../util/errors.js';
import { makeDictConfig } from './config.js';
import { cltToDense, decOffset, type CltParams } from './clt.js';
import { Dictionary } from './dictionary.js';
import { parseCanonical } from '../onnx/hooks.js';

export function stackTranscoders(given: Dictionary[]): Dictionary {
  // Layer order is the replacement model's order (each layer's splice reads the features of earlier ones).
  const layerOf = (d: Dictionary) => parseCanonical(d.cfg.sitesOut[0].name)?.layer ?? -1;
  const dicts = [...given].sort((a, b) => layerOf(a) - layerOf(b));
  const first = dicts[0].cfg;
  for (const [i, d] of dicts.entries()) {
    const c = d.cfg;
    if (c.kind !== 'transcoder') throw new UserError(`only transcoders stack into a replacement model; ${c.sitesIn[0].name} is a ${c.kind}`);
    if (
      c.activation !== first.activation ||
      c.dSae !== first.dSae ||
      c.k !== first.k ||
      !!c.skip !== !!first.skip ||
      c.dIn !== first.dIn ||
      c.dOut !== first.dOut
    )
      throw new UserError(
        `transcoders replace MLPs together only with one activation, width, k and skip setting: ${c.sitesIn[0].name} has ${c.activation}/${c.dSae}/k ${c.k}, ${first.sitesIn[0].name} ${first.activation}/${first.dSae}/k ${first.k}`,
      );
    if (layerOf(d) < 0) throw new UserError(`${c.sitesOut[0].name} is not a layer's MLP output; transcoders replace MLPs together by layer`);
    if (i > 0 && layerOf(d) === layerOf(dicts[i - 1])) throw new UserError(`two of the transcoders write ${c.sitesOut[0].name}; give one per layer`);
    if (d.meta.model_sha256 !== dicts[0].meta.model_sha256)
      throw new UserError(`${c.sitesOut[0].name}'s transcoder was trained on another model than ${first.sitesOut[0].name}'s; stack transcoders of one model`);
  }
  const L = dicts.length,
    n = first.dSae,
    dI = first.dIn,
    dO = first.dOut;
  const cfg = makeDictConfig({
    kind: 'clt',
    activation: first.activation,
    sitesIn: dicts.map((d) => d.cfg.sitesIn[0]),
    sitesOut: dicts.map((d) => d.cfg.sitesOut[0]),
    latentsPerLayer: n,
    k: first.k,
    skip: first.skip,
  });
  const s = { L, dI, dO, n, skip: !!first.skip };
  const p: CltParams = {
    W_encT: new Float32Array(L * n * dI),
    b_enc: new Float32Array(L * n),
    W_dec: new Float32Array(decOffset(s, L)),
    b_dec: new Float32Array(L * dO),
    ...(s.skip ? { W_skip: new Float32Array(L * dI * dO) } : {}),
  };
  dicts.forEach((d, l) => {
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < dI; a++) p.W_encT[(l * n + i) * dI + a] = d.w.W_enc[a * n + i];
      // Layer l's rows write only layer l: the first dO values of each row; the rest stay zero.
      p.W_dec.set(d.w.W_dec.subarray(i * dO, (i + 1) * dO), decOffset(s, l) + i * (L - l) * dO);
    }
    p.b_enc.set(d.w.b_enc, l * n);
    p.b_dec.set(d.w.b_dec, l * dO);
    if (p.W_skip && d.w.W_skip) p.W_skip.set(d.w.W_skip, l * dI * dO);
  });
  const dense = cltToDense(s, p);
  const threshold = dicts.every((d) => d.w.threshold) ? new Float32Array(L * n) : undefined;
  if (threshold) dicts.forEach((d, l) => threshold.set(d.w.threshold!, l * n));
  return new Dictionary(cfg, { W_enc: dense.W_enc, b_enc: p.b_enc, W_dec: dense.W_dec, b_dec: p.b_dec, threshold, W_skip: dense.W_skip }, dicts[0].meta);
}
