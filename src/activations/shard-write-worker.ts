// The shard writer's thread (see shard-writer.ts): writes each shard's bytes atomically with their CRC-32C. A shard
// arrives encoded (its chunks, most of them views of the shared shard buffer). This module imports no Arrow code:
// loading apache-arrow cost the thread ~0.29 s of CPU at a harvest's start, taken from the forward
// (docs/BENCHMARKS.md).
import { parentPort, workerData } from 'node:worker_threads';
import { UserError } from '../util/errors.js';
import { writeAtomic } from '../util/fsx.js';

/** A shard's file as chunks to write in order (most of them views of the shared shard buffer). */
export type WriteJob = { id: number; path: string; rows: number; chunks: Uint8Array[] };

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
  port.on('message', (job: WriteJob) => {
    try {
      port.postMessage({ id: job.id, ok: writeShardFile(job.path, job.rows, job.chunks) } satisfies WriteReply);
    } catch (e) {
      // A full or read-only disk is the user's to fix: it crosses the thread boundary as such.
      port.postMessage({ id: job.id, error: String((e as Error).message), user: e instanceof UserError } satisfies WriteReply);
    }
  });
}
