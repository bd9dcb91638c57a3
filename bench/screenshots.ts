// The dashboard pictures in docs/ (README shows them): the pipeline SAE's overview, feature list and one feature
// page, taken by the same Chromium the browser tests drive. Run after `npm start`:
//   node dist/bench/screenshots.js [--dict cache/dicts/pipeline-sae-L6] [--feature 30]
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

async function main() {
  const dict = arg('dict', 'cache/dicts/pipeline-sae-L6');
  const feature = arg('feature', '30');
  const out = resolve(arg('out', 'docs/img'));
  const cli = join(import.meta.dirname, '../src/cli.js');
  for (const cmd of [
    ['eval', dict],
    ['dashboard', dict, '--out', join(dict, 'dashboard')],
  ]) {
    const r = spawnSync(process.execPath, [cli, ...cmd], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`sdl ${cmd.join(' ')} failed`);
  }
  const browser = await chromium.launch({ executablePath: process.env.SDL_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const base = `file://${resolve(dict, 'dashboard', 'index.html')}`;
  for (const [hash, file, full] of [
    ['#/d0', 'dashboard-overview.png', false],
    ['#/d0/features?sort=freq&desc=1', 'dashboard-features.png', false],
    [`#/d0/f/${feature}`, 'dashboard-feature.png', true],
  ] as const) {
    await page.goto(base + hash);
    await page.waitForSelector('body[data-ready="1"]');
    await page.waitForTimeout(200);
    await page.screenshot({ path: join(out, file), fullPage: full });
    console.log(`wrote ${join(out, file)}`);
  }
  await browser.close();
}

await main();
