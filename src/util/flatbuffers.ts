// Reading FlatBuffers (the encoding of Arrow IPC's footer and messages) with every offset checked against the bytes:
// a damaged file gives an error, never a read past the end, and no vector longer than the bytes could hold (apache-arrow's
// decoder, which trusts the offsets, ran out of memory on a shard's damaged footer; test/harvest.test.ts).
//
// The format: a table starts with a signed offset back to its vtable; the vtable holds its own size, the table's size
// and one 16-bit offset per field (0: absent, the default applies). A field that is a table, vector or string holds an
// unsigned offset from where it lies; a vector is a 32-bit length and its elements (structs inline, tables as offsets).

export class FlatBufferError extends Error {}

function fail(what: string): never {
  throw new FlatBufferError(`damaged FlatBuffer: ${what}`);
}

/** One table of a FlatBuffer. */
export class FlatTable {
  private readonly vtable: number;
  private readonly vtableSize: number;
  private readonly size: number;

  constructor(
    private readonly view: DataView,
    readonly pos: number,
  ) {
    const n = view.byteLength;
    if (pos < 0 || pos + 4 > n) fail(`a table at ${pos} lies outside ${n} bytes`);
    this.vtable = pos - view.getInt32(pos, true);
    if (this.vtable < 0 || this.vtable + 4 > n) fail(`a vtable at ${this.vtable} lies outside ${n} bytes`);
    this.vtableSize = view.getUint16(this.vtable, true);
    this.size = view.getUint16(this.vtable + 2, true);
    if (this.vtableSize < 4 || this.vtable + this.vtableSize > n || pos + this.size > n) fail(`a table at ${pos} runs past the end`);
  }

  /** A root table: the buffer's first 4 bytes are its offset. */
  static root(bytes: Uint8Array): FlatTable {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 4) fail(`${bytes.length} bytes`);
    return new FlatTable(view, view.getUint32(0, true));
  }

  /** Where field `slot` lies (0 when absent), checked to hold `bytes` bytes inside the table. */
  private field(slot: number, bytes: number): number {
    const at = 4 + 2 * slot;
    if (at + 2 > this.vtableSize) return 0;
    const off = this.view.getUint16(this.vtable + at, true);
    if (off === 0) return 0;
    if (off + bytes > this.size) fail(`field ${slot} runs past its table`);
    return this.pos + off;
  }

  uint8(slot: number, dflt = 0): number {
    const p = this.field(slot, 1);
    return p ? this.view.getUint8(p) : dflt;
  }

  int16(slot: number, dflt = 0): number {
    const p = this.field(slot, 2);
    return p ? this.view.getInt16(p, true) : dflt;
  }

  int32(slot: number, dflt = 0): number {
    const p = this.field(slot, 4);
    return p ? this.view.getInt32(p, true) : dflt;
  }

  int64(slot: number, dflt = 0): number {
    const p = this.field(slot, 8);
    return p ? int64At(this.view, p) : dflt;
  }

  bool(slot: number, dflt = false): boolean {
    const p = this.field(slot, 1);
    return p ? this.view.getUint8(p) !== 0 : dflt;
  }

  /** Where an offset field points (undefined when absent). */
  private target(slot: number): number | undefined {
    const p = this.field(slot, 4);
    if (!p) return undefined;
    const t = p + this.view.getUint32(p, true);
    if (t + 4 > this.view.byteLength) fail(`field ${slot} points past the end`);
    return t;
  }

  table(slot: number): FlatTable | undefined {
    const t = this.target(slot);
    return t === undefined ? undefined : new FlatTable(this.view, t);
  }

  /** A vector of `size`-byte elements: where its first lies and how many; empty when absent. */
  vector(slot: number, size: number): { start: number; length: number } {
    const t = this.target(slot);
    if (t === undefined) return { start: 0, length: 0 };
    const length = this.view.getUint32(t, true);
    if (t + 4 + length * size > this.view.byteLength) fail(`a vector of ${length} runs past the end`);
    return { start: t + 4, length };
  }

  /** A vector of tables. */
  tables(slot: number): FlatTable[] {
    const { start, length } = this.vector(slot, 4);
    return Array.from({ length }, (_, i) => {
      const p = start + 4 * i;
      return new FlatTable(this.view, p + this.view.getUint32(p, true));
    });
  }

  /** A vector of structs, each read by `read(view, position)`. */
  structs<T>(slot: number, size: number, read: (view: DataView, at: number) => T): T[] {
    const { start, length } = this.vector(slot, size);
    return Array.from({ length }, (_, i) => read(this.view, start + size * i));
  }

  string(slot: number): string | undefined {
    const t = this.target(slot);
    if (t === undefined) return undefined;
    const { start, length } = this.vector(slot, 1);
    return new TextDecoder().decode(new Uint8Array(this.view.buffer, this.view.byteOffset + start, length));
  }
}

/** A little-endian int64 at `at`, which must be a safe integer (Arrow's offsets and lengths are). */
export function int64At(view: DataView, at: number): number {
  const v = view.getBigInt64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) fail(`an integer ${v} out of range`);
  return Number(v);
}
