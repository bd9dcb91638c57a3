// safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the raw little-endian bytes. F32 is written; F32, F16, BF16 (a dictionary saved from a bfloat16 run)
// and F64 are read, all exactly.
import { existsSync, readFileSync } from 'node:fs';
import { UserError } from '../util/errors.js';
import { writeAtomic } from '../util/fsx.js';
import { bf16ToF32, f16ToF32 } from '../util/f16.js';
import { transpose, transposeRows } from './linalg.js';

export interface NamedTensor {
  data: Float32Array;
  shape: number[];
}

/**
 * A [rows, cols] tensor stored in memory as its transpose `transposeOf` ([cols, rows]): the native engine keeps
 * W_enc and its Adam moments latent-major, files hold them SAELens's way. Written in row blocks, so a checkpoint
 * never holds a transposed copy (3 x 75 MB at 768 x 24,576).
 */
export interface TransposedTensor {
  transposeOf: Float32Array;
  shape: [number, number];
}

export type TensorSource = NamedTensor | TransposedTensor;

// A transposed tensor is written a block of rows at a time through one array, kept for the module's life: a 4 MiB
// array made per file stayed resident until the garbage collector came, and in a fit a checkpoint's lay under the
// next steps' peak (a 10M-token fit at 768 x 24,576 peaked ~5 MiB higher after each checkpoint). Kept, it still
// lies under every later step, so it is small: 64 KiB or one row (96 KiB at 24,576 latents, against 1 MiB before).
// A row at a time transposes W_enc's 75 MB in 0.16-0.18 s against 0.07-0.09 s ten rows at a time: ~0.3 s more a
// checkpoint of W_enc and its Adam moments, once every 500 steps by default.
const BLOCK_BYTES = 2 ** 16;
let transposeBlock: Float32Array | undefined;

/** A tensor's values in file order (a transposed one is transposed here, whole). */
export const tensorData = (t: TensorSource): Float32Array => ('data' in t ? t.data : transpose(t.transposeOf, t.shape[1], t.shape[0]));

/**
 * The file as parts: the header, then each tensor's bytes: a view of a plain tensor (nothing copied: a checkpoint
 * of a 24k-latent dictionary with its Adam moments is 600 MB), blocks of rows of a transposed one. Consume each part
 * before asking for the next (a transposed tensor's blocks share one array) and all of them before the tensors change.
 */
export function* safetensorsParts(tensors: Record<string, TensorSource>, metadata?: Record<string, string>): Generator<Uint8Array> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  const names = Object.keys(tensors);
  for (const n of names) {
    const t = tensors[n];
    const count = t.shape.reduce((a, b) => a * b, 1);
    const len = 'data' in t ? t.data.length : t.transposeOf.length;
    if (count !== len) throw new Error(`tensor ${n}: shape ${t.shape} does not match ${len} values`);
    header[n] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + 4 * count] };
    off += 4 * count;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // 8-byte alignment of the data
  const hb = Buffer.from(json, 'utf8');
  const head = new Uint8Array(8 + hb.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(hb.length), true);
  head.set(hb, 8);
  yield head;
  for (const n of names) {
    const t = tensors[n];
    if ('data' in t) {
      yield new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      continue;
    }
    const [rows, cols] = t.shape;
    const step = Math.max(1, Math.floor(BLOCK_BYTES / (4 * cols)));
    // Each part is written (or copied) before the next is asked for, so every block can be the same array.
    if (!transposeBlock || transposeBlock.length < step * cols) transposeBlock = new Float32Array(step * cols);
    const block = transposeBlock;
    for (let r = 0; r < rows; r += step) {
      const end = Math.min(rows, r + step);
      transposeRows(t.transposeOf, cols, rows, r, end, block);
      yield new Uint8Array(block.buffer, 0, 4 * (end - r) * cols);
    }
  }
}

/** The file as one buffer. */
export function encodeSafetensors(tensors: Record<string, TensorSource>, metadata?: Record<string, string>): Uint8Array {
  return Buffer.concat(Array.from(safetensorsParts(tensors, metadata), (p) => Buffer.from(p))); // each part copied as it comes
}

/** Writes the file atomically; returns its SHA-256. */
export function writeSafetensors(path: string, tensors: Record<string, TensorSource>, metadata?: Record<string, string>): string {
  return writeAtomic(path, safetensorsParts(tensors, metadata));
}

export interface SafetensorsFile {
  tensors: Record<string, NamedTensor & { dtype: string }>;
  metadata: Record<string, string>;
}

export function decodeSafetensors(buf: Uint8Array, source = 'safetensors'): SafetensorsFile {
  if (buf.length < 8) throw new UserError(`${source} is not a safetensors file (too short)`);
  const n = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
  if (n <= 0 || 8 + n > buf.length) throw new UserError(`${source} is not a safetensors file (bad header length)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(Buffer.from(buf.subarray(8, 8 + n)).toString('utf8'));
  } catch {
    throw new UserError(`${source} is not a safetensors file (header is not JSON)`);
  }
  const base = 8 + n;
  const tensors: SafetensorsFile['tensors'] = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets } = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const size = { F32: 4, F16: 2, BF16: 2, F64: 8 }[dtype];
    if (!size) throw new UserError(`${source}: tensor ${name} has dtype ${dtype}; sdlkit reads F32, F16, BF16 and F64`);
    const [a, b] = Array.isArray(data_offsets) ? data_offsets : [NaN, NaN];
    const count = Array.isArray(shape) ? shape.reduce((x, y) => x * y, 1) : NaN;
    if (!(a >= 0 && b >= a && b - a === count * size))
      throw new UserError(
        `${source}: tensor ${name} has a malformed entry (shape ${JSON.stringify(shape)}, offsets ${JSON.stringify(data_offsets)}); the file is damaged, write it again`,
      );
    if (base + b > buf.length)
      throw new UserError(
        `${source} is truncated: tensor ${name} ends at byte ${base + b} but the file has ${buf.length}; write it again (sdl fit) or restore it`,
      );
    // A copy, aligned: Buffer's own slice() is a view at any offset, so Uint8Array's is called for a Buffer too.
    const bytes = Uint8Array.prototype.slice.call(buf, base + a, base + b);
    let data: Float32Array;
    if (dtype === 'F32') data = new Float32Array(bytes.buffer, 0, (b - a) / 4);
    else if (dtype === 'F16') data = f16ToF32(new Uint16Array(bytes.buffer, 0, (b - a) / 2));
    else if (dtype === 'BF16') data = bf16ToF32(new Uint16Array(bytes.buffer, 0, (b - a) / 2));
    else data = Float32Array.from(new Float64Array(bytes.buffer, 0, (b - a) / 8));
    tensors[name] = { data, shape, dtype };
  }
  return { tensors, metadata: (header.__metadata__ as Record<string, string>) ?? {} };
}

export function readSafetensors(path: string): SafetensorsFile {
  if (!existsSync(path)) throw new UserError(`${path} not found`);
  return decodeSafetensors(readFileSync(path), path);
}
