// Interventions: steered generation against plain generation of the same model and length (same prompt, greedy,
// paired repeats), and `sdl run` on a 1,000-token text, in process and as a whole command.
// Usage: node dist/bench/intervene.js <dictionary> [--tokens 64] [--repeats 11]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Dictionary } from '../src/sdl/dictionary.js';
import { bindModel } from '../src/intervene/bind.js';
import { Intervener } from '../src/intervene/intervener.js';
import { readout, textWindows } from '../src/intervene/actions.js';
import { createSession } from '../src/onnx/session.js';
import { generate } from '../src/models/generate.js';
import { defaultModel } from '../src/commands/common.js';
import { median, spread } from './stats.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};

async function main() {
  const dictDir = process.argv[2];
  if (!dictDir || dictDir.startsWith('--')) throw new Error('usage: node dist/bench/intervene.js <dictionary> [--tokens 64] [--repeats 11]');
  const tokens = Number(arg('tokens', '64')),
    repeats = Number(arg('repeats', '11'));
  const d = Dictionary.load(dictDir);
  const iv = await Intervener.create(await bindModel(d, { dictDir, fallback: defaultModel }), d);
  const m = iv.model;
  const plain = await createSession(m.bytes);
  const prompt = m.tokenizer.encode('The whale swam under the ship');
  const opts = { steps: prompt.length - 1 + tokens, temperature: 0, stopAtBos: false };
  const steered = (ids: Int32Array) =>
    iv.logits(ids, {
      add: new Map([
        [0, 4],
        [1, -2],
      ]),
    });
  const rate = async (f: () => Promise<number[]>) => {
    const t0 = performance.now();
    const out = await f();
    return (out.length - prompt.length) / ((performance.now() - t0) / 1000);
  };
  const clamped = (ids: Int32Array) =>
    iv.logits(ids, {
      clamp: new Map([
        [0, 4],
        [1, 0],
      ]),
    });
  await generate(m, plain, prompt, opts); // warm-up
  await generate(m, steered, prompt, opts);
  await generate(m, clamped, prompt, opts);
  const plainRates: number[] = [],
    steerRates: number[] = [],
    clampRates: number[] = [],
    ratios: number[] = [],
    clampRatios: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const a = await rate(() => generate(m, plain, prompt, opts));
    const b = await rate(() => generate(m, steered, prompt, opts));
    const c = await rate(() => generate(m, clamped, prompt, opts));
    plainRates.push(a);
    steerRates.push(b);
    clampRates.push(c);
    ratios.push(b / a);
    clampRatios.push(c / a);
  }
  const range = (xs: number[]) => `${median(xs).toFixed(3)} (${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)})`;
  console.log(
    `generation of ${tokens} tokens (${m.name}, context grows to ${prompt.length + tokens}, full recompute per token), tokens/s median (min-max) of ${repeats}:`,
  );
  console.log(
    `  plain ${median(plainRates).toFixed(1)} (${spread(plainRates)}), steered by add ${median(steerRates).toFixed(1)} (${spread(steerRates)}), paired ratio ${range(ratios)}`,
  );
  console.log(`  clamped (the full graph, features computed) ${median(clampRates).toFixed(1)} (${spread(clampRates)}), paired ratio ${range(clampRatios)}`);

  const text = 'The whale swam under the ship, and the captain said that the sea was calm. '.repeat(28);
  const { windows } = textWindows(m, text);
  const n = windows.reduce((a, w) => a + w.length - 1, 0);
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await readout(iv, windows, { top: 5 });
    times.push(performance.now() - t0);
  }
  const cli: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    const p = spawnSync(process.execPath, [join(import.meta.dirname, '../src/cli.js'), 'run', dictDir, text, '--json'], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    });
    if (p.status !== 0) throw new Error(p.stderr);
    cli.push(performance.now() - t0);
  }
  console.log(
    `sdl run on ${n} tokens (${windows.length} windows): readout ${median(times).toFixed(0)} ms (${spread(times)}), whole command ${median(cli).toFixed(0)} ms (${spread(cli)})`,
  );
  await plain.release();
  await iv.release();
}

await main();
