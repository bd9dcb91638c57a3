// The dashboard in a real browser (Debian's chromium driven by playwright-core): the static folder from file://
// and the served pages over HTTP. Skipped, with the reason, where no chromium is installed (.ci/run installs it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:http';
import { connect } from 'node:net';
import Database from 'better-sqlite3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CLI, bundledDictionaries, tmp } from './helpers.js';
import { loadModel, BUNDLED_MODEL_DIR } from '../src/models/model.js';
import { Dictionary } from '../src/sdl/dictionary.js';
import { findUnembedding } from '../src/analysis/logit-lens.js';

const CHROMIUM = process.env.SDL_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const skip = CHROMIUM ? false : 'no chromium here (apt-get install -y chromium; .ci/run does it)';
const sdl = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

let dir: string, sae: string, tc: string, site: string, browser: Browser;

before(async () => {
  if (skip) return;
  dir = tmp('sdl-dash-');
  ({ sae, transcoder: tc } = bundledDictionaries(dir, '24k'));
  assert.equal(sdl('index', sae).status, 0);
  assert.equal(sdl('eval', sae, '--windows', '4').status, 0);
  // The transcoder has no index yet: the dashboard builds it and says so.
  site = join(dir, 'site');
  const d = sdl('dashboard', sae, tc, '--out', site);
  assert.equal(d.status, 0, d.stderr);
  assert.match(d.stderr, /has no feature index; building it now/);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
});

/** A page that records console errors and uncaught exceptions. */
async function open(url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]');
  return { page, errors };
}

const go = async (page: Page, hash: string, selector: string) => {
  await page.evaluate((h) => {
    (globalThis as unknown as { location: { hash: string } }).location.hash = h;
  }, hash);
  await page.waitForSelector(selector);
};

test('static dashboard from file://: pages, list size, filters, sorting, feature page values, not-found', { skip }, async () => {
  const db = new Database(join(sae, 'index.sqlite'), { readonly: true });
  const all = db.prepare('select id, max_act, dead, top_tokens from features order by id').all() as {
    id: number;
    max_act: number;
    dead: number;
    top_tokens: string;
  }[];
  const vocab = new Map((db.prepare('select id, text from tokens').all() as { id: number; text: string }[]).map((r) => [r.id, r.text]));
  const { page, errors } = await open(`file://${join(site, 'index.html')}#/compare`);
  assert.equal(await page.locator('#compare-table tbody tr').count(), 2);
  await go(page, '#/d0', '#overview-stats');
  assert.match((await page.locator('#overview-stats').textContent()) ?? '', /CE loss recovered/);
  // The list holds every feature of the index; filters and sorting change what is shown.
  await go(page, '#/d0/features', '#shown-count[data-total]');
  assert.equal(Number(await page.getAttribute('#shown-count', 'data-total')), all.length);
  assert.equal(Number(await page.getAttribute('#shown-count', 'data-shown')), all.length);
  assert.ok((await page.locator('.vrow').count()) < 80, 'only the visible rows are in the page');
  await page.check('#filter-dead');
  assert.equal(Number(await page.getAttribute('#shown-count', 'data-shown')), all.filter((f) => f.dead).length);
  await page.uncheck('#filter-dead');
  const word = 'the';
  await page.fill('#filter-text', word);
  const want = all.filter((f) =>
    (JSON.parse(f.top_tokens) as { token: number }[]).slice(0, 5).some((t) => (vocab.get(t.token) ?? '').toLowerCase().includes(word)),
  ).length;
  assert.equal(Number(await page.getAttribute('#shown-count', 'data-shown')), want);
  await page.fill('#filter-text', '');
  await page.selectOption('#sort', 'max');
  const firstId = Number(await page.locator('.vrow').first().getAttribute('data-id'));
  assert.equal(all[firstId].max_act, Math.max(...all.map((f) => f.max_act)));
  // A feature page: top examples as in the index, logit lens as computed here from the weights.
  const f = all.filter((x) => !x.dead).sort((a, b) => b.max_act - a.max_act)[3].id;
  await go(page, `#/d0/f/${f}`, `#feature-page[data-feature="${f}"]`);
  const shown = (await page.locator('#top-examples .ex .v').allTextContents()).map(Number);
  const indexed = (db.prepare('select act from examples where feature = ? order by rank').all(f) as { act: number }[]).map((e) => Number(e.act.toFixed(3)));
  assert.deepEqual(shown, indexed);
  const model = loadModel(join(BUNDLED_MODEL_DIR, 'sdl-tiny'));
  const u = findUnembedding(model);
  const dict = Dictionary.load(sae);
  const effect = Array.from({ length: u.vocab }, (_, v) => {
    let s = 0;
    for (let j = 0; j < u.d; j++) s += dict.w.W_dec[f * dict.cfg.dOut + j] * u.scale[j] * u.W_U[j * u.vocab + v];
    return s;
  });
  const top10 = Array.from(effect.keys())
    .sort((a, b) => effect[b] - effect[a])
    .slice(0, 10);
  const lens = await page.locator('#lens-pos .tok').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-token'))));
  assert.deepEqual(lens, top10);
  assert.ok((await page.locator('#quantile-examples .ex').count()) > 0);
  // A feature that does not exist: a not-found page, no crash.
  await go(page, '#/d0/f/99999', '#not-found');
  await go(page, '#/d1/features', '#shown-count[data-total]');
  assert.equal(Number(await page.getAttribute('#shown-count', 'data-total')), 256);
  assert.deepEqual(errors, []);
  db.close();
  await page.close();
});

/** A raw GET, path bytes as given (no client-side normalisation of '..'). */
function rawGet(port: number, path: string): Promise<string> {
  return new Promise((ok, fail) => {
    const s = connect(port, '127.0.0.1', () => s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let out = '';
    s.on('data', (b) => (out += b));
    s.on('end', () => ok(out));
    s.on('error', fail);
  });
}

function post(port: number, path: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const r = request({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let b = '';
      res.on('data', (c) => (b += c));
      res.on('end', () => ok({ status: res.statusCode!, body: b }));
    });
    r.on('error', fail);
    r.end(body);
  });
}

test('sdl serve: live text colouring equals sdl run, steering, traversal refused, bad requests survived, port in use', { skip }, async () => {
  const server: ChildProcess = spawn(process.execPath, [CLI, 'serve', sae, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const url = await new Promise<string>((ok, fail) => {
      let out = '';
      server.stdout!.on('data', (b) => {
        out += b;
        const m = /at (http:\/\/\S+)/.exec(out);
        if (m) ok(m[1]);
      });
      server.on('exit', (c) => fail(new Error(`serve exited ${c}`)));
    });
    const port = Number(new URL(url).port);
    assert.equal(new URL(url).hostname, '127.0.0.1');
    const feature = 5;
    const { page, errors } = await open(`${url}#/d0/f/${feature}`);
    assert.ok(await page.isVisible('#live'));
    await page.waitForSelector('#live-text');
    const text = 'They have been here and we have seen it.';
    await page.fill('#live-text', text);
    await page.click('#live-run');
    await page.waitForSelector('#live-text-out .ctx span');
    const acts = await page.locator('#live-text-out .ctx span').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-act'))));
    const ref = JSON.parse(sdl('run', sae, text, '--feature', String(feature), '--json').stdout) as { features: { act: number }[] }[];
    assert.equal(acts.length, ref.length);
    acts.forEach((a, i) => assert.ok(Math.abs(a - ref[i].features[0].act) < 1e-5, `token ${i}: ${a} vs ${ref[i].features[0].act}`));
    await page.fill('#steer-prompt', 'The ship');
    await page.click('#steer-run');
    await page.waitForFunction(() => {
      const t =
        (globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document.querySelector('#steer-out')
          ?.textContent ?? '';
      return t.length > 0 && !t.startsWith('generating');
    });
    assert.match((await page.locator('#steer-clean').textContent()) ?? '', /^The ship/);
    assert.deepEqual(errors, []);
    await page.close();
    // Nothing outside the dashboard folder is served.
    for (const p of ['/../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/data/../../../../etc/passwd', '/..%2f..%2fetc%2fpasswd']) {
      const r = await rawGet(port, p);
      assert.doesNotMatch(r, /root:x:0:0/, p);
      assert.match(r, /^HTTP\/1\.1 (400|404)/, p);
    }
    // Bad requests get an error reply, and the server keeps serving.
    assert.equal((await post(port, '/api/run', '{not json')).status, 400);
    const bad = await post(port, '/api/run', JSON.stringify({ dict: 'd0', text: 'hi', feature: 99999 }));
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).error, /feature 99999 does not exist/);
    assert.equal((await post(port, '/api/steer', JSON.stringify({ dict: 'd0', feature: 1, scale: 'abc', prompt: 'x' }))).status, 400);
    assert.match(await rawGet(port, '/api/health'), /"live":true/);
    // The same port again: one line saying so.
    const again = sdl('serve', sae, '--port', String(port));
    assert.equal(again.status, 2);
    assert.match(again.stderr, /^sdl: port \d+ on 127\.0\.0\.1 is in use; pass --port with another number \(0 picks a free one\)\n$/);
  } finally {
    server.kill('SIGTERM');
  }
});

test('dashboard bad input: an index from other weights, a folder that is not a dashboard', { skip }, () => {
  const other = join(dir, 'sae2');
  const f = sdl('fit', '--acts', join(dir, 'acts'), '--latents', '256', '--k', '8', '--batch', '1024', '--steps', '5', '--eval-tokens', '2048', '--out', other);
  assert.equal(f.status, 0, f.stderr);
  spawnSync('cp', [join(sae, 'index.sqlite'), join(other, 'index.sqlite')]);
  const r = sdl('dashboard', other, '--out', join(dir, 'site2'));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^sdl: the feature index in .*sae2 was built from other weights; run 'sdl index .*sae2 --force'\n$/);
  const n = sdl('dashboard', sae, '--out', join(dir, 'acts'));
  assert.equal(n.status, 2);
  assert.match(n.stderr, /exists and is not a dashboard folder; choose another --out/);
});
