// A harvest rewritten in the other shard format (Arrow IPC <-> Parquet), or a Parquet harvest of older, compressed
// shards rewritten as shards read in place: the same rows, values and order, each shard read through the checked
// reader, written atomically, the manifest (with the new format in the identity) last.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.js';
import { checkOutput, lockFolder, removeStaleTemps, writeAtomic } from '../util/fsx.js';
import { identityHash, openActivations, readManifest, writeManifest, type Manifest } from './manifest.js';
import { readShard, readsInPlace, type ReadOptions } from './reader.js';
import { ShardBuffer, encodeShardData, formatOf, shardFile, type ShardFormat } from './shard.js';

export function convertHarvest(src: string, format: ShardFormat, out: string, read: ReadOptions = {}): Manifest {
  const m = openActivations(src);
  const from = formatOf(m.shards[0].file);
  // Parquet to Parquet rewrites shards written before sdlkit wrote its own (zstd, decoded whole) as ones read in place.
  if (from === format && (format === 'arrow' || m.shards.every((s) => readsInPlace(join(src, s.file)) === true)))
    throw new UserError(`${src} is already a ${format} harvest${format === 'parquet' ? ' whose shards are read in place' : ''}; nothing to convert`);
  checkOutput(out, 'dir');
  if (readManifest(out) || (existsSync(out) && readdirSync(out).some((f) => /^shard-\d+\./.test(f))))
    throw new UserError(`${out} already holds a harvest; pass an empty or new --out`);
  mkdirSync(out, { recursive: true });
  const unlock = lockFolder(out, 'sdl convert');
  removeStaleTemps(out);
  try {
    const { format: _old, ...rest } = m.identity;
    const identity = { ...rest, ...(format === 'parquet' ? { format: 'parquet' as const } : {}) };
    const idHash = identityHash(identity);
    const names = m.sites.map((s) => s.name);
    const shards: Manifest['shards'] = [];
    m.shards.forEach((info, i) => {
      const d = readShard(src, m, i, names, read);
      const buf = new ShardBuffer(
        d.rows,
        m.sites.map((s) => ({ name: s.name, width: s.width })),
      );
      buf.doc.set(d.doc);
      buf.window.set(d.window);
      buf.pos.set(d.pos);
      buf.token.set(d.token);
      m.sites.forEach((s, j) => buf.values[j].set(d.values.get(s.name)!));
      buf.rows = d.rows;
      const k = Number(/(\d+)/.exec(info.file)![1]);
      const meta = { sdlkit_identity: idHash, shard: String(k) };
      const bytes = encodeShardData(buf, format, m.dtype, meta);
      const file = shardFile(k, format);
      shards.push({ file, rows: d.rows, crc32c: writeAtomic(join(out, file), bytes, { checksum: 'crc32c' }) });
    });
    const converted: Manifest = { ...m, identity, identity_sha256: idHash, shards };
    writeManifest(out, converted);
    return converted;
  } finally {
    unlock();
  }
}
