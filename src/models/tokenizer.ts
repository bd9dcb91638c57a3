// Tokenizers: llama2.c's tokenizer.bin (SentencePiece-style BPE by merge score, with byte fallback)
// and any Hugging Face tokenizer.json (through @huggingface/tokenizers, in hf-tokenizer.ts). One interface.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '../util/errors.js';
import { native, type NativeBpe } from '../native/kernels.js';
import { HfTokenizer } from './hf-tokenizer.js';
import type { BosRule, Tokenizer } from './tokenizer-types.js';

export type { BosRule, Tokenizer } from './tokenizer-types.js';

const utf8 = new TextDecoder('utf-8');
/** A UTF-16 surrogate without its pair (in a u-mode pattern, a whole pair is one code point, not Cs). */
const LONE_SURROGATE = /\p{Cs}/u;

export class Llama2cTokenizer implements Tokenizer {
  readonly kind = 'llama2c';
  readonly bosId = 1;
  readonly eosId = 2;
  readonly bos: BosRule = { id: 1, token: '<s>', source: 'llama2.c (id 1)' };
  readonly vocab: string[];
  readonly scores: Float32Array;
  private readonly lookup = new Map<string, number>();
  readonly maxTokenLength: number;

  /**
   * `useNative` (default true): word-safe vocabularies encode well-formed text through the native kernel
   * (native/src/bpe.cc) where it is built; false keeps this class's own code, the reference the tests hold it to.
   */
  constructor(buf: Uint8Array, vocabSize: number, source = 'tokenizer', useNative = true) {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (buf.length < 4) throw new UserError(`${source} is not a llama2.c tokenizer (too short)`);
    this.maxTokenLength = dv.getInt32(0, true);
    this.vocab = [];
    this.scores = new Float32Array(vocabSize);
    let off = 4;
    for (let i = 0; i < vocabSize; i++) {
      if (off + 8 > buf.length)
        throw new UserError(
          `${source} holds fewer than the ${vocabSize} tokens the model needs (ended at token ${i}); pass the tokenizer that belongs to this model`,
        );
      this.scores[i] = dv.getFloat32(off, true);
      const len = dv.getInt32(off + 4, true);
      off += 8;
      if (len < 0 || off + len > buf.length) throw new UserError(`${source}: token ${i} has an invalid length ${len}; not a llama2.c tokenizer`);
      const s = utf8.decode(buf.subarray(off, off + len));
      off += len;
      this.vocab.push(s);
      if (!this.lookup.has(s)) this.lookup.set(s, i);
    }
    this.wordSafe = this.vocab.every((p) => p.indexOf(' ', 1) < 0);
    // 259 pieces at least: the byte fallback's ids (3..258) must be pieces of the vocabulary.
    const mod = useNative && this.wordSafe && this.vocab.length >= 259 ? native() : undefined;
    this.fast = mod?.Bpe ? new mod.Bpe(this.vocab, this.scores) : undefined; // (a build from before bpe.cc lacks it)
  }

  /** The native encoder (native/src/bpe.cc), for word-safe vocabularies where the native build loads. */
  private readonly fast?: NativeBpe;

  /** Whether encode() goes through the native kernel (for tests and logs). */
  get usesNative(): boolean {
    return this.fast !== undefined;
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  /**
   * True when no piece has a space after its first character: then no merge can cross the start of a
   * space-led word, and encoding word by word (with a cache) gives exactly run.c's result.
   */
  readonly wordSafe: boolean = false;
  private readonly wordCache = new Map<string, number[]>();

  /**
   * Encodes exactly as llama2.c's run.c: optional BOS, a dummy-prefix space, code points, then merges by
   * best score. Word-safe vocabularies go word by word (with a cache); others in pieces of about 2,000
   * characters cut after a newline, so the quadratic merge loop stays fast on long documents.
   */
  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const bos = opts.bos ?? true;
    const fastIds = this.nativeIds(text);
    if (fastIds) {
      const out: number[] = bos ? [this.bosId] : [];
      for (let i = 0; i < fastIds.length; i++) out.push(fastIds[i]);
      return out;
    }
    const tokens: number[] = bos ? [this.bosId] : [];
    if (!this.wordSafe) {
      for (const [piece, first] of pieces(text, 2000)) tokens.push(...this.mergeAll(this.withPrefix(piece, first)));
      return tokens;
    }
    const withPrefix = this.withPrefix(text, true);
    // Words start at each space; runs of spaces each start a word (a merge may still join them, since
    // a piece '  ' has its second space after index 0 only if such a piece exists, which wordSafe excludes).
    // Split natively: parts[i > 0] is the word ' ' + parts[i] (cached under parts[i]); parts[0] is a word of
    // its own unless empty (the text began with a space, and parts[1] carries it).
    const parts = withPrefix.split(' ');
    if (parts[0] !== '') this.pushWord(tokens, parts[0], this.wordCache, '');
    for (let i = 1; i < parts.length; i++) this.pushWord(tokens, parts[i], this.spacedCache, ' ');
    return tokens;
  }

  encodeIds(text: string): Int32Array {
    return this.nativeIds(text) ?? Int32Array.from(this.encode(text, { bos: false }));
  }

  /**
   * The native encoder's ids (no BOS), or undefined where this class's own code encodes: no native build, a
   * vocabulary that is not word-safe, or a lone surrogate in the text (it has no UTF-8 form: the native side would
   * read U+FFFD, which may be a piece, where run.c's rule takes the bytes of U+FFFD through the byte fallback).
   */
  private nativeIds(text: string): Int32Array | undefined {
    return this.fast && !LONE_SURROGATE.test(text) ? this.fast.encode(text, this.lookup.has(' ')) : undefined;
  }

  /** Words' ids by the text after their leading space. */
  private readonly spacedCache = new Map<string, number[]>();

  private pushWord(tokens: number[], key: string, cache: Map<string, number[]>, lead: string): void {
    let ids = cache.get(key);
    if (!ids) {
      ids = this.mergeAll(lead + key);
      if (this.wordCache.size + this.spacedCache.size < 200000) cache.set(key, ids); // one bound for both caches
    }
    for (let j = 0; j < ids.length; j++) tokens.push(ids[j]);
  }

  private withPrefix(text: string, first: boolean): string {
    return text.length > 0 && first && this.lookup.has(' ') ? ` ${text}` : text;
  }

  /** run.c's algorithm on one string: code points (or their bytes + 3), then best-score merges, leftmost on ties. */
  private mergeAll(text: string): number[] {
    const tokens: number[] = [];
    const enc = new TextEncoder();
    for (const ch of text) {
      const id = this.lookup.get(ch);
      if (id !== undefined) tokens.push(id);
      else for (const b of enc.encode(ch)) tokens.push(b + 3); // byte fallback: <0x00> is id 3
    }
    for (;;) {
      let bestScore = -Infinity,
        bestIdx = -1,
        bestId = -1;
      for (let i = 0; i + 1 < tokens.length; i++) {
        const id = this.lookup.get(this.vocab[tokens[i]] + this.vocab[tokens[i + 1]]);
        if (id !== undefined && this.scores[id] > bestScore) {
          bestScore = this.scores[id];
          bestIdx = i;
          bestId = id;
        }
      }
      if (bestIdx < 0) break;
      tokens.splice(bestIdx, 2, bestId);
    }
    return tokens;
  }

  /** The reference path, without the word split (for tests). */
  encodeGlobal(text: string): number[] {
    return [this.bosId, ...this.mergeAll(text.length > 0 && this.lookup.has(' ') ? ` ${text}` : text)];
  }

  private pieceBytes(id: number, prev: number): Uint8Array | string {
    let p = this.vocab[id] ?? '';
    if (prev === this.bosId && p.startsWith(' ')) p = p.slice(1);
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
    if (m) return new Uint8Array([parseInt(m[1], 16)]);
    return p;
  }

  decode(ids: readonly number[]): string {
    // Byte tokens can split a UTF-8 character: gather bytes, decode once.
    const enc = new TextEncoder();
    const parts: Uint8Array[] = [];
    let prev = -1;
    for (const id of ids) {
      if (id === this.bosId || id === this.eosId) {
        prev = id;
        continue;
      }
      const b = this.pieceBytes(id, prev);
      parts.push(typeof b === 'string' ? enc.encode(b) : b);
      prev = id;
    }
    const total = parts.reduce((a, p) => a + p.length, 0);
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return utf8.decode(all);
  }

  piece(id: number): string {
    if (id === this.bosId) return '<s>';
    if (id === this.eosId) return '</s>';
    const p = this.vocab[id] ?? `<${id}>`;
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
    if (m) {
      const b = parseInt(m[1], 16);
      return b === 10 ? '\n' : b < 128 ? String.fromCharCode(b) : p;
    }
    return p;
  }
}

/** Loads a tokenizer file by its format: llama2.c `.bin` (needs the vocab size) or HF `tokenizer.json`. */
export function loadTokenizer(path: string, vocabSize?: number): Tokenizer {
  if (!existsSync(path)) throw new UserError(`tokenizer ${path} not found; pass --tokenizer with a llama2.c tokenizer.bin or a Hugging Face tokenizer.json`);
  const buf = readFileSync(path);
  if (path.endsWith('.json')) {
    let json: unknown;
    try {
      json = JSON.parse(buf.toString('utf8'));
    } catch {
      throw new UserError(`${path} is not valid JSON; pass a Hugging Face tokenizer.json`);
    }
    const cfgPath = join(dirname(path), 'tokenizer_config.json');
    let config: Record<string, unknown> = {};
    if (existsSync(cfgPath))
      try {
        config = JSON.parse(readFileSync(cfgPath, 'utf8'));
      } catch {
        throw new UserError(`${cfgPath} is not valid JSON; fix or remove it (it sits beside ${path})`);
      }
    return new HfTokenizer(json, config, path);
  }
  if (vocabSize === undefined) throw new UserError(`${path}: a llama2.c tokenizer needs the model's vocabulary size (from the model's config.json)`);
  return new Llama2cTokenizer(buf, vocabSize, path);
}

/** Serialises a llama2.c tokenizer.bin (max_token_length, then score, byte length and bytes per token). */
export function writeLlama2cTokenizer(vocab: readonly string[], scores: ArrayLike<number>): Uint8Array {
  const enc = new TextEncoder();
  const pieces = vocab.map((v) => enc.encode(v));
  const maxLen = pieces.reduce((a, p) => Math.max(a, p.length), 0);
  const out = new Uint8Array(4 + pieces.reduce((a, p) => a + 8 + p.length, 0));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, maxLen, true);
  let off = 4;
  pieces.forEach((p, i) => {
    dv.setFloat32(off, scores[i], true);
    dv.setInt32(off + 4, p.length, true);
    out.set(p, off + 8);
    off += 8 + p.length;
  });
  return out;
}

/** The 259 fixed tokens of a llama2.c vocabulary: <unk>, <s>, </s>, then byte fallbacks <0x00>..<0xFF>. */
export function llama2cBaseVocab(): string[] {
  return ['<unk>', '\n<s>\n', '\n</s>\n', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
}

/** Cuts text into pieces of about `chunk` characters after a newline (or a space); yields [piece, isFirst]. */
function* pieces(text: string, chunk: number): Generator<[string, boolean]> {
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + chunk);
    if (end < text.length) {
      const nl = text.lastIndexOf('\n', end);
      if (nl > start) end = nl + 1;
      else {
        const sp = text.lastIndexOf(' ', end);
        if (sp > start) end = sp;
      }
    }
    yield [text.slice(start, end), start === 0];
    start = end;
  }
}
