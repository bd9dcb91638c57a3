// The bundled model's training settings, apart from the trainer so that reading them loads no TensorFlow.js.
import { checkFields, checkFitsInMemory, type Rule } from '../util/check.js';
import { UserError } from '../util/errors.js';

export interface LmTrainConfig {
  out: string;
  corpus: string;
  vocabSize: number;
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  seqLen: number;
  ctx: number;
  batch: number;
  lr: number;
  minLr: number;
  warmup: number;
  steps: number;
  /** Stop after this many minutes of training (the schedule still assumes `steps`). */
  minutes?: number;
  /** Stop at this step (the schedule still assumes `steps`): reproduces a run that stopped on `minutes`. */
  stopStep?: number;
  seed: number;
  evalWindows: number;
  evalEvery: number;
  checkpointEvery: number;
  quiet?: boolean;
}

export const LM_DEFAULTS: Omit<LmTrainConfig, 'out'> = {
  corpus: 'builtin',
  vocabSize: 512,
  dim: 64,
  hiddenDim: 172,
  layers: 8,
  heads: 4,
  kvHeads: 2,
  seqLen: 256,
  ctx: 128,
  batch: 16,
  lr: 2e-3,
  minLr: 2e-4,
  warmup: 100,
  steps: 1200,
  seed: 1234,
  evalWindows: 64,
  evalEvery: 200,
  checkpointEvery: 100,
};

/** llama2.c's fixed first pieces: <unk>, <s>, </s> and the 256 bytes. */
const LLAMA2C_BASE_PIECES = 259;

/**
 * Refuses settings the trainer cannot build a model from, with one line naming the option: every head gets
 * dim / heads channels in rotary pairs, the key/value heads are shared by equal groups of query heads, and the
 * tokenizer starts from llama2.c's 259 fixed pieces (3 specials, 256 bytes).
 */
export function checkLmConfig(c: LmTrainConfig): void {
  const spec: [keyof LmTrainConfig, Rule, string][] = [
    ['vocabSize', 'int>0', '--vocab'],
    ['dim', 'int>0', '--dim'],
    ['hiddenDim', 'int>0', '--hidden'],
    ['layers', 'int>0', '--layers'],
    ['heads', 'int>0', '--heads'],
    ['kvHeads', 'int>0', '--kv-heads'],
    ['ctx', 'int>=2', '--ctx'],
    ['batch', 'int>0', '--batch'],
    ['lr', '>0', '--lr'],
    ['steps', 'int>0', '--steps'],
    ['minutes', '>0', '--minutes'],
    ['stopStep', 'int>0', '--stop-step'],
    ['seed', 'int>=0', '--seed'],
  ];
  checkFields(c, spec);
  if (c.vocabSize <= LLAMA2C_BASE_PIECES)
    throw new UserError(
      `--vocab ${c.vocabSize} leaves no room for merges: the tokenizer's first ${LLAMA2C_BASE_PIECES} pieces are fixed (3 specials, 256 bytes)`,
    );
  if (c.dim % c.heads !== 0 || (c.dim / c.heads) % 2 !== 0)
    throw new UserError(`--dim ${c.dim} must split into --heads ${c.heads} heads of an even width (rotary pairs)`);
  if (c.heads % c.kvHeads !== 0) throw new UserError(`--heads ${c.heads} must be a multiple of --kv-heads ${c.kvHeads}`);
  if (c.ctx > c.seqLen) throw new UserError(`--ctx ${c.ctx} exceeds the model's context length ${c.seqLen}`);
  // The parameters and Adam's two moments, as float32: the embedding and output tables, and each layer's.
  const perLayer = 2 * c.dim * c.dim + 2 * c.dim * (c.dim / c.heads) * c.kvHeads + 3 * c.dim * c.hiddenDim;
  checkFitsInMemory(
    12 * (2 * c.vocabSize * c.dim + c.layers * perLayer),
    `a model of ${c.layers} layers x dim ${c.dim}, with Adam's moments,`,
    'lower --dim, --hidden, --layers or --vocab',
  );
}
