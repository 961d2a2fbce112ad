// The executors' round timeout (a shared watchdog, not a timer per round)
// and the shapes they hand the core, without a Redis server: `send` is a
// function here. The same executors against real servers: redis.test.mjs.
import test from 'node:test';
import assert from 'node:assert/strict';
import { TransportFailure, sendCommandExecutor } from '../lib/node.js';

const bytes = (s) => new TextEncoder().encode(s);

test('a round that never answers fails as a timeout between 1 and 1.25 timeouts', async () => {
  const execute = sendCommandExecutor(() => new Promise(() => {}), { timeoutMs: 80 });
  const started = performance.now();
  const err = await execute([[bytes('GET'), bytes('k')]]).then(
    () => assert.fail('a hanging round resolved'),
    (e) => e,
  );
  const took = performance.now() - started;
  assert.ok(err instanceof TransportFailure, String(err));
  assert.equal(err.kind, 'timeout');
  assert.ok(took >= 79, `failed after ${took} ms, before the timeout`);
  assert.ok(took < 80 * 1.25 + 60, `failed after ${took} ms`);
});

test('rounds that answer are never failed later, and hung ones among them still are', async () => {
  let n = 0;
  const execute = sendCommandExecutor(
    (argv) => (argv[0] === 'HANG' ? new Promise(() => {}) : Promise.resolve(`r${++n}`)),
    { timeoutMs: 40 },
  );
  const answered = [];
  for (let i = 0; i < 50; i++) answered.push(execute([['GET', 'a'], ['GET', 'b']]));
  const hung = execute([['GET', 'a'], ['HANG']]);
  assert.equal((await Promise.all(answered)).length, 50);
  await assert.rejects(hung, (e) => e.kind === 'timeout');
  // Past several sweeps: nothing settled twice, nothing left in flight.
  await new Promise((r) => setTimeout(r, 100));
});

test('text rounds go to send as they are; binary ones as Buffers; error replies stay data', async () => {
  const seen = [];
  const send = (argv) => {
    seen.push(argv);
    return argv[0] === 'BAD' ? Promise.reject(Object.assign(new Error('ERR nope'), { name: 'ReplyError' })) : Promise.resolve('ok');
  };
  const text = sendCommandExecutor(send, { text: true });
  const argv = ['GET', 'k'];
  const replies = await text([argv, ['BAD']]);
  assert.equal(seen[0], argv);
  assert.equal(replies[0], 'ok');
  assert.match(replies[1].message, /ERR nope/);
  const binary = sendCommandExecutor(send, { binary: true });
  await binary([[bytes('GET'), bytes('k')]]);
  assert.ok(Buffer.isBuffer(seen[2][0]));
  assert.equal(seen[2][1].toString(), 'k');
});

test('a timeout that is not a positive number is refused at construction', () => {
  for (const bad of [0, -1, Number.NaN, Infinity]) {
    assert.throws(() => sendCommandExecutor(() => null, { timeoutMs: bad }), TypeError);
  }
});
