// The JS half of the packed wire form (lib/wire.js) against the layout
// session-logic/src/wire.rs documents: exact bytes for each reply kind, and
// typed usage errors for what no executor may answer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { packReplies, unpackRound, isSessionError } from '../lib/node.js';

const u32 = (n) => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];
const i64 = (n) => {
  const b = new DataView(new ArrayBuffer(8));
  b.setBigInt64(0, BigInt(n), true);
  return [...new Uint8Array(b.buffer)];
};

test('replies pack to the documented layout', () => {
  const packed = [...packReplies([null, -2, 2 ** 40, 7n, 'hé', Uint8Array.of(1, 2), [{ simple: 'OK' }, new Error('NOSCRIPT x'), { error: 'ERR y' }]])];
  const expected = [
    ...u32(7),
    0,
    1, ...i64(-2),
    1, ...i64(2 ** 40),
    1, ...i64(7),
    2, ...u32(3), 0x68, 0xc3, 0xa9,
    2, ...u32(2), 1, 2,
    5, ...u32(3),
    3, ...u32(2), ...Buffer.from('OK'),
    4, ...u32(10), ...Buffer.from('NOSCRIPT x'),
    4, ...u32(5), ...Buffer.from('ERR y'),
  ];
  assert.deepEqual(packed, expected);
});

test('a large reply grows the scratch buffer', () => {
  const big = 'x'.repeat(100_000);
  const packed = packReplies([[big, big]]);
  assert.equal(packed.length, 4 + 5 + 2 * (5 + 100_000));
});

test('what no client answers is a usage error', () => {
  for (const bad of [[1.5], [2 ** 60], [2n ** 64n], [{}], [Symbol('x')], 'not an array']) {
    assert.throws(() => packReplies(bad), (e) => isSessionError(e) && e.code === 'usage' && e.status === 500);
  }
  let deep = null;
  for (let i = 0; i < 20; i++) deep = [deep];
  assert.throws(() => packReplies([deep]), /deeper/);
});

test('a packed round unpacks to argv views', () => {
  const bytes = Uint8Array.from([9, ...u32(1), ...u32(2), ...u32(3), ...Buffer.from('GET'), ...u32(1), ...Buffer.from('k')]);
  const round = unpackRound(bytes);
  assert.deepEqual(round.map((argv) => argv.map((a) => Buffer.from(a).toString())), [['GET', 'k']]);
});

test('unpackRound as text gives the same arguments as strings', () => {
  const args = [['EVALSHA', 'abc', '1', 'sess:é😀', ''], ['GET', 'k']];
  const enc = new TextEncoder();
  const parts = [new Uint8Array([0]), u32(args.length)];
  for (const argv of args) {
    parts.push(u32(argv.length));
    for (const a of argv) {
      const b = enc.encode(a);
      parts.push(u32(b.length), b);
    }
  }
  const packed = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    packed.set(p, at);
    at += p.length;
  }
  // A view at an offset inside a bigger buffer, as wasm-bindgen hands out.
  const outer = new Uint8Array(packed.length + 7);
  outer.set(packed, 7);
  const view = outer.subarray(7);
  assert.deepEqual(unpackRound(view, 1, true), args);
  assert.deepEqual(unpackRound(view).map((argv) => argv.map((b) => new TextDecoder().decode(b))), args);
});

