// The manifest of a harvest: what made the shards (so a stale or different harvest is detected)
// and each shard's rows and checksum (so a corrupt shard is detected and redone).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.js';
import { sha256, writeJsonAtomic } from '../util/fsx.js';
import { type ChecksumKind, fileDigest } from '../util/checksum.js';
import type { Dtype } from './shard.js';
import { MANIFEST_FILE } from '../util/files.js';
import { versions } from '../util/versions.js';
import type { BosRule } from '../models/tokenizer.js';

export interface SiteInfo {
  /** Column name: the canonical hook name (blocks.L.hook_SITE) or the raw tensor name. */
  name: string;
  /** Raw tensor fetched from the graph. */
  tensor: string;
  width: number;
  layer?: number;
  site?: string;
}

export interface ShardInfo {
  file: string;
  rows: number;
  /** The file's CRC-32C (eight hex digits): what sdlkit writes. */
  crc32c?: string;
  /** The file's SHA-256: harvests written before shards carried CRC-32C (still read and checked). */
  sha256?: string;
}

/** The checksum a shard's entry records, CRC-32C or (older harvests) SHA-256. */
export function shardChecksum(s: ShardInfo): { kind: ChecksumKind; value: string } {
  if (typeof s.crc32c === 'string') return { kind: 'crc32c', value: s.crc32c };
  if (typeof s.sha256 === 'string') return { kind: 'sha256', value: s.sha256 };
  throw new Error(`shard ${s.file} has no checksum`); // readManifest refuses such a manifest first
}

/** True when the file at `path` exists and has the checksum its entry records. */
export function shardFileMatches(path: string, s: ShardInfo): boolean {
  const { kind, value } = shardChecksum(s);
  return existsSync(path) && fileDigest(path, kind) === value;
}

/** Everything that determines the shards' bytes. Equal identity => the same harvest. */
export interface HarvestIdentity {
  model: { name: string; sha256: string };
  /** The tokenizer's files and the token each window starts with (and why that one). */
  tokenizer: { kind: string; sha256: string; config_sha256?: string; bos?: BosRule };
  corpus: { source: string; split: string };
  hooks: string[];
  ctx: number;
  batch: number;
  dtype: Dtype;
  seed: number;
  tokens: number;
  shard_tokens: number;
  oov_id: number | null;
  /** 'parquet' when the shards are Parquet files (absent: Arrow IPC). */
  format?: 'parquet';
  /** Set on one part of a partitioned job (`--part`); the job is the identity without it. */
  part?: HarvestPart;
}

/** Part `index` (0-based) of `count`: it holds the shards k with k mod count = index. */
export interface HarvestPart {
  index: number;
  count: number;
}

export function checkPart(p: HarvestPart): void {
  if (!Number.isInteger(p.count) || p.count < 1 || !Number.isInteger(p.index) || p.index < 0 || p.index >= p.count)
    throw new UserError(`--part ${p.index}/${p.count}: give i/n with 0 <= i < n (e.g. --part 0/4 ... --part 3/4)`);
}

/** A part keeps its own manifest beside the others' in a shared folder. */
export const manifestName = (p?: HarvestPart): string => (p ? `manifest.part-${p.index}-of-${p.count}.json` : MANIFEST_FILE);

export interface Manifest {
  format: 'sdlkit-activations/1';
  identity: HarvestIdentity;
  identity_sha256: string;
  /** On a part: the identity hash of the whole job (what `sdl merge` matches parts by). */
  job_sha256?: string;
  model_path: string;
  tokenizer_path: string;
  context_length: number;
  dtype: Dtype;
  sites: SiteInfo[];
  shards: ShardInfo[];
  /** Rows over all shards. */
  tokens: number;
  complete: boolean;
  /** Out-of-vocabulary ids mapped to identity.oov_id. */
  oov_mapped: number;
  created: string;
  updated: string;
  elapsed_s: number;
  versions: Record<string, string>;
}

export const identityHash = (id: HarvestIdentity): string => sha256(JSON.stringify(id));

/** A new harvest's manifest before any shard: its identity (and that hash), where its rows come from, its sites if known. */
export function newManifest(
  identity: HarvestIdentity,
  from: Pick<Manifest, 'model_path' | 'tokenizer_path' | 'context_length' | 'dtype' | 'sites' | 'job_sha256'>,
): Manifest {
  const now = new Date().toISOString();
  return {
    format: 'sdlkit-activations/1',
    identity,
    identity_sha256: identityHash(identity),
    ...(from.job_sha256 ? { job_sha256: from.job_sha256 } : {}),
    model_path: from.model_path,
    tokenizer_path: from.tokenizer_path,
    context_length: from.context_length,
    dtype: from.dtype,
    sites: from.sites,
    shards: [],
    tokens: 0,
    complete: false,
    oov_mapped: 0,
    created: now,
    updated: now,
    elapsed_s: 0,
    versions: versions(),
  };
}

export function readManifest(dir: string, file = MANIFEST_FILE): Manifest | undefined {
  const p = join(dir, file);
  if (!existsSync(p)) return undefined;
  try {
    const m = JSON.parse(readFileSync(p, 'utf8')) as Manifest;
    if (m.format !== 'sdlkit-activations/1') throw new Error('format');
    if (!Array.isArray(m.shards)) throw new Error('shards');
    for (const s of m.shards)
      if (typeof s?.file !== 'string' || typeof s.rows !== 'number' || (typeof s.crc32c !== 'string' && typeof s.sha256 !== 'string')) throw new Error('shard');
    return m;
  } catch {
    throw new UserError(`${p} is not an sdlkit activations manifest; pass another --out folder or remove it`);
  }
}

export function writeManifest(dir: string, m: Manifest, file = MANIFEST_FILE): void {
  m.updated = new Date().toISOString();
  writeJsonAtomic(join(dir, file), m);
}

/** Loads a finished harvest for reading (fit, index): a clear message when it is not one. */
export function openActivations(dir: string): Manifest {
  if (!existsSync(dir)) throw new UserError(`activations folder ${dir} not found; run 'sdl harvest' first or pass --acts`);
  const m = readManifest(dir);
  if (!m) throw new UserError(`${dir} has no ${MANIFEST_FILE}; pass a folder written by 'sdl harvest' or 'sdl synth'`);
  if (!m.complete)
    throw new UserError(`the harvest in ${dir} is not finished (${m.shards.length} shards so far); run the same 'sdl harvest' command again to complete it`);
  if (m.shards.length === 0 || m.tokens === 0) throw new UserError(`the harvest in ${dir} has no shards (no tokens); harvest again with more text`);
  return m;
}
