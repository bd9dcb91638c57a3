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

/** Windows whose arrays one allocation holds: a typed array past 64 bytes costs an ArrayBuffer of its own (~1 us). */
const WINDOWS_PER_BLOCK = 64;

export function* tokenWindows(docs: Iterable<Doc>, tok: Tokenizer, ctx: number): Generator<Window> {
  // Each window's ids and document numbers are views of a block shared with the next windows, never reused: a
  // window stays valid while its holder keeps it.
  let block = new Int32Array(0);
  let used = WINDOWS_PER_BLOCK;
  let ids = block,
    dn = block;
  let fill = 0;
  let index = 0;
  let docNo = -1;
  const start = () => {
    if (used === WINDOWS_PER_BLOCK) {
      block = new Int32Array(WINDOWS_PER_BLOCK * ctx * 2);
      used = 0;
    }
    const o = used++ * ctx * 2;
    ids = block.subarray(o, o + ctx);
    dn = block.subarray(o + ctx, o + 2 * ctx);
    ids[0] = tok.bosId;
    fill = 1;
  };
  start();
  for (const d of docs) {
    docNo++;
    const toks = tok.encodeIds(d.text);
    // Separator BOS before each document, except where the window's own BOS already stands.
    if (fill === 1) dn[0] = docNo;
    else {
      ids[fill] = tok.bosId;
      dn[fill++] = docNo;
    }
    // The document's tokens a window's room at a time (copied, not a token at a time: less work, and a loop too short
    // for V8 to recompile whenever it meets a new case).
    for (let i = 0; ; ) {
      if (fill === ctx) {
        yield { index: index++, ids, docs: dn };
        start();
        dn[0] = docNo;
      }
      if (i === toks.length) break;
      const n = Math.min(ctx - fill, toks.length - i);
      ids.set(toks.subarray(i, i + n), fill);
      dn.fill(docNo, fill, fill + n);
      fill += n;
      i += n;
    }
  }
  // The final partial window is dropped (as SAELens does), so every window has length ctx.
}
