// The web-standard helper (plain fetch handler and Hono) and both example
// apps, against a real redis-server through node-redis: cookies, headers,
// regeneration, sign-out, immutable responses, and Redis down as a JSON 503.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { withSession } from '../lib/node.js';
import { createHonoApp, createFetchHandler } from '../examples/fetch-hono.mjs';
import { createApp } from '../examples/express-app.mjs';
import { withNodeRedis, pair, serve } from '../test-support/redis.mjs';

const config = { cookie: { secure: false } };

describe('fetch and Hono helpers over node-redis', () => {
  const ctx = withNodeRedis();

  test('Hono: counter, sign-in regenerates, the old cookie gets no data and no cookie, sign-out removes it', async () => {
    const app = createHonoApp({ client: ctx.conn.client, config });
    const get = (cookie) => app.request('/', { headers: cookie ? { cookie } : {} });
    const first = await get();
    assert.deepEqual(await first.json(), { visits: 1, user: null });
    assert.equal(first.headers.get('cache-control'), 'no-store');
    assert.equal(first.headers.get('vary'), 'Cookie');
    const cookie = pair(first.headers.get('set-cookie'));
    const second = await get(cookie);
    assert.deepEqual(await second.json(), { visits: 2, user: null });
    assert.equal(second.headers.get('set-cookie'), null);

    const signIn = await app.request('/sign-in/ann', { method: 'POST', headers: { cookie } });
    const fresh = pair(signIn.headers.get('set-cookie'));
    assert.notEqual(fresh, cookie);
    assert.deepEqual(await (await get(fresh)).json(), { visits: 3, user: 'ann' });
    const stale = await get(cookie);
    assert.deepEqual(await stale.json(), { visits: 1, user: null });
    assert.equal(stale.headers.get('set-cookie'), null);

    const out = await app.request('/sign-out', { method: 'POST', headers: { cookie: fresh } });
    assert.match(out.headers.get('set-cookie'), /Max-Age=0/);
    assert.deepEqual(await (await get(fresh)).json(), { visits: 1, user: null });
  });

  test('plain fetch handler: counter; an immutable response is copied, not broken', async () => {
    const handler = createFetchHandler({ client: ctx.conn.client, config });
    const first = await handler(new Request('http://app.test/'));
    const cookie = pair(first.headers.get('set-cookie'));
    const second = await handler(new Request('http://app.test/', { headers: { cookie } }));
    assert.deepEqual(await second.json(), { visits: 2 });

    const redirecting = withSession((request, session) => {
      session.set('seen', true);
      return Response.redirect('http://app.test/next', 303); // headers are immutable
    }, { client: ctx.conn.client, config });
    const r = await redirecting(new Request('http://app.test/'));
    assert.equal(r.status, 303);
    assert.equal(r.headers.get('location'), 'http://app.test/next');
    assert.match(r.headers.get('set-cookie'), /^sid=/);
    assert.equal(r.headers.get('vary'), 'Cookie');
  });

  test('Redis down: a JSON 503 with a typed code from both helpers, quickly; back after a restart', async () => {
    const app = createHonoApp({ client: ctx.conn.client, config });
    const handler = createFetchHandler({ client: ctx.conn.client, config });
    const cookie = pair((await app.request('/')).headers.get('set-cookie'));
    await ctx.redis.stop();
    try {
      for (const send of [() => app.request('/', { headers: { cookie } }), () => handler(new Request('http://app.test/'))]) {
        const started = performance.now();
        const r = await send();
        assert.equal(r.status, 503);
        assert.match((await r.json()).code, /^backend_(unavailable|timeout)$/);
        assert.ok(performance.now() - started < 1500);
      }
    } finally {
      await ctx.redis.start();
    }
    let r;
    const deadline = Date.now() + 5000;
    do {
      await new Promise((res) => setTimeout(res, 50));
      r = await app.request('/');
    } while (r.status !== 200 && Date.now() < deadline);
    assert.equal(r.status, 200);
  });

  test('the Express example app: sign in, profile, devices, sign out, sign out everywhere', async () => {
    const http = await serve(createApp({ client: ctx.conn.client, cookie: { secure: false } }));
    const form = (body) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body), redirect: 'manual' });
    try {
      const anon = await fetch(`${http.base}/profile`, { redirect: 'manual' });
      assert.equal(anon.status, 302);
      assert.equal(anon.headers.get('set-cookie'), null, 'no session for a visitor');
      const bad = await fetch(`${http.base}/login`, form({ user: 'ann', password: 'nope' }));
      assert.equal(bad.status, 401);
      const signIn = async () => {
        const r = await fetch(`${http.base}/login`, form({ user: 'ann', password: 'ann-password' }));
        assert.equal(r.status, 302);
        assert.equal(r.headers.get('location'), '/profile');
        return pair(r.headers.get('set-cookie'));
      };
      const laptop = await signIn();
      const phone = await signIn();
      const profile = await (await fetch(`${http.base}/profile`, { headers: { cookie: laptop } })).text();
      assert.match(profile, /<h1>ann<\/h1>/);
      assert.match(profile, /profile visits: 1/);
      assert.match(await (await fetch(`${http.base}/profile`, { headers: { cookie: laptop } })).text(), /profile visits: 2/);
      assert.equal(((await (await fetch(`${http.base}/devices`, { headers: { cookie: laptop } })).text()).match(/<li>/g) ?? []).length, 2);
      const out = await fetch(`${http.base}/logout`, { ...form({}), headers: { cookie: phone } });
      assert.match(out.headers.get('set-cookie'), /Max-Age=0/);
      assert.equal((await fetch(`${http.base}/profile`, { headers: { cookie: phone }, redirect: 'manual' })).status, 302);
      const again = await signIn();
      const everywhere = await fetch(`${http.base}/logout-everywhere`, { ...form({}), headers: { cookie: again } });
      assert.equal(everywhere.status, 302);
      assert.match(everywhere.headers.get('set-cookie'), /Max-Age=0/);
      for (const cookie of [laptop, again]) {
        assert.equal((await fetch(`${http.base}/profile`, { headers: { cookie }, redirect: 'manual' })).status, 302);
      }
    } finally {
      await http.close();
    }
  });
});
