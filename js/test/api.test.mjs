// The JS API's edges: typed error objects (never strings), host inputs
// checked, replies of an impossible shape refused, and the in-memory backend
// driving the whole lifecycle.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, Sessions, createEngine, memoryExecutor, runOp, isSessionError } from '../lib/node.js';

const isError = (code, status) => (e) => {
  assert.ok(isSessionError(e), `expected a SessionError, got ${e}`);
  assert.equal(typeof e.message, 'string');
  assert.deepEqual([e.code, e.status], [code, status]);
  return true;
};

test('an invalid config is a typed config error naming the field', () => {
  assert.throws(() => new Engine({ idle_timeout_ms: 7_200_000, absolute_lifetime_ms: 3_600_000 }), (e) => {
    isError('config', 500)(e);
    assert.equal(e.detail.kind, 'config');
    assert.match(e.message, /idle_timeout/);
    return true;
  });
  assert.throws(() => new Engine('{not json'), isError('config', 500));
  assert.throws(() => createEngine({ prefx: 'x' }), isError('config', 500));
});

test('now and entropy are checked before they reach the rules', () => {
  const engine = createEngine();
  const s = engine.newSession();
  assert.throws(() => engine.save(s, new Uint8Array(16), Date.now()), isError('invalid_input', 400));
  assert.throws(() => engine.load(null, null, -1), isError('invalid_input', 400));
  assert.throws(() => engine.load(null, null, 1.5), isError('invalid_input', 400));
  assert.throws(() => s.set('$v', 1), isError('invalid_input', 400));
  assert.throws(() => s.set('k', () => 1), isError('invalid_input', 400));
  assert.throws(() => s.setUser('a\nb', Date.now()), isError('invalid_input', 400));
});

test('replies of a shape no Redis sends are a usage error, wrong counts poison the op', () => {
  const engine = createEngine();
  const op = engine.loadId('A'.repeat(43), null, Date.now());
  const step = op.next();
  assert.equal(step.round.length, 1);
  assert.throws(() => op.next([Symbol('x')]), isError('usage', 500));
  const after = op.next([null, null]);
  isError('usage', 500)(after.error);
});

test('a transport failure becomes a typed 503 through runOp', async () => {
  const engine = createEngine();
  const failing = async () => {
    throw new Error('connect ECONNREFUSED 127.0.0.1:1');
  };
  await assert.rejects(runOp(engine.loadId('A'.repeat(43), null, Date.now()), failing), isError('backend_unavailable', 503));
});

test('the in-memory backend runs the lifecycle, lazily', async () => {
  let now = 1_700_000_000_000;
  const exec = memoryExecutor(undefined, () => now);
  const sessions = new Sessions({ executor: exec, clock: () => now });
  const first = await sessions.load(undefined);
  assert.deepEqual([first.kind, first.reason], ['none', 'no_cookie']);
  const empty = await sessions.save(first.session);
  assert.deepEqual([empty.kind, empty.cookie], ['saved', null]);
  assert.deepEqual(exec.memory.keys(now), [], 'nothing stored for an empty session');

  first.session.set('n', 1);
  assert.equal(first.session.isDirty, true);
  const saved = await sessions.save(first.session);
  assert.match(saved.cookie, /^sid=[A-Za-z0-9_-]{43}; /);
  assert.equal(saved.session.status, 'live');
  assert.equal(saved.session.isDirty, false);
  assert.equal(typeof sessions.engine.sidHash(saved.session), 'string');
  assert.notEqual(sessions.engine.sidHash(saved.session), saved.session.id);

  now += 31 * 60 * 1000; // past the 30-minute idle timeout
  const later = await sessions.load(saved.cookie.split(';')[0]);
  // Redis (here Memory) dropped the key at its TTL: the ID is unknown, never adopted.
  assert.deepEqual([later.kind, later.reason], ['none', 'unknown']);
  assert.equal(later.session.id, undefined);
  assert.equal(later.session.get('n'), undefined);
});
