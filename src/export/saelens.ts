// The SAELens folder layout (cfg.json + sae_weights.safetensors, SAELens v6 inference form) both ways,
// so SAE.load_from_disk reads sdlkit's dictionaries and sdlkit indexes and splices SAELens ones.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Dictionary, SAELENS_VERSION, saelensArchitecture, saelensCfg, WEIGHTS_FILE, CFG_FILE } from '../sdl/dictionary.js';
import { makeDictConfig, type Activation } from '../sdl/config.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from '../tensor/safetensors.js';
import { UserError } from '../util/errors.js';
import { checkOutput, writeJsonAtomic } from '../util/fsx.js';
import { ACTIVATIONS } from '../sdl/activations.js';
import { transpose } from '../tensor/linalg.js';

/** The sae_lens version whose loader (v6 parser) the written cfg.json targets. */
export { SAELENS_VERSION };

export function exportSaelens(d: Dictionary, dir: string): void {
  const c = d.cfg;
  if (c.kind === 'clt') throw new UserError('a CLT has no SAELens equivalent; export it with --format circuit-tracer or --format onnx');
  if (c.sitesIn.length > 1 || c.sitesOut.length > 1) throw new UserError('a crosscoder has no SAELens equivalent; export it with --format onnx');
  if (c.skip && c.activation === 'topk')
    throw new UserError('SAELens has no TopK skip transcoder (skip_transcoder is ReLU, jumprelu_skip_transcoder JumpReLU); export it with --format onnx');
  checkOutput(dir, 'dir');
  mkdirSync(dir, { recursive: true });
  // SAELens loads with strict=True: exactly its tensor names, threshold only for JumpReLU architectures.
  const arch = saelensArchitecture(c);
  const t: Record<string, NamedTensor> = {
    W_enc: { data: d.w.W_enc, shape: [c.dIn, c.dSae] },
    W_dec: { data: d.w.W_dec, shape: [c.dSae, c.dOut] },
    b_enc: { data: d.w.b_enc, shape: [c.dSae] },
    b_dec: { data: d.w.b_dec, shape: [c.dOut] },
  };
  if (arch.startsWith('jumprelu')) t.threshold = { data: d.inferenceThreshold(), shape: [c.dSae] };
  // SAELens' SkipTranscoder holds W_skip as [d_out, d_in] (it computes x @ W_skip.T).
  if (d.w.W_skip) t.W_skip = { data: transpose(d.w.W_skip, c.dIn, c.dOut), shape: [c.dOut, c.dIn] };
  writeSafetensors(join(dir, WEIGHTS_FILE), t);
  const cfg = saelensCfg(d);
  writeJsonAtomic(join(dir, CFG_FILE), { ...cfg, metadata: { ...cfg.metadata, sdlkit: { dict: c } } });
}

/** Reads a SAELens folder (v6 or flat pre-6.0 cfg.json) as an sdlkit dictionary. */
export function importSaelens(dir: string): Dictionary {
  const cfgPath = join(dir, CFG_FILE);
  if (!existsSync(cfgPath) || !existsSync(join(dir, WEIGHTS_FILE)))
    throw new UserError(`${dir} is not a SAELens folder (needs cfg.json and sae_weights.safetensors)`);
  // biome-ignore lint/suspicious/noExplicitAny: a foreign JSON file whose fields are read and checked one by one below
  let raw: Record<string, any>;
  try {
    raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
  } catch (e) {
    throw new UserError(`${cfgPath} is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  // biome-ignore lint/suspicious/noExplicitAny: as above
  const meta = (raw.metadata ?? raw) as Record<string, any>;
  const st = readSafetensors(join(dir, WEIGHTS_FILE)).tensors;
  for (const n of ['W_enc', 'W_dec', 'b_enc', 'b_dec']) if (!st[n]) throw new UserError(`${dir}/${WEIGHTS_FILE} has no tensor ${n}`);
  const [dIn, dSae] = st.W_enc.shape;
  const dOut = st.W_dec.shape[1];
  let arch = String(raw.architecture ?? (raw.activation_fn === 'topk' || raw.activation_fn_str === 'topk' ? 'topk' : 'standard'));
  if (arch === 'standard' && (raw.activation_fn === 'topk' || raw.activation_fn_str === 'topk')) arch = 'topk';
  const activation: Activation = arch.startsWith('topk')
    ? 'topk'
    : arch.startsWith('jumprelu')
      ? 'jumprelu'
      : arch === 'standard' || arch === 'transcoder'
        ? 'relu'
        : (() => {
            throw new UserError(`SAELens architecture '${arch}' is not supported (standard, topk, jumprelu and their transcoders are)`);
          })();
  const k = Number(raw.k ?? raw.activation_fn_kwargs?.k ?? 0);
  const hookIn = String(meta.hook_name ?? meta.hook_point ?? 'input');
  const isTranscoder = arch.includes('transcoder') || raw.d_out !== undefined;
  const hookOut = isTranscoder ? String(meta.hook_name_out ?? `${hookIn}.out`) : hookIn;
  if (ACTIVATIONS[activation].usesK && !(k > 0)) throw new UserError(`${cfgPath}: a topk SAE without k`);
  if (dOut === undefined || st.W_dec.shape[0] !== dSae)
    throw new UserError(`${cfgPath}: W_enc ${JSON.stringify(st.W_enc.shape)} and W_dec ${JSON.stringify(st.W_dec.shape)} do not fit together`);
  const cfg = makeDictConfig({
    kind: isTranscoder ? 'transcoder' : 'sae',
    activation,
    sitesIn: [{ name: hookIn, width: dIn }],
    sitesOut: [{ name: hookOut, width: dOut }],
    latents: dSae,
    k: ACTIVATIONS[activation].usesK ? k : undefined,
    matryoshkaWidths: [dSae],
    applyBDecToInput: raw.apply_b_dec_to_input === undefined ? undefined : Boolean(raw.apply_b_dec_to_input),
  });
  return new Dictionary(
    cfg,
    { W_enc: st.W_enc.data, W_dec: st.W_dec.data, b_enc: st.b_enc.data, b_dec: st.b_dec.data, threshold: st.threshold?.data },
    { model_name: meta.model_name, source: 'saelens' },
  );
}
