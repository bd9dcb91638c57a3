// Documents -> token windows of a fixed context length, deterministically for a given seed.
// Packing follows SAELens' defaults (prepend_bos, BOS as the document separator): the token stream is
// the documents joined by BOS, cut into windows of ctx-1 tokens, each window starting with BOS.
import type { Tokenizer } from '../models/tokenizer.js';
import { Rng } from '../util/rng.js';
import type { Doc } from './sources.js';

export interface Window {
  /** Global index of the window in the stream (0, 1, 2, ...). */
  index: number;
  ids: Int32Array;
  /** Document number (order of appearance in the shuffled stream) of each token. */
  docs: Int32Array;
}

/** Shuffles a stream of documents through a bounded buffer (memory stays flat). */
export function* shuffleDocs(docs: Iterable<Doc>, seed: number, bufferSize = 256): Generator<Doc> {
  const rng = new Rng(seed);
  const buf: Doc[] = [];
  for (const d of docs) {
    if (buf.length < bufferSize) {
      buf.push(d);
      continue;
    }
    const i = rng.int(buf.length);
    yield buf[i];
    buf[i] = d;
  }
  rng.shuffle(buf);
  yield* buf;
}

export function* tokenWindows(docs: Iterable<Doc>, tok: Tokenizer, ctx: number): Generator<Window> {
  let ids = new Int32Array(ctx),
    dn = new Int32Array(ctx);
  let fill = 0;
  let index = 0;
  let docNo = -1;
  const start = () => {
    ids = new Int32Array(ctx);
    dn = new Int32Array(ctx);
    ids[0] = tok.bosId;
    fill = 1;
  };
  start();
  for (const d of docs) {
    docNo++;
    const toks = tok.encodeIds(d.text);
    // Separator BOS before each document, except where the window's own BOS already stands.
    if (fill === 1) dn[0] = docNo;
    for (let i = fill === 1 ? 0 : -1; i < toks.length; i++) {
      ids[fill] = i < 0 ? tok.bosId : toks[i];
      dn[fill] = docNo;
      fill++;
      if (fill === ctx) {
        yield { index: index++, ids, docs: dn };
        start();
        dn[0] = docNo;
      }
    }
  }
  // The final partial window is dropped (as SAELens does), so every window has length ctx.
}
