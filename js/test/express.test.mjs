// The Express middleware against a real redis-server (started here) with
// node-redis and ioredis: every req.session method and option, round trips
// per request, headers, parallel writers, bad input, and an outage that
// reaches Express's error handler as a typed 503 and heals after a restart.

import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import { session } from '../lib/express.js';
import { isSessionError } from '../lib/node.js';
import { startRedis, clients, pair, serve } from '../test-support/redis.mjs';

/** The tutorial-sized app every case below talks to. */
function app(options, { onError } = {}) {
  const a = express();
  a.use(express.json({ limit: '2mb' }));
  a.use(session(options));
  a.get('/data', (req, res) => res.json({ data: { ...req.session }, hasId: typeof req.session.id === 'string', sessionID: req.sessionID === req.session.id }));
  a.post('/set', (req, res) => {
    Object.assign(req.session, req.body);
    res.json({ ok: true });
  });
  a.post('/push', (req, res) => {
    req.session.list ??= [];
    req.session.list.push(req.body.item);
    res.json({ list: req.session.list });
  });
  a.post('/delete/:key', (req, res) => {
    delete req.session[req.params.key];
    res.json({ ok: true });
  });
  a.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.bindUser(req.body.user);
      req.session.user = { name: req.body.user };
      req.session.save((err2) => (err2 ? next(err2) : res.redirect('/data')));
    });
  });
  a.post('/login-keep', (req, res, next) => {
    req.session.regenerate({ keepData: true }, (err) => {
      if (err) return next(err);
      req.session.bindUser(req.body.user);
      res.json({ user: req.session.boundUser() });
    });
  });
  a.post('/login-promise', async (req, res) => {
    await req.session.regenerate();
    req.session.bindUser(req.body.user);
    res.json({ user: req.session.boundUser(), authAt: typeof req.session.authAt() });
  });
  a.post('/logout', (req, res, next) => req.session.destroy((err) => (err ? next(err) : res.json({ session: req.session === undefined ? 'gone' : 'still there' }))));
  a.post('/reload', async (req, res) => {
    req.session.scratch = 'unsaved';
    await req.session.reload();
    res.json({ data: { ...req.session } });
  });
  a.post('/touch', (req, res) => {
    req.session.touch();
    res.json({ expiresAt: req.session.expiresAt() });
  });
  a.post('/unset', (req, res) => {
    req.session.lost = true;
    req.session = null;
    res.json({ ok: true });
  });
  a.get('/cookie', (req, res) => {
    let refused;
    try {
      req.session.cookie.maxAge = 1000;
    } catch (e) {
      refused = { code: e.code, message: e.message };
    }
    res.json({ cookie: req.session.cookie, maxAge: req.session.cookie.maxAge, refused });
  });
  a.get('/stream', (req, res) => {
    req.session.streamed = true;
    res.setHeader('content-type', 'text/plain');
    res.write('a');
    res.write('b');
    res.end('c');
  });
  a.post('/everywhere', async (req, res) => res.json({ count: await req.session.logoutEverywhere({ keepCurrent: Boolean(req.body.keep) }) }));
  a.get('/devices', async (req, res) => res.json({ devices: await req.session.listDevices() }));
  a.post('/devices/:handle/sign-out', (req, res, next) => req.session.signOutDevice(req.params.handle, (err, existed) => (err ? next(err) : res.json({ existed }))));
  a.use((err, req, res, _next) => {
    onError?.(err);
    res.status(err.status ?? 500).json({ code: err.code, message: err.message, typed: isSessionError(err) });
  });
  return a;
}

async function call(base, path, { cookie, body, method } = {}) {
  const headers = {};
  if (cookie) headers.cookie = cookie;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(base + path, { method: method ?? (body === undefined ? 'GET' : 'POST'), headers, body: body === undefined ? undefined : JSON.stringify(body), redirect: 'manual' });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, headers: r.headers, body: json, setCookie: r.headers.get('set-cookie') };
}

for (const [name, connect] of Object.entries(clients)) {
  describe(`Express middleware over ${name}`, () => {
    let redis;
    let conn;
    let http;
    let rounds = [];
    const errors = [];
    const dbsize = async () => Number(await conn.send(['DBSIZE']));

    before(async () => {
      redis = await startRedis();
      conn = await connect(redis.port);
      const executor = (round) => {
        rounds.push(round.length);
        return conn.executor(round);
      };
      http = await serve(app({ executor, name: 'sid', secret: 'ignored', cookie: { secure: false, maxAge: 3_600_000 } }, { onError: (e) => errors.push(e) }));
      // Load every script once, so round counts below are the steady state
      // (the first use of a script costs one NOSCRIPT round).
      const cookie = pair((await call(http.base, '/set', { body: { warm: 1 } })).setCookie);
      await call(http.base, '/push', { cookie, body: { item: 1 } });
      await call(http.base, '/touch', { cookie, body: {} });
      await call(http.base, '/login', { cookie, body: { user: 'warm' } });
    });
    after(async () => {
      await http?.close();
      await conn?.close();
      await redis?.close();
    });
    beforeEach(async () => {
      await conn.send(['FLUSHALL']);
      rounds = [];
      errors.length = 0;
    });

    test('a visitor who stores nothing costs no Redis round and gets no cookie', async () => {
      const r = await call(http.base, '/data');
      assert.equal(r.status, 200);
      assert.deepEqual(r.body.data, {});
      assert.equal(r.body.hasId, false);
      assert.equal(r.setCookie, null);
      assert.equal(r.headers.get('vary'), 'Cookie');
      assert.deepEqual(rounds, []);
      assert.equal(await dbsize(), 0);
    });

    test('first write: one round, a cookie, Cache-Control: no-store; then reads cost one round', async () => {
      const w = await call(http.base, '/set', { body: { theme: 'dark' } });
      assert.equal(rounds.length, 1);
      assert.match(w.setCookie, /^sid=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=\d+; Expires=.+; HttpOnly; SameSite=Lax$/);
      assert.equal(w.headers.get('cache-control'), 'no-store');
      assert.equal(await dbsize(), 1);
      rounds = [];
      const r = await call(http.base, '/data', { cookie: pair(w.setCookie) });
      assert.deepEqual(r.body, { data: { theme: 'dark' }, hasId: true, sessionID: true });
      assert.equal(r.setCookie, null);
      assert.equal(r.headers.get('cache-control'), null);
      assert.deepEqual(rounds, [1], 'a read is one round of one command');
    });

    test('a change costs two rounds and writes only what changed, nested changes included', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { a: 1, b: 2 } })).setCookie);
      rounds = [];
      await call(http.base, '/push', { cookie, body: { item: 'x' } });
      await call(http.base, '/push', { cookie, body: { item: 'y' } });
      assert.equal(rounds.length, 4);
      await call(http.base, '/delete/a', { cookie, body: {} });
      const r = await call(http.base, '/data', { cookie });
      assert.deepEqual(r.body.data, { b: 2, list: ['x', 'y'] });
    });

    test('parallel requests writing different keys lose nothing', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { seed: 0 } })).setCookie);
      await Promise.all(Array.from({ length: 24 }, (_, i) => call(http.base, '/set', { cookie, body: { [`k${i}`]: i } })));
      const r = await call(http.base, '/data', { cookie });
      const expected = { seed: 0 };
      for (let i = 0; i < 24; i++) expected[`k${i}`] = i;
      assert.deepEqual(r.body.data, expected);
    });

    test('regenerate (callbacks): new ID, a fresh session as in express-session; the old cookie yields nothing', async () => {
      const old = pair((await call(http.base, '/set', { body: { cart: ['apple'] } })).setCookie);
      rounds = [];
      const r = await call(http.base, '/login', { cookie: old, body: { user: 'alice' } });
      assert.equal(r.status, 302);
      assert.equal(rounds.length, 2, 'load + regenerate');
      const fresh = pair(r.setCookie);
      assert.notEqual(fresh, old);
      assert.equal(r.headers.get('cache-control'), 'no-store');
      const now = await call(http.base, '/data', { cookie: fresh });
      assert.deepEqual(now.body.data, { user: { name: 'alice' } });
      const stale = await call(http.base, '/data', { cookie: old });
      assert.deepEqual(stale.body.data, {});
      assert.equal(stale.setCookie, null, 'a rotated ID must not overwrite the new cookie');
    });

    test('regenerate({ keepData: true }): new ID, same data (a cart survives sign-in)', async () => {
      const old = pair((await call(http.base, '/set', { body: { cart: ['apple'] } })).setCookie);
      rounds = [];
      const r = await call(http.base, '/login-keep', { cookie: old, body: { user: 'carol' } });
      assert.deepEqual(r.body, { user: 'carol' });
      assert.equal(rounds.length, 2, 'load + regenerate');
      const fresh = pair(r.setCookie);
      assert.deepEqual((await call(http.base, '/data', { cookie: fresh })).body.data, { cart: ['apple'] });
      assert.deepEqual((await call(http.base, '/data', { cookie: old })).body.data, {});
    });

    test('regenerate (promises) and the user additions: devices, sign out one, logout everywhere', async () => {
      const login = async () => {
        const r = await call(http.base, '/login-promise', { body: { user: 'bob' } });
        assert.deepEqual(r.body, { user: 'bob', authAt: 'number' });
        return pair(r.setCookie);
      };
      const [a, b, c] = [await login(), await login(), await login()];
      const list = (await call(http.base, '/devices', { cookie: a })).body.devices;
      assert.equal(list.length, 3);
      assert.equal(list.filter((d) => d.current).length, 1);
      const other = list.find((d) => !d.current);
      assert.deepEqual((await call(http.base, `/devices/${other.handle}/sign-out`, { cookie: a, body: {} })).body, { existed: true });
      assert.equal((await call(http.base, '/devices', { cookie: a })).body.devices.length, 2);
      rounds = [];
      const out = await call(http.base, '/everywhere', { cookie: a, body: { keep: true } });
      assert.equal(out.body.count, 1);
      assert.equal((await call(http.base, '/devices', { cookie: a })).body.devices.length, 1);
      const all = await call(http.base, '/everywhere', { cookie: a, body: {} });
      assert.equal(all.body.count, 1);
      assert.match(all.setCookie, /^sid=; .*Max-Age=0/);
      for (const cookie of [a, b, c]) assert.deepEqual((await call(http.base, '/data', { cookie })).body.data, {});
      // Only the user's index is left (its entries lapse at their deadlines).
      const keys = (await conn.send(['KEYS', '*'])).map(String);
      assert.deepEqual(keys, ['sess:user:bob']);
      const anon = await call(http.base, '/devices');
      assert.equal(anon.status, 400);
      assert.equal(anon.body.code, 'usage');
    });

    test('destroy: gone from Redis at once, removal cookie, req.session undefined', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { a: 1 } })).setCookie);
      const r = await call(http.base, '/logout', { cookie, body: {} });
      assert.deepEqual(r.body, { session: 'gone' });
      assert.match(r.setCookie, /^sid=; .*Max-Age=0/);
      assert.equal(r.headers.get('cache-control'), 'no-store');
      assert.equal(await dbsize(), 0);
    });

    test('reload drops unsaved changes and reads what another request saved', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { v: 1 } })).setCookie);
      const r = await call(http.base, '/reload', { cookie, body: {} });
      assert.deepEqual(r.body.data, { v: 1 });
      assert.deepEqual((await call(http.base, '/data', { cookie })).body.data, { v: 1 });
    });

    test('touch slides the idle deadline without changing data', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { v: 1 } })).setCookie);
      const key = (await conn.send(['KEYS', '*']))[0];
      const before = Number(await conn.send(['PEXPIRETIME', key]));
      await new Promise((r) => setTimeout(r, 30));
      rounds = [];
      const r = await call(http.base, '/touch', { cookie, body: {} });
      assert.equal(rounds.length, 2, 'load + touch');
      const after = Number(await conn.send(['PEXPIRETIME', key]));
      assert.ok(after > before, `deadline moved: ${before} -> ${after}`);
      assert.ok(Math.abs(after - r.body.expiresAt) <= 1000, `${after} vs ${r.body.expiresAt}`);
    });

    test('a streamed response still carries the cookie of the session it created', async () => {
      const r = await call(http.base, '/stream');
      assert.equal(r.body, 'abc');
      const cookie = pair(r.setCookie);
      assert.deepEqual((await call(http.base, '/data', { cookie })).body.data, { streamed: true });
    });

    test('req.session.cookie is read-only and reports the attributes sent', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { v: 1 } })).setCookie);
      const r = await call(http.base, '/cookie', { cookie });
      assert.equal(r.body.cookie.path, '/');
      assert.equal(r.body.cookie.httpOnly, true);
      assert.equal(r.body.cookie.secure, false);
      assert.equal(r.body.cookie.sameSite, 'lax');
      assert.ok(r.body.maxAge > 0 && r.body.maxAge <= 86_400_000, String(r.body.maxAge));
      assert.equal(r.body.refused.code, 'usage');
      assert.match(r.body.refused.message, /cookie\.maxAge cannot change per request/);
    });

    test('malformed and forged cookies: a fresh session, no Redis round, nothing written', async () => {
      for (const cookie of ['sid=not-an-id', 'sid=' + 'A'.repeat(43), `sid=${'x'.repeat(10000)}`, 'sid=%00%ff', 'sid']) {
        rounds = [];
        const r = await call(http.base, '/data', { cookie });
        assert.equal(r.status, 200, cookie.slice(0, 20));
        assert.deepEqual(r.body.data, {});
        assert.equal(r.setCookie, null);
      }
      assert.equal(await dbsize(), 0);
    });

    test('oversized data: a typed 413 through the error handler, nothing written', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { small: 1 } })).setCookie);
      const r = await call(http.base, '/set', { cookie, body: { big: 'x'.repeat(300_000) } });
      assert.equal(r.status, 413);
      assert.equal(r.body.code, 'too_large');
      assert.equal(r.body.typed, true);
      assert.equal(r.headers.get('vary'), 'Cookie');
      assert.deepEqual((await call(http.base, '/data', { cookie })).body.data, { small: 1 });
      const fresh = await call(http.base, '/set', { body: { big: 'x'.repeat(300_000) } });
      assert.equal(fresh.status, 413);
      assert.equal(fresh.setCookie, null);
      assert.equal(await dbsize(), 1);
    });

    test('a reserved key is a typed 400, not a crash', async () => {
      const r = await call(http.base, '/set', { body: { $user: 'mallory' } });
      assert.equal(r.status, 400);
      assert.equal(r.body.code, 'invalid_input');
      assert.equal(await dbsize(), 0);
    });

    test('Redis down: the error handler gets a typed 503 quickly; service resumes after a restart', async () => {
      const cookie = pair((await call(http.base, '/set', { body: { v: 1 } })).setCookie);
      await redis.stop();
      try {
        for (const [path, opts] of [['/data', { cookie }], ['/set', { body: { v: 2 } }]]) {
          const started = performance.now();
          const r = await call(http.base, path, opts);
          const ms = performance.now() - started;
          assert.equal(r.status, 503, JSON.stringify(r.body));
          assert.equal(r.body.typed, true);
          assert.match(r.body.code, /^backend_(unavailable|timeout)$/);
          assert.equal(r.setCookie, null);
          assert.ok(ms < 1500, `answered in ${ms.toFixed(0)} ms`);
        }
        assert.ok(errors.length >= 2 && errors.every(isSessionError));
      } finally {
        await redis.start();
      }
      const deadline = Date.now() + 5000;
      let r;
      do {
        await new Promise((res) => setTimeout(res, 50));
        r = await call(http.base, '/set', { body: { back: true } });
      } while (r.status !== 200 && Date.now() < deadline);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual((await call(http.base, '/data', { cookie: pair(r.setCookie) })).body.data, { back: true });
    });
  });
}

describe('Express middleware options', () => {
  test('express-session options whose meaning we cannot keep are refused with the reason', () => {
    const cases = [
      [{ genid: () => 'x' }, /genid.*crypto\.getRandomValues/],
      [{ store: {} }, /store.*SessionLogicStore/],
      [{ resave: true }, /resave: true.*only the keys/],
      [{ saveUninitialized: true }, /saveUninitialized: true.*no empty sessions/],
      [{ unset: 'drop' }, /unset/],
      [{ cookie: { expires: new Date() } }, /cookie\.expires.*maxAge/],
      [{ cookie: { secure: 'auto' } }, /secure 'auto'/],
      [{ cookie: { sameSite: false } }, /sameSite/],
      [{ cookie: { maxAge: -5 } }, /maxAge must be a positive/],
      [{ cookie: { partitioned: true } }, /partitioned/],
    ];
    for (const [options, message] of cases) {
      assert.throws(() => session({ executor: async () => [], ...options }), (e) => e instanceof TypeError && message.test(e.message), JSON.stringify(options));
    }
    assert.throws(() => session({}), /pass a node-redis client/);
    assert.throws(() => session({ executor: async () => [], config: { idle_timeout_ms: 0 } }), (e) => e.code === 'config');
  });

  test('name, path, domain, sameSite, httpOnly and maxAge shape the cookie; no maxAge means a browser-session cookie', async () => {
    const { memoryExecutor } = await import('../lib/node.js');
    const shaped = await serve(app({ executor: memoryExecutor(), name: '__Host-app', saveUninitialized: false, resave: false, rolling: true, proxy: true, cookie: { path: '/', sameSite: 'strict', httpOnly: false, secure: true, maxAge: 600_000 } }));
    const bare = await serve(app({ executor: memoryExecutor(), cookie: { secure: false } }));
    try {
      const a = await call(shaped.base, '/set', { body: { v: 1 } });
      assert.match(a.setCookie, /^__Host-app=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=\d+; Expires=[^;]+; Secure; SameSite=Strict$/);
      const b = await call(bare.base, '/set', { body: { v: 1 } });
      assert.match(b.setCookie, /^sid=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax$/);
    } finally {
      await shaped.close();
      await bare.close();
    }
  });

  test("unset: 'destroy' deletes a session the handler dropped; 'keep' keeps it unchanged", async () => {
    const { memoryExecutor } = await import('../lib/node.js');
    for (const unset of ['destroy', 'keep']) {
      const executor = memoryExecutor();
      const srv = await serve(app({ executor, unset, cookie: { secure: false } }));
      try {
        const cookie = pair((await call(srv.base, '/set', { body: { v: 1 } })).setCookie);
        const r = await call(srv.base, '/unset', { cookie, body: {} });
        assert.equal(r.status, 200);
        const data = (await call(srv.base, '/data', { cookie })).body.data;
        assert.deepEqual(data, unset === 'destroy' ? {} : { v: 1 }, unset);
        if (unset === 'destroy') assert.match(r.setCookie, /Max-Age=0/);
      } finally {
        await srv.close();
      }
    }
  });
});

test('responses already wrapped by an earlier middleware, and plain Node responses, are held too', async () => {
  const { memoryExecutor } = await import('../lib/node.js');
  const { createServer } = await import('node:http');
  const mw = session({ executor: memoryExecutor(), cookie: { secure: false } });
  // An earlier middleware that wraps res.end as its own property (as
  // compression-style middleware do): our hook must wrap that wrapper.
  const wrapped = express();
  wrapped.use((req, res, next) => {
    const end = res.end;
    res.end = function wrappedEnd(...args) {
      res.setHeader('X-Wrapped', 'yes');
      return end.apply(this, args);
    };
    next();
  });
  wrapped.use(mw);
  wrapped.get('/set', (req, res) => {
    req.session.n = 1;
    res.end('ok');
  });
  wrapped.get('/get', (req, res) => res.json({ n: req.session.n ?? null, id: req.sessionID === req.session.id }));
  // No Express at all: a plain Node server calling the middleware.
  const plain = {
    listen: (port, host, cb) =>
      createServer((req, res) =>
        mw(req, res, () => {
          req.session.n = 2;
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(String(typeof req.sessionID));
        }),
      ).listen(port, host, cb),
  };
  for (const [name, target, expected] of [['wrapped', wrapped, 1], ['plain', plain, 2]]) {
    const http = await serve(target);
    try {
      const r = await fetch(`${http.base}/set`);
      const set = r.headers.get('set-cookie');
      assert.ok(set?.startsWith('sid='), `${name}: the save finished before the headers went out`);
      if (name === 'wrapped') {
        assert.equal(r.headers.get('x-wrapped'), 'yes');
        const g = await (await fetch(`${http.base}/get`, { headers: { cookie: pair(set) } })).json();
        assert.deepEqual(g, { n: expected, id: true });
      } else {
        assert.equal(await r.text(), 'undefined', 'sessionID before the first save');
      }
    } finally {
      await http.close();
    }
  }
});
