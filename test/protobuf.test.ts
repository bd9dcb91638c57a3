import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Reader, Writer } from '../src/onnx/protobuf.js';
import { appendToGraph, decodeModel, encodeModel, DataType } from '../src/onnx/proto.js';

test('varints round-trip, including negative int64 and values past 2^32', () => {
  const vals = [0, 1, 127, 128, 300, 2 ** 31, 2 ** 32 + 5, 2 ** 50, -1, -300];
  const w = new Writer();
  vals.forEach((v, i) => w.varint(i + 1, v));
  const r = new Reader(w.finish());
  for (const v of vals) {
    r.tag();
    assert.equal(v < 0 ? r.int64() : r.varint(), v);
  }
});

test('a model round-trips, and appended outputs merge into the graph', () => {
  const bytes = encodeModel({
    irVersion: 8,
    opsets: [{ domain: '', version: 17 }],
    producerName: 't',
    producerVersion: '1',
    metadata: { a: 'b' },
    graph: {
      name: 'g',
      initializers: [],
      valueInfo: [],
      nodes: [
        { name: 'n1', opType: 'Relu', domain: '', inputs: ['x'], outputs: ['y'], attrs: {} },
        { name: 'n2', opType: 'LeakyRelu', domain: '', inputs: ['y'], outputs: ['z'], attrs: { alpha: 0.5 } },
      ],
      inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: ['batch', 4] }],
      outputs: [{ name: 'z', elemType: DataType.FLOAT, shape: ['batch', 4] }],
    },
  });
  const m = decodeModel(bytes);
  assert.deepEqual(m.graph.inputs[0], { name: 'x', elemType: 1, shape: ['batch', 4] });
  assert.equal(m.graph.nodes[1].attrs.alpha, 0.5);
  assert.equal(m.metadata.a, 'b');
  const m2 = decodeModel(appendToGraph(bytes, { outputs: [{ name: 'y', elemType: 0 }] }));
  assert.deepEqual(
    m2.graph.outputs.map((o) => o.name),
    ['z', 'y'],
  );
  assert.equal(m2.graph.nodes.length, 2);
});

test('bytes that are not ONNX are refused', () => {
  assert.throws(() => decodeModel(new TextEncoder().encode('hello, this is not a model')), /not an ONNX model/);
  assert.throws(() => decodeModel(new Uint8Array([0x0a, 0x05, 0x01])), /not an ONNX model/);
});

test('large pieces are held by reference and copied once at finish: the same bytes as small ones written inline', () => {
  const big = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 255);
  const small = Uint8Array.from({ length: 100 }, (_, i) => i);
  // Expected bytes, written by hand: field 1 (varint 7), field 2 (big), field 3 (message: field 1 small, field 2 big), field 4 (small).
  const expect: number[] = [];
  const varint = (v: number) => {
    let x = v;
    for (; x >= 0x80; x >>>= 7) expect.push((x & 0x7f) | 0x80);
    expect.push(x);
  };
  const len = (field: number, b: ArrayLike<number>) => {
    varint(field * 8 + 2);
    varint(b.length);
    expect.push(...Array.from(b));
  };
  varint(8);
  varint(7);
  len(2, big);
  const innerBytes: number[] = [];
  innerBytes.push(10, 100, ...small, 18, 0x90, 0x4e, ...big); // field 1 len 100; field 2 len 10,000 (varint 0x90 0x4e)
  len(3, innerBytes);
  len(4, small);
  const inner = new Writer().bytes(1, small).bytes(2, big);
  assert.equal(inner.length, innerBytes.length);
  const w = new Writer().varint(1, 7).bytes(2, big).message(3, inner).bytes(4, small);
  const out = w.finish();
  assert.deepEqual(Array.from(out), expect);
  // A copy: changing the source afterwards leaves the written bytes alone.
  big[0] ^= 0xff;
  assert.notEqual(out[4], big[0]);
  const r = new Reader(out);
  r.tag();
  assert.equal(r.varint(), 7);
});
