// A store for express-session itself, for apps that keep express-session
// and only swap connect-redis out. express-session owns these sessions
// (their IDs, cookies and expiry), so this store keeps its rules rather
// than ours, and fixes what connect-redis gets wrong:
//
// - Expiry to the millisecond: the record expires exactly at the session's
//   `cookie.expires` (PEXPIREAT), not at a TTL rounded up to whole seconds.
// - `touch` really moves the deadline: it moves the key's expiry *and* the
//   stored `cookie.expires`, so the next load sees the deadline Redis
//   enforces; it never rewrites the data (a parallel request's save is not
//   undone) and never recreates a session deleted meanwhile.
// - Writes are atomic: a reader never sees a half-replaced session, and a
//   session saved with an expiry already past is deleted, not kept forever.
// - Redis failures are SessionErrors with `code` and `status` (503), and
//   the client is expected to fail fast (see the README).
//
// Layout: one hash per session at `prefix + sid`, fields `sess` (the JSON
// of everything but the cookie) and `cookie` (the cookie's JSON). Values
// are JSON only. Every command touches one key (Cluster-safe).

import { createHash } from 'node:crypto';
import { Store } from 'express-session';
import { executorFor } from './executors.js';
import { sessionError } from './handle.js';

const utf8 = new TextDecoder();
const DAY_SECONDS = 86400;

// Replace the whole session and set its expiry in one step; an expiry in
// the past deletes it (PEXPIREAT semantics).
const SET = `redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'sess', ARGV[2], 'cookie', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1`;

// Move the deadline of a session that still exists; never recreate one.
const TOUCH = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cookie', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1`;

const sha1 = (text) => createHash('sha1').update(text).digest('hex');
const SCRIPTS = { set: { text: SET, sha: sha1(SET) }, touch: { text: TOUCH, sha: sha1(TOUCH) } };

/**
 * `new SessionLogicStore({ client })`: node-redis or ioredis (configured to
 * fail fast), or `{ executor }`. Options follow connect-redis: `prefix`
 * (default `sess:`), `ttl` (seconds, or `(sess) => seconds`, for sessions
 * whose cookie has no expiry; default one day), `disableTouch`,
 * `scanCount` (default 100).
 */
export class SessionLogicStore extends Store {
  constructor(options = {}) {
    super();
    if (options.serializer !== undefined) {
      throw new TypeError('SessionLogicStore: option `serializer` is not supported: sessions are stored as JSON only, never a format that can run code when read back');
    }
    if (options.disableTTL) {
      throw new TypeError('SessionLogicStore: option `disableTTL` is not supported: a session without an expiry lives in Redis forever');
    }
    this.execute = options.executor ?? executorFor(options.client, options);
    this.prefix = options.prefix ?? 'sess:';
    if (typeof this.prefix !== 'string' || /[*?[\]\\]/.test(this.prefix)) {
      throw new TypeError('SessionLogicStore: `prefix` must be a string without glob characters (* ? [ ] \\)');
    }
    this.ttl = options.ttl ?? DAY_SECONDS;
    this.disableTouch = Boolean(options.disableTouch);
    this.scanCount = options.scanCount ?? 100;
  }

  /** The session saved under `sid`, or null (also once its expiry has passed). */
  get(sid, cb) {
    return settle(async () => {
      const [reply] = await this.#round([['HGETALL', this.#key(sid)]]);
      return decode(reply, Date.now());
    }, cb);
  }

  /** Replace the session under `sid`; it expires at `sess.cookie.expires` to the millisecond. */
  set(sid, sess, cb) {
    return settle(async () => {
      const { data, cookie } = encode(sess);
      await this.#script(SCRIPTS.set, this.#key(sid), [String(this.#expiry(sess)), data, cookie]);
    }, cb);
  }

  /** Move the deadline of an existing session to `sess.cookie.expires`; data untouched. */
  touch(sid, sess, cb) {
    return settle(async () => {
      if (this.disableTouch) return;
      const { cookie } = encode(sess);
      await this.#script(SCRIPTS.touch, this.#key(sid), [String(this.#expiry(sess)), cookie]);
    }, cb);
  }

  destroy(sid, cb) {
    return settle(async () => {
      await this.#round([['DEL', this.#key(sid)]]);
    }, cb);
  }

  /** IDs of the stored sessions (a SCAN: O(keys under the prefix)). */
  ids(cb) {
    return settle(async () => (await this.#scan()).map((k) => k.slice(this.prefix.length)), cb);
  }

  length(cb) {
    return settle(async () => (await this.#scan()).length, cb);
  }

  /** Every live session, each with its `id`. */
  all(cb) {
    return settle(async () => {
      const keys = await this.#scan();
      const now = Date.now();
      const out = [];
      for (let i = 0; i < keys.length; i += this.scanCount) {
        const batch = keys.slice(i, i + this.scanCount);
        const replies = await this.#round(batch.map((k) => ['HGETALL', k]));
        replies.forEach((reply, j) => {
          const sess = decode(reply, now);
          if (sess) out.push({ id: batch[j].slice(this.prefix.length), ...sess });
        });
      }
      return out;
    }, cb);
  }

  /** Delete every session under the prefix. */
  clear(cb) {
    return settle(async () => {
      const keys = await this.#scan();
      for (let i = 0; i < keys.length; i += this.scanCount) {
        await this.#round([['UNLINK', ...keys.slice(i, i + this.scanCount)]]);
      }
    }, cb);
  }

  #key(sid) {
    if (typeof sid !== 'string' || sid.length === 0 || sid.length > 256) {
      throw sessionError('invalid_input', 400, 'SessionLogicStore: a session ID must be a non-empty string of at most 256 characters');
    }
    return this.prefix + sid;
  }

  #expiry(sess) {
    const expires = sess?.cookie?.expires;
    if (expires) {
      const at = new Date(expires).getTime();
      if (Number.isFinite(at)) return at;
    }
    const ttl = typeof this.ttl === 'function' ? this.ttl(sess) : this.ttl;
    return Date.now() + Math.round(Number(ttl) * 1000);
  }

  async #scan() {
    const pattern = `${this.prefix}*`;
    const keys = [];
    let cursor = '0';
    do {
      const [reply] = await this.#round([['SCAN', cursor, 'MATCH', pattern, 'COUNT', String(this.scanCount)]]);
      cursor = text(reply[0]);
      for (const k of reply[1]) keys.push(text(k));
    } while (cursor !== '0');
    return [...new Set(keys)];
  }

  /** A script by its SHA (one round), sending its text only when Redis lacks it. */
  async #script(script, key, argv) {
    const [reply] = await this.#round([['EVALSHA', script.sha, '1', key, ...argv]], { noscript: true });
    if (isNoscript(reply)) await this.#round([['EVAL', script.text, '1', key, ...argv]]);
  }

  /** One round; a Redis error reply becomes a typed error (NOSCRIPT is returned when asked). */
  async #round(commands, { noscript = false } = {}) {
    const enc = new TextEncoder();
    let replies;
    try {
      replies = await this.execute(commands.map((argv) => argv.map((a) => enc.encode(a))));
    } catch (e) {
      const timeout = e?.kind === 'timeout';
      const err = sessionError(timeout ? 'backend_timeout' : 'backend_unavailable', 503, `Redis ${timeout ? 'timed out' : 'is unavailable'}: ${e?.message ?? e}`);
      err.cause = e;
      throw err;
    }
    for (const r of replies) {
      if (noscript && isNoscript(r)) continue;
      if (isError(r)) {
        const message = String(r.message ?? r.error);
        throw sessionError(/^NOPERM/.test(message) ? 'backend_noperm' : 'backend_error', 503, `Redis refused a command: ${message}`);
      }
    }
    return replies;
  }
}

export default SessionLogicStore;

function isError(r) {
  return r instanceof Error || (r !== null && typeof r === 'object' && 'error' in r && !(r instanceof Uint8Array) && !Array.isArray(r));
}

function isNoscript(r) {
  return isError(r) && /^NOSCRIPT/.test(String(r.message ?? r.error));
}

function text(v) {
  return typeof v === 'string' ? v : utf8.decode(v);
}

function encode(sess) {
  if (!sess || typeof sess !== 'object' || !sess.cookie) {
    throw sessionError('invalid_input', 400, 'SessionLogicStore: express-session passes a session object with a `cookie`');
  }
  const { cookie, ...rest } = sess;
  return { data: JSON.stringify(rest), cookie: JSON.stringify(cookie) };
}

/** An HGETALL reply as express-session's session object; null when absent or past its expiry. */
function decode(reply, now) {
  if (!Array.isArray(reply) || reply.length === 0) return null;
  const fields = {};
  for (let i = 0; i + 1 < reply.length; i += 2) fields[text(reply[i])] = text(reply[i + 1]);
  if (fields.sess === undefined || fields.cookie === undefined) {
    throw sessionError('decode', 500, 'SessionLogicStore: a stored session lacks its `sess` or `cookie` field (written by something else?)');
  }
  let sess;
  try {
    sess = JSON.parse(fields.sess);
    sess.cookie = JSON.parse(fields.cookie);
  } catch (e) {
    throw sessionError('decode', 500, `SessionLogicStore: a stored session is not valid JSON: ${e.message}`);
  }
  if (sess.cookie?.expires && new Date(sess.cookie.expires).getTime() <= now) return null;
  return sess;
}

function settle(fn, cb) {
  const promise = Promise.resolve().then(fn);
  if (typeof cb !== 'function') return promise;
  promise.then(
    (v) => queueMicrotask(() => cb(null, v ?? null)),
    (e) => queueMicrotask(() => cb(e)),
  );
  return undefined;
}
