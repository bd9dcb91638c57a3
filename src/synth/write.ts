// Writes activation rows that did not come from a model (synthetic benches, imported arrays) as shards
// in the harvest format, so fit, index and export read them unchanged.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ShardBuffer, encodeShardChunks, type Dtype } from '../activations/shard.js';
import { Progress } from '../util/progress.js';
import { identityHash, newManifest, writeManifest, type HarvestIdentity, type Manifest } from '../activations/manifest.js';
import { sha256, writeAtomic } from '../util/fsx.js';

export interface SiteRows {
  name: string;
  width: number;
  /** [rows, width] row-major. */
  data: Float32Array;
}

/** Fills shard k (rows [start, start + rows)): one zeroed [rows, width] array per site. */
export type FillShard = (k: number, start: number, rows: number, values: Float32Array[]) => void;

export function writeRowsAsShards(
  dir: string,
  sites: { name: string; width: number; data?: Float32Array }[],
  rows: number,
  opts: { source: string; seed: number; shardTokens?: number; dtype?: Dtype; params?: unknown },
  fill?: FillShard,
): Manifest {
  mkdirSync(dir, { recursive: true });
  const shardTokens = opts.shardTokens ?? 65536;
  const dtype = opts.dtype ?? 'f32';
  const identity: HarvestIdentity = {
    model: { name: 'synthetic', sha256: sha256(JSON.stringify(opts.params ?? {})) },
    tokenizer: { kind: 'none', sha256: '' },
    corpus: { source: opts.source, split: 'all' },
    hooks: sites.map((s) => s.name),
    ctx: 1,
    batch: 1,
    dtype,
    seed: opts.seed,
    tokens: rows,
    shard_tokens: shardTokens,
    oov_id: null,
  };
  const idHash = identityHash(identity);
  const m: Manifest = newManifest(identity, {
    model_path: '',
    tokenizer_path: '',
    context_length: 1,
    dtype,
    sites: sites.map((s) => ({ name: s.name, tensor: s.name, width: s.width })),
  });
  const buf = new ShardBuffer(
    Math.min(shardTokens, rows),
    sites.map((s) => ({ name: s.name, width: s.width })),
  );
  const progress = rows > 4 * shardTokens ? new Progress('synth', rows, 'rows') : undefined;
  for (let start = 0, k = 0; start < rows; start += shardTokens, k++) {
    const n = Math.min(shardTokens, rows - start);
    buf.reset();
    for (let r = 0; r < n; r++) {
      // No text behind these rows: every row is its own one-token "window" at position 1 (never a BOS row).
      buf.doc[r] = start + r;
      buf.window[r] = start + r;
      buf.pos[r] = 1;
      buf.token[r] = -1;
    }
    if (fill) {
      const views = sites.map((s, i) => buf.values[i].subarray(0, n * s.width).fill(0));
      fill(k, start, n, views);
    } else {
      sites.forEach((s, i) => {
        if (!s.data) throw new Error(`writeRowsAsShards: site ${s.name} has no data and no fill function was given`);
        buf.values[i].set(s.data.subarray(start * s.width, (start + n) * s.width));
      });
    }
    buf.rows = n;
    const file = `shard-${String(k).padStart(5, '0')}.arrow`;
    const data = encodeShardChunks(buf, dtype, { sdlkit_identity: idHash, shard: String(k) });
    m.shards.push({ file, rows: n, crc32c: writeAtomic(join(dir, file), data, { checksum: 'crc32c' }) });
    m.tokens += n;
    if (progress) progress.update(m.tokens);
  }
  progress?.done();
  m.complete = true;
  writeManifest(dir, m);
  return m;
}
