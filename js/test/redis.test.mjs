// The JS host against a real redis-server (started here on a free loopback
// port, killed at the end) with both node-redis and ioredis: the session
// journey, NOSCRIPT after SCRIPT FLUSH, the same record bytes as the
// in-memory backend, and an outage that becomes a fast typed 503.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createClient } from 'redis';
import { Redis } from 'ioredis';
import { freePort } from '../test-support/redis.mjs';
import { Sessions, createEngine, memoryExecutor, nodeRedisExecutor, ioredisExecutor, isSessionError, normalize } from '../lib/node.js';


async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'sl-js-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  const deadline = Date.now() + 5000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`redis-server did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const stop = () =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    }).then(() => rmSync(dir, { recursive: true, force: true }));
  return { port, stop, log: () => log };
}

// Clients configured so an outage fails fast instead of queueing.
const clients = {
  'node-redis': {
    async connect(port) {
      const client = createClient({
        url: `redis://127.0.0.1:${port}`,
        disableOfflineQueue: true,
        socket: { connectTimeout: 1000, reconnectStrategy: (retries) => (retries > 2 ? false : 50) },
      });
      client.on('error', () => {}); // reported per round instead
      await client.connect();
      return {
        executor: nodeRedisExecutor(client, { timeoutMs: 1000 }),
        send: (argv) => client.sendCommand(argv),
        close: () => client.destroy?.() ?? client.disconnect(),
      };
    },
  },
  ioredis: {
    async connect(port) {
      const redis = new Redis({ port, host: '127.0.0.1', enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 1000, lazyConnect: true });
      redis.on('error', () => {});
      await redis.connect();
      return {
        executor: ioredisExecutor(redis, { timeoutMs: 1000 }),
        send: ([name, ...args]) => redis.call(name, ...args),
        close: () => redis.disconnect(),
      };
    },
  },
};

const cookieOf = (outcome) => {
  assert.equal(typeof outcome.cookie, 'string', `expected a Set-Cookie, got ${outcome.kind}`);
  return outcome.cookie.split(';')[0];
};

for (const [name, impl] of Object.entries(clients)) {
  describe(`real Redis through ${name}`, () => {
    let redis;
    let conn;
    // Real Redis expires keys by its own clock, so the host clock starts at the real time.
    let now = Date.now();
    const rounds = [];
    let sessions;
    let elsewhere;

    before(async () => {
      redis = await startRedis();
      conn = await impl.connect(redis.port);
      const counted = async (round) => {
        rounds.push(round.map((argv) => new TextDecoder().decode(argv[0])));
        return conn.executor(round);
      };
      sessions = new Sessions({ config: { cookie: { name: 'sid' } }, executor: counted, clock: () => now });
      // Another process on the same Redis: its engine has no touch hints.
      elsewhere = new Sessions({ config: { cookie: { name: 'sid' } }, executor: counted, clock: () => now });
    });
    after(async () => {
      await conn?.close();
      await redis?.stop();
    });

    test('create, load, change, regenerate, destroy, logout everywhere', async () => {
      const first = await sessions.load(null);
      assert.equal(first.kind, 'none');
      first.session.set('cart', ['apple']);
      const created = await sessions.save(first.session);
      assert.equal(created.kind, 'saved');
      const cookie = cookieOf(created);

      now += 1000;
      const loaded = await sessions.load(`theme=dark; ${cookie}`);
      assert.equal(loaded.kind, 'loaded');
      assert.deepEqual(loaded.session.get('cart'), ['apple']);
      loaded.session.set('count', 2);
      const changed = await sessions.save(loaded.session);
      assert.equal(changed.kind, 'saved');

      changed.session.setUser('alice', now);
      const regen = await sessions.regenerate(changed.session);
      assert.equal(regen.kind, 'saved');
      const newCookie = cookieOf(regen);
      assert.notEqual(newCookie, cookie);
      // An in-flight request with the old cookie: rotated, no data.
      const old = await sessions.load(cookie);
      assert.equal(old.kind, 'rotated');
      assert.deepEqual(old.session.keys(), []);

      const fresh = await sessions.load(newCookie);
      assert.equal(fresh.kind, 'loaded');
      assert.deepEqual(fresh.session.data(), { cart: ['apple'], count: 2 });

      // A second device for alice, then "my devices" and logout everywhere.
      const other = (await sessions.load(null)).session;
      other.set('device', 'phone');
      other.setUser('alice', now);
      const otherCookie = cookieOf(await sessions.save(other));
      const devices = await sessions.listUserSessions('alice', { current: fresh.session });
      assert.equal(devices.kind, 'devices');
      assert.equal(devices.devices.length, 2);
      assert.equal(devices.devices.filter((d) => d.current).length, 1);

      const rounds0 = rounds.length;
      const all = await sessions.destroyAllForUser('alice');
      assert.deepEqual([all.kind, all.count], ['destroyed', 2]);
      // A first use of a script on this server adds one EVAL fallback round.
      const budget = rounds.slice(rounds0).filter((r) => !r.every((cmd) => cmd === 'EVAL'));
      assert.equal(budget.length, 2, 'logout everywhere is two rounds');
      assert.equal((await sessions.load(newCookie)).kind, 'none');
      assert.equal((await sessions.load(otherCookie)).kind, 'none');

      // Destroy one session: removal cookie, gone for good.
      const s = (await sessions.load(null)).session;
      s.set('k', 'v');
      const c = cookieOf(await sessions.save(s));
      const live = await sessions.load(c);
      const destroyed = await sessions.destroy(live.session);
      assert.equal(destroyed.kind, 'destroyed');
      assert.match(destroyed.cookie, /Max-Age=0/);
      assert.equal((await sessions.load(c)).kind, 'none');
    });

    test('NOSCRIPT after SCRIPT FLUSH is resent as EVAL by the core', async () => {
      const s = (await sessions.load(null)).session;
      s.set('k', 1);
      const c = cookieOf(await sessions.save(s));
      await conn.send(['SCRIPT', 'FLUSH']);
      // The engine that wrote the session knows its $touch: no script.
      rounds.length = 0;
      assert.equal((await sessions.load(c)).session.get('k'), 1);
      assert.deepEqual(rounds, [['HGETALL']]);
      rounds.length = 0;
      const loaded = await elsewhere.load(c);
      assert.equal(loaded.kind, 'loaded');
      assert.deepEqual(rounds, [['EVALSHA'], ['EVAL']]);
      assert.equal(loaded.session.get('k'), 1);
    });

    test('the record written through Redis is the record the in-memory backend writes', async () => {
      const fixed = { clock: () => now, random: () => new Uint8Array(32).fill(9) };
      const engine = createEngine({ prefix: `same${name.length}:`, log_key: 'a-test-log-key-of-32-bytes-length' });
      const viaRedis = new Sessions({ engine, executor: conn.executor, ...fixed });
      const mem = memoryExecutor(undefined, () => now);
      const viaMemory = new Sessions({ engine, executor: mem, ...fixed });
      const cookies = [];
      for (const side of [viaRedis, viaMemory]) {
        const s = (await side.load(null)).session;
        s.set('cart', { items: ['a', 'b'], total: 3 });
        s.setUser('bob', now);
        cookies.push(cookieOf(await side.save(s)));
      }
      assert.equal(cookies[0], cookies[1], 'same inputs, same ID');
      const [key] = mem.memory.keys(now).filter((k) => k.startsWith(engine.config.prefix) && !k.includes('user:'));
      assert.ok(key, 'memory holds the session key');
      const dec = new TextDecoder();
      const text = (v) => (typeof v === 'string' ? v : dec.decode(v));
      const pairs = (reply) => {
        const flat = normalize(reply); // RESP3 clients answer HGETALL with a map
        const out = {};
        for (let i = 0; i < flat.length; i += 2) out[text(flat[i])] = text(flat[i + 1]);
        return out;
      };
      const fromRedis = pairs(await conn.send(['HGETALL', key]));
      const [fromMemory] = mem.memory.executeRound([['HGETALL', key]], now);
      assert.ok(Object.keys(fromRedis).length > 3, 'Redis holds the record under the same key');
      assert.deepEqual(fromRedis, pairs(fromMemory));

      // The in-memory rules read the record Redis wrote: copy it over and load it.
      const copy = memoryExecutor(undefined, () => now);
      const pttl = Number(await conn.send(['PTTL', key]));
      assert.ok(pttl > 0);
      copy.memory.executeRound([['HSET', key, ...Object.entries(fromRedis).flat()], ['PEXPIREAT', key, String(now + pttl)]], now);
      const back = await new Sessions({ engine, executor: copy, ...fixed }).load(cookies[0]);
      assert.equal(back.kind, 'loaded');
      assert.deepEqual(back.session.get('cart'), { items: ['a', 'b'], total: 3 });
      assert.equal(back.session.user, 'bob');
    });

    test('Redis stopped: a typed 503 error, quickly', async () => {
      const s = (await sessions.load(null)).session;
      s.set('k', 1);
      const c = cookieOf(await sessions.save(s));
      await redis.stop();
      const started = Date.now();
      await assert.rejects(sessions.load(c), (e) => {
        assert.ok(isSessionError(e), `expected a SessionError, got ${e}`);
        assert.match(e.code, /^backend_(unavailable|timeout)$/);
        assert.equal(e.status, 503);
        return true;
      });
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    });
  });
}
