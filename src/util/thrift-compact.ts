// Apache Thrift's compact protocol, the encoding of Parquet's footer and page headers: as much of it as Parquet's
// structures use (structs, lists, i16/i32/i64, binary, bool). Integers are zigzag varints; a field's header is one
// byte when its id is 1-15 above the previous field's. Values are JavaScript numbers: Parquet's i64 fields here
// (offsets, sizes, row counts) stay far below 2^53.

/** Compact protocol type codes. */
export const T = { TRUE: 1, FALSE: 2, BYTE: 3, I16: 4, I32: 5, I64: 6, DOUBLE: 7, BINARY: 8, LIST: 9, SET: 10, MAP: 11, STRUCT: 12 } as const;

/** A value to write: a number written as the field's integer type, a string or bytes as binary, a list, a struct. */
export type ThriftValue = number | boolean | string | Uint8Array | ThriftList | ThriftStruct;
/** A struct: field id -> [type, value]; absent or undefined fields are not written (optional fields). */
export type ThriftStruct = { [id: number]: readonly [type: number, value: ThriftValue] | undefined };
export interface ThriftList {
  elem: number;
  items: readonly ThriftValue[];
}

export const list = (elem: number, items: readonly ThriftValue[]): ThriftList => ({ elem, items });

/** Writes compact-protocol bytes into a growing buffer. */
export class ThriftWriter {
  private buf = new Uint8Array(256);
  private n = 0;

  private byte(b: number): void {
    if (this.n === this.buf.length) {
      const grown = new Uint8Array(2 * this.buf.length);
      grown.set(this.buf);
      this.buf = grown;
    }
    this.buf[this.n++] = b;
  }

  /** An unsigned varint (7 bits a byte, low first). */
  private varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`thrift: ${v} is not a varint`);
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }

  private zigzag(v: number): void {
    if (!Number.isSafeInteger(v)) throw new Error(`thrift: ${v} is not an integer`);
    this.varint(v >= 0 ? 2 * v : -2 * v - 1);
  }

  private bytes(b: Uint8Array): void {
    this.varint(b.length);
    for (const x of b) this.byte(x);
  }

  private value(type: number, v: ThriftValue): void {
    switch (type) {
      case T.BYTE:
        this.byte((v as number) & 0xff);
        return;
      case T.I16:
      case T.I32:
      case T.I64:
        this.zigzag(v as number);
        return;
      case T.BINARY:
        this.bytes(typeof v === 'string' ? new TextEncoder().encode(v) : (v as Uint8Array));
        return;
      case T.LIST: {
        const l = v as ThriftList;
        if (l.items.length < 15) this.byte((l.items.length << 4) | l.elem);
        else {
          this.byte(0xf0 | l.elem);
          this.varint(l.items.length);
        }
        // A list of booleans holds one byte per element: 1 true, 2 false.
        for (const item of l.items) l.elem === T.TRUE || l.elem === T.FALSE ? this.byte(item ? 1 : 2) : this.value(l.elem, item);
        return;
      }
      case T.STRUCT:
        this.struct(v as ThriftStruct);
        return;
      default:
        throw new Error(`thrift: cannot write type ${type}`);
    }
  }

  /** Writes a struct's fields in ascending id order, then its stop byte. */
  struct(s: ThriftStruct): this {
    let last = 0;
    const ids = Object.keys(s)
      .map(Number)
      .sort((a, b) => a - b);
    for (const id of ids) {
      const f = s[id];
      if (f === undefined) continue;
      const [type, v] = f;
      // A boolean field carries its value in its type code.
      const code = type === T.TRUE || type === T.FALSE ? (v ? T.TRUE : T.FALSE) : type;
      if (id > last && id - last <= 15) this.byte(((id - last) << 4) | code);
      else {
        this.byte(code);
        this.zigzag(id);
      }
      if (code !== T.TRUE && code !== T.FALSE) this.value(type, v);
      last = id;
    }
    this.byte(0);
    return this;
  }

  /** The bytes written so far. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.n);
  }
}

/** A decoded struct: field id -> value (numbers, booleans, bytes, lists as arrays, structs as maps). */
export type Decoded = Map<number, DecodedValue>;
export type DecodedValue = number | boolean | Uint8Array | DecodedValue[] | Decoded;

/** Reads compact-protocol values from bytes; throws on a value that runs past the end. */
export class ThriftReader {
  at: number;

  constructor(
    private readonly b: Uint8Array,
    start = 0,
  ) {
    this.at = start;
  }

  private byte(): number {
    if (this.at >= this.b.length) throw new RangeError('thrift: the bytes end inside a value');
    return this.b[this.at++];
  }

  private varint(): number {
    let v = 0,
      scale = 1;
    for (;;) {
      const x = this.byte();
      v += (x & 0x7f) * scale;
      if (x < 0x80) return v;
      scale *= 0x80;
      if (scale > 2 ** 63) throw new Error('thrift: a varint longer than 64 bits');
    }
  }

  private zigzag(): number {
    const v = this.varint();
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  private value(type: number): DecodedValue {
    switch (type) {
      case T.TRUE:
        return true;
      case T.FALSE:
        return false;
      case T.BYTE:
        return this.byte();
      case T.I16:
      case T.I32:
      case T.I64:
        return this.zigzag();
      case T.DOUBLE: {
        if (this.at + 8 > this.b.length) throw new RangeError('thrift: the bytes end inside a value');
        const v = new DataView(this.b.buffer, this.b.byteOffset + this.at, 8).getFloat64(0, true);
        this.at += 8;
        return v;
      }
      case T.BINARY: {
        const n = this.varint();
        if (this.at + n > this.b.length) throw new RangeError('thrift: the bytes end inside a value');
        const v = this.b.subarray(this.at, this.at + n);
        this.at += n;
        return v;
      }
      case T.LIST:
      case T.SET: {
        const h = this.byte();
        const n = h >> 4 === 15 ? this.varint() : h >> 4;
        const elem = h & 0x0f;
        const out: DecodedValue[] = [];
        for (let i = 0; i < n; i++) out.push(elem === T.TRUE || elem === T.FALSE ? this.byte() === 1 : this.value(elem));
        return out;
      }
      case T.MAP: {
        // Key-value pairs, as two-element arrays (Parquet's structures hold no maps; read to be skipped).
        const n = this.varint();
        const out: DecodedValue[] = [];
        const kv = n ? this.byte() : 0;
        for (let i = 0; i < n; i++) out.push([this.value(kv >> 4), this.value(kv & 0x0f)]);
        return out;
      }
      case T.STRUCT:
        return this.struct();
      default:
        throw new Error(`thrift: unknown type ${type}`);
    }
  }

  /** Reads one struct (up to and including its stop byte). */
  struct(): Decoded {
    const out: Decoded = new Map();
    let last = 0;
    for (;;) {
      const h = this.byte();
      if (h === 0) return out;
      const type = h & 0x0f;
      const id = h >> 4 ? last + (h >> 4) : this.zigzag();
      out.set(id, this.value(type));
      last = id;
    }
  }
}
