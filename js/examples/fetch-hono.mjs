// Sessions in web-standard Request/Response handlers: a Hono app and a
// plain fetch handler, both on session-logic's helper.
//
//   node js/examples/fetch-hono.mjs        # http://127.0.0.1:3001 (Hono), :3002 (plain fetch)
//   REDIS_URL=redis://127.0.0.1:6379 node js/examples/fetch-hono.mjs
//
// On an edge runtime, import from 'session-logic/edge', `await init(wasm)`
// once, and pass an executor for your Redis client (e.g. a REST client via
// sendCommandExecutor); the handlers below stay the same.

import { pathToFileURL } from 'node:url';
import { Hono } from 'hono';
import { honoSession, withSession, memoryExecutor } from 'session-logic';

/** A Hono app: a visit counter, sign-in (regenerates) and sign-out. */
export function createHonoApp(options) {
  const app = new Hono();
  app.use('*', honoSession(options));
  app.get('/', (c) => {
    const s = c.get('session');
    const visits = (s.get('visits') ?? 0) + 1;
    s.set('visits', visits);
    return c.json({ visits, user: s.user ?? null });
  });
  app.post('/sign-in/:user', (c) => {
    const s = c.get('session');
    s.regenerate();
    s.bindUser(c.req.param('user'));
    return c.json({ user: c.req.param('user') });
  });
  app.post('/sign-out', async (c) => {
    await c.get('session').destroy();
    return c.json({ signedOut: true });
  });
  // Load and save failures arrive here as SessionErrors with a status.
  app.onError((err, c) => c.json({ code: err.code ?? 'internal' }, err.status ?? 500));
  return app;
}

/** The same counter as a plain fetch handler. */
export function createFetchHandler(options) {
  return withSession((request, session) => {
    const visits = (session.get('visits') ?? 0) + 1;
    session.set('visits', visits);
    return Response.json({ visits });
  }, options);
}

async function main() {
  const { serve } = await import('@hono/node-server');
  let options = { executor: memoryExecutor(), config: { cookie: { secure: false } } };
  if (process.env.REDIS_URL) {
    const { createClient } = await import('redis');
    const client = createClient({ url: process.env.REDIS_URL, disableOfflineQueue: true, socket: { reconnectStrategy: (n) => Math.min(50 * 2 ** n, 2000) } });
    client.on('error', (e) => console.error('redis:', e.message));
    await client.connect();
    options = { client, config: { cookie: { secure: false } } };
  }
  serve({ fetch: createHonoApp(options).fetch, port: 3001, hostname: '127.0.0.1' });
  serve({ fetch: createFetchHandler(options), port: 3002, hostname: '127.0.0.1' });
  console.log('Hono on http://127.0.0.1:3001, plain fetch on http://127.0.0.1:3002');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
