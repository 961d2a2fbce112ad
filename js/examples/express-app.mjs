// The sign-in / profile / sign-out app of the express-session tutorials,
// on session-logic's middleware.
//
//   node js/examples/express-app.mjs                          # in-memory sessions
//   REDIS_URL=redis://127.0.0.1:6379 node js/examples/express-app.mjs
//
// Then open http://127.0.0.1:3000. Users: ann / ann-password, bob / bob-password.

import { pathToFileURL } from 'node:url';
import { timingSafeEqual } from 'node:crypto';
import express from 'express';
import { session } from 'session-logic/express';
import { memoryExecutor } from 'session-logic';

// A demo user table; a real app checks a password hash (argon2, scrypt).
const USERS = { ann: 'ann-password', bob: 'bob-password' };

function passwordMatches(user, password) {
  const expected = Buffer.from(USERS[user] ?? '');
  const given = Buffer.from(String(password ?? ''));
  return expected.length > 0 && expected.length === given.length && timingSafeEqual(expected, given);
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (body) => `<!doctype html><meta charset="utf-8"><title>session-logic demo</title>${body}`;

/** The app; `sessionOptions` picks the store (`client` or `executor`) and cookie. */
export function createApp(sessionOptions) {
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(session(sessionOptions));

  const requireUser = (req, res, next) => (req.session.boundUser() ? next() : res.redirect('/login'));

  app.get('/', (req, res) => {
    const user = req.session.boundUser();
    res.send(page(user ? `<p>Signed in as ${escape(user)}. <a href="/profile">Profile</a></p>` : '<p><a href="/login">Sign in</a></p>'));
  });

  app.get('/login', (req, res) => {
    res.send(page(`<form method="post" action="/login">
      <label>User <input name="user" autocomplete="username"></label>
      <label>Password <input name="password" type="password" autocomplete="current-password"></label>
      <button>Sign in</button></form>`));
  });

  app.post('/login', (req, res, next) => {
    const { user, password } = req.body;
    if (!passwordMatches(user, password)) return res.status(401).send(page('<p>Wrong user or password. <a href="/login">Again</a></p>'));
    // New ID on sign-in (fixation defence), keeping anything stored before.
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.bindUser(user);
      req.session.signedInAt = new Date().toISOString();
      req.session.save((err2) => (err2 ? next(err2) : res.redirect('/profile')));
    });
  });

  app.get('/profile', requireUser, (req, res) => {
    req.session.visits = (req.session.visits ?? 0) + 1;
    res.send(page(`<h1>${escape(req.session.boundUser())}</h1>
      <p>Signed in at ${escape(req.session.signedInAt)}; profile visits: ${req.session.visits}.</p>
      <p><a href="/devices">Devices</a></p>
      <form method="post" action="/logout"><button>Sign out</button></form>
      <form method="post" action="/logout-everywhere"><button>Sign out everywhere</button></form>`));
  });

  app.get('/devices', requireUser, async (req, res) => {
    const devices = await req.session.listDevices();
    const rows = devices.map((d) => `<li>${new Date(d.created).toISOString()}${d.current ? ' (this device)' : ''}</li>`).join('');
    res.send(page(`<ul>${rows}</ul><a href="/profile">Back</a>`));
  });

  app.post('/logout', (req, res, next) => {
    req.session.destroy((err) => (err ? next(err) : res.redirect('/')));
  });

  app.post('/logout-everywhere', requireUser, async (req, res) => {
    await req.session.logoutEverywhere();
    res.redirect('/');
  });

  // Session errors carry a status: 503 while Redis is down, 413 for oversized data.
  app.use((err, req, res, _next) => {
    res.status(err.status ?? 500).send(page(`<p>${err.status === 503 ? 'Sessions are unavailable; try again shortly.' : 'Something went wrong.'}</p>`));
  });
  return app;
}

async function main() {
  const cookie = { secure: false, maxAge: 30 * 60 * 1000 }; // plain HTTP on localhost
  let options = { executor: memoryExecutor(), cookie };
  if (process.env.REDIS_URL) {
    const { createClient } = await import('redis');
    const client = createClient({
      url: process.env.REDIS_URL,
      disableOfflineQueue: true,
      socket: { connectTimeout: 1000, reconnectStrategy: (n) => Math.min(50 * 2 ** n, 2000) },
    });
    client.on('error', (e) => console.error('redis:', e.message));
    await client.connect();
    options = { client, cookie };
  }
  const port = Number(process.env.PORT ?? 3000);
  createApp(options).listen(port, '127.0.0.1', () => console.log(`demo on http://127.0.0.1:${port} (${process.env.REDIS_URL ? 'Redis' : 'in-memory sessions'})`));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
