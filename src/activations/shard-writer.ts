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
  sha256: string;
}

function finalize(job: Job): Written {
  const buf = Object.assign(Object.create(ShardBuffer.prototype) as ShardBuffer, { ...job, capacity: job.rows });
  const data = job.format === 'parquet' ? [encodeShardParquet(buf, job.dtype, job.metadata)] : encodeShardChunks(buf, job.dtype, job.metadata);
  // O_DIRECT: a harvest writes far more than it will read back soon, and the page cache's copy and writeback
  // would take the cores the model runs on.
  return { rows: job.rows, sha256: writeAtomic(job.path, data, { direct: true }) };
}

// Only the writer's own thread: another worker that imports this module (through harvest.js) keeps its messages.
if (!isMainThread && parentPort && (workerData as { shardWriter?: boolean } | undefined)?.shardWriter) {
  const port = parentPort;
  port.on('message', (job: Job) => {
    const arrays = { doc: job.doc, window: job.window, pos: job.pos, token: job.token, values: job.values };
    const transfer = [job.doc.buffer, job.window.buffer, job.pos.buffer, job.token.buffer, ...job.values.map((v) => v.buffer)] as ArrayBuffer[];
    try {
      // The arrays go back to the main thread for the next shard: no 50 MB allocation per shard.
      port.postMessage({ id: job.id, ok: finalize(job), arrays }, transfer);
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

  /** A writer thread, or inline writes when `inline` (tests, tiny jobs). */
  constructor(inline = false) {
    if (inline) return;
    this.worker = new Worker(new URL(import.meta.url), { workerData: { shardWriter: true } });
    this.worker.unref(); // never keeps the process alive after an error elsewhere
    this.worker.on(
      'message',
      (m: { id: number; ok?: Written; error?: string; user?: boolean; arrays?: Pick<ShardBuffer, 'doc' | 'window' | 'pos' | 'token' | 'values'> }) => {
        const w = this.waiting.get(m.id)!;
        this.waiting.delete(m.id);
        if (m.arrays) {
          Object.assign(w.buf, m.arrays);
          w.buf.reset();
          this.free.push(w.buf);
        }
        if (m.ok) w.resolve(m.ok);
        else w.reject(m.user ? new UserError(m.error!) : new Error(`writing a shard failed: ${m.error}`));
      },
    );
    this.worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
  }

  /** Hands a filled buffer over (its arrays are transferred: the caller must not reuse it). */
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
    return new Promise((resolve, reject) => {
      this.waiting.set(job.id, { resolve, reject, buf });
      this.worker!.postMessage(job, [job.doc.buffer, job.window.buffer, job.pos.buffer, job.token.buffer, ...job.values.map((v) => v.buffer)] as ArrayBuffer[]);
    });
  }

  /** A buffer for the next shard: a returned one when its shape fits, else a new one. */
  buffer(capacity: number, sites: ShardSite[]): ShardBuffer {
    const i = this.free.findIndex((b) => b.capacity === capacity && b.sites.length === sites.length && b.sites.every((s, j) => s.width === sites[j].width));
    return i >= 0 ? this.free.splice(i, 1)[0] : new ShardBuffer(capacity, sites);
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}
