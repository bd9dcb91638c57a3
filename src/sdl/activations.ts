// The activations sdlkit trains, one record each: how sigma selects latents (in training and at inference), the
// sparsity term, the traits other code asks about, the SAELens architecture it saves as, and its code in the native
// kernels (native/src/engine.h's `enum Activation`, held equal by test/registry.test.ts). Code elsewhere asks these
// records, never the activation's name.

/** The activations and kinds there are: the records below are keyed by these. */
export type Activation = 'relu' | 'topk' | 'batchtopk' | 'jumprelu' | 'matryoshka';
export type Kind = 'sae' | 'transcoder' | 'crosscoder' | 'clt';

export interface ActivationSpec {
  /** Code of the native kernels' enum. */
  readonly nativeCode: number;
  /**
   * How sigma selects in training: 'relu' (every positive pre-activation), 'topk' (the k largest per token),
   * 'batch' (the k x batch largest across the batch, BatchTopK), 'threshold' (above a learned per-latent threshold).
   */
  readonly selection: 'relu' | 'topk' | 'batch' | 'threshold';
  /** At inference: 'relu', 'topk' (per token), 'per-latent' threshold or one 'global' threshold (the batch's, averaged). */
  readonly inference: 'relu' | 'topk' | 'per-latent' | 'global';
  /** The sparsity term: decoder-norm-weighted L1, JumpReLU's L0 through a straight-through estimator, or none. */
  readonly sparsity: 'l1' | 'l0' | 'none';
  /** Default sparsity coefficient in normalised units (E||x|| = sqrt(d)). */
  readonly defaultSparsity: number;
  /** k is a setting (latents per token, or per token on average). */
  readonly usesK: boolean;
  /** AuxK revives dead latents (the TopK family whose selection can starve a latent). */
  readonly auxk: boolean;
  /** The loss is averaged over nested prefixes of the latents (Matryoshka). */
  readonly nested: boolean;
  /** SAELens' architecture name when saved as an SAE and as a transcoder. */
  readonly saelens: { sae: string; transcoder: string };
}

export const ACTIVATIONS: Readonly<Record<Activation, ActivationSpec>> = {
  relu: {
    nativeCode: 0,
    selection: 'relu',
    inference: 'relu',
    sparsity: 'l1',
    defaultSparsity: 5,
    usesK: false,
    auxk: false,
    nested: false,
    saelens: { sae: 'standard', transcoder: 'transcoder' },
  },
  topk: {
    nativeCode: 1,
    selection: 'topk',
    inference: 'topk',
    sparsity: 'none',
    defaultSparsity: 0,
    usesK: true,
    auxk: true,
    nested: false,
    saelens: { sae: 'topk', transcoder: 'topk_transcoder' },
  },
  batchtopk: {
    nativeCode: 2,
    selection: 'batch',
    inference: 'global',
    sparsity: 'none',
    defaultSparsity: 0,
    usesK: true,
    auxk: true,
    nested: false,
    saelens: { sae: 'jumprelu', transcoder: 'jumprelu_transcoder' },
  },
  jumprelu: {
    nativeCode: 3,
    selection: 'threshold',
    inference: 'per-latent',
    sparsity: 'l0',
    defaultSparsity: 0.5,
    usesK: false,
    auxk: false,
    nested: false,
    saelens: { sae: 'jumprelu', transcoder: 'jumprelu_transcoder' },
  },
  matryoshka: {
    nativeCode: 4,
    selection: 'batch',
    inference: 'global',
    sparsity: 'none',
    defaultSparsity: 0,
    usesK: true,
    auxk: false,
    nested: true,
    saelens: { sae: 'jumprelu', transcoder: 'jumprelu_transcoder' },
  },
};

export const ACTIVATION_NAMES = Object.keys(ACTIVATIONS) as Activation[];

export const activation = (a: Activation): ActivationSpec => ACTIVATIONS[a];

/** Whether inference needs a stored threshold tensor. */
export const needsThreshold = (a: Activation): boolean => ACTIVATIONS[a].inference === 'per-latent' || ACTIVATIONS[a].inference === 'global';

/** The kinds of dictionary: which sites they read and write, and what follows from that. */
export interface KindSpec {
  /** Subtract b_dec from the input before encoding (input and output are the same space). */
  readonly applyBDecToInput: boolean;
  /** One forward pass can splice it (it reads nothing the model computes after the site it writes). */
  readonly splicesInOnePass: boolean;
  /** SAELens has an equivalent. */
  readonly saelens: boolean;
}

export const KINDS: Readonly<Record<Kind, KindSpec>> = {
  sae: { applyBDecToInput: true, splicesInOnePass: true, saelens: true },
  transcoder: { applyBDecToInput: false, splicesInOnePass: true, saelens: true },
  crosscoder: { applyBDecToInput: true, splicesInOnePass: false, saelens: false },
  // Each layer's features read only that layer's input, so the replacement model runs in one causal pass.
  clt: { applyBDecToInput: false, splicesInOnePass: true, saelens: false },
};

export const KIND_NAMES = Object.keys(KINDS) as Kind[];
