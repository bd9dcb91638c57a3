// A model as sdlkit uses it: an ONNX graph, its tokenizer, its hooks and its facts (vocab, context).
// `--model` takes a model folder (config.json + model.onnx + tokenizer), the .onnx inside such a folder
// (the folder's config still decides its tokenizer), or a bare .onnx file (the tokenizer is then
// tokenizer.json or tokenizer.bin beside it, or --tokenizer). The tokenizer is read when first used:
// commands that never tokenize (inspect) work on a bare graph.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { decodeModel, type ModelProto } from '../onnx/proto.js';
import { parseCanonical, resolveHooks, type HookMap, type HookPoint } from '../onnx/hooks.js';
import { embeddingTable, staticIdsShape } from '../onnx/graph.js';
import { loadTokenizer, type BosRule, type Tokenizer } from './tokenizer.js';
import { UserError } from '../util/errors.js';
import { sha256, sha256File } from '../util/fsx.js';

/** config.json of a model folder written by sdlkit. */
export interface ModelConfig {
  format: 'sdlkit-model/1';
  name: string;
  architecture: string;
  onnx: string;
  tokenizer: string;
  vocab_size: number;
  context_length: number;
  n_layers: number;
  d_model: number;
  bos_id: number;
  /** Architecture hyper-parameters (e.g. the llama2.c header). */
  params?: Record<string, unknown>;
  source?: Record<string, unknown>;
}

export interface LoadedModel {
  name: string;
  onnxPath: string;
  bytes: Uint8Array;
  /** Computed on first read. */
  readonly sha256: string;
  proto: ModelProto;
  hooks: HookMap;
  /** Read on first use; throws a UserError naming what to pass when the model has none. */
  readonly tokenizer: Tokenizer;
  /** The tokenizer file that belongs to the model, or undefined when none was found. */
  tokenizerPath: string | undefined;
  /** Number of token ids the model's embedding accepts. */
  vocabSize: number;
  /** Longest context the model supports (from its config, or the position table; Infinity when unknown). */
  contextLength: number;
  config?: ModelConfig;
}

export const BUNDLED_MODEL_DIR = resolve(dirname(new URL(import.meta.url).pathname), '../../../models');

function positionRows(proto: ModelProto): number | undefined {
  const inits = new Map(proto.graph.initializers.map((t) => [t.name, t]));
  for (const n of proto.graph.nodes) if (n.opType === 'EmbedLayerNormalization' && inits.has(n.inputs[3])) return inits.get(n.inputs[3])!.dims[0];
  return undefined;
}

/** The sdlkit model folder an .onnx file belongs to (its config.json names that file), if any. */
function folderConfig(dir: string, onnxName?: string): ModelConfig | undefined {
  const cfgPath = join(dir, 'config.json');
  if (!existsSync(cfgPath)) return undefined;
  let cfg: ModelConfig;
  try {
    cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as ModelConfig;
  } catch {
    throw new UserError(`${cfgPath} is not valid JSON; restore it (sdl import writes it) or pass the .onnx file from another folder`);
  }
  if (cfg?.format !== 'sdlkit-model/1') return undefined; // someone else's config.json (e.g. Hugging Face's)
  if (onnxName !== undefined && cfg.onnx !== onnxName) return undefined;
  return cfg;
}

export function loadModel(spec: string, opts: { tokenizer?: string } = {}): LoadedModel {
  if (!existsSync(spec)) throw new UserError(`model ${spec} not found; pass --model with a model folder or an .onnx file (sdl import llama2c makes one)`);
  let onnxPath: string, config: ModelConfig | undefined, dir: string;
  if (statSync(spec).isDirectory()) {
    dir = spec;
    config = folderConfig(dir);
    if (!config) throw new UserError(`${dir} has no sdlkit config.json; pass a folder made by 'sdl import' or an .onnx file`);
    onnxPath = join(dir, config.onnx);
  } else {
    onnxPath = spec;
    dir = dirname(spec);
    config = folderConfig(dir, basename(spec));
  }
  if (!existsSync(onnxPath)) throw new UserError(`model file ${onnxPath} not found`);
  // A plain Uint8Array over the file's own buffer: no copy of a model that may be gigabytes.
  const file = readFileSync(onnxPath);
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.length);
  let proto: ModelProto;
  try {
    proto = decodeModel(bytes);
  } catch (e) {
    throw new UserError(`${onnxPath} is ${(e as Error).message}`);
  }
  const vocabSize = config?.vocab_size ?? embeddingTable(proto)?.dims[0];
  const candidates = opts.tokenizer ? [opts.tokenizer] : config ? [join(dir, config.tokenizer)] : [join(dir, 'tokenizer.json'), join(dir, 'tokenizer.bin')];
  const tokPath = candidates.find((p) => existsSync(p));
  if (opts.tokenizer && !tokPath)
    throw new UserError(`tokenizer ${opts.tokenizer} not found; pass --tokenizer with a llama2.c tokenizer.bin or a Hugging Face tokenizer.json`);
  let tokenizer: Tokenizer | undefined;
  let digest: string | undefined;
  return {
    name: config?.name ?? onnxPath.replace(/^.*\//, '').replace(/\.onnx$/, ''),
    onnxPath: resolve(onnxPath),
    bytes,
    // On first use: the harvest's identity needs it, the index and the dashboard (which open the model for its
    // tokenizer and graph) do not; 0.25 s for a 355 MB model.
    get sha256(): string {
      digest ??= sha256(bytes);
      return digest;
    },
    proto,
    hooks: resolveHooks(proto),
    get tokenizer(): Tokenizer {
      if (!tokPath) throw new UserError(`no tokenizer for ${onnxPath}: looked for ${candidates.join(' and ')}; pass --tokenizer`);
      tokenizer ??= loadTokenizer(tokPath, vocabSize);
      return tokenizer;
    },
    tokenizerPath: tokPath ? resolve(tokPath) : undefined,
    get vocabSize(): number {
      return vocabSize ?? this.tokenizer.vocabSize;
    },
    contextLength: config?.context_length ?? positionRows(proto) ?? staticIdsShape(proto)?.seq ?? Infinity,
    config,
  };
}

/** What identifies the model's tokenizer in a harvest: its files' checksums and its BOS rule. */
export function tokenizerIdentity(m: LoadedModel): { kind: string; sha256: string; config_sha256?: string; bos: BosRule } {
  const tok = m.tokenizer; // throws when the model has none
  const path = m.tokenizerPath as string;
  const cfg = join(dirname(path), 'tokenizer_config.json');
  return {
    kind: tok.kind,
    sha256: sha256File(path),
    ...(tok.kind.startsWith('hf-') && existsSync(cfg) ? { config_sha256: sha256File(cfg) } : {}),
    bos: tok.bos,
  };
}

/** The hook a dictionary site names: a canonical hook, or a raw tensor name (`--tensor`); undefined if absent. */
export function siteHook(m: LoadedModel, name: string): HookPoint | undefined {
  return m.hooks.points.get(name) ?? (parseCanonical(name) ? undefined : rawTensorHook(m, name));
}

/** A hook on a raw tensor name (`--tensor`), or undefined when the graph has no such tensor. */
export function rawTensorHook(m: LoadedModel, tensor: string): HookPoint | undefined {
  const exists = m.proto.graph.nodes.some((n) => n.outputs.includes(tensor)) || m.proto.graph.inputs.some((i) => i.name === tensor);
  return exists ? { name: tensor, layer: -1, site: 'resid_post', tensor, via: 'tensor' } : undefined;
}

/**
 * The model whose tokenizer maps ids beyond the model's vocabulary to `oovId`: what a harvest made with
 * --oov-id recorded, so every later command feeds the model the same ids the dictionary was trained on.
 */
export function mapOutOfVocabulary(m: LoadedModel, oovId: number): LoadedModel {
  const tok = m.tokenizer;
  const vocab = m.vocabSize;
  const map = (id: number) => (id < vocab ? id : oovId);
  const mapped: Tokenizer = {
    kind: tok.kind,
    vocabSize: tok.vocabSize,
    bos: { ...tok.bos, id: map(tok.bos.id), source: `${tok.bos.source}; beyond the model's vocabulary, mapped to --oov-id ${oovId}` },
    bosId: map(tok.bosId),
    encode: (text, opts) => tok.encode(text, opts).map(map),
    encodeIds: (text) => tok.encodeIds(text).map(map),
    decode: (ids) => tok.decode(ids),
    piece: (id) => tok.piece(id),
  };
  return { ...m, tokenizer: mapped, vocabSize: vocab };
}
