// A CLT in circuit-tracer's layout (read from its loader, circuit_tracer/transcoder/cross_layer_transcoder.py:
// load_clt/_load_state_dict): one pair of files per layer i, W_enc_i.safetensors {W_enc_i [n, d_in], b_enc_i [n],
// b_dec_i [d_out], threshold_i [n] (JumpReLU; absent: ReLU)} and W_dec_i.safetensors {W_dec_i [n, L - i, d_out]},
// plus config.yaml {model_name, model_kind: cross_layer_transcoder, feature_input_hook, feature_output_hook}.
// Its activations are ReLU and JumpReLU: BatchTopK exports as JumpReLU with the per-layer threshold (as SAELens
// does); TopK has no equivalent there. Its file loader reads no W_skip, so skip CLTs are refused.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Dictionary } from '../sdl/dictionary.js';
import { cltFromDense, cltShape, decOffset } from '../sdl/clt.js';
import { parseCanonical } from '../onnx/hooks.js';
import { ACTIVATIONS } from '../sdl/activations.js';
import { writeSafetensors } from '../tensor/safetensors.js';
import { checkOutput, writeAtomic } from '../util/fsx.js';
import { UserError } from '../util/errors.js';

export function exportCircuitTracer(d: Dictionary, dir: string): void {
  const c = d.cfg;
  if (c.kind !== 'clt') throw new UserError(`--format circuit-tracer writes cross-layer transcoders; this is a ${c.kind} (use --format saelens or onnx)`);
  if (c.activation === 'topk')
    throw new UserError(
      "circuit-tracer's CLTs use ReLU or JumpReLU; a TopK CLT has no equivalent there (train with --activation batchtopk, jumprelu or relu, or use --format onnx)",
    );
  if (c.skip) throw new UserError("circuit-tracer's CLT files carry no W_skip; export this skip CLT with --format onnx");
  const s = cltShape(c);
  const layers = c.sitesIn.map((site) => parseCanonical(site.name)?.layer);
  if (layers.some((l, i) => l !== i))
    throw new UserError(`circuit-tracer's CLTs span every layer from 0; this one covers ${c.sitesIn.map((x) => x.name).join(', ')} (fit it with --layers all)`);
  checkOutput(dir, 'dir');
  mkdirSync(dir, { recursive: true });
  const p = cltFromDense(s, d.w);
  const { L, dI, dO, n } = s;
  const threshold = ACTIVATIONS[c.activation].inference === 'relu' ? undefined : d.inferenceThreshold();
  for (let l = 0; l < L; l++) {
    writeSafetensors(join(dir, `W_enc_${l}.safetensors`), {
      [`W_enc_${l}`]: { data: p.W_encT.subarray(l * n * dI, (l + 1) * n * dI), shape: [n, dI] },
      [`b_enc_${l}`]: { data: p.b_enc.subarray(l * n, (l + 1) * n), shape: [n] },
      [`b_dec_${l}`]: { data: p.b_dec.subarray(l * dO, (l + 1) * dO), shape: [dO] },
      ...(threshold ? { [`threshold_${l}`]: { data: threshold.subarray(l * n, (l + 1) * n), shape: [n] } } : {}),
    });
    writeSafetensors(join(dir, `W_dec_${l}.safetensors`), {
      [`W_dec_${l}`]: { data: p.W_dec.subarray(decOffset(s, l), decOffset(s, l + 1)), shape: [n, L - l, dO] },
    });
  }
  const input = parseCanonical(c.sitesIn[0].name)!.site;
  const yaml = [
    `model_name: ${JSON.stringify(String(d.meta.model_name ?? 'unknown'))}`,
    'model_kind: cross_layer_transcoder',
    `feature_input_hook: hook_${input}`,
    'feature_output_hook: hook_mlp_out',
    '',
  ].join('\n');
  writeAtomic(join(dir, 'config.yaml'), yaml);
}
