import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { trainBpe, hfTokenizerJson } from '../src/lm/bpe-train.js';
import { Llama2cTokenizer, loadTokenizer, writeLlama2cTokenizer } from '../src/models/tokenizer.js';
import { BUNDLED_MODEL_DIR } from '../src/models/model.js';
import { documents } from '../src/corpus/sources.js';
import { UserError } from '../src/util/errors.js';
import { HfTokenizer, WordCache, bpeWordCache } from '../src/models/hf-tokenizer.js';
import type { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { native } from '../src/native/kernels.js';
import { SHARED, STORIES, sharedSkip, tmp } from './helpers.js';
import { Rng } from '../src/util/rng.js';

const text = `Call me Ishmael. Some years ago - never mind how long precisely - having little or no money in my purse,
and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.
The Congress shall have Power To lay and collect Taxes, Duties, Imposts and Excises — 1,234 dollars; naïve café.`;

test('BPE training: byte fallback, merges that never cross a space, and run.c encoding that round-trips', () => {
  const t = trainBpe([text, text.toUpperCase(), text.slice(100)], { vocabSize: 400, minCharCount: 2 });
  assert.equal(t.vocab.length, 400);
  assert.deepEqual(t.vocab.slice(0, 4), ['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>']);
  assert.ok(
    t.vocab.every((p) => p.indexOf(' ', 1) < 0),
    'no piece has a space after its first character',
  );
  const tok = new Llama2cTokenizer(writeLlama2cTokenizer(t.vocab, t.scores), t.vocab.length);
  assert.ok(tok.wordSafe);
  // Spaces at either end and in runs: each starts a word of its own (the split keeps them).
  const spaced = ['', ' ', '  ', 'a', ' a', 'a ', '  the  cat   sat ', ' \nthe\n ', 'the the the'];
  for (const s of [text, 'unseen words: ζ∑ and emoji 🐋 fall back to bytes', ...spaced]) {
    const ids = tok.encode(s);
    assert.deepEqual(ids, tok.encodeGlobal(s), `word-by-word encoding equals run.c's global merge loop (${JSON.stringify(s.slice(0, 20))})`);
    assert.equal(tok.decode(ids), s);
  }
  assert.ok(tok.encode(text).length < 0.7 * text.length, `merges compress the training text (${tok.encode(text).length} tokens for ${text.length} characters)`);
  const hf = hfTokenizerJson(t) as { model: { type: string; byte_fallback: boolean; vocab: Record<string, number>; merges: string[][] } };
  assert.equal(hf.model.type, 'BPE');
  assert.ok(hf.model.byte_fallback);
  assert.equal(Object.keys(hf.model.vocab).length, 400);
  assert.equal(hf.model.merges.length, t.merges.length);
});

test('long documents are tokenized in pieces exactly as a whole (stories260K tokenizer)', { skip: sharedSkip }, () => {
  const tok = new Llama2cTokenizer(readFileSync(join(STORIES, 'tok512.bin')), 512);
  assert.ok(tok.wordSafe);
  const long = Array.from({ length: 30 }, () => text).join('\n');
  assert.deepEqual(tok.encode(long), tok.encodeGlobal(long));
  assert.equal(tok.decode(tok.encode(long)), long);
});

// Hugging Face tokenizer.json files of each family's type, shrunk from the real files (or built in the
// family's layout) by test/fixtures/tokenizers/make.mjs, with ids from Hugging Face's Rust library.
const FIXTURES = join(dirname(new URL(import.meta.url).pathname), '../../test/fixtures/tokenizers');
const EXPECTED_BOS: Record<string, [string, RegExp]> = {
  gpt2: ['<|endoftext|>', /bos_token/],
  llama3: ['<|begin_of_text|>', /bos_token/],
  qwen3: ['<|endoftext|>', /document separator/],
  llama2: ['<s>', /post-processor/],
  gemma3: ['<bos>', /post-processor/],
  t5: ['</s>', /eos_token/],
  bert: ['[CLS]', /post-processor/],
};

for (const [family, [bosToken, bosSource]] of Object.entries(EXPECTED_BOS)) {
  test(`tokenizer.json (${family}): the same ids as Hugging Face's Rust library, and its BOS rule`, () => {
    const ref = JSON.parse(readFileSync(join(FIXTURES, family, 'reference.json'), 'utf8')) as {
      what: string;
      vocab_size: number;
      cases: { text: string; ids: number[]; ids_special: number[] }[];
    };
    const tok = loadTokenizer(join(FIXTURES, family, 'tokenizer.json'));
    assert.equal(tok.vocabSize, ref.vocab_size);
    assert.equal(tok.bos.token, bosToken);
    assert.match(tok.bos.source, bosSource);
    // BPE files run with sdlkit's word cache in the library's place (hf-tokenizer.ts): each case is encoded twice,
    // the second time from the cache.
    const cache = bpeWordCache((tok as unknown as { lib: HfLibTokenizer }).lib);
    if (tok.kind === 'hf-BPE') assert.ok(cache instanceof WordCache, `${family}: the library's word cache was replaced`);
    // Byte-level files write each word in the byte alphabet once (cacheByteLevel): the second encoding reads it back.
    assert.equal((tok as HfTokenizer).byteLevelCached > 0, /gpt2|llama3|qwen3/.test(family), `${family}: byte-level words cached`);
    // Metaspace BPE files (Llama-2's and Gemma-3's layouts hand the model whole texts) are merged a word at a time (cutAtWords).
    assert.equal((tok as HfTokenizer).wordsCut === true, /llama2|gemma3/.test(family), `${family}: texts cut at words`);
    // WordPiece and Unigram models encode each distinct word once (cacheWordModel).
    assert.equal((tok as HfTokenizer).wordsCached, /bert|t5/.test(family), `${family}: words' pieces cached`);
    let tokens = 0;
    for (const c of ref.cases) {
      assert.deepEqual(tok.encode(c.text, { bos: false }), c.ids, `${ref.what}: ${JSON.stringify(c.text.slice(0, 40))}`);
      assert.deepEqual(tok.encode(c.text, { bos: false }), c.ids, `${ref.what}, again: ${JSON.stringify(c.text.slice(0, 40))}`);
      tokens += c.ids.length;
      // Where the tokenizer's own post-processor starts the sequence, sdlkit's BOS is that token.
      if (/post-processor/.test(tok.bos.source)) assert.equal(c.ids_special[0], tok.bosId);
      assert.deepEqual(tok.encode(c.text), [tok.bosId, ...c.ids]);
      // Byte-level and byte-fallback files are lossless: decoding gives the text back.
      if (/gpt2|llama3|qwen3/.test(family)) assert.equal(tok.decode(c.ids), c.text);
    }
    assert.ok(tokens > 500, `${tokens} reference tokens`);
    assert.ok(tok.piece(tok.bosId).length > 0);
  });
}

test('the bundled tokenizer.json gives the same ids as its tokenizer.bin (llama2.c) on the corpus', () => {
  const bin = loadTokenizer(join(BUNDLED_MODEL_DIR, 'sdl-tiny/tokenizer.bin'), 512);
  const json = loadTokenizer(join(BUNDLED_MODEL_DIR, 'sdl-tiny/tokenizer.json'));
  assert.equal(json.kind, 'hf-BPE');
  assert.ok((json as HfTokenizer).wordsCut, 'whole documents merged a word at a time (cutAtWords)');
  assert.equal(json.bosId, bin.bosId);
  // Every held-out document, twice (the second time from the word caches).
  let n = 0;
  for (const d of documents({ source: 'builtin', split: 'heldout' })) {
    const want = bin.encode(d.text);
    assert.deepEqual(json.encode(d.text), want, d.text.slice(0, 60));
    assert.deepEqual(json.encode(d.text), want, `${d.text.slice(0, 60)}, again`);
    n += want.length;
  }
  assert.ok(n > 100_000, `${n} tokens`);
});

test('a tokenizer.json of a type sdlkit cannot read is refused in one line naming the type', () => {
  const dir = tmp('sdl-tok-');
  const f = join(dir, 'tokenizer.json');
  writeFileSync(f, JSON.stringify({ model: { type: 'WordLevel', vocab: { a: 0 }, unk_token: 'a' } }));
  assert.throws(
    () => loadTokenizer(f),
    (e: Error) => e instanceof UserError && /model type "WordLevel" is not supported/.test(e.message) && !e.message.includes('\n'),
  );
  const parts = { added_tokens: [], normalizer: { type: 'Frobnicate' }, pre_tokenizer: null, post_processor: null, decoder: null };
  writeFileSync(f, JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] }, ...parts }));
  assert.throws(
    () => loadTokenizer(f),
    (e: Error) => e instanceof UserError && /cannot be read: Unknown Normalizer type: Frobnicate/.test(e.message),
  );
});

test('the native llama2.c encoder gives the TypeScript reference ids: the whole built-in corpus, edge strings, lone surrogates', () => {
  const mod = native();
  const bytes = readFileSync(join(BUNDLED_MODEL_DIR, 'sdl-tiny/tokenizer.bin'));
  const ref = new Llama2cTokenizer(bytes, 512, 'bundled', false);
  const tok = new Llama2cTokenizer(bytes, 512, 'bundled');
  assert.equal(ref.usesNative, false);
  assert.equal(tok.usesNative, mod !== undefined, 'the native encoder is used wherever the native build loads');
  if (!mod) return;
  let tokens = 0;
  for (const d of documents({ source: 'builtin', split: 'all' })) {
    const ids = tok.encodeIds(d.text);
    tokens += ids.length;
    assert.deepEqual(ids, Int32Array.from(ref.encode(d.text, { bos: false })), `document ${d.key}`);
  }
  assert.ok(tokens > 5e6, `the whole corpus (${tokens} tokens)`);
  const edges = ['', ' ', '  ', 'a', ' a', 'a ', '  the  cat   sat ', ' \nthe\n ', '\0 nul', 'ζ∑ 🐋🐋 naïve café', 'x'.repeat(5000), text];
  const lone = ['\uD800', 'a\uDC00b', '🐋\uD83D', ' \uDFFF '];
  for (const s of [...edges, ...lone, ...edges.map((e) => e.toUpperCase())])
    for (const bos of [true, false]) {
      assert.deepEqual(tok.encode(s, { bos }), ref.encode(s, { bos }), JSON.stringify(s.slice(0, 30)));
      assert.deepEqual(tok.encodeIds(s), ref.encodeIds(s), JSON.stringify(s.slice(0, 30)));
    }
  // Random strings over a small alphabet of spaces, newlines, ASCII, accents, CJK and astral characters.
  const alphabet = [' ', ' ', '\n', 'e', 't', 'a', 'th', 'é', '—', '中', '🐋', '\t', '.'];
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let q = 0; q < 300; q++) {
    const s = Array.from({ length: rand(60) }, () => alphabet[rand(alphabet.length)]).join('');
    assert.deepEqual(tok.encode(s), ref.encode(s), JSON.stringify(s));
  }
  // Ties: merges of equal score (ab, ba) and one merge at several places (aa): the leftmost is taken first.
  const vocab = ['<unk>', '\n<s>\n', '\n</s>\n', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
  const pieces: [string, number][] = [
    [' ', -9],
    ['a', -9],
    ['b', -9],
    [' a', -1],
    ['aa', -2],
    ['ab', -3],
    ['ba', -3],
    ['aaa', -4],
    ['aba', -5],
    [' ab', -5],
  ];
  const crafted = writeLlama2cTokenizer([...vocab, ...pieces.map((p) => p[0])], [...vocab.map(() => 0), ...pieces.map((p) => p[1])]);
  const [cref, ctok] = [
    new Llama2cTokenizer(crafted, vocab.length + pieces.length, 'crafted', false),
    new Llama2cTokenizer(crafted, vocab.length + pieces.length, 'crafted'),
  ];
  assert.ok(ctok.usesNative);
  for (const s of ['aba', 'baba', 'aaaa', 'aaaaa', 'babab', 'ab ba aab bba', 'abababa aaaa  b', 'xaba'])
    assert.deepEqual(ctok.encode(s), cref.encode(s), JSON.stringify(s));
  assert.deepEqual(
    cref.encode('baba', { bos: false }).map((id) => cref.vocab[id]),
    [' ', 'ba', 'ba'],
    'the tie between ab and ba goes to the leftmost pair',
  );
  assert.throws(() => new mod.Bpe(['a', 'b'], new Float32Array(2)), /at least 259/);
});

test('the native encoder on the stories260K tokenizer gives the reference ids', { skip: sharedSkip }, () => {
  const bytes = readFileSync(join(STORIES, 'tok512.bin'));
  const [ref, tok] = [new Llama2cTokenizer(bytes, 512, 'stories', false), new Llama2cTokenizer(bytes, 512, 'stories')];
  for (const d of documents({ source: 'builtin', split: 'heldout' })) assert.deepEqual(tok.encode(d.text), ref.encode(d.text), `document ${d.key}`);
});

test("GPT-2's whole tokenizer.json with sdlkit's caches gives the library's own ids on the held-out corpus, twice", { skip: sharedSkip }, async () => {
  const dir = join(SHARED, 'models/tiny-random-gpt2');
  const json = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  const { Tokenizer: Lib } = await import('@huggingface/tokenizers');
  const plain = new Lib(json, config); // the library as published (its ids match the Rust library's on the fixtures)
  const tok = loadTokenizer(join(dir, 'tokenizer.json')) as HfTokenizer;
  assert.equal(tok.byteLevelCached, 1);
  let n = 0;
  for (const d of documents({ source: 'builtin', split: 'heldout' })) {
    const want = plain.encode(d.text, { add_special_tokens: false }).ids;
    assert.deepEqual(tok.encode(d.text, { bos: false }), want, d.key);
    assert.deepEqual(Array.from(tok.encodeIds(d.text)), want, `${d.key}, again`);
    n += want.length;
  }
  assert.ok(n > 100_000, `${n} tokens`);
});

test("WordPiece (BERT) and Unigram (T5) files with sdlkit's word cache give the library's own ids on the held-out corpus, twice", async () => {
  const { Tokenizer: Lib } = await import('@huggingface/tokenizers');
  // Words past the cache's length limit go to the model uncached; WordPiece's past 100 characters are [UNK].
  const long = `${'x'.repeat(70)} ${'whale'.repeat(30)} ${'y'.repeat(65)}-${'z'.repeat(64)}`;
  for (const family of ['bert', 't5']) {
    const json = JSON.parse(readFileSync(join(FIXTURES, family, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(join(FIXTURES, family, 'tokenizer_config.json'), 'utf8'));
    const plain = new Lib(json, config); // the library as published (its ids match the Rust library's on the fixtures)
    const tok = loadTokenizer(join(FIXTURES, family, 'tokenizer.json')) as HfTokenizer;
    assert.ok(tok.wordsCached, family);
    let n = 0;
    for (const text of [long, ...Array.from(documents({ source: 'builtin', split: 'heldout' }), (d) => d.text)]) {
      const want = plain.encode(text, { add_special_tokens: false }).ids;
      assert.deepEqual(tok.encode(text, { bos: false }), want, `${family}: ${text.slice(0, 40)}`);
      assert.deepEqual(Array.from(tok.encodeIds(text)), want, `${family}: ${text.slice(0, 40)}, again`);
      n += want.length;
    }
    assert.ok(n > 100_000, `${family}: ${n} tokens`);
  }
});

test("a Metaspace BPE file's long texts merged a word at a time give the library's ids, also where a merge spans a word's start (Gemma-3's '>▁</')", async () => {
  const { Tokenizer: Lib } = await import('@huggingface/tokenizers');
  // A Metaspace file (sdlkit's own writer of them, src/lm/bpe-train.ts) whose merges make '>▁<' across a word's start.
  const chars = [' ', 'a', 'b', 'c', '>', '<'];
  const merges: [string, string][] = [
    [' ', 'a'],
    ['>', ' '],
    [' ', '<'],
    ['> ', '<'],
    ['a', 'b'],
    [' a', 'b'],
    [' ', ' '],
  ];
  const vocab = ['<unk>', '<s>', '</s>', ...chars, ...merges.map((p) => p.join(''))];
  const json = hfTokenizerJson({ vocab, scores: new Float32Array(vocab.length), merges });
  const config = { bos_token: '<s>' };
  const plain = new Lib(json, config);
  const tok = new HfTokenizer(json, config);
  assert.ok(tok.wordsCut);
  const rng = new Rng(7);
  const rand = (n: number) => rng.int(n);
  const alphabet = ['a', 'b', 'c', '>', '<', ' ', ' ', '> <'];
  for (let q = 0; q < 400; q++) {
    const s = Array.from({ length: 20 + rand(60) }, () => alphabet[rand(alphabet.length)]).join('');
    const want = plain.encode(s, { add_special_tokens: false }).ids;
    assert.deepEqual(tok.encode(s, { bos: false }), want, JSON.stringify(s));
    assert.deepEqual(tok.encode(s, { bos: false }), want, `${JSON.stringify(s)}, again`);
  }
});
