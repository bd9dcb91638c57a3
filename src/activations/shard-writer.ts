// Shard finalisation in a worker thread (shard-write-worker.ts), so the disk work of shard k overlaps the model
// running on shard k+1. At most one shard is in flight: memory stays bounded. A shard is encoded here, on the calling
// thread (an Arrow file's few flatbuffers, a Parquet file's page headers and levels; the chunks are views of the
// shared buffer, a float16 shard's of the buffer's shared float16 arrays, rounded here: ~3 ms a 50 MB shard
// natively), so the writer's thread loads no Arrow code and only writes.
import { UserError } from '../util/errors.js';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { ShardBuffer, encodeShardData, formatOf, type Dtype, type ShardSite } from './shard.js';
import { type WriteJob, type WriteReply, type Written, writeShardFile } from './shard-write-worker.js';
import { native } from '../native/kernels.js';

export type { Written } from './shard-write-worker.js';

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
    this.worker = new Worker(new URL('./shard-write-worker.js', import.meta.url), { workerData: { shardWriter: true } });
    this.worker.unref(); // never keeps the process alive after an error elsewhere
    this.worker.on('message', (m: WriteReply) => {
      const w = this.waiting.get(m.id)!;
      this.waiting.delete(m.id);
      // The writer is done reading the buffer, written or not: the next shard may fill it.
      w.buf.reset();
      this.free.push(w.buf);
      if ('ok' in m) w.resolve(m.ok);
      else w.reject(m.user ? new UserError(m.error) : new Error(`writing a shard failed: ${m.error}`));
    });
    this.worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
  }

  /** Hands a filled buffer over (the writer reads it in place: the caller must not touch it until the promise settles). */
  write(dir: string, file: string, buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string>): Promise<Written> {
    const path = join(dir, file);
    const format = formatOf(file);
    if (!this.worker) {
      try {
        const data = encodeShardData(buf, format, dtype, metadata);
        return Promise.resolve(writeShardFile(path, buf.rows, data));
      } catch (e) {
        return Promise.reject(e);
      } finally {
        buf.reset();
        this.free.push(buf);
      }
    }
    if (!(buf.doc.buffer instanceof SharedArrayBuffer)) throw new Error('ShardWriter.write takes the shared buffers of ShardWriter.buffer()');
    const id = this.next++;
    const job: WriteJob = { id, path, rows: buf.rows, chunks: encodeShardData(buf, format, dtype, metadata) };
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, buf });
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
    const buf = new ShardBuffer(capacity, sites, this.worker !== undefined);
    // Huge pages where the system gives them on request: a shard buffer is ~50 MB that the forward workers touch
    // first, page by page, and a page fault costs ~11 us on this VM (0.27 s for a harvest's two buffers in 4 KiB
    // pages; docs/BENCHMARKS.md). The buffers are reused, so this is paid once per buffer either way.
    if (this.worker) native()?.adviseHuge(new Float32Array(buf.doc.buffer));
    return buf;
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}
