// Export: the ONNX dictionary matches sdlkit's own encode/decode; the SAELens folder has SAELens' names,
// shapes and dtype, and reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Dictionary } from '../src/sdl/dictionary.js';
import type { Activation, DictConfig } from '../src/sdl/config.js';
import { dictionaryToOnnx } from '../src/export/onnx.js';
import { exportSaelens, importSaelens } from '../src/export/saelens.js';
import { Rng } from '../src/util/rng.js';
import { tmp } from './helpers.js';
import { decodeSafetensors, encodeSafetensors, safetensorsParts } from '../src/tensor/safetensors.js';
import { transpose } from '../src/tensor/linalg.js';

function randomDict(activation: Activation, o: Partial<DictConfig> = {}): Dictionary {
  const dIn = 12,
    dSae = 40;
  const sites = o.sitesIn ?? [{ name: 'blocks.1.hook_resid_post', width: dIn }];
  const cfg: DictConfig = {
    kind: 'sae',
    activation,
    sitesIn: sites,
    sitesOut: sites,
    dIn,
    dOut: dIn,
    dSae,
    k: 5,
    matryoshkaWidths: [dSae],
    applyBDecToInput: true,
    noBias: false,
    tied: false,
    ...o,
  };
  const rng = new Rng(3);
  const r = (n: number, s = 0.5) => Float32Array.from({ length: n }, () => rng.normal() * s);
  return new Dictionary(cfg, {
    W_enc: r(cfg.dIn * dSae),
    b_enc: r(dSae, 0.1),
    W_dec: r(dSae * cfg.dOut),
    b_dec: r(cfg.dOut, 0.1),
    threshold: activation === 'relu' || activation === 'topk' ? undefined : Float32Array.from({ length: dSae }, () => 0.2 + 0.3 * rng.next()),
  });
}

async function compare(d: Dictionary, bytes: Uint8Array, tol: number) {
  const s = await ort.InferenceSession.create(bytes);
  const n = 50;
  const rng = new Rng(9);
  const x = Float32Array.from({ length: n * d.cfg.dIn }, () => rng.normal() * 2);
  const out = await s.run({ x: new ort.Tensor('float32', x, [n, d.cfg.dIn]) });
  const f = d.encode(x, n);
  const rec = d.decode(f, n);
  const got = out.features.data as Float32Array;
  for (let i = 0; i < f.length; i++) assert.ok(Math.abs(f[i] - got[i]) <= tol, `feature ${i}: ${f[i]} vs ${got[i]}`);
  let active = 0;
  for (const v of got) if (v !== 0) active++;
  if (d.cfg.activation === 'topk') assert.ok(active <= n * d.cfg.k);
  const recNames = d.cfg.sitesOut.length > 1 ? d.cfg.sitesOut.map((s) => `reconstruction.${s.name}`) : ['reconstruction'];
  let off = 0;
  for (const [si, name] of recNames.entries()) {
    const w = d.cfg.sitesOut[si].width;
    const r = out[name].data as Float32Array;
    for (let b = 0; b < n; b++) for (let j = 0; j < w; j++) assert.ok(Math.abs(rec[b * d.cfg.dOut + off + j] - r[b * w + j]) <= tol * 10, `${name}[${b},${j}]`);
    off += w;
  }
}

test('ONNX export matches sdlkit encode/decode within 1e-5 for every activation, and a crosscoder splits per site', async () => {
  for (const a of ['relu', 'topk', 'jumprelu', 'batchtopk', 'matryoshka'] as const) await compare(randomDict(a), dictionaryToOnnx(randomDict(a)), 1e-5);
  const sites = [
    { name: 'blocks.1.hook_resid_post', width: 5 },
    { name: 'blocks.2.hook_resid_post', width: 7 },
  ];
  const cc = randomDict('topk', { kind: 'crosscoder', sitesIn: sites, sitesOut: sites });
  await compare(cc, dictionaryToOnnx(cc), 1e-5);
  const tc = randomDict('relu', {
    kind: 'transcoder',
    sitesIn: [{ name: 'blocks.1.hook_mlp_in', width: 12 }],
    sitesOut: [{ name: 'blocks.1.hook_mlp_out', width: 9 }],
    dOut: 9,
    applyBDecToInput: false,
  });
  await compare(tc, dictionaryToOnnx(tc), 1e-5);
  await compare(randomDict('topk'), dictionaryToOnnx(randomDict('topk'), { fp16: true }), 2e-2);
  // A weight past float16's range is refused, not stored as an infinity.
  const loud = randomDict('topk');
  loud.w.b_dec[3] = -7e4;
  assert.throws(() => dictionaryToOnnx(loud, { fp16: true }), /b_dec holds values beyond float16's range \(\|x\| > 65504\): export without --fp16/);
  const enc = await ort.InferenceSession.create(dictionaryToOnnx(randomDict('relu'), { encoderOnly: true }));
  assert.deepEqual(enc.outputNames, ['features']);
});

test('onnx.checker accepts the exported model (where python3-onnx is installed)', (t) => {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' });
  if (probe.status !== 0) return t.skip('python3-onnx is not installed (apt-get install python3-onnx)');
  const dir = tmp();
  for (const a of ['topk', 'jumprelu'] as const) {
    const p = join(dir, `${a}.onnx`);
    writeFileSync(p, dictionaryToOnnx(randomDict(a)));
    const r = spawnSync('/usr/bin/python3', ['-c', `import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)`, p], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
  }
});

test('SAELens export: tensor names, shapes and dtype in the safetensors header; cfg.json keys; reads back', () => {
  const dir = tmp();
  for (const a of ['topk', 'batchtopk', 'relu'] as const) {
    const d = randomDict(a);
    const out = join(dir, a);
    exportSaelens(d, out);
    const buf = readFileSync(join(out, 'sae_weights.safetensors'));
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    const want: Record<string, number[]> = { W_enc: [12, 40], W_dec: [40, 12], b_enc: [40], b_dec: [12] };
    if (a === 'batchtopk') want.threshold = [40];
    assert.deepEqual(Object.keys(header).sort(), Object.keys(want).sort());
    for (const [k, shape] of Object.entries(want)) {
      assert.equal(header[k].dtype, 'F32');
      assert.deepEqual(header[k].shape, shape);
    }
    const cfg = JSON.parse(readFileSync(join(out, 'cfg.json'), 'utf8'));
    assert.equal(cfg.architecture, a === 'topk' ? 'topk' : a === 'relu' ? 'standard' : 'jumprelu');
    assert.equal(cfg.metadata.hook_name, 'blocks.1.hook_resid_post');
    assert.ok(cfg.metadata.sae_lens_version >= '6');
    const back = importSaelens(out);
    const x = Float32Array.from({ length: 36 }, (_, i) => Math.sin(i));
    assert.deepEqual(back.encode(x, 3), d.encode(x, 3));
  }
});

test('a SAELens folder saved from a bfloat16 run imports exactly', () => {
  const dir = tmp();
  const d = randomDict('topk');
  const out = join(dir, 'bf16');
  exportSaelens(d, out);
  // The same file with every tensor as BF16: each float32's upper 16 bits (a bf16 value; its float32 is those bits
  // followed by zeros), one of them a negative zero and one a subnormal, to be read back bit for bit.
  const file = join(out, 'sae_weights.safetensors');
  const f32 = decodeSafetensors(readFileSync(file)).tensors;
  f32.b_enc.data[0] = -0;
  f32.b_enc.data[1] = 1e-39;
  const header: Record<string, unknown> = {};
  const parts: Buffer[] = [];
  let at = 0;
  const want: Record<string, Uint32Array> = {};
  for (const [name, t] of Object.entries(f32)) {
    const hi = Uint16Array.from(new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length), (b) => b >>> 16);
    want[name] = Uint32Array.from(hi, (h) => h << 16);
    header[name] = { dtype: 'BF16', shape: t.shape, data_offsets: [at, at + 2 * hi.length] };
    parts.push(Buffer.from(hi.buffer));
    at += 2 * hi.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...parts]));
  const back = decodeSafetensors(readFileSync(file)).tensors;
  for (const [name, bits] of Object.entries(want)) {
    const got = back[name].data;
    assert.deepEqual(new Uint32Array(got.buffer, got.byteOffset, got.length), bits, name);
    assert.equal(back[name].dtype, 'BF16');
  }
  assert.ok(Object.is(back.b_enc.data[0], -0) && back.b_enc.data[1] > 0 && back.b_enc.data[1] < 1.2e-38, 'negative zero and a subnormal kept');
  // The imported dictionary is the one whose weights are the bf16 values.
  const imported = importSaelens(out);
  const x = Float32Array.from({ length: 36 }, (_, i) => Math.sin(i));
  const rounded = (a: Float32Array) => {
    const r = new Float32Array(a.length);
    new Uint32Array(r.buffer).set(Uint32Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (b) => (b >>> 16) << 16));
    return r;
  };
  const ref = new Dictionary(d.cfg, {
    ...d.w,
    W_enc: rounded(d.w.W_enc),
    W_dec: rounded(d.w.W_dec),
    b_enc: rounded(f32.b_enc.data),
    b_dec: rounded(d.w.b_dec),
  });
  assert.deepEqual(imported.encode(x, 3), ref.encode(x, 3));
});

test('safetensors: a tensor held transposed is written in row blocks, byte-equal to writing its transpose whole', () => {
  // [700, 3000] stored as [3000, 700]: 4 MiB blocks of 349 rows, the last one 2 rows.
  const rows = 700,
    cols = 3000;
  const held = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * (i % 13));
  const whole = transpose(held, cols, rows);
  // Each part copied as it comes: a transposed tensor's blocks reuse one array.
  const parts = Array.from(safetensorsParts({ b: { data: new Float32Array([1, 2]), shape: [2] }, W: { transposeOf: held, shape: [rows, cols] } }), (p) =>
    Buffer.from(p),
  );
  assert.ok(parts.length >= 5, `header, b, then blocks of W (got ${parts.length} parts)`);
  const bytes = Buffer.concat(parts);
  assert.deepEqual(bytes, Buffer.from(encodeSafetensors({ b: { data: new Float32Array([1, 2]), shape: [2] }, W: { data: whole, shape: [rows, cols] } })));
  const back = decodeSafetensors(bytes).tensors.W;
  assert.deepEqual(back.shape, [rows, cols]);
  assert.deepEqual(back.data, whole);
  assert.equal(back.data[5 * cols + 7], held[7 * rows + 5]);
});
