// A model as sdlkit uses it: an ONNX graph, its tokenizer, its hooks and its facts (vocab, context).
// `--model` takes a model folder (config.json + model.onnx + tokenizer) or a bare .onnx file
// (the tokenizer is then tokenizer.json beside it, or --tokenizer).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { decodeModel, type ModelProto } from '../onnx/proto.js';
import { resolveHooks, type HookMap } from '../onnx/hooks.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';
import { UserError } from '../util/errors.js';
import { sha256 } from '../util/fsx.js';

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
  sha256: string;
  proto: ModelProto;
  hooks: HookMap;
  tokenizer: Tokenizer;
  tokenizerPath: string;
  /** Number of token ids the model's embedding accepts. */
  vocabSize: number;
  /** Longest context the model supports (from its config, or the position table; Infinity when unknown). */
  contextLength: number;
  config?: ModelConfig;
}

export const BUNDLED_MODEL_DIR = resolve(dirname(new URL(import.meta.url).pathname), '../../../models');

/** Reads the embedding's vocabulary size from the graph: the first dim of the Gather table fed by the ids. */
function embeddingRows(proto: ModelProto): number | undefined {
  const inits = new Map(proto.graph.initializers.map((t) => [t.name, t]));
  for (const n of proto.graph.nodes) {
    if (n.opType === 'Gather' && inits.has(n.inputs[0])) return inits.get(n.inputs[0])!.dims[0];
    if (n.opType === 'EmbedLayerNormalization' && inits.has(n.inputs[2])) return inits.get(n.inputs[2])!.dims[0];
  }
  return undefined;
}

function positionRows(proto: ModelProto): number | undefined {
  const inits = new Map(proto.graph.initializers.map((t) => [t.name, t]));
  for (const n of proto.graph.nodes) if (n.opType === 'EmbedLayerNormalization' && inits.has(n.inputs[3])) return inits.get(n.inputs[3])!.dims[0];
  return undefined;
}

export function loadModel(spec: string, opts: { tokenizer?: string } = {}): LoadedModel {
  if (!existsSync(spec)) throw new UserError(`model ${spec} not found; pass --model with a model folder or an .onnx file (sdl import llama2c makes one)`);
  let onnxPath: string, config: ModelConfig | undefined, dir: string;
  if (statSync(spec).isDirectory()) {
    dir = spec;
    const cfgPath = join(dir, 'config.json');
    if (!existsSync(cfgPath)) throw new UserError(`${dir} has no config.json; pass a folder made by 'sdl import' or an .onnx file`);
    config = JSON.parse(readFileSync(cfgPath, 'utf8')) as ModelConfig;
    onnxPath = join(dir, config.onnx);
  } else {
    onnxPath = spec;
    dir = dirname(spec);
  }
  if (!existsSync(onnxPath)) throw new UserError(`model file ${onnxPath} not found`);
  const bytes = new Uint8Array(readFileSync(onnxPath));
  let proto: ModelProto;
  try {
    proto = decodeModel(bytes);
  } catch (e) {
    throw new UserError(`${onnxPath} is ${(e as Error).message}`);
  }
  const tokPath = opts.tokenizer ?? (config ? join(dir, config.tokenizer) : join(dir, 'tokenizer.json'));
  if (!existsSync(tokPath)) throw new UserError(`no tokenizer for ${onnxPath}: ${tokPath} not found; pass --tokenizer`);
  const vocabSize = config?.vocab_size ?? embeddingRows(proto);
  const tokenizer = loadTokenizer(tokPath, vocabSize);
  return {
    name: config?.name ?? onnxPath.replace(/^.*\//, '').replace(/\.onnx$/, ''),
    onnxPath: resolve(onnxPath),
    bytes,
    sha256: sha256(bytes),
    proto,
    hooks: resolveHooks(proto),
    tokenizer,
    tokenizerPath: resolve(tokPath),
    vocabSize: vocabSize ?? tokenizer.vocabSize,
    contextLength: config?.context_length ?? positionRows(proto) ?? Infinity,
    config,
  };
}
