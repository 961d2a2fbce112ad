// The edge entry works with no filesystem access of its own: the caller
// hands it a compiled WebAssembly.Module (as workerd and bundlers do), and
// nothing is usable before init.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

test('edge entry: init with a WebAssembly.Module, then the full API', async () => {
  const edge = await import('../lib/edge.js');
  assert.throws(() => edge.createEngine(), 'unusable before init');
  const module = new WebAssembly.Module(readFileSync(new URL('../pkg/session_logic_bg.wasm', import.meta.url)));
  await edge.init(module);
  const now = 1_700_000_000_000;
  const sessions = new edge.Sessions({ executor: edge.memoryExecutor(undefined, () => now), clock: () => now });
  const s = (await sessions.load(null)).session;
  s.set('k', 'v');
  const saved = await sessions.save(s);
  const back = await sessions.load(saved.cookie.split(';')[0]);
  assert.equal(back.kind, 'loaded');
  assert.equal(back.session.get('k'), 'v');
});
