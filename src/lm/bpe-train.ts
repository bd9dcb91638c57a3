// Trains a byte-fallback BPE tokenizer in llama2.c's format: ids 0-2 <unk>, <s>, </s>; 3-258 the bytes;
// then the corpus's common characters; then merges, scored so earlier merges win (as run.c picks the
// highest-scoring pair). Pieces never hold a space after their first character, so encoding can go
// word by word (see Llama2cTokenizer.wordSafe).
import { llama2cBaseVocab } from '../models/tokenizer.js';

export interface BpeOptions {
  vocabSize: number;
  /** Characters seen fewer times than this fall back to bytes. */
  minCharCount: number;
}

export interface TrainedBpe {
  vocab: string[];
  scores: Float32Array;
  merges: [string, string][];
}

export function trainBpe(texts: Iterable<string>, opts: BpeOptions): TrainedBpe {
  // Word counts; a word is a run of non-spaces with the space before it (the dummy prefix gives the first one).
  const words = new Map<string, number>();
  const chars = new Map<string, number>();
  for (const text of texts) {
    for (const m of ` ${text}`.matchAll(/ ?[^ ]+| +/g)) {
      words.set(m[0], (words.get(m[0]) ?? 0) + 1);
    }
  }
  for (const [w, c] of words) for (const ch of w) chars.set(ch, (chars.get(ch) ?? 0) + c);
  const vocab = llama2cBaseVocab();
  const scores: number[] = vocab.map(() => 0);
  const known = new Set(vocab);
  const charList = [...chars.entries()].filter(([ch, c]) => c >= opts.minCharCount && !known.has(ch)).sort((a, b) => b[1] - a[1]);
  for (const [ch] of charList) {
    if (vocab.length >= opts.vocabSize) break;
    vocab.push(ch);
    scores.push(-1e6); // single characters are looked up directly, never produced by a merge
    known.add(ch);
  }
  // Words as symbol sequences (rare characters as their bytes, which the encoder's fallback produces too).
  const enc = new TextEncoder();
  const seqs: { syms: string[]; count: number }[] = [];
  for (const [w, c] of words) {
    const syms: string[] = [];
    for (const ch of w) {
      if (known.has(ch)) syms.push(ch);
      else for (const b of enc.encode(ch)) syms.push(vocab[b + 3]);
    }
    seqs.push({ syms, count: c });
  }
  const merges: [string, string][] = [];
  const pairKey = (a: string, b: string) => `${a}\u0000${b}`;
  while (vocab.length < opts.vocabSize) {
    const pairs = new Map<string, number>();
    for (const { syms, count } of seqs) {
      for (let i = 0; i + 1 < syms.length; i++) {
        // Byte pieces never merge (they stand for characters the vocabulary does not have).
        if (syms[i].startsWith('<0x') || syms[i + 1].startsWith('<0x')) continue;
        const k = pairKey(syms[i], syms[i + 1]);
        pairs.set(k, (pairs.get(k) ?? 0) + count);
      }
    }
    let best = '',
      bestCount = 1;
    for (const [k, c] of pairs)
      if (c > bestCount || (c === bestCount && best !== '' && k < best)) {
        best = k;
        bestCount = c;
      }
    if (!best) break;
    const [a, b] = best.split('\u0000');
    const merged = a + b;
    if (known.has(merged)) break;
    merges.push([a, b]);
    vocab.push(merged);
    scores.push(-merges.length);
    known.add(merged);
    for (const s of seqs) {
      const out: string[] = [];
      for (let i = 0; i < s.syms.length; i++) {
        if (i + 1 < s.syms.length && s.syms[i] === a && s.syms[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(s.syms[i]);
      }
      s.syms = out;
    }
  }
  return { vocab, scores: Float32Array.from(scores), merges };
}

/**
 * The same vocabulary as a Hugging Face tokenizer.json (Llama style: spaces as U+2581 with a prepended one,
 * byte fallback), for tools that read that format.
 */
export function hfTokenizerJson(t: TrainedBpe): unknown {
  const sp = (s: string) => s.replace(/ /g, '\u2581');
  const vocab: Record<string, number> = {};
  t.vocab.forEach((p, i) => {
    const piece = i === 1 ? '<s>' : i === 2 ? '</s>' : sp(p);
    if (!(piece in vocab)) vocab[piece] = i;
  });
  return {
    version: '1.0',
    added_tokens: [0, 1, 2].map((id) => ({
      id,
      content: ['<unk>', '<s>', '</s>'][id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '\u2581' },
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: t.merges.map(([a, b]) => [sp(a), sp(b)]),
    },
  };
}
