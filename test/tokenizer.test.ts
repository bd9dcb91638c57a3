import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { trainBpe, hfTokenizerJson } from '../src/lm/bpe-train.js';
import { Llama2cTokenizer, writeLlama2cTokenizer } from '../src/models/tokenizer.js';
import { encodeDocument } from '../src/corpus/windows.js';
import { STORIES, sharedSkip } from './helpers.js';

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
  for (const s of [text, 'unseen words: ζ∑ and emoji 🐋 fall back to bytes']) {
    const ids = tok.encode(s);
    assert.deepEqual(ids, tok.encodeGlobal(s), "word-by-word encoding equals run.c's global merge loop");
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
  assert.equal(tok.decode([tok.bosId, ...encodeDocument(tok, long, 500)]), long);
});
