// SessionLogicStore against a real redis-server with node-redis and
// ioredis: the express-session Store interface (callbacks and promises),
// expiry to the millisecond, a touch that moves the deadline without
// rewriting data or recreating a deleted session, typed errors; a real
// express-session app running on it; what a request costs in Redis
// commands, measured side by side with connect-redis; and sessions carried
// across a switch from connect-redis (and from this store's older hash
// records).

import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import expressSession from 'express-session';
import { RedisStore } from 'connect-redis';
import { promisify } from 'node:util';
import { SessionLogicStore } from '../lib/store.js';
import { isSessionError } from '../lib/node.js';
import { startRedis, clients, pair, serve } from '../test-support/redis.mjs';

const sessionAt = (expires, data = {}) => ({
  cookie: { originalMaxAge: 60000, expires: new Date(expires).toISOString(), secure: false, httpOnly: true, path: '/' },
  ...data,
});

/** The hash an earlier version of this store wrote: `sess` (all but the cookie) and `cookie`. */
const legacyFields = (sess) => {
  const { cookie, ...rest } = sess;
  return ['sess', JSON.stringify(rest), 'cookie', JSON.stringify(cookie)];
};

/** Calls per command name (`get`, `set`, `evalsha`, ...) from INFO commandstats. */
async function commandStats(send) {
  const info = String(await send(['INFO', 'commandstats']));
  const stats = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) stats[m[1]] = Number(m[2]);
  return stats;
}

/**
 * The commands Redis executed while `fn` ran, per name. Commands a Lua
 * script runs are counted too, so scripts cannot hide any. The INFO of the
 * first snapshot counts itself only afterwards: it is left out.
 */
async function commandsDuring(send, fn) {
  const before = await commandStats(send);
  await fn();
  const after = await commandStats(send);
  const delta = {};
  for (const [name, calls] of Object.entries(after)) {
    const n = calls - (before[name] ?? 0);
    if (n > 0 && name !== 'info') delta[name] = n;
  }
  return delta;
}

/** `fn()` once it stops failing (a client reconnecting), for up to 3 s. */
async function whenBack(fn) {
  const deadline = Date.now() + 3000;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const total = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);

/** An express-session app: `/write` changes the session, `/read` only reads it, `/logout` destroys it. */
function sessionApp(store, options = {}) {
  const app = express();
  app.use(expressSession({ store, secret: 'test secret', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 }, ...options }));
  app.get('/write', (req, res) => {
    req.session.views = (req.session.views ?? 0) + 1;
    res.json({ views: req.session.views });
  });
  app.get('/read', (req, res) => res.json({ views: req.session.views ?? 0 }));
  app.get('/logout', (req, res, next) => req.session.destroy((err) => (err ? next(err) : res.json({ gone: true }))));
  app.use((err, req, res, _next) => res.status(err.status ?? 500).json({ code: err.code, message: err.message }));
  return app;
}

for (const [name, connect] of Object.entries(clients)) {
  describe(`SessionLogicStore over ${name}`, () => {
    let redis;
    let conn;
    let nodeRedis; // connect-redis 9 speaks node-redis only
    let store;
    const pexpiretime = async (key) => Number(await conn.send(['PEXPIRETIME', key]));
    const type = async (key) => String(await conn.send(['TYPE', key]));
    const exists = async (key) => Number(await conn.send(['EXISTS', key]));

    before(async () => {
      redis = await startRedis();
      conn = await connect(redis.port);
      nodeRedis = await clients['node-redis'](redis.port);
      store = new SessionLogicStore({ client: conn.client });
    });
    after(async () => {
      await conn?.close();
      await nodeRedis?.close();
      await redis?.close();
    });
    // After the test that stops Redis, the clients need a moment to reconnect.
    beforeEach(async () => {
      await whenBack(() => nodeRedis.send(['PING']));
      await whenBack(() => conn.send(['FLUSHALL']));
    });

    test('set then get: one JSON string, as saved, expiring at cookie.expires to the millisecond', async () => {
      const expires = Date.now() + 60_123;
      const sess = sessionAt(expires, { user: { name: 'ann' }, cart: [1, 2], n: 0, empty: [] });
      await store.set('abc', sess);
      assert.equal(await type('sess:abc'), 'string');
      assert.equal(String(await conn.send(['GET', 'sess:abc'])), JSON.stringify(sess));
      assert.equal(await pexpiretime('sess:abc'), expires);
      assert.deepEqual(await store.get('abc'), sess);
      assert.equal(await store.get('nope'), null);
    });

    test('callback forms work as express-session calls them', async () => {
      const expires = Date.now() + 10_000;
      await promisify(store.set.bind(store))('cb', sessionAt(expires, { v: 1 }));
      const got = await promisify(store.get.bind(store))('cb');
      assert.equal(got.v, 1);
      assert.equal(await promisify(store.length.bind(store))(), 1);
      await promisify(store.touch.bind(store))('cb', sessionAt(expires + 1));
      await promisify(store.destroy.bind(store))('cb');
      assert.equal(await promisify(store.get.bind(store))('cb'), null);
    });

    test("touch moves Redis's deadline to the millisecond and never the data", async () => {
      const first = Date.now() + 10_000;
      await store.set('t', sessionAt(first, { v: 'saved' }));
      const later = first + 25_001;
      await store.touch('t', sessionAt(later, { v: 'stale copy from an old request' }));
      assert.equal(await pexpiretime('sess:t'), later);
      const got = await store.get('t');
      assert.equal(got.v, 'saved');
      // The stored cookie is the last save's (documented); Redis enforces `later`.
      assert.equal(new Date(got.cookie.expires).getTime(), first);
    });

    test('touch never recreates a session destroyed meanwhile', async () => {
      await store.set('d', sessionAt(Date.now() + 10_000, { v: 1 }));
      await store.destroy('d');
      await store.touch('d', sessionAt(Date.now() + 20_000));
      assert.equal(await exists('sess:d'), 0);
    });

    test('a session whose expiry has passed is gone: at set time, over an older save, by touch, and at its deadline', async () => {
      await store.set('past', sessionAt(Date.now() - 1, { v: 1 }));
      assert.equal(await exists('sess:past'), 0);
      // Over a live record: the save deletes it rather than keeping the old one.
      await store.set('over', sessionAt(Date.now() + 10_000, { v: 1 }));
      await store.set('over', sessionAt(Date.now() - 1, { v: 2 }));
      assert.equal(await exists('sess:over'), 0);
      // Deadlines Redis refuses as PXAT (<= 0) are deleted too, not an error.
      await store.set('epoch', sessionAt(0, { v: 1 }));
      await store.set('zero-ttl', { cookie: { expires: null }, v: 1 }); // a day, by default
      const noTtl = new SessionLogicStore({ client: conn.client, ttl: 0 });
      await noTtl.set('zero-ttl', { cookie: { expires: null }, v: 1 });
      assert.equal(await exists('sess:zero-ttl'), 0);
      assert.equal(await exists('sess:epoch'), 0);
      await store.set('touched', sessionAt(Date.now() + 10_000, { v: 1 }));
      await store.touch('touched', sessionAt(Date.now() - 1));
      assert.equal(await exists('sess:touched'), 0);
      await store.set('soon', sessionAt(Date.now() + 60, { v: 1 }));
      assert.equal((await store.get('soon')).v, 1);
      await new Promise((r) => setTimeout(r, 90));
      assert.equal(await store.get('soon'), null);
    });

    test('without cookie.expires the ttl option applies (seconds or a function)', async () => {
      const before = Date.now();
      await store.set('ttl', { cookie: { originalMaxAge: null, expires: null }, v: 1 });
      const at = await pexpiretime('sess:ttl');
      assert.ok(at >= before + 86_400_000 && at <= Date.now() + 86_400_000, String(at - before));
      const short = new SessionLogicStore({ client: conn.client, prefix: 'short:', ttl: (sess) => sess.minutes * 60 });
      await short.set('x', { cookie: { expires: null }, minutes: 2 });
      const ms = (await pexpiretime('short:x')) - Date.now();
      assert.ok(ms > 119_000 && ms <= 120_000, String(ms));
      await assert.rejects(short.set('y', { cookie: { expires: null } }), (e) => e.code === 'invalid_input' && /ttl/.test(e.message));
    });

    test('ids, length, all and clear see only this prefix, legacy hashes included', async () => {
      const expires = Date.now() + 10_000;
      for (const id of ['a', 'b', 'c']) await store.set(id, sessionAt(expires, { id_was: id }));
      await conn.send(['HSET', 'sess:old', ...legacyFields(sessionAt(expires, { id_was: 'old' }))]);
      await conn.send(['SET', 'other:thing', '1']);
      assert.deepEqual((await store.ids()).sort(), ['a', 'b', 'c', 'old']);
      assert.equal(await store.length(), 4);
      const all = await store.all();
      assert.deepEqual(all.map((s) => [s.id, s.id_was]).sort(), [['a', 'a'], ['b', 'b'], ['c', 'c'], ['old', 'old']]);
      assert.equal(new Date(all.find((s) => s.id === 'old').cookie.expires).getTime(), expires);
      const small = new SessionLogicStore({ client: conn.client, scanCount: 3 });
      assert.equal((await small.all()).length, 4);
      await small.clear();
      assert.equal(await store.length(), 0);
      assert.equal(await exists('other:thing'), 1);
    });

    test('bad input and corrupt records are typed errors', async () => {
      await assert.rejects(store.get(''), (e) => isSessionError(e) && e.code === 'invalid_input');
      await assert.rejects(store.set('x', { no: 'cookie' }), (e) => e.code === 'invalid_input');
      const cyclic = sessionAt(Date.now() + 10_000);
      cyclic.self = cyclic;
      await assert.rejects(store.set('x', cyclic), (e) => e.code === 'invalid_input' && /JSON/.test(e.message));
      await conn.send(['SET', 'sess:str', 'not json']);
      await assert.rejects(store.get('str'), (e) => e.code === 'decode' && /not valid JSON/.test(e.message));
      await conn.send(['SET', 'sess:nocookie', '{"views":1}']);
      await assert.rejects(store.get('nocookie'), (e) => e.code === 'decode' && /cookie/.test(e.message));
      await conn.send(['HSET', 'sess:bad', 'sess', '{not json', 'cookie', '{}']);
      await assert.rejects(store.get('bad'), (e) => e.code === 'decode' && /not valid JSON/.test(e.message));
      await conn.send(['HSET', 'sess:half', 'sess', '{}']);
      await assert.rejects(store.get('half'), (e) => e.code === 'decode' && /field/.test(e.message));
      await conn.send(['RPUSH', 'sess:list', 'x']);
      await assert.rejects(store.get('list'), (e) => e.code === 'backend_error' && e.status === 503 && /WRONGTYPE/.test(e.message));
      assert.throws(() => new SessionLogicStore({ client: conn.client, serializer: JSON }), /JSON only/);
      assert.throws(() => new SessionLogicStore({ client: conn.client, disableTTL: true }), /disableTTL/);
      assert.throws(() => new SessionLogicStore({ client: conn.client, prefix: 'a*' }), /glob/);
      assert.throws(() => new SessionLogicStore({}), /node-redis client/);
    });

    test('a user without the needed command permissions gets backend_noperm', async () => {
      await conn.send(['ACL', 'SETUSER', 'readonly', 'on', '>pw', '~*', '+get', '+hgetall']);
      const limited = await connect(redis.port);
      try {
        await limited.send(['AUTH', 'readonly', 'pw']);
        const ro = new SessionLogicStore({ client: limited.client });
        await store.set('p', sessionAt(Date.now() + 10_000, { v: 1 }));
        assert.equal((await ro.get('p')).v, 1);
        for (const op of [() => ro.set('p', sessionAt(Date.now() + 10_000)), () => ro.touch('p', sessionAt(Date.now() + 10_000))]) {
          await assert.rejects(op(), (e) => e.code === 'backend_noperm' && e.status === 503);
        }
      } finally {
        await limited.close();
        await conn.send(['ACL', 'DELUSER', 'readonly']);
      }
    });

    test('express-session on this store: journey, exact expiry, rolling touch, and Redis down as a typed 503', async () => {
      // Record the deadline express-session hands to each save and touch.
      const handed = [];
      class Recording extends SessionLogicStore {
        set(sid, sess, cb) {
          handed.push(['set', new Date(sess.cookie.expires).getTime()]);
          return super.set(sid, sess, cb);
        }
        touch(sid, sess, cb) {
          handed.push(['touch', new Date(sess.cookie.expires).getTime()]);
          return super.touch(sid, sess, cb);
        }
      }
      const recording = new Recording({ client: conn.client });
      const http = await serve(sessionApp(recording, { rolling: true }));
      try {
        const first = await fetch(`${http.base}/write`);
        const cookie = pair(first.headers.get('set-cookie'));
        assert.deepEqual(await first.json(), { views: 1 });
        const [sid] = await store.ids();
        const saved = new Date((await store.get(sid)).cookie.expires).getTime();
        assert.deepEqual(handed, [['set', saved]]);
        assert.equal(await pexpiretime(`sess:${sid}`), saved);

        await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(await (await fetch(`${http.base}/read`, { headers: { cookie } })).json(), { views: 1 });
        const [kind, touchedTo] = handed.at(-1);
        assert.equal(kind, 'touch');
        assert.ok(touchedTo > saved, `touch moved the deadline: ${saved} -> ${touchedTo}`);
        assert.equal(await pexpiretime(`sess:${sid}`), touchedTo);
        assert.equal(new Date((await store.get(sid)).cookie.expires).getTime(), saved, 'touch rewrote no data');

        assert.deepEqual(await (await fetch(`${http.base}/write`, { headers: { cookie } })).json(), { views: 2 });
        const resaved = new Date((await store.get(sid)).cookie.expires).getTime();
        assert.deepEqual(handed.at(-1), ['set', resaved]);
        assert.equal(await pexpiretime(`sess:${sid}`), resaved);

        await redis.stop();
        try {
          const started = performance.now();
          const r = await fetch(`${http.base}/read`, { headers: { cookie } });
          assert.equal(r.status, 503);
          assert.match((await r.json()).code, /^backend_(unavailable|timeout)$/);
          assert.ok(performance.now() - started < 1500);
        } finally {
          await redis.start();
        }
      } finally {
        await http.close();
      }
    });

    test('commands per request: no more than connect-redis, all plain (no Lua)', async (t) => {
      /** Commands Redis ran for: a new session, a read-only request, a write, a logout. */
      const measure = async (sessionStore) => {
        const http = await serve(sessionApp(sessionStore));
        try {
          const during = (fn) => commandsDuring(conn.send, fn);
          let cookie;
          const created = await during(async () => {
            const r = await fetch(`${http.base}/write`);
            cookie = pair(r.headers.get('set-cookie'));
            assert.deepEqual(await r.json(), { views: 1 });
          });
          const get = async (path) => (await fetch(`${http.base}${path}`, { headers: { cookie } })).json();
          const read = await during(async () => assert.deepEqual(await get('/read'), { views: 1 }));
          const write = await during(async () => assert.deepEqual(await get('/write'), { views: 2 }));
          const logout = await during(async () => assert.deepEqual(await get('/logout'), { gone: true }));
          return { created, read, write, logout };
        } finally {
          await http.close();
        }
      };
      const theirs = await measure(new RedisStore({ client: nodeRedis.client, prefix: 'cr:' }));
      const ours = await measure(new SessionLogicStore({ client: conn.client, prefix: 'sls:' }));
      t.diagnostic(`connect-redis: ${JSON.stringify(theirs)}`);
      t.diagnostic(`SessionLogicStore over ${name}: ${JSON.stringify(ours)}`);

      assert.deepEqual(ours, {
        created: { set: 1 },
        read: { get: 1, pexpireat: 1 },
        write: { get: 1, set: 1 },
        logout: { get: 1, del: 1 },
      });
      assert.ok(total(ours.read) <= 2);
      for (const kind of Object.keys(ours)) {
        assert.ok(total(ours[kind]) <= total(theirs[kind]), `${kind}: ours ${total(ours[kind])}, connect-redis ${total(theirs[kind])}`);
      }
    });

    test('a switch from connect-redis logs nobody out, and a switch back neither', async () => {
      // Both on their default prefix `sess:` and the same cookie secret.
      const theirs = await serve(sessionApp(new RedisStore({ client: nodeRedis.client })));
      const ours = await serve(sessionApp(store));
      try {
        const first = await fetch(`${theirs.base}/write`);
        const cookie = pair(first.headers.get('set-cookie'));
        assert.deepEqual(await first.json(), { views: 1 });
        const [sid] = await store.ids();
        const written = String(await conn.send(['GET', `sess:${sid}`]));

        const at = (app, path) => fetch(`${app.base}${path}`, { headers: { cookie } }).then((r) => r.json());
        assert.deepEqual(await store.get(sid), JSON.parse(written), 'our get reads what connect-redis wrote');
        assert.deepEqual(await at(ours, '/read'), { views: 1 });
        assert.deepEqual(await at(ours, '/write'), { views: 2 });
        const stored = await store.get(sid);
        assert.equal(await pexpiretime(`sess:${sid}`), new Date(stored.cookie.expires).getTime());
        assert.deepEqual(await at(theirs, '/read'), { views: 2 }, 'connect-redis reads what we wrote');
        assert.deepEqual(await at(theirs, '/write'), { views: 3 });
        assert.deepEqual(await at(ours, '/read'), { views: 3 });
      } finally {
        await theirs.close();
        await ours.close();
      }
    });

    test('hash records of earlier versions are read, touched in place, and replaced by the next save', async () => {
      const expires = Date.now() + 30_000;
      const sess = sessionAt(expires, { views: 4, user: 'ann' });
      await conn.send(['HSET', 'sess:old', ...legacyFields(sess)]);
      await conn.send(['PEXPIREAT', 'sess:old', String(expires)]);
      assert.deepEqual(await store.get('old'), sess);

      const later = expires + 10_007;
      await store.touch('old', sessionAt(later, { views: 'stale' }));
      assert.equal(await type('sess:old'), 'hash');
      assert.equal(await pexpiretime('sess:old'), later);
      assert.equal((await store.get('old')).views, 4);

      const next = sessionAt(later + 1, { views: 5, user: 'ann' });
      await store.set('old', next);
      assert.equal(await type('sess:old'), 'string');
      assert.equal(await pexpiretime('sess:old'), later + 1);
      assert.deepEqual(await store.get('old'), next);

      // Through express-session: a session stored in the old layout keeps going.
      const http = await serve(sessionApp(store));
      try {
        const first = await fetch(`${http.base}/write`);
        const cookie = pair(first.headers.get('set-cookie'));
        const [sid] = (await store.ids()).filter((id) => id !== 'old');
        const key = `sess:${sid}`;
        const current = await store.get(sid);
        await conn.send(['DEL', key]);
        await conn.send(['HSET', key, ...legacyFields(current)]);
        await conn.send(['PEXPIREAT', key, String(new Date(current.cookie.expires).getTime())]);
        const get = async (path) => (await fetch(`${http.base}${path}`, { headers: { cookie } })).json();
        const read = await commandsDuring(conn.send, async () => assert.deepEqual(await get('/read'), { views: 1 }));
        // The extra HGETALL is the price of a legacy record, until its next save.
        assert.deepEqual(read, { get: 1, hgetall: 1, pexpireat: 1 });
        assert.equal(await type(key), 'hash');
        assert.deepEqual(await get('/write'), { views: 2 });
        assert.equal(await type(key), 'string');
        const upgraded = await commandsDuring(conn.send, async () => assert.deepEqual(await get('/read'), { views: 2 }));
        assert.deepEqual(upgraded, { get: 1, pexpireat: 1 });
      } finally {
        await http.close();
      }
    });
  });
}

describe('SessionLogicStore commands', () => {
  test('one plain command per operation, sent as-is', async () => {
    const sent = [];
    const store = new SessionLogicStore({
      executor: async (round) => {
        sent.push(...round.map((argv) => argv.map((a) => new TextDecoder().decode(a))));
        return round.map(([name]) => (new TextDecoder().decode(name) === 'GET' ? null : 1));
      },
    });
    const expires = Date.now() + 10_000;
    const sess = sessionAt(expires, { v: 1 });
    await store.set('a', sess);
    await store.get('a');
    await store.touch('a', sess);
    await store.destroy('a');
    await store.set('a', sessionAt(Date.now() - 1));
    assert.deepEqual(sent, [
      ['SET', 'sess:a', JSON.stringify(sess), 'PXAT', String(expires)],
      ['GET', 'sess:a'],
      ['PEXPIREAT', 'sess:a', String(expires)],
      ['DEL', 'sess:a'],
      ['DEL', 'sess:a'],
    ]);
    sent.length = 0;
    await new SessionLogicStore({ executor: async () => [], disableTouch: true }).touch('a', sess);
    assert.deepEqual(sent, []);
  });
});
