// The shard writer's thread (see shard-writer.ts): writes each shard's bytes atomically with their CRC-32C. An Arrow
// shard arrives already encoded (its chunks, most of them views of the shared shard buffer); a Parquet shard arrives
// as the buffer's arrays and is encoded here (zstd: real work). This
// module imports no Arrow or Parquet code at the top: loading apache-arrow cost the thread ~0.29 s of CPU at a
// harvest's start, taken from the forward (docs/BENCHMARKS.md).
import { parentPort, workerData } from 'node:worker_threads';
import { UserError } from '../util/errors.js';
import { writeAtomic } from '../util/fsx.js';
import type { Dtype, ShardFormat, ShardSite } from './shard.js';

/** A shard's arrays, as the shared buffer holds them, to be encoded on the writer's thread. */
export interface ArraysJob {
  format: ShardFormat;
  rows: number;
  sites: ShardSite[];
  doc: Int32Array;
  window: Int32Array;
  pos: Int32Array;
  token: Int32Array;
  values: Float32Array[];
  dtype: Dtype;
  metadata: Record<string, string>;
}

export type WriteJob = { id: number; path: string; rows: number } & ({ chunks: Uint8Array[] } | { arrays: ArraysJob });

export interface Written {
  rows: number;
  /** The file's CRC-32C (src/util/checksum.ts). */
  crc32c: string;
}

export type WriteReply = { id: number; ok: Written } | { id: number; error: string; user: boolean };

/** Writes a shard's bytes. O_DIRECT: a harvest writes far more than it will read back soon, and the page cache's
 * copy and writeback would take the cores the model runs on. */
export function writeShardFile(path: string, rows: number, data: Uint8Array[]): Written {
  return { rows, crc32c: writeAtomic(path, data, { direct: true, checksum: 'crc32c' }) };
}

// Only the writer's own thread: another worker that imports this module (through harvest.js) keeps its messages.
if (parentPort && (workerData as { shardWriter?: boolean } | undefined)?.shardWriter) {
  const port = parentPort;
  port.on('message', async (job: WriteJob) => {
    try {
      let data: Uint8Array[];
      if ('chunks' in job) data = job.chunks;
      else {
        const { ShardBuffer, encodeShardData } = await import('./shard.js');
        const a = job.arrays;
        const buf = Object.assign(Object.create(ShardBuffer.prototype) as InstanceType<typeof ShardBuffer>, { ...a, capacity: a.rows });
        data = encodeShardData(buf, a.format, a.dtype, a.metadata);
      }
      port.postMessage({ id: job.id, ok: writeShardFile(job.path, job.rows, data) } satisfies WriteReply);
    } catch (e) {
      // A full or read-only disk is the user's to fix: it crosses the thread boundary as such.
      port.postMessage({ id: job.id, error: String((e as Error).message), user: e instanceof UserError } satisfies WriteReply);
    }
  });
}
