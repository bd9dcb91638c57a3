// Shard finalisation (Arrow encoding, checksum, atomic write) in a worker thread, so the disk work of
// shard k overlaps the model running on shard k+1. At most one shard is in flight: memory stays bounded.
import { UserError } from '../util/errors.js';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { join } from 'node:path';
import { ShardBuffer, encodeShardChunks, encodeShardParquet, formatOf, type Dtype, type ShardFormat, type ShardSite } from './shard.js';
import { writeAtomic } from '../util/fsx.js';

interface Job {
  id: number;
  path: string;
  format: ShardFormat;
  dtype: Dtype;
  metadata: Record<string, string>;
  rows: number;
  sites: ShardSite[];
  doc: Int32Array;
  window: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  values: Float32Array[];
}

export interface Written {
  rows: number;
  /** The file's CRC-32C (src/util/checksum.ts). */
  crc32c: string;
}

function finalize(job: Job): Written {
  const buf = Object.assign(Object.create(ShardBuffer.prototype) as ShardBuffer, { ...job, capacity: job.rows });
  const data = job.format === 'parquet' ? [encodeShardParquet(buf, job.dtype, job.metadata)] : encodeShardChunks(buf, job.dtype, job.metadata);
  // O_DIRECT: a harvest writes far more than it will read back soon, and the page cache's copy and writeback
  // would take the cores the model runs on.
  return { rows: job.rows, crc32c: writeAtomic(job.path, data, { direct: true, checksum: 'crc32c' }) };
}

// Only the writer's own thread: another worker that imports this module (through harvest.js) keeps its messages.
// The job's arrays are views of the main thread's shared shard buffer: read in place, nothing sent back.
if (!isMainThread && parentPort && (workerData as { shardWriter?: boolean } | undefined)?.shardWriter) {
  const port = parentPort;
  port.on('message', (job: Job) => {
    try {
      port.postMessage({ id: job.id, ok: finalize(job) });
    } catch (e) {
      // A full or read-only disk is the user's to fix: it crosses the thread boundary as such.
      port.postMessage({ id: job.id, error: String((e as Error).message), user: e instanceof UserError });
    }
  });
}

export class ShardWriter {
  private worker?: Worker;
  private next = 0;
  private waiting = new Map<number, { resolve: (w: Written) => void; reject: (e: Error) => void; buf: ShardBuffer }>();
  private free: ShardBuffer[] = [];
  /** Buffers made so far. */
  private made = 0;

  /** A writer thread, or inline writes when `inline` (tests, tiny jobs). */
  constructor(inline = false) {
    if (inline) return;
    this.worker = new Worker(new URL(import.meta.url), { workerData: { shardWriter: true } });
    this.worker.unref(); // never keeps the process alive after an error elsewhere
    this.worker.on('message', (m: { id: number; ok?: Written; error?: string; user?: boolean }) => {
      const w = this.waiting.get(m.id)!;
      this.waiting.delete(m.id);
      // The writer is done reading the buffer, written or not: the next shard may fill it.
      w.buf.reset();
      this.free.push(w.buf);
      if (m.ok) w.resolve(m.ok);
      else w.reject(m.user ? new UserError(m.error!) : new Error(`writing a shard failed: ${m.error}`));
    });
    this.worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
  }

  /** Hands a filled buffer over (the writer reads it in place: the caller must not touch it until the promise settles). */
  write(dir: string, file: string, buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string>): Promise<Written> {
    const job: Job = {
      id: this.next++,
      path: join(dir, file),
      format: formatOf(file),
      dtype,
      metadata,
      rows: buf.rows,
      sites: buf.sites,
      doc: buf.doc,
      window: buf.window,
      pos: buf.pos,
      token: buf.token,
      values: buf.values,
    };
    if (!this.worker) {
      const w = finalize(job);
      buf.reset();
      this.free.push(buf);
      return Promise.resolve(w);
    }
    if (!(buf.doc.buffer instanceof SharedArrayBuffer)) throw new Error('ShardWriter.write takes the shared buffers of ShardWriter.buffer()');
    return new Promise((resolve, reject) => {
      this.waiting.set(job.id, { resolve, reject, buf });
      this.worker!.postMessage(job);
    });
  }

  /**
   * A buffer for a shard: a returned one when its shape fits, else a new one. `onlyIfFree`: none (undefined) rather
   * than a third buffer while two are out, one being filled and one being written: memory stays at two shards.
   */
  buffer(capacity: number, sites: ShardSite[], onlyIfFree = false): ShardBuffer | undefined {
    const i = this.free.findIndex((b) => b.capacity === capacity && b.sites.length === sites.length && b.sites.every((s, j) => s.width === sites[j].width));
    if (i >= 0) return this.free.splice(i, 1)[0];
    if (onlyIfFree && this.made >= 2) return undefined;
    this.made++;
    return new ShardBuffer(capacity, sites, this.worker !== undefined);
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}
