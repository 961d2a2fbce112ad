// The migration the README promises: one tutorial app, written for
// express-session + connect-redis, run unchanged on (a) express-session +
// connect-redis, (b) express-session + SessionLogicStore (store swapped)
// and (c) session-logic's middleware (import and options swapped). The
// same journey must give the same answers on all three.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import expressSession from 'express-session';
import { RedisStore } from 'connect-redis';
import sessionLogic from '../lib/express.js';
import { SessionLogicStore } from '../lib/store.js';
import { withNodeRedis, pair, serve } from '../test-support/redis.mjs';

/** Handlers as the express-session tutorials write them (callbacks). */
function tutorialApp(middleware) {
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(middleware);
  app.get('/', (req, res) => {
    req.session.views = (req.session.views ?? 0) + 1;
    res.json({ views: req.session.views, user: req.session.user ?? null });
  });
  app.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = req.body.user;
      req.session.save((err2) => (err2 ? next(err2) : res.redirect('/')));
    });
  });
  app.get('/reload', (req, res, next) => req.session.reload((err) => (err ? next(err) : res.json({ user: req.session.user ?? null }))));
  app.post('/logout', (req, res, next) => {
    req.session.user = null;
    req.session.save((err) => {
      if (err) return next(err);
      req.session.destroy((err2) => (err2 ? next(err2) : res.redirect('/')));
    });
  });
  return app;
}

async function journey(base) {
  const seen = [];
  const jar = { cookie: undefined };
  const go = async (path, init = {}) => {
    const headers = { ...(init.headers ?? {}) };
    if (jar.cookie) headers.cookie = jar.cookie;
    const r = await fetch(base + path, { ...init, headers, redirect: 'manual' });
    const set = r.headers.get('set-cookie');
    if (set) jar.cookie = /Max-Age=0|Expires=Thu, 01 Jan 1970/.test(set) ? undefined : pair(set);
    const type = r.headers.get('content-type') ?? '';
    seen.push([path, r.status, type.includes('json') ? await r.json() : null]);
  };
  const form = (body) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body) });
  await go('/');
  await go('/');
  await go('/login', form({ user: 'ann' }));
  await go('/');
  await go('/reload');
  await go('/logout', form({}));
  await go('/');
  return seen;
}

describe('an express-session + connect-redis app switches by changing an import and its options', () => {
  const ctx = withNodeRedis();

  test('same journey, same answers', async () => {
    const secret = 'keyboard cat';
    const setups = {
      'express-session + connect-redis': expressSession({ store: new RedisStore({ client: ctx.conn.client, prefix: 'cr:' }), secret, resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }),
      'express-session + SessionLogicStore': expressSession({ store: new SessionLogicStore({ client: ctx.conn.client, prefix: 'sls:' }), secret, resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }),
      'session-logic middleware': sessionLogic({ client: ctx.conn.client, secret, resave: false, saveUninitialized: false, cookie: { maxAge: 60_000, secure: false } }),
    };
    const results = {};
    for (const [name, middleware] of Object.entries(setups)) {
      const http = await serve(tutorialApp(middleware));
      try {
        results[name] = await journey(http.base);
      } finally {
        await http.close();
      }
    }
    const [reference, ...others] = Object.values(results);
    assert.deepEqual(reference, [
      ['/', 200, { views: 1, user: null }],
      ['/', 200, { views: 2, user: null }],
      ['/login', 302, null],
      ['/', 200, { views: 1, user: 'ann' }],
      ['/reload', 200, { user: 'ann' }],
      ['/logout', 302, null],
      ['/', 200, { views: 1, user: null }],
    ]);
    for (const [i, other] of others.entries()) assert.deepEqual(other, reference, Object.keys(results)[i + 1]);
  });
});
