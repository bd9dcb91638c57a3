// `sdl serve`: the dashboard over HTTP (Node's own http module), plus what a static folder cannot do: run typed
// text through the model and the dictionary, and steer. Binds to 127.0.0.1 unless told otherwise; serves nothing
// outside the dashboard folder; a bad request gets an error reply and the server keeps running.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { Dictionary } from '../sdl/dictionary.js';
import { bindModel } from '../intervene/bind.js';
import { Intervener } from '../intervene/intervener.js';
import { readout, steer, textWindows } from '../intervene/actions.js';
import { UserError } from '../util/errors.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
};
const MAX_BODY = 1 << 16;

export interface ServeOptions {
  root: string;
  dicts: string[];
  port: number;
  host: string;
  defaultModel: () => string;
}

export async function serveDashboard(o: ServeOptions): Promise<{ server: Server; url: string }> {
  const root = resolve(o.root);
  const interveners = new Map<number, Promise<Intervener>>();
  const intervener = (k: number) => {
    if (!Number.isInteger(k) || k < 0 || k >= o.dicts.length) throw new UserError(`no dictionary d${k}`);
    if (!interveners.has(k)) {
      const dir = o.dicts[k];
      const d = Dictionary.load(dir);
      interveners.set(
        k,
        bindModel(d, { dictDir: dir, fallback: o.defaultModel }).then((b) => Intervener.create(b, d)),
      );
    }
    return interveners.get(k)!;
  };
  const api: Record<string, (body: Record<string, unknown>) => Promise<unknown>> = {
    async run(b) {
      const iv = await intervener(Number(String(b.dict ?? 'd0').slice(1)));
      const text = String(b.text ?? '');
      if (!text.trim()) throw new UserError('the text is empty');
      const feature = b.feature === undefined || b.feature === null ? undefined : Number(b.feature);
      const { windows } = textWindows(iv.model, text);
      return readout(iv, windows, { top: 5, feature });
    },
    async steer(b) {
      const iv = await intervener(Number(String(b.dict ?? 'd0').slice(1)));
      const feature = Number(b.feature),
        scale = Number(b.scale);
      if (!Number.isFinite(scale)) throw new UserError(`the scale must be a number (got '${String(b.scale)}')`);
      const prompt = String(b.prompt ?? '');
      if (!prompt.trim()) throw new UserError('the prompt is empty');
      const tokens = Math.min(200, Math.max(1, Math.floor(Number(b.tokens ?? 30))));
      const values = new Map([[feature, scale]]);
      return steer(iv, prompt, b.mode === 'clamp' ? { clamp: values } : { add: values }, {
        tokens,
        temperature: Math.max(0, Number(b.temperature ?? 0)) || 0,
        seed: Math.floor(Number(b.seed ?? 1)) || 0,
      });
    },
  };
  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.end(body);
  };
  const readBody = (req: IncomingMessage) =>
    new Promise<Record<string, unknown>>((ok, fail) => {
      let size = 0;
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) {
          fail(new UserError('request body too large'));
          req.destroy();
        } else parts.push(c);
      });
      req.on('end', () => {
        try {
          ok(JSON.parse(Buffer.concat(parts).toString('utf8') || '{}'));
        } catch {
          fail(new UserError('the request body is not JSON'));
        }
      });
      req.on('error', fail);
    });
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname === '/api/health') return send(res, 200, TYPES['.json'], JSON.stringify({ live: true, dictionaries: o.dicts.length }));
      const m = /^\/api\/(\w+)$/.exec(url.pathname);
      if (m) {
        if (req.method !== 'POST' || !api[m[1]]) return send(res, 404, TYPES['.json'], JSON.stringify({ error: `no endpoint ${req.method} ${url.pathname}` }));
        return send(res, 200, TYPES['.json'], JSON.stringify(await api[m[1]](await readBody(req))));
      }
      // Static files: the decoded path must stay inside the dashboard folder.
      let rel: string;
      try {
        rel = decodeURIComponent(url.pathname);
      } catch {
        return send(res, 400, 'text/plain', 'bad path');
      }
      const file = normalize(join(root, rel === '/' ? 'index.html' : rel));
      if (!(file === root || file.startsWith(root + sep)) || !existsSync(file) || !statSync(file).isFile())
        return send(res, 404, 'text/plain; charset=utf-8', 'not found');
      return send(res, 200, TYPES[extname(file)] ?? 'application/octet-stream', readFileSync(file));
    } catch (e) {
      const user = e instanceof UserError;
      if (!user) process.stderr.write(`sdl serve: ${(e as Error).stack ?? e}\n`);
      if (!res.headersSent)
        send(res, user ? 400 : 500, TYPES['.json'], JSON.stringify({ error: user ? (e as Error).message : 'internal error (see the server log)' }));
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      fail(
        e.code === 'EADDRINUSE'
          ? new UserError(`port ${o.port} on ${o.host} is in use; pass --port with another number (0 picks a free one)`)
          : e.code === 'EADDRNOTAVAIL'
            ? new UserError(`cannot listen on ${o.host}: no such address here; pass --host 127.0.0.1`)
            : e,
      ),
    );
    server.listen(o.port, o.host, () => ok());
  });
  const addr = server.address() as { port: number };
  return { server, url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${addr.port}/` };
}
