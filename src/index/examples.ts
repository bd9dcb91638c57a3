// Context examples kept while indexing (top activating examples and quantile samples), in typed slots that grow by
// doubling: writing an example copies numbers into preallocated arrays instead of allocating an object and two arrays,
// which at 16k features and millions of candidate examples was most of the index's garbage-collection time. The
// TypeScript accumulator (index/stats.ts) keeps its examples here; the native one keeps them the same way in C++
// (native/src/index_stats.cc, ExampleSlots), and both hand out the same ExampleLists.
/** An ExampleStore's arrays, as sent to the index's writer thread (index/db-writer.ts). */
export type StoreParts = Pick<ExampleStore, 'width' | 'act' | 'doc' | 'window' | 'pos' | 'token' | 'ctxStart' | 'ctxLen' | 'ctxTok' | 'ctxAct'>;

/** Each feature's examples as store slots, in the order they are written: feature i's are slots[off[i] .. off[i+1]). */
export interface ExampleLists {
  store: StoreParts;
  off: Int32Array;
  slots: Int32Array;
  /** Quantile examples: each slot's activation band. */
  band?: Uint8Array;
}

export class ExampleStore {
  private cap: number;
  private used = 0;
  act: Float32Array;
  doc: Int32Array;
  window: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  ctxStart: Int32Array;
  ctxLen: Int32Array;
  /** Per slot, `width` context tokens and the feature's activation on each (the first ctxLen are used). */
  ctxTok: Int32Array;
  ctxAct: Float32Array;

  /** `width`: the longest context (2 radius + 1). */
  constructor(
    readonly width: number,
    cap = 1024,
  ) {
    this.cap = cap;
    this.act = new Float32Array(cap);
    this.doc = new Int32Array(cap);
    this.window = new Int32Array(cap);
    this.pos = new Int32Array(cap);
    this.token = new Int32Array(cap);
    this.ctxStart = new Int32Array(cap);
    this.ctxLen = new Int32Array(cap);
    this.ctxTok = new Int32Array(cap * width);
    this.ctxAct = new Float32Array(cap * width);
  }

  /** n consecutive new slots; returns the first. */
  alloc(n: number): number {
    if (this.used + n > this.cap) {
      let cap = this.cap;
      while (this.used + n > cap) cap *= 2;
      const grow = <T extends Float32Array | Int32Array>(a: T, per = 1): T => {
        const b = new (a.constructor as new (n: number) => T)(cap * per);
        b.set(a);
        return b;
      };
      this.act = grow(this.act);
      this.doc = grow(this.doc);
      this.window = grow(this.window);
      this.pos = grow(this.pos);
      this.token = grow(this.token);
      this.ctxStart = grow(this.ctxStart);
      this.ctxLen = grow(this.ctxLen);
      this.ctxTok = grow(this.ctxTok, this.width);
      this.ctxAct = grow(this.ctxAct, this.width);
      this.cap = cap;
    }
    const first = this.used;
    this.used += n;
    return first;
  }

  /**
   * Writes slot s: the example's fields and its context, `n` tokens from tokens[from] with the feature's activation on
   * each from acts[actsFrom]. Offsets rather than subarrays: a view allocated per example (800k of them over 256k
   * tokens at 16k latents) cost more than the copy.
   */
  set(
    s: number,
    act: number,
    doc: number,
    window: number,
    pos: number,
    token: number,
    ctxStart: number,
    tokens: Int32Array,
    from: number,
    n: number,
    acts: ArrayLike<number>,
    actsFrom: number,
  ): void {
    this.act[s] = act;
    this.doc[s] = doc;
    this.window[s] = window;
    this.pos[s] = pos;
    this.token[s] = token;
    this.ctxStart[s] = ctxStart;
    const len = Math.min(n, this.width);
    this.ctxLen[s] = len;
    const o = s * this.width;
    for (let c = 0; c < len; c++) {
      this.ctxTok[o + c] = tokens[from + c];
      this.ctxAct[o + c] = acts[actsFrom + c];
    }
  }

  parts(): StoreParts {
    const { width, act, doc, window, pos, token, ctxStart, ctxLen, ctxTok, ctxAct } = this;
    return { width, act, doc, window, pos, token, ctxStart, ctxLen, ctxTok, ctxAct };
  }
}

/** Each feature's K strongest examples: K slots per feature (allocated when it first fires), the weakest replaced. */
export class TopExamples {
  private readonly base: Int32Array;
  private readonly count: Int32Array;

  constructor(
    readonly m: number,
    readonly k: number,
    readonly store: ExampleStore,
  ) {
    this.base = new Int32Array(m).fill(-1);
    this.count = new Int32Array(m);
  }

  /** The slot a new example of feature i goes to (its list's next free slot, or its weakest). */
  slotFor(i: number): number {
    if (this.base[i] < 0) this.base[i] = this.store.alloc(this.k);
    const b = this.base[i];
    if (this.count[i] < this.k) return b + this.count[i]++;
    let worst = b;
    for (let s = b + 1; s < b + this.k; s++) if (this.store.act[s] < this.store.act[worst]) worst = s;
    return worst;
  }

  /** Feature i's slots, strongest first (ties: the earlier slot first). */
  slots(i: number): number[] {
    const b = this.base[i];
    if (b < 0) return [];
    const slots = Array.from({ length: this.count[i] }, (_, q) => b + q);
    return slots.sort((p, q) => this.store.act[q] - this.store.act[p] || p - q);
  }

  /** Every feature's examples, strongest first, as slots of the store. */
  lists(): ExampleLists {
    const off = new Int32Array(this.m + 1);
    const all: number[] = [];
    for (let i = 0; i < this.m; i++) {
      for (const s of this.slots(i)) all.push(s);
      off[i + 1] = all.length;
    }
    return { store: this.store.parts(), off, slots: Int32Array.from(all) };
  }
}
