// Compile-only check that the hand-written declarations describe the API the
// tests exercise (run by `npx tsc -p test/tsconfig.json`). Not executed.
import { createClient } from 'redis';
import { Redis } from 'ioredis';
import {
  Engine,
  Memory,
  Sessions,
  createEngine,
  ioredisExecutor,
  isSessionError,
  memoryExecutor,
  nodeRedisExecutor,
  runOp,
  sendCommandExecutor,
  type Outcome,
  type Session,
} from 'session-logic';
import { init } from 'session-logic/edge';

export async function check(): Promise<void> {
  const engine: Engine = createEngine({ prefix: 'sess:' });
  const sessions = new Sessions({ engine, executor: memoryExecutor(new Memory()) });
  const outcome: Outcome = await sessions.load('sid=x', { client: 'ua' });
  if (outcome.kind === 'loaded' || outcome.kind === 'none') {
    const s: Session = outcome.session;
    s.set('k', { a: [1, 'b'] });
    const v = s.get('k');
    void v;
    const saved = await sessions.save(s);
    if (saved.kind === 'saved' && saved.cookie !== null) saved.cookie.split(';');
  }
  const devices = await sessions.listUserSessions('alice');
  if (devices.kind === 'devices') devices.devices.map((d) => d.lastSeen + d.expiresAt);
  const op = engine.load(null, null, Date.now());
  const step = op.next();
  if ('round' in step) op.next(step.round.map(() => null));
  await runOp(engine.loadId('x', null, 1), async (round) => round.map(() => ({ error: 'ERR' })));
  try {
    new Engine({ prefx: 1 });
  } catch (e) {
    if (isSessionError(e)) console.log(e.code, e.status, e.detail.kind);
  }
  nodeRedisExecutor(createClient({ disableOfflineQueue: true }), { timeoutMs: 500 });
  ioredisExecutor(new Redis({ enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true }));
  sendCommandExecutor(async (argv) => argv.length, { binary: false });
  await init(new Uint8Array(0));
}

// The Express middleware, the express-session Store and the fetch helpers.
import express from 'express';
import expressSession from 'express-session';
import { session, type RequestSession } from 'session-logic/express';
import { SessionLogicStore } from 'session-logic/store';
import { withSession, honoSession, type FetchSession } from 'session-logic';

export function checkFrameworks(): void {
  const app = express();
  app.use(session({ client: createClient(), name: 'sid', cookie: { maxAge: 60_000, secure: false, sameSite: 'strict' }, unset: 'destroy' }));
  app.get('/', async (req, res) => {
    const s: RequestSession = req.session;
    s.views = (s.views ?? 0) + 1;
    await s.regenerate();
    s.bindUser('ann');
    const n: number = await s.logoutEverywhere({ keepCurrent: true });
    s.save((err) => res.json({ n, err, id: s.id, maxAge: s.cookie.maxAge }));
  });
  const store = new SessionLogicStore({ client: createClient(), prefix: 'sess:', ttl: 3600 });
  app.use(expressSession({ store, secret: 's', resave: false, saveUninitialized: false }));
  store.get('sid', (err, sess) => console.log(err, sess?.cookie));
  const handler = withSession(async (request: Request, s: FetchSession) => {
    s.set('k', 1);
    return Response.json({ k: s.get('k'), user: s.user });
  });
  void handler(new Request('http://x/'));
  void honoSession({ client: createClient(), key: 'session' });
}
