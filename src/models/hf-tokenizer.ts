// Hugging Face tokenizer.json (with tokenizer_config.json where present), through @huggingface/tokenizers:
// a maintained pure-JavaScript implementation of every normalizer, pre-tokenizer, model and decoder the
// Rust library defines, tested here against the Rust library's ids (test/fixtures/tokenizers).
// sdlkit adds only what the library leaves to the caller: which token starts a window (BosRule) and
// the display text of one token.
import * as hfLib from '@huggingface/tokenizers';
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { UserError } from '../util/errors.js';
import type { BosRule, Tokenizer } from './tokenizer-types.js';

/** tokenizer.json model types the library implements. */
const MODEL_TYPES = ['BPE', 'Unigram', 'WordPiece'] as const;

interface TokenizerJson {
  model?: { type?: string; vocab?: unknown };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  post_processor?: PostProcessor | null;
  decoder?: { type?: string; decoders?: { type?: string }[] } | null;
}
interface PostProcessor {
  type: string;
  single?: ({ SpecialToken?: { id: string } } | { Sequence?: { id: string } })[];
  cls?: [string, number];
  processors?: PostProcessor[];
}

/** A token named in tokenizer_config.json: a string, or an AddedToken object with `content`. */
function configToken(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** The special token the post-processor puts before the text, if any (Llama's <s>, BERT's [CLS]). */
function leadingSpecial(pp: PostProcessor | null | undefined): string | undefined {
  if (!pp) return undefined;
  if (pp.type === 'Sequence') {
    for (const p of pp.processors ?? []) {
      const t = leadingSpecial(p);
      if (t) return t;
    }
    return undefined;
  }
  if (pp.type === 'TemplateProcessing') {
    const first = pp.single?.[0];
    return first && 'SpecialToken' in first ? first.SpecialToken?.id : undefined;
  }
  if (pp.type === 'BertProcessing' || pp.type === 'RobertaProcessing') return pp.cls?.[0];
  return undefined;
}

/**
 * The BPE model's word cache: @huggingface/tokenizers keeps 10,000 words in an LRU cache whose every hit deletes and
 * re-inserts its key (a third of a GPT-2 tokenizer's time, and a corpus's words outnumber it, so they are merged again
 * and again). This one keeps up to 200,000 (as llama2.c's encoder does, native/src/bpe.cc) and starts over when full;
 * a cache only, so the ids are the library's (tested against the Rust library's).
 */
export class WordCache<V> {
  private readonly map = new Map<string, V>();
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  put(key: string, value: V): void {
    if (this.map.size >= 200_000) this.map.clear();
    this.map.set(key, value);
  }
}

/** The library's model, where its word cache lives (BPE models have one; see WordCache). */
const libModel = (lib: HfLibTokenizer) => (lib as unknown as { model?: { cache?: { get?: unknown; put?: unknown } } }).model;

/** The word cache of the library's model (a WordCache once HfTokenizer has replaced it). */
export function bpeWordCache(lib: HfLibTokenizer): unknown {
  return libModel(lib)?.cache;
}

/**
 * The byte-level pre-tokenizer (GPT-2, Llama-3, Qwen) writes every word anew in its byte alphabet: the word's UTF-8,
 * an array of one-character strings, a join (~0.75 s of 2.4 for 435k tokens of GPT-2's tokenizer, after WordCache).
 * This has it write each distinct word once and keep it in a WordCache: the words are those of the library's own
 * pattern and the writing is the library's own code, called on the word alone. Returns how many pre-tokenizers it
 * changed (a Sequence holds several; tests check that byte-level tokenizers get it).
 */
export function cacheByteLevel(pt: unknown): number {
  // The classes the library exports at run time (its type declarations do not reach them under NodeNext resolution).
  const { ByteLevelPreTokenizer: ByteLevel, SequencePreTokenizer: Sequence } = hfLib as unknown as Record<string, (new (...a: never[]) => unknown) | undefined>;
  if (!ByteLevel || !Sequence) return 0;
  if (pt instanceof Sequence) return ((pt as { tokenizers?: unknown[] }).tokenizers ?? []).reduce<number>((n, p) => n + cacheByteLevel(p), 0);
  if (!(pt instanceof ByteLevel) || !((pt as ByteLevelLike).pattern instanceof RegExp)) return 0;
  const write = (ByteLevel.prototype as ByteLevelLike).pre_tokenize_text;
  // The library's writing of one word: its pre-tokenizer with no prefix space and no split.
  const alone = Object.assign(Object.create(ByteLevel.prototype), pt, { add_prefix_space: false, use_regex: false }) as ByteLevelLike;
  const written = new WordCache<string>();
  const writeWord = (w: string): string => {
    let out = written.get(w);
    if (out === undefined) {
      out = write.call(alone, w)[0] ?? '';
      written.put(w, out);
    }
    return out;
  };
  (pt as ByteLevelLike).pre_tokenize_text = function (this: ByteLevelLike, text: string): string[] {
    if (this.add_prefix_space && !text.startsWith(' ')) text = ` ${text}`;
    return (this.use_regex ? (text.match(this.pattern) ?? []) : [text]).map(writeWord);
  };
  return 1;
}

/** Words longer than this go to the model uncached (a Unigram file whose pre-tokenizer does not split hands it whole texts). */
const CACHED_WORD = 64;

/**
 * WordPiece (BERT) and Unigram (T5, ALBERT) models encode each word the pre-tokenizer hands them on its own: WordPiece
 * by greedy longest match (the word as an array of characters, and a joined string and a Map lookup for every prefix
 * tried), Unigram by a Viterbi pass over a lattice of the word's pieces; neither keeps what it found. This has each
 * distinct word encoded once, by the model's own code on the word alone, and its pieces kept in a WordCache. The
 * library's steps after the model (fusing unknown pieces, which may join across words) see the same pieces. Returns
 * whether the model was changed.
 */
export function cacheWordModel(model: unknown): boolean {
  const m = model as { encode?: (words: string[]) => string[] } | undefined;
  if (!m || typeof m.encode !== 'function') return false;
  const encode = m.encode.bind(m);
  const cache = new WordCache<string[]>();
  m.encode = (words: string[]): string[] => {
    const out: string[] = [];
    for (const w of words) {
      let pieces = w.length > CACHED_WORD ? encode([w]) : cache.get(w);
      if (pieces === undefined) cache.put(w, (pieces = encode([w])));
      for (const p of pieces) out.push(p);
    }
    return out;
  };
  return true;
}

/** What cutAtWords uses of the library's BPE model. */
interface BpeModelLike {
  merges?: unknown;
  end_of_word_suffix?: unknown;
  continuing_subword_suffix?: unknown;
  bpe?: (text: string) => string[];
}

/** Texts up to this long go to the model whole (its word cache keeps them); longer ones are cut at words. */
const WHOLE_TEXT = 32;

/**
 * Metaspace BPE files (Llama-2, Mistral, Gemma: the normalizer writes spaces as '▁') can hand the BPE model whole
 * documents as one word (Llama-2's have no pre-tokenizer; Gemma-3's splits at spaces the normalizer has already
 * replaced), which the library merges at once and caches none of: ~9-11 us a token with the bundled model's
 * tokenizer.json, ~57 us with Gemma-3's. A merge joins two pieces of the text; the pieces it makes that have a '▁'
 * after another character than '▁' (Llama-2: none; Gemma-3: one, ">▁</") are the only ones that can span the place
 * before such a '▁'. So a long text is cut before every '▁' that follows another character, except where one of
 * those pieces lies across the cut in the text, and the words are merged one by one through the model's own merging
 * and word cache: the same pieces. Returns whether the model was changed (a file whose merges have no '▁' is not).
 */
export function cutAtWords(model: unknown): boolean {
  const m = model as BpeModelLike | undefined;
  if (!m || typeof m.bpe !== 'function' || !Array.isArray(m.merges) || m.end_of_word_suffix || m.continuing_subword_suffix) return false;
  const spanning: { text: string; at: number }[] = []; // a piece that may lie across a cut, and where its '▁' is
  let metaspace = false;
  for (const pair of m.merges as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return false;
    const piece = `${pair[0]}${pair[1]}`;
    if (piece.includes('▁')) metaspace = true;
    for (let j = piece.indexOf('▁', 1); j > 0; j = piece.indexOf('▁', j + 1)) if (piece[j - 1] !== '▁') spanning.push({ text: piece, at: j });
  }
  if (!metaspace) return false;
  const merge = m.bpe.bind(m);
  m.bpe = (text: string): string[] => {
    if (text.length <= WHOLE_TEXT) return merge(text);
    const out: string[] = [];
    let start = 0;
    for (let i = 1; i < text.length; i++) {
      if (text.charCodeAt(i) !== 0x2581 || text.charCodeAt(i - 1) === 0x2581) continue;
      if (spanning.some((p) => text.startsWith(p.text, i - p.at))) continue;
      for (const t of merge(text.slice(start, i))) out.push(t);
      start = i;
    }
    for (const t of merge(text.slice(start))) out.push(t);
    return out;
  };
  return true;
}

/** What cacheByteLevel uses of the library's ByteLevel pre-tokenizer (its public fields). */
interface ByteLevelLike {
  add_prefix_space: boolean;
  use_regex: boolean;
  pattern: RegExp;
  pre_tokenize_text(text: string, options?: unknown): string[];
}

export class HfTokenizer implements Tokenizer {
  readonly kind: string;
  readonly vocabSize: number;
  readonly bos: BosRule;
  private readonly lib: HfLibTokenizer;
  private readonly special = new Set<number>();
  private readonly byteLevel: boolean;
  private readonly wordPiece: boolean;
  /** Byte-level pre-tokenizers whose words are written once each (cacheByteLevel). */
  readonly byteLevelCached: number;
  /** Long texts handed to a Metaspace BPE model are merged a word at a time (cutAtWords). */
  readonly wordsCut: boolean;
  /** A WordPiece or Unigram model encodes each distinct word once (cacheWordModel). */
  readonly wordsCached: boolean;

  constructor(json: unknown, config: Record<string, unknown>, source = 'tokenizer.json') {
    const j = json as TokenizerJson;
    const type = j?.model?.type;
    if (!j?.model?.vocab) throw new UserError(`${source} is not a Hugging Face tokenizer.json (it has no model.vocab)`);
    if (!MODEL_TYPES.includes(type as (typeof MODEL_TYPES)[number]))
      throw new UserError(
        `${source}: tokenizer model type ${JSON.stringify(type)} is not supported (sdlkit reads ${MODEL_TYPES.join(', ')}); convert the tokenizer or pass another with --tokenizer`,
      );
    try {
      this.lib = new HfLibTokenizer(j, config);
    } catch (e) {
      throw new UserError(`${source} cannot be read: ${String((e as Error).message).split('\n')[0]}`);
    }
    this.kind = `hf-${type}`;
    const model = libModel(this.lib);
    if (type === 'BPE' && model?.cache && typeof model.cache.get === 'function' && typeof model.cache.put === 'function') model.cache = new WordCache();
    this.byteLevelCached = cacheByteLevel((this.lib as unknown as { pre_tokenizer?: unknown }).pre_tokenizer);
    this.wordsCut = type === 'BPE' && cutAtWords(model);
    this.wordsCached = (type === 'WordPiece' || type === 'Unigram') && cacheWordModel(model);
    let maxId = -1;
    for (const id of this.lib.get_vocab(true).values()) maxId = Math.max(maxId, id);
    for (const a of j.added_tokens ?? []) {
      maxId = Math.max(maxId, a.id);
      if (a.special) this.special.add(a.id);
    }
    this.vocabSize = maxId + 1;
    const decoders = [j.decoder?.type, ...(j.decoder?.decoders ?? []).map((d) => d.type)];
    this.byteLevel = decoders.includes('ByteLevel');
    this.wordPiece = type === 'WordPiece';
    this.bos = this.bosRule(j, config, source);
  }

  get bosId(): number {
    return this.bos.id;
  }

  /**
   * Which token starts every window. The tokenizer's own rule first (its post-processor, then
   * tokenizer_config's add_bos_token); a tokenizer that adds none (GPT-2) gets the convention of SAELens'
   * prepend_bos: its bos_token, else its document separator <|endoftext|>, else its eos_token.
   */
  private bosRule(j: TokenizerJson, config: Record<string, unknown>, source: string): BosRule {
    const idOf = (t: string | undefined) => (t === undefined ? undefined : this.lib.token_to_id(t));
    const candidates: [string | undefined, string][] = [
      [leadingSpecial(j.post_processor), 'the post-processor adds it'],
      [config.add_bos_token === true ? configToken(config.bos_token) : undefined, 'tokenizer_config add_bos_token'],
      [configToken(config.bos_token), "tokenizer_config bos_token (the tokenizer does not add it; sdlkit prepends it, as SAELens' prepend_bos)"],
      ['<|endoftext|>', 'the document separator <|endoftext|> (the tokenizer defines no BOS)'],
      [configToken(config.eos_token), 'tokenizer_config eos_token as the document separator (the tokenizer defines no BOS)'],
    ];
    for (const [token, why] of candidates) {
      const id = idOf(token);
      if (token !== undefined && id !== undefined) return { id, token, source: why };
    }
    throw new UserError(
      `${source} defines no token to start a sequence (no BOS in its post-processor or tokenizer_config.json, no <|endoftext|>, no eos_token); add bos_token to tokenizer_config.json`,
    );
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = text.length ? this.lib.encode(text, { add_special_tokens: false }).ids : [];
    return (opts.bos ?? true) ? [this.bos.id, ...ids] : ids;
  }

  encodeIds(text: string): Int32Array {
    return Int32Array.from(this.encode(text, { bos: false }));
  }

  decode(ids: readonly number[]): string {
    return this.lib.decode(Array.from(ids), { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  piece(id: number): string {
    const t = this.lib.id_to_token(id);
    if (t === undefined) return `<${id}>`;
    if (this.special.has(id)) return t;
    if (this.byteLevel) return this.lib.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    if (this.wordPiece) return t.startsWith('##') ? t.slice(2) : ` ${t}`;
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
    if (byte) {
      const b = Number.parseInt(byte[1], 16);
      return b === 10 ? '\n' : b < 128 ? String.fromCharCode(b) : t;
    }
    return t.replace(/▁/g, ' ');
  }
}
