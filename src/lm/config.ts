// The bundled model's training settings, apart from the trainer so that reading them loads no TensorFlow.js.

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
