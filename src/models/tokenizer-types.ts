// The one interface every tokenizer implements (llama2.c's and Hugging Face's).

/** The token every window starts with, and where that choice came from (recorded in the harvest manifest). */
export interface BosRule {
  id: number;
  token: string;
  source: string;
}

export interface Tokenizer {
  /** 'llama2c', or 'hf-' + the tokenizer.json model type (BPE, Unigram, WordPiece). */
  readonly kind: string;
  readonly vocabSize: number;
  readonly bos: BosRule;
  /** bos.id, the token that begins a sequence (llama2.c: 1; Llama: <s>; GPT-2: <|endoftext|>). */
  readonly bosId: number;
  /** The text's ids; with bos (default true) the BOS id first. Never adds other special tokens. */
  encode(text: string, opts?: { bos?: boolean }): number[];
  /** encode(text, { bos: false }) as an Int32Array: the harvest's windows take it without a number[] in between. */
  encodeIds(text: string): Int32Array;
  decode(ids: readonly number[]): string;
  /** The display text of one token (for feature contexts). */
  piece(id: number): string;
}
