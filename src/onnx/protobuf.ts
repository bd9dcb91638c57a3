// Minimal protobuf wire-format reader and writer: just what ONNX needs (varints, length-delimited
// fields, fixed32/64). Decoding is lazy: a Reader walks fields and the caller picks what it wants,
// so a 500 MB model's raw tensor bytes are skipped, never copied.

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;

export class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }
  done(): boolean {
    return this.pos >= this.end;
  }
  varint(): number {
    // Values used by ONNX fit in 53 bits (dims, enums, lengths); larger ones lose precision only.
    let result = 0;
    let mul = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * mul;
      if (b < 0x80) break;
      mul *= 128;
      if (mul > 2 ** 70) throw new Error('varint too long');
    }
    return result;
  }
  /** A signed int64 varint (two's complement, 10 bytes for negatives). */
  int64(): number {
    const start = this.pos;
    const v = this.varint();
    if (this.pos - start < 10) return v;
    // Ten bytes: a negative number in two's complement; doubles cannot hold it, so redo in BigInt.
    let big = 0n;
    for (let i = 0; i < 10; i++) big |= BigInt(this.buf[start + i] & 0x7f) << BigInt(7 * i);
    return Number(BigInt.asIntN(64, big));
  }
  tag(): { field: number; wire: number } {
    const t = this.varint();
    return { field: Math.floor(t / 8), wire: t & 7 };
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (this.pos + len > this.end) throw new Error('truncated length-delimited field');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  /** A sub-reader over a length-delimited field, without copying. */
  sub(): Reader {
    const len = this.varint();
    if (this.pos + len > this.end) throw new Error('truncated embedded message');
    const r = new Reader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return r;
  }
  string(): string {
    return textDecoder.decode(this.bytes());
  }
  float32(): number {
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.pos += 8;
        return;
      case WIRE_LEN: {
        const len = this.varint();
        this.pos += len;
        return;
      }
      case WIRE_I32:
        this.pos += 4;
        return;
      default:
        throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  /** Reads a packed or unpacked repeated varint field element(s) into `out`. */
  repeatedVarint(wire: number, out: number[], signed = false): void {
    if (wire === WIRE_LEN) {
      const r = this.sub();
      while (!r.done()) out.push(signed ? r.int64() : r.varint());
    } else out.push(signed ? this.int64() : this.varint());
  }
}

const textDecoder = new TextDecoder('utf-8', { fatal: false });
const textEncoder = new TextEncoder();

/**
 * Byte writer; messages are built bottom-up. Pieces of at least BY_REFERENCE bytes (a tensor's raw data, an original
 * model's untouched fields, an embedded message's parts through `message`) are kept by reference and copied once,
 * by `finish`: cutting a 355 MB model's graph copied its 213 MB six times over (growth, each embedding level, each
 * finish), 2.3 s of a 3.0 s `hookSubgraph`. The referenced arrays must not change before `finish`.
 */
const BY_REFERENCE = 4096;
export class Writer {
  private parts: Uint8Array[] = [];
  private partsLen = 0;
  private buf = new Uint8Array(256);
  private len = 0;
  /** Bytes written so far. */
  get length(): number {
    return this.partsLen + this.len;
  }
  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.len));
    this.buf = nb;
  }
  /** The small bytes written since the last piece become a part of their own (the scratch buffer starts afresh). */
  private seal(): void {
    if (!this.len) return;
    this.parts.push(this.buf.subarray(0, this.len));
    this.partsLen += this.len;
    this.buf = new Uint8Array(256);
    this.len = 0;
  }
  private append(b: Uint8Array): void {
    if (b.length >= BY_REFERENCE) {
      this.seal();
      this.parts.push(b);
      this.partsLen += b.length;
      return;
    }
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  rawVarint(v: number): this {
    if (v < 0) {
      // int64 two's complement: 10 bytes.
      let big = BigInt.asUintN(64, BigInt(v));
      this.ensure(10);
      while (big >= 0x80n) {
        this.buf[this.len++] = Number(big & 0x7fn) | 0x80;
        big >>= 7n;
      }
      this.buf[this.len++] = Number(big);
      return this;
    }
    this.ensure(10);
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.len++] = v;
    return this;
  }
  tag(field: number, wire: number): this {
    return this.rawVarint(field * 8 + wire);
  }
  varint(field: number, v: number): this {
    return this.tag(field, WIRE_VARINT).rawVarint(v);
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN).rawVarint(b.length);
    this.append(b);
    return this;
  }
  /** An embedded message from another writer, its parts taken over (not copied); `inner` must not be used after. */
  message(field: number, inner: Writer): this {
    this.tag(field, WIRE_LEN).rawVarint(inner.length);
    inner.seal();
    for (const p of inner.parts) this.append(p);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, textEncoder.encode(s));
  }
  float32(field: number, v: number): this {
    this.tag(field, WIRE_I32);
    this.ensure(4);
    new DataView(this.buf.buffer, this.len, 4).setFloat32(0, v, true);
    this.len += 4;
    return this;
  }
  packedVarints(field: number, vs: readonly number[]): this {
    const inner = new Writer();
    for (const v of vs) inner.rawVarint(v);
    return this.bytes(field, inner.finish());
  }
  /** Appends already-encoded bytes (a whole field copied from another message). */
  raw(b: Uint8Array): this {
    this.append(b);
    return this;
  }
  /** The bytes, in one new array. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    out.set(this.buf.subarray(0, this.len), at);
    return out;
  }
}
