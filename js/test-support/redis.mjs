// Test support (not a test file): a private redis-server on a free
// loopback port that the tests can stop and start again on the same port,
// and node-redis / ioredis clients configured as the README says: fail
// fast while Redis is down (no offline queue), reconnect when it is back.

import { spawn } from 'node:child_process';
import { before, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createClient } from 'redis';
import { Redis } from 'ioredis';
import { nodeRedisExecutor, ioredisExecutor } from '../lib/node.js';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function listening(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** A redis-server of our own: `{ port, stop(), start(), close() }`. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'sl-js-redis-'));
  let proc;
  let log = '';
  const server = {
    port,
    log: () => log,
    async start() {
      proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      proc.stdout.on('data', (d) => (log += d));
      proc.stderr.on('data', (d) => (log += d));
      const deadline = Date.now() + 5000;
      while (!(await listening(port))) {
        if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`redis-server did not start:\n${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop() {
      return new Promise((resolve) => {
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGKILL');
      });
    },
    async close() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}

/** Both clients, configured to fail fast and to come back after an outage. */
export const clients = {
  'node-redis': async (port) => {
    const client = createClient({
      url: `redis://127.0.0.1:${port}`,
      disableOfflineQueue: true,
      socket: { connectTimeout: 1000, reconnectStrategy: (n) => Math.min(20 * 2 ** n, 200) },
    });
    client.on('error', () => {}); // surfaced per request as SessionError 503
    await client.connect();
    return {
      client,
      executor: nodeRedisExecutor(client, { timeoutMs: 1000 }),
      send: (argv) => client.sendCommand(argv),
      close: () => client.destroy(),
    };
  },
  ioredis: async (port) => {
    const client = new Redis({
      port,
      host: '127.0.0.1',
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
      retryStrategy: (n) => Math.min(20 * 2 ** n, 200),
      lazyConnect: true,
    });
    client.on('error', () => {});
    await client.connect();
    return {
      client,
      executor: ioredisExecutor(client, { timeoutMs: 1000 }),
      send: ([name, ...args]) => client.call(name, ...args),
      close: () => client.disconnect(),
    };
  },
};

/** `name=value` of a Set-Cookie header. */
export function pair(setCookie) {
  if (typeof setCookie !== 'string') throw new Error(`expected a Set-Cookie, got ${setCookie}`);
  return setCookie.split(';')[0];
}

/** Serve an Express (or any request listener) app on a free loopback port. */
export function serve(app) {
  return new Promise((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => {
      const base = `http://127.0.0.1:${srv.address().port}`;
      resolve({
        base,
        server: srv,
        close: () =>
          new Promise((r) => {
            srv.closeAllConnections();
            srv.close(r);
          }),
      });
    });
  });
}

/**
 * A redis-server and a connected node-redis client for one `describe`
 * block: started in `before`, closed in `after`. Read `.redis` and `.conn`
 * inside the tests.
 */
export function withNodeRedis() {
  const ctx = { redis: undefined, conn: undefined };
  before(async () => {
    ctx.redis = await startRedis();
    ctx.conn = await clients['node-redis'](ctx.redis.port);
  });
  after(async () => {
    await ctx.conn?.close();
    await ctx.redis?.close();
  });
  return ctx;
}
