// Executors: send one round (argv arrays from the core) as one pipeline and
// return one reply per command in the core's JS reply shape. Redis error
// replies are data (returned, never thrown: the core decides what NOSCRIPT
// or WRONGTYPE means); transport trouble is thrown as a TransportFailure so
// the core turns it into a typed 503. Every executor bounds each round with
// a timeout, so an outage is a fast error, never a hang.

import { Memory, TransportFailure } from './host.js';

const DEFAULT_TIMEOUT_MS = 2000;
const utf8 = new TextDecoder();

/**
 * The executor for a client object: ioredis (`pipeline` + `callBuffer`) or
 * node-redis (`sendCommand` + `multi`). Cluster clients of node-redis take
 * different arguments: pass `{ executor }` built for them instead.
 */
export function executorFor(client, options) {
  if (client && typeof client.pipeline === 'function' && typeof client.callBuffer === 'function') {
    return ioredisExecutor(client, options);
  }
  if (client && typeof client.sendCommand === 'function' && typeof client.multi === 'function' && !('masters' in client)) {
    return nodeRedisExecutor(client, options);
  }
  throw new TypeError('pass a node-redis client (createClient) or an ioredis client as `client`, or an `executor` (round => replies)');
}

/** The in-memory backend as an executor (tests, local development). */
export function memoryExecutor(memory = new Memory(), clock = Date.now) {
  const execute = async (round) => memory.executeRound(round, clock());
  execute.memory = memory;
  return execute;
}

/**
 * node-redis (v4 and later): the commands of a round are issued in the same
 * tick, which node-redis writes to the socket as one pipeline (its
 * auto-pipelining). Not `multi().execAsPipeline()`: that rejects with the
 * first error reply and drops the others, and Redis error replies must stay
 * data. Configure the client to fail fast: `createClient({
 * disableOfflineQueue: true, socket: { connectTimeout: 1000,
 * reconnectStrategy: (n) => (n > 3 ? false : 100) } })`.
 */
export function nodeRedisExecutor(client, { timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  return sendCommandExecutor((argv) => client.sendCommand(argv), { timeoutMs, binary: true });
}

/**
 * ioredis: each round is one `pipeline()` of `callBuffer`s (bulk replies as
 * bytes). Configure the client to fail fast: `new Redis({ enableOfflineQueue:
 * false, maxRetriesPerRequest: 1, connectTimeout: 1000 })`.
 */
export function ioredisExecutor(redis, { timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  return async (round) => {
    const pipeline = redis.pipeline();
    for (const argv of round) {
      const [name, ...args] = argv;
      pipeline.callBuffer(utf8.decode(name), ...args.map(toBuffer));
    }
    let results;
    try {
      results = await withTimeout(pipeline.exec(), timeoutMs);
    } catch (e) {
      throw asFailure(e);
    }
    if (!Array.isArray(results) || results.length !== round.length) {
      throw new TransportFailure('other', 'ioredis pipeline returned no results');
    }
    return results.map(([err, reply]) => {
      if (err == null) return normalize(reply);
      if (isReplyError(err)) return err;
      throw asFailure(err);
    });
  };
}

/**
 * Any client with a `send(argv) => Promise<reply>` (a REST client on an edge
 * runtime, a custom socket). Commands of a round are issued together, so
 * clients that auto-pipeline send them in one write. Arguments are strings
 * (everything the core emits is UTF-8) unless `binary: true`. A rejection
 * that `isReplyError` accepts is a Redis error reply (data); any other
 * rejection is a transport failure.
 */
export function sendCommandExecutor(send, { timeoutMs = DEFAULT_TIMEOUT_MS, binary = false, isReplyError: isReply = isReplyError } = {}) {
  // One promise and one timer per round (no Promise.race/all chains): this
  // runs on every request.
  return (round) =>
    new Promise((resolve, reject) => {
      const replies = new Array(round.length);
      let left = round.length;
      if (left === 0) return resolve(replies);
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(new TransportFailure('timeout', `redis round took over ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (i, reply) => {
        replies[i] = reply;
        if (--left === 0 && !settled) {
          settled = true;
          clearTimeout(timer);
          resolve(replies);
        }
      };
      const fail = (e) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(asFailure(e));
      };
      round.forEach((argv, i) => {
        let pending;
        try {
          pending = send(binary ? argv.map(toBuffer) : argv.map((a) => utf8.decode(a)));
        } catch (e) {
          pending = Promise.reject(e);
        }
        Promise.resolve(pending).then(
          (reply) => {
            try {
              done(i, normalize(reply));
            } catch (e) {
              fail(e);
            }
          },
          (e) => (isReply(e) ? done(i, e) : fail(e)),
        );
      });
    });
}

/** Redis error replies as node-redis (ErrorReply) and ioredis (ReplyError) raise them. */
export function isReplyError(e) {
  return e instanceof Error && (e.name === 'ReplyError' || e.constructor?.name === 'ErrorReply' || e.constructor?.name === 'SimpleError' || e.constructor?.name === 'BlobError');
}

/** A client reply in the core's shape: RESP3 maps and sets flattened to arrays. */
export function normalize(reply) {
  if (reply === undefined || reply === null) return null;
  if (typeof reply === 'string' || typeof reply === 'bigint' || reply instanceof Uint8Array) return reply;
  if (typeof reply === 'number') return Number.isSafeInteger(reply) ? reply : String(reply);
  if (typeof reply === 'boolean') return reply ? 1 : 0;
  if (reply instanceof Error) return reply;
  if (Array.isArray(reply)) return reply.map(normalize);
  if (reply instanceof Map) return [...reply].flatMap(([k, v]) => [normalize(k), normalize(v)]);
  if (reply instanceof Set) return [...reply].map(normalize);
  if (typeof reply === 'object') return Object.entries(reply).flatMap(([k, v]) => [k, normalize(v)]);
  return String(reply);
}

function toBuffer(u8) {
  // Rounds from runOp already hold Buffers (views, no copy) in Node.
  if (typeof Buffer !== 'function' || Buffer.isBuffer(u8)) return u8;
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

function asFailure(e) {
  if (e instanceof TransportFailure) return e;
  const text = `${e?.name ?? ''} ${e?.message ?? e}`;
  const kind = /timeout|timed out/i.test(text) ? 'timeout' : 'unavailable';
  return new TransportFailure(kind, String(e?.message ?? e), { cause: e });
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TransportFailure('timeout', `redis round took over ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
