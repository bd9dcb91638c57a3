// `sdl import llama2c`: a llama2.c checkpoint + tokenizer.bin -> a model folder sdlkit harvests from.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { buildLlamaOnnx, readLlama2c } from './llama2c.js';
import { Llama2cTokenizer } from './tokenizer.js';
import type { ModelConfig } from './model.js';
import { UserError } from '../util/errors.js';
import { checkOutput, sha256, writeAtomic, writeJsonAtomic } from '../util/fsx.js';

export interface ImportResult {
  dir: string;
  config: ModelConfig;
  onnxBytes: number;
}

export function importLlama2c(checkpoint: string, tokenizerPath: string, outDir: string, name?: string): ImportResult {
  for (const [what, p] of [
    ['checkpoint', checkpoint],
    ['tokenizer', tokenizerPath],
  ] as const) {
    if (!existsSync(p)) throw new UserError(`${what} ${p} not found`);
  }
  checkOutput(outDir, 'dir');
  const ckpt = new Uint8Array(readFileSync(checkpoint));
  const w = readLlama2c(ckpt, checkpoint);
  const tokBytes = new Uint8Array(readFileSync(tokenizerPath));
  const tok = new Llama2cTokenizer(tokBytes, w.config.vocab_size, tokenizerPath); // validates it fits the model
  const modelName = name ?? basename(outDir.replace(/\/+$/, ''));
  const onnx = buildLlamaOnnx(w, { 'sdlkit.source_sha256': sha256(ckpt) });
  mkdirSync(outDir, { recursive: true });
  const config: ModelConfig = {
    format: 'sdlkit-model/1',
    name: modelName,
    architecture: 'llama2c',
    onnx: 'model.onnx',
    tokenizer: 'tokenizer.bin',
    vocab_size: w.config.vocab_size,
    context_length: w.config.seq_len,
    n_layers: w.config.n_layers,
    d_model: w.config.dim,
    bos_id: tok.bosId,
    params: { ...w.config },
    source: { checkpoint: basename(checkpoint), checkpoint_sha256: sha256(ckpt), tokenizer: basename(tokenizerPath), tokenizer_sha256: sha256(tokBytes) },
  };
  // Config last: a folder without config.json is not a model, so an interrupted import never looks finished.
  writeAtomic(join(outDir, 'model.onnx'), onnx);
  writeAtomic(join(outDir, 'tokenizer.bin'), tokBytes);
  writeJsonAtomic(join(outDir, 'config.json'), config);
  return { dir: outDir, config, onnxBytes: onnx.length };
}
