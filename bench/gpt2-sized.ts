// A random llama2.c model of GPT-2-small's width and depth (d 768, 12 layers, 12 heads, SwiGLU 2,048) with the bundled
// tokenizer's 512 tokens: no pretrained model this size can be fetched here, and speed depends on shape, not weights.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomLlamaWeights, writeLlama2c } from '../src/models/llama2c.js';
import { importLlama2c } from '../src/models/import-llama2c.js';
import { BUNDLED_MODEL_DIR } from '../src/models/model.js';
import { Rng } from '../src/util/rng.js';

/** Writes the checkpoint and its imported model folder under `dir`; returns the model folder. */
export function gpt2SmallSized(dir: string): string {
  const dim = 768,
    L = 12,
    H = 2048,
    NH = 12,
    V = 512;
  const w = randomLlamaWeights(
    { dim, hidden_dim: H, n_layers: L, n_heads: NH, n_kv_heads: NH, vocab_size: V, seq_len: 1024, norm_eps: 1e-5, rope_theta: 10000, shared_classifier: true },
    new Rng(5),
    { scale: 0.02, normNoise: 0 },
  );
  writeFileSync(join(dir, 'big.bin'), writeLlama2c(w));
  const out = join(dir, 'big');
  importLlama2c(join(dir, 'big.bin'), join(BUNDLED_MODEL_DIR, 'sdl-tiny', 'tokenizer.bin'), out, 'gpt2-small-sized');
  return out;
}
