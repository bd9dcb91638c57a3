// Opening a harvest's shards for reading (fit, index, eval, merge): every shard is checked against the manifest
// where it is opened: present, the checksum recorded at harvest time (unless the user opts out), a readable Arrow
// file, the recorded number of rows and, for every column read, the width the manifest claims. A shard changed,
// truncated or mislabelled after the harvest is refused with one line instead of being trained on.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decodeShard, formatOf, type ShardData } from './shard.js';
import type { Manifest } from './manifest.js';
import { sha256 } from '../util/fsx.js';
import { UserError } from '../util/errors.js';

export interface ReadOptions {
  /** Compare each shard's SHA-256 with the manifest (default true; `--no-verify` turns it off). */
  verify?: boolean;
}

/** Shards already verified in this process, by path, with the size and mtime they had: each is hashed once per run. */
const verified = new Map<string, string>();

export function readShard(dir: string, manifest: Manifest, index: number, sites: string[], opts: ReadOptions = {}): ShardData {
  const info = manifest.shards[index];
  const path = join(dir, info.file);
  if (!existsSync(path)) throw new UserError(`shard ${info.file} listed in ${dir}'s manifest is missing; run the same 'sdl harvest' again to redo it`);
  const file = readFileSync(path);
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength); // a view: a shard is not copied
  const st = statSync(path);
  const stamp = `${info.sha256}:${st.size}:${st.mtimeMs}`;
  if ((opts.verify ?? true) && verified.get(path) !== stamp) {
    if (sha256(bytes) !== info.sha256) {
      throw new UserError(
        `shard ${path} does not match the checksum in its manifest (changed or damaged after the harvest); run the same 'sdl harvest' again to redo it, or pass --no-verify if you changed it on purpose`,
      );
    }
    verified.set(path, stamp);
  }
  let data: ShardData;
  try {
    data = decodeShard(bytes, sites, formatOf(info.file));
  } catch (e) {
    throw new UserError(
      `shard ${path} is not a readable ${formatOf(info.file) === 'parquet' ? 'Parquet' : 'Arrow'} file (${(e as Error).message.split('\n')[0]}); run the same 'sdl harvest' again to redo it`,
    );
  }
  if (data.rows !== info.rows)
    throw new UserError(`shard ${path} has ${data.rows} rows but its manifest records ${info.rows}; run the same 'sdl harvest' again to redo it`);
  for (const name of sites) {
    const site = manifest.sites.find((s) => s.name === name);
    const w = data.widths.get(name);
    if (w === undefined) throw new UserError(`shard ${path} has no column ${name}`);
    if (site && site.width !== w)
      throw new UserError(`shard ${path} holds ${name} ${w} wide but the manifest says ${site.width}; the manifest was edited or belongs to another harvest`);
  }
  return data;
}
