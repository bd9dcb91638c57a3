// Shard finalisation on the harvest's own thread, a slice at a time, so the disk work of shard k overlaps the model
// running on shard k+1 (on the forward's threads) without a thread of its own: a shard's write holds this thread for
// one slice (a few ms of an O_DIRECT write and its CRC), and between slices the forward's batches are answered. A
// writer thread cost ~65-75 ms of CPU to start and its own V8 heap, taken from the forward on two busy cores
// (docs/BENCHMARKS.md). At most one shard is in flight: memory stays bounded. A shard is encoded here (an Arrow
// file's few flatbuffers, a Parquet file's page headers and levels; the chunks are views of the buffer, a float16
// shard's of the buffer's float16 arrays).
import { join } from 'node:path';
import { ShardBuffer, encodeShardData, formatOf, type Dtype, type ShardSite } from './shard.js';
import { native } from '../native/kernels.js';
import { writeAtomicInSlices } from '../util/fsx.js';

export interface Written {
  rows: number;
  /** The file's CRC-32C (src/util/checksum.ts). */
  crc32c: string;
}

/** Bytes written between turns of the event loop: ~3 ms of O_DIRECT writing here, well inside the ~25 ms a worker's queued batch lasts. */
const WRITE_SLICE = 4 << 20;

export class ShardWriter {
  private free: ShardBuffer[] = [];
  /** Buffers made so far. */
  private made = 0;

  /**
   * Writes a filled buffer's shard atomically with O_DIRECT (a harvest writes far more than it will read back soon,
   * and the page cache's copy and writeback would take the cores the model runs on). The buffer is read in place:
   * the caller must not touch it until the promise settles; then it is free for another shard.
   */
  async write(dir: string, file: string, buf: ShardBuffer, dtype: Dtype, metadata: Record<string, string>): Promise<Written> {
    try {
      const data = encodeShardData(buf, formatOf(file), dtype, metadata);
      const crc32c = await writeAtomicInSlices(join(dir, file), data, { direct: true, checksum: 'crc32c', slice: WRITE_SLICE });
      return { rows: buf.rows, crc32c };
    } finally {
      buf.reset();
      this.free.push(buf);
    }
  }

  /**
   * A buffer for a shard: a returned one when its shape fits, else a new one, in shared memory (the forward's worker
   * threads place their batches in it). `onlyIfFree`: none (undefined) rather than a third buffer while two are out,
   * one being filled and one being written: memory stays at two shards.
   */
  buffer(capacity: number, sites: ShardSite[], onlyIfFree = false): ShardBuffer | undefined {
    const i = this.free.findIndex((b) => b.capacity === capacity && b.sites.length === sites.length && b.sites.every((s, j) => s.width === sites[j].width));
    if (i >= 0) return this.free.splice(i, 1)[0];
    if (onlyIfFree && this.made >= 2) return undefined;
    this.made++;
    const buf = new ShardBuffer(capacity, sites, true);
    // Huge pages where the system gives them on request: a shard buffer is ~50 MB that the forward workers touch
    // first, page by page, and a page fault costs ~11 us on this VM (0.27 s for a harvest's two buffers in 4 KiB
    // pages; docs/BENCHMARKS.md). The buffers are reused, so this is paid once per buffer either way.
    native()?.adviseHuge(new Float32Array(buf.doc.buffer));
    return buf;
  }
}
