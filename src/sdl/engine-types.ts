// The engine's interface: one training step (loss and gradients), the optimiser update, inference, and the
// parameter/optimiser state. Implementations (engine-native.ts, engine-tf.ts) import only this file; engine.ts
// picks one, so the module graph has no cycle and the native path never loads TensorFlow.js.
import type { DictConfig, TrainConfig } from './config.js';
import type { NamedTensor, TensorSource } from '../tensor/safetensors.js';

/** Parameters in SAELens orientation: W_enc [dIn, dSae], W_dec [dSae, dOut]. */
export interface EngineWeights {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  log_threshold?: Float32Array;
  /** Skip transcoders and CLTs: [dIn, dOut] (block-diagonal for CLTs). */
  W_skip?: Float32Array;
}

/** The parameters among named tensors in SAELens orientation (a checkpoint's, or a state given to loadState). */
export function weightsOf(t: Record<string, NamedTensor>): EngineWeights {
  return {
    W_enc: t.W_enc.data,
    b_enc: t.b_enc.data,
    W_dec: t.W_dec.data,
    b_dec: t.b_dec.data,
    log_threshold: t.log_threshold?.data,
    W_skip: t.W_skip?.data,
  };
}

export interface Anchors {
  /** Anchored encoder directions (one per latent, dIn values) and decoder rows (dOut values). */
  encoder: Float32Array[];
  decoder: Float32Array[];
  weight: number;
}

export interface EngineStepOptions {
  sparsity: number;
  bandwidth: number;
  /** 1 for latents counted dead (AuxK). */
  dead?: Uint8Array;
  auxkCoefficient: number;
  auxkK: number;
}

export interface EngineStepResult {
  loss: number;
  mse: number;
  sparsityLoss: number;
  auxLoss: number;
  l0: number;
  /** Tokens each latent fired on in this batch. */
  fired: Float32Array;
  /** BatchTopK/Matryoshka: the smallest selected pre-activation, per selection group (one; CLTs: one per layer). */
  minSelected?: number[];
  /** The native engines: whether this ReLU/JumpReLU step ran the dense (GEMM) path (denseAbove in engine-native.ts). */
  dense?: boolean;
}

export interface EngineForward {
  /** Reconstructions [n, dOut]. */
  yhat: Float32Array;
  /** Tokens each latent fired on. */
  fired: Float64Array;
  /** Active (token, latent) pairs in all. */
  actives: number;
}

export interface Engine {
  /** 'native-avx512', 'native-avx2', 'native-generic', 'tensorflow', 'wasm' or 'cpu'. */
  readonly backend: string;
  /** Loss and gradients for B rows of X [B, dIn] and Y [B, dOut] (Y may be X); the gradients stay inside. */
  step(X: Float32Array, Y: Float32Array, B: number, o: EngineStepOptions): EngineStepResult;
  /** Applies the last step's gradients: decoder-gradient projection, global-norm clipping, Adam, unit-norm decoder rows. */
  update(lr: number, clip: number): void;
  /**
   * Inference (thresholds, not batch statistics) on n rows; BatchTopK thresholds per selection group. `into`: an
   * array of at least n x dOut that becomes the result's yhat (an evaluation reuses one for all its chunks).
   */
  forward(X: Float32Array, n: number, batchThresholds: number[], into?: Float32Array): EngineForward;
  /** A copy of the parameters. */
  weights(): EngineWeights;
  /**
   * The final parameters, handed over without copies where the engine can (the native engine gives its own arrays:
   * 151 MB saved at the end of a 768 x 24,576 fit). The engine is spent: nothing may be called on it after.
   */
  takeWeights(): EngineWeights;
  /** Resampling: new encoder columns, decoder rows and zero b_enc for the given latents; their Adam moments are zeroed. */
  resample(latents: number[], encoder: Float32Array[], decoder: Float32Array[]): void;
  /** Parameters and Adam moments (adam_m.<name>, adam_v.<name>), SAELens orientation: the checkpoint format. May be views of live state: write them before the next step. */
  saveState(): Record<string, TensorSource>;
  loadState(t: Record<string, NamedTensor>, adamT: number): void;
  readonly adamT: number;
  dispose(): void;
}

export interface EngineInit {
  cfg: DictConfig;
  train: TrainConfig;
  weights: EngineWeights;
  /** The caller made `weights` for the engine and lets them go: the engine may keep the arrays instead of copying them. */
  handOver?: boolean;
  anchors?: Anchors;
}
