// Test fixtures: a tiny random llama2.c model made on the fly (so tests need no downloads), and paths.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomLlamaWeights, writeLlama2c, type LlamaWeights } from '../src/models/llama2c.js';
import { llama2cBaseVocab, writeLlama2cTokenizer } from '../src/models/tokenizer.js';
import { importLlama2c } from '../src/models/import-llama2c.js';
import { Rng } from '../src/util/rng.js';
import assert from 'node:assert/strict';
import { native, nativeStatus, type NativeEngine, type NativeModule, type NativeStepOptions, type NativeTensors } from '../src/native/kernels.js';
import type { Activation, DictConfig } from '../src/sdl/config.js';

export const ROOT = resolve(new URL('.', import.meta.url).pathname, '../..');
export const SHARED = resolve(ROOT, '../shared');
export const STORIES = join(SHARED, 'models/stories260K');
export const GPT2 = join(SHARED, 'models/tiny-random-gpt2/past.onnx');
export const CLI = join(ROOT, 'dist/src/cli.js');
export const haveShared = existsSync(join(STORIES, 'stories260K.bin')) && existsSync(GPT2);
export const sharedSkip = haveShared ? false : 'needs ../shared/models (present in CI and developer checkouts)';

/** A fresh temporary folder, removed when the test process exits (a README run alone writes close to 1 GB). */
export function tmp(prefix = 'sdl-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A random llama2.c checkpoint + tokenizer with some English merges, imported into a model folder. `edit` changes the
 * weights before they are written (a model with huge or NaN embeddings, for the refusals).
 */
export function tinyLlama(dir = tmp(), opts: { dim?: number; layers?: number; seed?: number; edit?: (w: LlamaWeights) => void } = {}): string {
  const dim = opts.dim ?? 16,
    L = opts.layers ?? 2,
    H = 40,
    NH = 4,
    KV = 2,
    T = 256;
  const vocab = llama2cBaseVocab();
  const merges = [' ', 'e', 't', 'a', 'o', 'n', 'h', 's', 'th', 'he', 'the', ' the', 'an', 'nd', 'and', ' and', 'in', 'er', 're', 'on', ' a', ' t', '.', ','];
  for (const m of merges) if (!vocab.includes(m)) vocab.push(m);
  const scores = vocab.map((_, i) => (i < 259 ? 0 : -i));
  const V = vocab.length;
  const w = randomLlamaWeights(
    {
      dim,
      hidden_dim: H,
      n_layers: L,
      n_heads: NH,
      n_kv_heads: KV,
      vocab_size: V,
      seq_len: T,
      norm_eps: 1e-5,
      rope_theta: 10000,
      shared_classifier: true,
    },
    new Rng(opts.seed ?? 1),
    { scale: 0.3, normNoise: 0.1 },
  );
  opts.edit?.(w);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'ckpt.bin'), writeLlama2c(w));
  writeFileSync(join(dir, 'tok.bin'), writeLlama2cTokenizer(vocab, scores));
  const out = join(dir, 'model');
  importLlama2c(join(dir, 'ckpt.bin'), join(dir, 'tok.bin'), out, 'tiny');
  return out;
}

export function corpusFile(dir: string, paragraphs = 400): string {
  const rng = new Rng(7);
  const words = [
    'the',
    'whale',
    'and',
    'ship',
    'sea',
    'captain',
    'a',
    'man',
    'on',
    'deck',
    'there',
    'then',
    'in',
    'her',
    'he',
    'said',
    'to',
    'nation',
    'state',
    'union',
  ];
  const text = Array.from({ length: paragraphs }, () => `${Array.from({ length: 40 }, () => words[rng.int(words.length)]).join(' ')}.`).join('\n\n\n');
  const p = join(dir, 'corpus.txt');
  writeFileSync(p, text);
  return p;
}

/**
 * The bundled model's layer 6 harvested (`tokens`) into dir/acts, with a small TopK SAE (dir/sae) and transcoder
 * (dir/tc) fitted on it through the CLI: the dictionaries the intervention and dashboard tests work on.
 */
export function bundledDictionaries(dir: string, tokens: string): { acts: string; sae: string; transcoder: string } {
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  };
  const acts = join(dir, 'acts'),
    sae = join(dir, 'sae'),
    transcoder = join(dir, 'tc');
  run('harvest', '--layer', '6', '--tokens', tokens, '--out', acts);
  for (const [out, kind] of [
    [sae, 'sae'],
    [transcoder, 'transcoder'],
  ]) {
    run(
      'fit',
      '--acts',
      acts,
      '--kind',
      kind,
      '--layer',
      '6',
      '--latents',
      '256',
      '--k',
      '8',
      '--batch',
      '1024',
      '--steps',
      '60',
      // Pinned (the default changes with measurement): the intervention tests read features of this dictionary.
      '--lr',
      '1.6e-3',
      '--eval-tokens',
      '2048',
      '--out',
      out,
    );
  }
  return { acts, sae, transcoder };
}

/** One native step (x as input and target) on fresh gradient buffers: its result, gradients and firing counts. */
export function nativeStepFresh(
  e: NativeEngine,
  shape: { dIn: number; dOut: number; dSae: number },
  p: NativeTensors,
  x: Float32Array,
  B: number,
  opts: NativeStepOptions,
) {
  const g: NativeTensors = {
    W_encT: new Float32Array(shape.dSae * shape.dIn),
    b_enc: new Float32Array(shape.dSae),
    W_dec: new Float32Array(shape.dSae * shape.dOut),
    b_dec: new Float32Array(shape.dOut),
    log_threshold: p.log_threshold ? new Float32Array(shape.dSae) : undefined,
  };
  const fired = new Float32Array(shape.dSae);
  return { r: e.step(p, g, x, x, B, opts, fired), g, fired };
}

type StepField = 'loss' | 'mse' | 'sparsityLoss' | 'auxLoss' | 'l0' | 'minSelected' | 'nnz' | 'dense';

/** Two native steps with the same results, firing counts and every gradient, bit for bit. */
export function sameNativeStep(
  name: string,
  a: ReturnType<typeof nativeStepFresh>,
  b: ReturnType<typeof nativeStepFresh>,
  fields: readonly StepField[] = ['loss', 'mse', 'auxLoss', 'l0', 'minSelected', 'nnz'],
) {
  for (const f of fields) assert.equal(a.r[f], b.r[f], `${name}: ${f}`);
  assert.deepEqual(a.fired, b.fired, `${name}: fired`);
  for (const t of ['W_encT', 'b_enc', 'W_dec', 'b_dec', 'log_threshold'] as const) assert.deepEqual(a.g[t], b.g[t], `${name}: d${t}`);
}

/**
 * A small dictionary for the step tests: an SAE reading site a (a transcoder a -> b when dOut differs), untied, with
 * biases, b_dec subtracted from an SAE's input; `shape` sets the test file's own sizes, `o` overrides anything.
 */
export function smallDict(
  activation: Activation,
  shape: { dIn: number; dSae: number; k: number; widths: (dSae: number) => number[] },
  o: Partial<DictConfig> = {},
): DictConfig {
  const dIn = o.dIn ?? shape.dIn,
    dOut = o.dOut ?? dIn,
    dSae = o.dSae ?? shape.dSae;
  return {
    kind: dIn === dOut ? 'sae' : 'transcoder',
    activation,
    sitesIn: [{ name: 'a', width: dIn }],
    sitesOut: [{ name: 'b', width: dOut }],
    dIn,
    dOut,
    dSae,
    k: shape.k,
    matryoshkaWidths: shape.widths(dSae),
    applyBDecToInput: dIn === dOut,
    noBias: false,
    tied: false,
    ...o,
  };
}

/** The native kernels' tests are skipped, with this reason, under SDLKIT_NATIVE=off (the TypeScript-only run). */
export const nativeSkip: string | false = process.env.SDLKIT_NATIVE === 'off' ? 'SDLKIT_NATIVE=off' : false;

/** The native module, failing the test when it is not built (call it only where nativeSkip is false). */
export function requireNative(): NativeModule {
  const m = native();
  assert.ok(m, `the native kernels are ${nativeStatus()}`);
  return m;
}
