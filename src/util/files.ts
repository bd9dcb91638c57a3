// The names of the files and folders sdlkit writes, in one place (as SAELens and sparsify keep theirs), and the
// cache folder they go under by default.

/** A dictionary folder: SAELens' two files, then sdlkit's own. */
export const CFG_FILE = 'cfg.json';
export const WEIGHTS_FILE = 'sae_weights.safetensors';
export const TRAINING_LOG_FILE = 'training_log.jsonl';
/** Held-out metrics written by `sdl fit`. */
export const EVAL_FILE = 'eval.json';
/** The harvest manifest the dictionary was trained on, copied beside it. */
export const ACTS_MANIFEST_FILE = 'acts_manifest.json';
/** In-model metrics written by `sdl eval`. */
export const SPLICE_EVAL_FILE = 'splice_eval.json';
export const INDEX_FILE = 'index.sqlite';
export const CHECKPOINT_DIR = 'checkpoint';
export const CHECKPOINT_STATE_FILE = 'state.json';
export const CHECKPOINT_TENSORS_FILE = 'state.safetensors';
/** Files derived from a dictionary's weights: stale once it is fitted again. */
export const DERIVED_FILES = [
  'dictionary.onnx',
  'encoder.onnx',
  'spliced.onnx',
  'saelens',
  'dashboard',
  SPLICE_EVAL_FILE,
  INDEX_FILE,
  `${INDEX_FILE}-wal`,
  `${INDEX_FILE}-shm`,
  EVAL_FILE,
  ACTS_MANIFEST_FILE,
];

/** A harvest folder. */
export const MANIFEST_FILE = 'manifest.json';

/** Under the cache folder: the path of the last harvest, which `sdl fit` uses when no --acts is given. */
export const LATEST_HARVEST_FILE = 'LATEST_HARVEST';

/** The cache folder: SDL_CACHE, else cache/ under the working folder. */
export const cacheDir = (): string => process.env.SDL_CACHE ?? 'cache';
