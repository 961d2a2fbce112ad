// SessionLogicStore against a real redis-server with node-redis and
// ioredis: the express-session Store interface (callbacks and promises),
// expiry to the millisecond, a touch that moves the deadline without
// rewriting data or recreating a deleted session, typed errors; and a real
// express-session app running on it.

import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import expressSession from 'express-session';
import { promisify } from 'node:util';
import { SessionLogicStore } from '../lib/store.js';
import { isSessionError } from '../lib/node.js';
import { startRedis, clients, pair, serve } from '../test-support/redis.mjs';

const sessionAt = (expires, data = {}) => ({
  cookie: { originalMaxAge: 60000, expires: new Date(expires).toISOString(), secure: false, httpOnly: true, path: '/' },
  ...data,
});

for (const [name, connect] of Object.entries(clients)) {
  describe(`SessionLogicStore over ${name}`, () => {
    let redis;
    let conn;
    let store;
    const pexpiretime = async (key) => Number(await conn.send(['PEXPIRETIME', key]));

    before(async () => {
      redis = await startRedis();
      conn = await connect(redis.port);
      store = new SessionLogicStore({ client: conn.client });
    });
    after(async () => {
      await conn?.close();
      await redis?.close();
    });
    beforeEach(() => conn.send(['FLUSHALL']));

    test('set then get: the session comes back as saved and expires at cookie.expires to the millisecond', async () => {
      const expires = Date.now() + 60_123;
      const sess = sessionAt(expires, { user: { name: 'ann' }, cart: [1, 2], n: 0, empty: [] });
      await store.set('abc', sess);
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
      await promisify(store.destroy.bind(store))('cb');
      assert.equal(await promisify(store.get.bind(store))('cb'), null);
    });

    test('touch moves the deadline and the stored cookie, never the data', async () => {
      const first = Date.now() + 10_000;
      await store.set('t', sessionAt(first, { v: 'saved' }));
      const later = first + 25_001;
      await store.touch('t', sessionAt(later, { v: 'stale copy from an old request' }));
      assert.equal(await pexpiretime('sess:t'), later);
      const got = await store.get('t');
      assert.equal(got.v, 'saved');
      assert.equal(new Date(got.cookie.expires).getTime(), later);
    });

    test('touch never recreates a session destroyed meanwhile', async () => {
      await store.set('d', sessionAt(Date.now() + 10_000, { v: 1 }));
      await store.destroy('d');
      await store.touch('d', sessionAt(Date.now() + 20_000));
      assert.equal(Number(await conn.send(['EXISTS', 'sess:d'])), 0);
    });

    test('a session whose expiry has passed is gone: at set time, and at its deadline', async () => {
      await store.set('past', sessionAt(Date.now() - 1, { v: 1 }));
      assert.equal(Number(await conn.send(['EXISTS', 'sess:past'])), 0);
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
    });

    test('ids, length, all and clear see only this prefix', async () => {
      const expires = Date.now() + 10_000;
      for (const id of ['a', 'b', 'c']) await store.set(id, sessionAt(expires, { id_was: id }));
      await conn.send(['SET', 'other:thing', '1']);
      assert.deepEqual((await store.ids()).sort(), ['a', 'b', 'c']);
      assert.equal(await store.length(), 3);
      const all = await store.all();
      assert.deepEqual(all.map((s) => [s.id, s.id_was]).sort(), [['a', 'a'], ['b', 'b'], ['c', 'c']]);
      await store.clear();
      assert.equal(await store.length(), 0);
      assert.equal(Number(await conn.send(['EXISTS', 'other:thing'])), 1);
    });

    test('bad input and corrupt records are typed errors', async () => {
      await assert.rejects(store.get(''), (e) => isSessionError(e) && e.code === 'invalid_input');
      await assert.rejects(store.set('x', { no: 'cookie' }), (e) => e.code === 'invalid_input');
      await conn.send(['HSET', 'sess:bad', 'sess', '{not json', 'cookie', '{}']);
      await assert.rejects(store.get('bad'), (e) => e.code === 'decode' && /not valid JSON/.test(e.message));
      await conn.send(['SET', 'sess:str', 'a connect-redis string']);
      await assert.rejects(store.get('str'), (e) => e.code === 'backend_error' && /WRONGTYPE/.test(e.message));
      assert.throws(() => new SessionLogicStore({ client: conn.client, serializer: JSON }), /JSON only/);
      assert.throws(() => new SessionLogicStore({ client: conn.client, prefix: 'a*' }), /glob/);
      assert.throws(() => new SessionLogicStore({}), /node-redis client/);
    });

    test('express-session on this store: journey, exact expiry, rolling touch, and Redis down as a typed 503', async () => {
      const app = express();
      app.use(expressSession({ store, secret: 'test secret', resave: false, saveUninitialized: false, rolling: true, cookie: { maxAge: 60_000 } }));
      app.get('/n', (req, res) => {
        req.session.views = (req.session.views ?? 0) + 1;
        res.json({ views: req.session.views });
      });
      app.get('/read', (req, res) => res.json({ views: req.session.views ?? 0 }));
      app.use((err, req, res, _next) => res.status(err.status ?? 500).json({ code: err.code }));
      const http = await serve(app);
      try {
        const first = await fetch(`${http.base}/n`);
        const cookie = pair(first.headers.get('set-cookie'));
        assert.deepEqual(await first.json(), { views: 1 });
        const [sid] = await store.ids();
        const stored = await store.get(sid);
        assert.equal(await pexpiretime(`sess:${sid}`), new Date(stored.cookie.expires).getTime());
        const before = await pexpiretime(`sess:${sid}`);
        await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(await (await fetch(`${http.base}/read`, { headers: { cookie } })).json(), { views: 1 });
        const moved = await pexpiretime(`sess:${sid}`);
        assert.ok(moved > before, `touch moved the deadline: ${before} -> ${moved}`);
        assert.equal(new Date((await store.get(sid)).cookie.expires).getTime(), moved);
        assert.deepEqual(await (await fetch(`${http.base}/n`, { headers: { cookie } })).json(), { views: 2 });

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
  });
}

describe('SessionLogicStore scripts', () => {
  test('sent by SHA; the text only after SCRIPT FLUSH', async () => {
    const redis = await startRedis();
    const conn = await clients['node-redis'](redis.port);
    try {
      const sent = [];
      const store = new SessionLogicStore({
        executor: (round) => {
          sent.push(...round.map((argv) => new TextDecoder().decode(argv[0])));
          return conn.executor(round);
        },
      });
      const sess = sessionAt(Date.now() + 10_000, { v: 1 });
      await store.set('a', sess);
      await store.set('a', sess);
      await store.touch('a', sess);
      await store.touch('a', sess);
      assert.deepEqual(sent, ['EVALSHA', 'EVAL', 'EVALSHA', 'EVALSHA', 'EVAL', 'EVALSHA']);
      await conn.send(['SCRIPT', 'FLUSH']);
      sent.length = 0;
      await store.touch('a', sess);
      assert.deepEqual(sent, ['EVALSHA', 'EVAL']);
      assert.equal((await store.get('a')).v, 1);
    } finally {
      await conn.close();
      await redis.close();
    }
  });
});
