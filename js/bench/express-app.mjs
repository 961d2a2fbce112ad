// One tiny Express 5 app for the HTTP load benchmark (wrk): the same routes
// and the same node-redis client in every mode, so the session library is
// the only thing that differs between runs.
//
//   node js/bench/express-app.mjs --mode <ours|express-session|es-store|floor> --redis-port P [--port Q]
//
// Modes: `ours` (session-logic's middleware), `express-session` (+
// connect-redis, the settings its README recommends), `es-store`
// (express-session + our SessionLogicStore), and `floor`: no session
// library, exactly one raw Redis command per request (the lower bound).
// Routes: GET /read (n, no writes), POST /write (n + 1), POST /login
// (regenerate, sign in, keep n), POST /seed (a new signed-in session with
// n = 0, to pre-populate sessions over HTTP; send it without a cookie).
// Prints one line, `listening 127.0.0.1:<port>`, once it accepts requests.

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import express from 'express';
import { createClient } from 'redis';

const { values: args } = parseArgs({
  options: { mode: { type: 'string' }, 'redis-port': { type: 'string' }, port: { type: 'string', default: '0' } },
});
const MODES = ['ours', 'express-session', 'es-store', 'floor'];
if (!MODES.includes(args.mode) || !args['redis-port']) {
  console.error(`usage: node express-app.mjs --mode <${MODES.join('|')}> --redis-port P [--port Q]`);
  process.exit(2);
}

const client = createClient({
  url: `redis://127.0.0.1:${args['redis-port']}`,
  disableOfflineQueue: true,
  socket: { reconnectStrategy: (n) => Math.min(50 * 2 ** n, 2000) },
});
client.on('error', () => {}); // failures surface per request (503 / 500)
await client.connect();

const maxAge = 30 * 60 * 1000;
const expressSessionOptions = { secret: 'bench', resave: false, saveUninitialized: false, cookie: { maxAge } };
let users = 0;

/** Sign in on the current session: a user and the given n. */
function signIn(req, n) {
  const user = `u${++users}`;
  req.session.user = user;
  req.session.n = n;
  if (args.mode === 'ours') req.session.bindUser(user);
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');

if (args.mode === 'floor') {
  const key = (req) => `floor:${/(?:^|;\s*)sid=([^;]*)/.exec(req.headers.cookie ?? '')?.[1] ?? 'none'}`;
  const fresh = async (res) => {
    const id = randomBytes(32).toString('base64url');
    await client.hSet(`floor:${id}`, 'n', '0');
    res.append('Set-Cookie', `sid=${id}; Path=/; HttpOnly`).type('text').send('ok');
  };
  app.get('/read', async (req, res) => res.type('text').send(String((await client.hGetAll(key(req))).n ?? 0)));
  app.post('/write', async (req, res) => res.type('text').send(String(await client.hIncrBy(key(req), 'n', 1))));
  app.post('/login', (req, res) => fresh(res));
  app.post('/seed', (req, res) => fresh(res));
} else {
  // Only the mode's own library is loaded (floor loads none, not even the wasm).
  if (args.mode === 'ours') {
    const { default: session } = await import('../lib/express.js');
    app.use(session({ client, cookie: { secure: false, maxAge } }));
  } else {
    const { default: expressSession } = await import('express-session');
    let store;
    if (args.mode === 'es-store') {
      const { SessionLogicStore } = await import('../lib/store.js');
      store = new SessionLogicStore({ client, prefix: 'sls:' });
    } else {
      const { RedisStore } = await import('connect-redis');
      store = new RedisStore({ client, prefix: 'cr:' });
    }
    app.use(expressSession({ ...expressSessionOptions, store }));
  }
  app.get('/read', (req, res) => res.type('text').send(String(req.session.n ?? 0)));
  app.post('/write', (req, res) => {
    req.session.n = (req.session.n ?? 0) + 1;
    res.type('text').send(String(req.session.n));
  });
  // Every mode saves the regenerated session at the end of the request
  // (express-session does, as it is modified under a new ID): no save() here.
  app.post('/login', (req, res, next) => {
    const n = req.session.n ?? 0;
    req.session.regenerate((err) => {
      if (err) return next(err);
      signIn(req, n); // regenerate emptied the session: put n back
      res.type('text').send('ok');
    });
  });
  app.post('/seed', (req, res) => {
    signIn(req, 0);
    res.type('text').send('ok');
  });
}

app.use((err, req, res, next) => {
  if (res.headersSent) return res.end();
  res.status(err.status ?? 500).type('text').send(String(err.message ?? err));
});

const server = app.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`listening 127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    server.closeAllConnections();
    server.close();
    client.destroy();
  });
}
