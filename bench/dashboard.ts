// Dashboard at research width: a 16,384-latent SAE on the bundled model's layer 6 (fitted briefly; the point is
// size, not quality): index, write the dashboard (target < 30 s), its size, and in Chromium the time until the
// feature list is interactive (target < 1 s) and until a feature page shows.
// Usage: node dist/bench/dashboard.js [--latents 16384] [--tokens 256k]
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const cli = join(import.meta.dirname, '../src/cli.js');
function sdl(...args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sdl ${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

async function main() {
  const latents = arg('latents', '16384'),
    tokens = arg('tokens', '256k');
  const dir = mkdtempSync(join(tmpdir(), 'sdl-bench-dash-'));
  sdl('harvest', '--layer', '6', '--sites', 'resid_post', '--tokens', tokens, '--out', join(dir, 'acts'));
  const dict = join(dir, 'sae');
  const fit = sdl('fit', '--acts', join(dir, 'acts'), '--latents', latents, '--k', '32', '--steps', '60', '--batch', '4096', '--out', dict);
  const index = sdl('index', dict);
  const site = join(dir, 'site');
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, 'dashboard', dict, '--out', site, '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const dash = (performance.now() - t0) / 1000;
  const res = JSON.parse(r.stdout) as { files: number; bytes: number; features: number };
  const browser = await chromium.launch({ executablePath: process.env.SDL_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const times: Record<string, number[]> = { list: [], feature: [] };
  for (let rep = 0; rep < 5; rep++) {
    let t = performance.now();
    await page.goto(`file://${join(site, 'index.html')}#/d0/features`);
    await page.waitForSelector('#shown-count[data-total]');
    times.list.push(performance.now() - t);
    t = performance.now();
    await page.evaluate(
      (h) => {
        (globalThis as unknown as { location: { hash: string } }).location.hash = h;
      },
      `#/d0/f/${1000 + rep * 2000}`,
    );
    await page.waitForSelector(`#feature-page[data-feature="${1000 + rep * 2000}"]`);
    times.feature.push(performance.now() - t);
  }
  await browser.close();
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(
    `${res.features} features (fit ${fit.toFixed(1)} s, index ${index.toFixed(1)} s): dashboard written in ${dash.toFixed(1)} s (whole command), ${res.files} files, ${(res.bytes / 1e6).toFixed(1)} MB`,
  );
  console.log(
    `in Chromium (median of 5, file://): feature list interactive ${med(times.list).toFixed(0)} ms (${times.list.map((x) => x.toFixed(0)).join(', ')}), a feature page ${med(times.feature).toFixed(0)} ms (${times.feature.map((x) => x.toFixed(0)).join(', ')})`,
  );
}

await main();
