// A store for express-session itself, for apps that keep express-session
// and only swap connect-redis out. express-session owns these sessions
// (their IDs, cookies and expiry), so this store keeps its rules rather
// than ours, costs what connect-redis costs, and fixes what it gets wrong.
//
// Layout: one string per session at `prefix + sid`, `JSON.stringify(sess)`
// (the cookie included), which is exactly what connect-redis writes with
// its default serializer. So the two read each other's sessions: switching
// from connect-redis to this store (same prefix) logs nobody out, and
// switching back does not either. Values are JSON only (no `serializer`:
// a format that can run code when read back is not accepted).
//
// Plain commands, one key each (Cluster-safe), no Lua. Through
// express-session a read-only request is GET then PEXPIREAT (2 commands,
// as connect-redis's GET then EXPIRE), a write is GET then SET (as
// connect-redis), a new session one SET.
//
// - Expiry to the millisecond: `SET … PXAT` and `PEXPIREAT` at the session's
//   `cookie.expires`, not a TTL rounded up to whole seconds. Needs Redis 6.2
//   or later (PXAT).
// - `touch` is PEXPIREAT alone: it never rewrites data (a parallel request's
//   save is not undone) and never recreates a session deleted meanwhile
//   (PEXPIREAT on a missing key does nothing). It moves Redis's deadline,
//   which is what is enforced, to the millisecond; the `cookie.expires`
//   inside the stored JSON stays the one of the last save. Nothing reads
//   that stale value as a deadline: `get` leaves expiry to Redis, and
//   express-session re-stamps `cookie.expires` (now + maxAge) at the end of
//   every request before it saves or touches. Only `all()` shows it as is.
// - Writes are atomic (one SET replaces the whole record). A session saved
//   with an expiry already past is deleted, not kept: decided here (DEL
//   instead of SET), because Redis refuses `PXAT` values <= 0 outright; for
//   a deadline Redis's own clock sees as past, SET … PXAT deletes the key
//   itself (checked on 7.0).
// - Records written by earlier versions of this store are hashes (fields
//   `sess`, `cookie`): GET answers WRONGTYPE for those, and only then the
//   store reads them with HGETALL (one extra round, for legacy records
//   only). The next save replaces the hash with the string form.
// - Redis failures are SessionErrors with `code` and `status` (503), and
//   the client is expected to fail fast (see the README).

import { Store } from 'express-session';
import { executorFor } from './executors.js';
import { sessionError } from './handle.js';

const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();
const DAY_SECONDS = 86400;

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
    // A round of text commands: straight to the client (node-redis and
    // ioredis take strings); a caller's executor takes bytes, as the core's.
    if (options.executor) {
      const execute = options.executor;
      this.execute = (commands) => execute(commands.map((argv) => argv.map((a) => utf8Encoder.encode(a))));
    } else {
      this.execute = executorFor(options.client, { ...options, text: true });
    }
    this.prefix = options.prefix ?? 'sess:';
    if (typeof this.prefix !== 'string' || /[*?[\]\\]/.test(this.prefix)) {
      throw new TypeError('SessionLogicStore: `prefix` must be a string without glob characters (* ? [ ] \\)');
    }
    this.ttl = options.ttl ?? DAY_SECONDS;
    this.disableTouch = Boolean(options.disableTouch);
    this.scanCount = options.scanCount ?? 100;
  }

  /** The session saved under `sid`, or null (absent, or past the deadline Redis enforces). */
  get(sid, cb) {
    return settle(() => this.#read(this.#key(sid)), cb);
  }

  /** Replace the session under `sid`; it expires at `sess.cookie.expires` to the millisecond. */
  set(sid, sess, cb) {
    return settle(async () => {
      const key = this.#key(sid);
      const json = encode(sess);
      const at = this.#expiry(sess);
      // PXAT <= 0 is an error reply, not a delete; and a session that is
      // already over must not stay readable until some later deadline.
      const command = at <= Date.now() ? ['DEL', key] : ['SET', key, json, 'PXAT', String(at)];
      await this.#round([command]);
    }, cb);
  }

  /** Move the deadline of an existing session to `sess.cookie.expires`; data untouched. */
  touch(sid, sess, cb) {
    return settle(async () => {
      if (this.disableTouch) return;
      await this.#round([['PEXPIREAT', this.#key(sid), String(this.#expiry(sess))]]);
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

  /** Every live session, each with its `id` (`cookie.expires` as of its last save). */
  all(cb) {
    return settle(async () => {
      const keys = await this.#scan();
      const out = [];
      for (let i = 0; i < keys.length; i += this.scanCount) {
        const batch = keys.slice(i, i + this.scanCount);
        const replies = await this.#round(batch.map((k) => ['GET', k]), isWrongType);
        const sessions = replies.map((reply) => (isWrongType(reply) ? undefined : fromString(reply)));
        // Legacy hashes of this batch: one more round, for them only.
        const legacy = batch.filter((_, j) => sessions[j] === undefined);
        if (legacy.length > 0) {
          const hashes = await this.#round(legacy.map((k) => ['HGETALL', k]), isWrongType);
          let h = 0;
          for (let j = 0; j < batch.length; j++) {
            if (sessions[j] !== undefined) continue;
            const reply = hashes[h++];
            // Upgraded to a string between the two rounds: read it afresh.
            sessions[j] = isWrongType(reply) ? await this.#read(batch[j]) : fromHash(reply);
          }
        }
        sessions.forEach((sess, j) => {
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
        // One UNLINK per key, pipelined: keys of one batch may live in
        // different Cluster slots, where a multi-key UNLINK is refused.
        await this.#round(keys.slice(i, i + this.scanCount).map((k) => ['UNLINK', k]));
      }
    }, cb);
  }

  #key(sid) {
    if (typeof sid !== 'string' || sid.length === 0 || sid.length > 256) {
      throw sessionError('invalid_input', 400, 'SessionLogicStore: a session ID must be a non-empty string of at most 256 characters');
    }
    return this.prefix + sid;
  }

  /** The deadline in ms since the epoch: `cookie.expires`, else now + `ttl`. */
  #expiry(sess) {
    const expires = sess?.cookie?.expires;
    if (expires) {
      const at = new Date(expires).getTime();
      if (Number.isFinite(at)) return at;
    }
    const ttl = typeof this.ttl === 'function' ? this.ttl(sess) : this.ttl;
    const at = Date.now() + Math.round(Number(ttl) * 1000);
    if (!Number.isSafeInteger(at)) {
      throw sessionError('invalid_input', 400, `SessionLogicStore: \`ttl\` must give a number of seconds, got ${ttl}`);
    }
    return at;
  }

  /**
   * One session: GET, and for a record an earlier version wrote as a hash
   * (GET answers WRONGTYPE) HGETALL. A hash upgraded to a string between
   * the two reads is read again.
   */
  async #read(key) {
    let reply;
    for (let attempt = 0; attempt < 2; attempt++) {
      [reply] = await this.#round([['GET', key]], isWrongType);
      if (!isWrongType(reply)) return fromString(reply);
      [reply] = await this.#round([['HGETALL', key]], isWrongType);
      if (!isWrongType(reply)) return fromHash(reply);
    }
    throw refused(reply); // neither a string nor a hash: not a session
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

  /**
   * One round (one pipeline); a Redis error reply becomes a typed error,
   * except those `pass` accepts, which are returned as replies.
   */
  async #round(commands, pass = () => false) {
    let replies;
    try {
      replies = await this.execute(commands);
    } catch (e) {
      const timeout = e?.kind === 'timeout';
      const err = sessionError(timeout ? 'backend_timeout' : 'backend_unavailable', 503, `Redis ${timeout ? 'timed out' : 'is unavailable'}: ${e?.message ?? e}`);
      err.cause = e;
      throw err;
    }
    for (const r of replies) {
      if (isError(r) && !pass(r)) throw refused(r);
    }
    return replies;
  }
}

export default SessionLogicStore;

function isError(r) {
  return r instanceof Error || (r !== null && typeof r === 'object' && 'error' in r && !(r instanceof Uint8Array) && !Array.isArray(r));
}

function errorText(r) {
  return String(r.message ?? r.error);
}

function isWrongType(r) {
  return isError(r) && /^WRONGTYPE/.test(errorText(r));
}

function refused(r) {
  const message = errorText(r);
  return sessionError(/^NOPERM/.test(message) ? 'backend_noperm' : 'backend_error', 503, `Redis refused a command: ${message}`);
}

/** A bulk reply as text: node-redis answers strings, ioredis's callBuffer Buffers. */
function text(v) {
  return typeof v === 'string' ? v : utf8.decode(v);
}

function encode(sess) {
  if (!sess || typeof sess !== 'object' || !sess.cookie) {
    throw sessionError('invalid_input', 400, 'SessionLogicStore: express-session passes a session object with a `cookie`');
  }
  try {
    return JSON.stringify(sess);
  } catch (e) {
    throw sessionError('invalid_input', 400, `SessionLogicStore: the session cannot be stored as JSON: ${e.message}`);
  }
}

function parse(json, what) {
  try {
    return JSON.parse(json);
  } catch (e) {
    throw sessionError('decode', 500, `SessionLogicStore: a stored session is not valid JSON (${what}): ${e.message}`);
  }
}

/** What express-session can inflate: an object with a cookie object. */
function checked(sess) {
  if (sess === null || typeof sess !== 'object' || Array.isArray(sess) || sess.cookie === null || typeof sess.cookie !== 'object') {
    throw sessionError('decode', 500, 'SessionLogicStore: a stored value is not an express-session session (no `cookie` object; written by something else?)');
  }
  return sess;
}

/** A GET reply (this store's or connect-redis's JSON) as a session; null when absent. */
function fromString(reply) {
  if (reply === null) return null;
  return checked(parse(text(reply), 'string'));
}

/** An HGETALL reply of a legacy record (fields `sess`, `cookie`); null when absent. */
function fromHash(reply) {
  if (!Array.isArray(reply) || reply.length === 0) return null;
  const fields = {};
  for (let i = 0; i + 1 < reply.length; i += 2) fields[text(reply[i])] = text(reply[i + 1]);
  if (fields.sess === undefined || fields.cookie === undefined) {
    throw sessionError('decode', 500, 'SessionLogicStore: a stored session lacks its `sess` or `cookie` field (written by something else?)');
  }
  const sess = parse(fields.sess, 'hash field `sess`');
  if (sess !== null && typeof sess === 'object') sess.cookie = parse(fields.cookie, 'hash field `cookie`');
  return checked(sess);
}

function settle(fn, cb) {
  // fn's synchronous throw becomes a rejection, without a microtask hop first.
  const promise = new Promise((resolve) => resolve(fn()));
  if (typeof cb !== 'function') return promise;
  promise.then(
    (v) => queueMicrotask(() => cb(null, v ?? null)),
    (e) => queueMicrotask(() => cb(e)),
  );
  return undefined;
}
