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
 * different arguments: pass `{ executor }` built for them instead. Options:
 * `timeoutMs` per round; `text: true` for rounds of string argv (the
 * node-redis executor takes strings and bytes alike).
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
  // Arguments as strings (see unpackRound): `text` tells runOp to unpack
  // rounds that way; a round of bytes handed in directly is converted, and
  // a round of strings (SessionLogicStore's) goes through as it is.
  const execute = sendCommandExecutor((argv) => client.sendCommand(argv, RAW_REPLIES), { timeoutMs, text: true });
  execute.text = true;
  return execute;
}

/**
 * Per-command options for node-redis 5+ (RESP3 by default): maps as flat
 * arrays and bulk strings as Buffers, the shapes the core reads, so replies
 * skip building an object and a string only to be flattened and re-encoded
 * (and a client-wide typeMapping cannot change what the core sees). The
 * codes are RESP's type bytes (`%` map, `$` bulk string); node-redis 4
 * ignores the option and answers arrays already.
 */
const RAW_REPLIES = Object.freeze({
  typeMapping: Object.freeze({ 37: Array, 36: typeof Buffer === 'function' ? Buffer : Uint8Array }),
});

/**
 * ioredis: each round is one `pipeline()` of `callBuffer`s (bulk replies as
 * bytes). Configure the client to fail fast: `new Redis({ enableOfflineQueue:
 * false, maxRetriesPerRequest: 1, connectTimeout: 1000 })`.
 */
export function ioredisExecutor(redis, { timeoutMs = DEFAULT_TIMEOUT_MS, text = false } = {}) {
  const watchdog = new Watchdog(timeoutMs);
  return async (round) => {
    const pipeline = redis.pipeline();
    for (const argv of round) {
      const [name, ...args] = argv;
      pipeline.callBuffer(text ? name : utf8.decode(name), ...(text ? args : args.map(toBuffer)));
    }
    let results;
    try {
      results = await watched(watchdog, pipeline.exec());
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
 * (everything the core emits is UTF-8) unless `binary: true` (Buffers);
 * `text: true` passes argv arrays of strings through as they are (for
 * callers that build commands as text, like SessionLogicStore, and for
 * rounds runOp unpacked as text) and decodes any bytes. A rejection
 * that `isReplyError` accepts is a Redis error reply (data); any other
 * rejection is a transport failure.
 */
export function sendCommandExecutor(send, { timeoutMs = DEFAULT_TIMEOUT_MS, binary = false, text = false, isReplyError: isReply = isReplyError } = {}) {
  const watchdog = new Watchdog(timeoutMs);
  // One promise per round and no timer of its own (see Watchdog): this runs
  // on every request.
  return (round) =>
    new Promise((resolve, reject) => {
      const replies = new Array(round.length);
      let left = round.length;
      if (left === 0) return resolve(replies);
      const pending = watchdog.watch(reject);
      const done = (i, reply) => {
        replies[i] = reply;
        if (--left === 0 && watchdog.release(pending)) resolve(replies);
      };
      const fail = (e) => {
        if (watchdog.release(pending)) reject(asFailure(e));
      };
      for (let i = 0; i < round.length; i++) {
        const argv = round[i];
        let sent;
        try {
          sent = send(text ? allText(argv) : binary ? argv.map(toBuffer) : argv.map(toText));
        } catch (e) {
          sent = Promise.reject(e);
        }
        Promise.resolve(sent).then(
          (reply) => {
            try {
              done(i, normalize(reply));
            } catch (e) {
              fail(e);
            }
          },
          (e) => (isReply(e) ? done(i, e) : fail(e)),
        );
      }
    });
}

/**
 * The round timeout without a timer per round: rounds in flight sit in a
 * set with their start time, and one interval (every quarter of the
 * timeout; it holds the process open only while rounds are in flight, and
 * stops at the first sweep that finds none) rejects those older than the
 * timeout. A round that hangs fails after between 1 and 1.25 timeouts; a
 * round that answers costs a set insertion and deletion instead of a
 * setTimeout/clearTimeout pair and its timer object.
 */
class Watchdog {
  constructor(timeoutMs) {
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      throw new TypeError(`timeoutMs must be a positive number of milliseconds, got ${timeoutMs}`);
    }
    this.timeoutMs = timeoutMs;
    this.inFlight = new Set();
    this.timer = null;
  }

  /** Start watching a round; `reject` gets the timeout. Returns its token. */
  watch(reject) {
    const entry = { started: Date.now(), reject };
    this.inFlight.add(entry);
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), Math.max(1, Math.floor(this.timeoutMs / 4)));
    } else if (this.inFlight.size === 1) {
      this.timer.ref?.();
    }
    return entry;
  }

  /** The round settled: true when it had not timed out (settle it), false when it had. */
  release(entry) {
    if (!this.inFlight.delete(entry)) return false;
    // Idle: the interval must not keep the process alive (a round in
    // flight does, as a timer of its own would).
    if (this.inFlight.size === 0) this.timer?.unref?.();
    return true;
  }

  sweep() {
    const expired = Date.now() - this.timeoutMs;
    for (const entry of this.inFlight) {
      if (entry.started > expired) continue;
      this.release(entry);
      entry.reject(new TransportFailure('timeout', `redis round took over ${this.timeoutMs} ms`));
    }
    if (this.inFlight.size === 0) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
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

/** `argv` itself when every argument is a string, else a copy with bytes decoded. */
function allText(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (typeof argv[i] !== 'string') return argv.map(toText);
  }
  return argv;
}

function toText(a) {
  return typeof a === 'string' ? a : utf8.decode(a);
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

/** `promise`, failed as a timeout if the watchdog finds it hung. */
function watched(watchdog, promise) {
  return new Promise((resolve, reject) => {
    const pending = watchdog.watch(reject);
    promise.then(
      (v) => watchdog.release(pending) && resolve(v),
      (e) => watchdog.release(pending) && reject(e),
    );
  });
}
