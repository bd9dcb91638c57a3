// Joining the parts of a partitioned harvest (`sdl harvest --part i/n`) into one harvest folder. Every check runs
// before anything is written: the parts belong to one job, each index 0..n-1 is present exactly once and finished,
// every shard's bytes match its checksum, and together the shards are 0..K-1 without a gap. Then the shards are
// linked (or copied) into the output and the manifest is written last, so a folder with a manifest is complete.
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from '../util/errors.js';
import { checkOutput, lockFolder } from '../util/fsx.js';
import { MANIFEST_FILE } from '../util/files.js';
import { readManifest, shardFileMatches, writeManifest, type Manifest } from './manifest.js';

interface Part {
  dir: string;
  file: string;
  m: Manifest;
}

/** Every part manifest in the given folders. */
function findParts(dirs: string[]): Part[] {
  const parts: Part[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`${dir} is not a folder; pass the part folders of one harvest`);
    const files = readdirSync(dir).filter((f) => /^manifest\.part-\d+-of-\d+\.json$/.test(f));
    if (!files.length) throw new UserError(`${dir} holds no part of a harvest (no manifest.part-i-of-n.json); harvest with --part i/n`);
    for (const file of files) parts.push({ dir, file, m: readManifest(dir, file)! });
  }
  return parts;
}

export interface MergeResult {
  out: string;
  manifest: Manifest;
  parts: number;
  shards: number;
  linked: number;
  copied: number;
}

export function mergeParts(dirs: string[], out: string): MergeResult {
  const parts = findParts(dirs);
  const first = parts[0].m;
  const count = first.identity.part!.count;
  for (const p of parts) {
    if (p.m.job_sha256 !== first.job_sha256)
      throw new UserError(
        `${join(p.dir, p.file)} belongs to another harvest job than ${join(parts[0].dir, parts[0].file)} (${p.m.identity.model.name}, ${p.m.identity.hooks.join(',')}, ${p.m.identity.tokens} tokens); merge the parts of one job`,
      );
    if (p.m.identity.part!.count !== count) throw new UserError(`${join(p.dir, p.file)} is a part of ${p.m.identity.part!.count}, the others of ${count}`);
  }
  const byIndex = new Map<number, Part[]>();
  for (const p of parts) byIndex.set(p.m.identity.part!.index, [...(byIndex.get(p.m.identity.part!.index) ?? []), p]);
  for (const [i, ps] of byIndex)
    if (ps.length > 1) throw new UserError(`part ${i}/${count} is given twice (${ps.map((p) => p.dir).join(' and ')}); pass each part once`);
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length)
    throw new UserError(
      `part${missing.length > 1 ? 's' : ''} ${missing.map((i) => `${i}/${count}`).join(', ')} missing; harvest ${missing.length > 1 ? 'them' : 'it'} (--part) or pass ${missing.length > 1 ? 'their' : 'its'} folder`,
    );
  const unfinished = parts.filter((p) => !p.m.complete);
  if (unfinished.length)
    throw new UserError(
      `part ${unfinished[0].m.identity.part!.index}/${count} is not finished (${unfinished[0].dir}); run its sdl harvest command again to complete it`,
    );
  // The shards, by their number in the whole job; each verified.
  const shards = new Map<number, { dir: string; s: Manifest['shards'][number] }>();
  for (const p of parts)
    for (const s of p.m.shards) {
      const k = Number(/(\d+)/.exec(s.file)![1]);
      const path = join(p.dir, s.file);
      if (!shardFileMatches(path, s))
        throw new UserError(`shard ${path} does not match its checksum (damaged or missing); run part ${p.m.identity.part!.index}/${count} again`);
      shards.set(k, { dir: p.dir, s });
    }
  const K = shards.size;
  for (let k = 0; k < K; k++)
    if (!shards.has(k)) throw new UserError(`shard ${k} is in no part although later shards exist; the parts do not add up to one harvest`);
  checkOutput(out, 'dir');
  if (readManifest(out)) throw new UserError(`${out} already holds a harvest (${MANIFEST_FILE}); pass another --out`);

  mkdirSync(out, { recursive: true });
  const unlock = lockFolder(out, 'sdl merge');
  try {
    let linked = 0,
      copied = 0;
    for (let k = 0; k < K; k++) {
      const { dir, s } = shards.get(k)!;
      const from = join(dir, s.file),
        to = join(out, s.file);
      if (resolve(from) === resolve(to)) continue;
      if (shardFileMatches(to, s)) continue;
      try {
        linkSync(from, to);
        linked++;
      } catch {
        copyFileSync(from, to); // another file system, or links not allowed
        copied++;
      }
    }
    const { part: _part, ...identity } = first.identity;
    const merged: Manifest = {
      ...first,
      identity,
      identity_sha256: first.job_sha256!,
      shards: Array.from({ length: K }, (_, k) => shards.get(k)!.s),
      tokens: [...shards.values()].reduce((a, x) => a + x.s.rows, 0),
      oov_mapped: parts.reduce((a, p) => a + p.m.oov_mapped, 0),
      elapsed_s: parts.reduce((a, p) => a + p.m.elapsed_s, 0),
      complete: true,
    };
    delete merged.job_sha256;
    writeManifest(out, merged);
    return { out, manifest: merged, parts: parts.length, shards: K, linked, copied };
  } finally {
    unlock();
  }
}
