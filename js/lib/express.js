// Express/Connect middleware: `req.session` as express-session users know
// it (data as properties, `id`, `cookie`, `regenerate`, `destroy`, `save`,
// `reload`, `touch`, callbacks or promises), over the core's rules.
//
// What it does for each request: one load when the request carries our
// cookie (none otherwise), then, just before the response's headers go
// out, one write of the keys that changed (none when nothing did), the
// Set-Cookie the core rendered, `Vary: Cookie`, and `Cache-Control:
// no-store` whenever a cookie is set. Redis failures reach Express's error
// handler as SessionErrors (`status` 503): never an empty session instead.
//
// Options keep express-session's names where the meaning is the same; the
// ones whose meaning we cannot keep are refused at start-up with the reason
// (see `refuse` below and the README).

import { IncomingMessage, ServerResponse } from 'node:http';
import { Engine, Sessions, createEngine, executorFor } from './node.js';
import { Handle, sessionError } from './handle.js';

const PREFIX = 'session-logic/express';

/** The part of express-session's options whose meaning we keep, mapped onto the core's config. */
export function coreConfig(options = {}) {
  refuse(options);
  const config = { ...(options.config ?? {}) };
  const cookie = { ...(config.cookie ?? {}) };
  const o = options.cookie ?? {};
  if (options.name !== undefined) cookie.name = options.name;
  if (o.path !== undefined) cookie.path = o.path;
  if (o.domain !== undefined) cookie.domain = o.domain;
  if (o.httpOnly !== undefined) cookie.http_only = Boolean(o.httpOnly);
  if (o.secure !== undefined) cookie.secure = Boolean(o.secure);
  if (o.sameSite !== undefined) cookie.same_site = sameSite(o.sameSite);
  if (o.maxAge != null) {
    if (!Number.isSafeInteger(o.maxAge) || o.maxAge <= 0) {
      throw new TypeError(`${PREFIX}: cookie.maxAge must be a positive whole number of milliseconds, got ${o.maxAge}`);
    }
    // express-session: the session ends maxAge after the last request
    // that touched it. Ours: the idle timeout, which slides the same way.
    config.idle_timeout_ms = o.maxAge;
    const defaults = new Engine({});
    const d = defaults.config;
    defaults.free();
    config.absolute_lifetime_ms ??= Math.max(d.absolute_lifetime_ms, o.maxAge);
    // A read slides the deadline at most once per touch interval; keep it a
    // small part of a short maxAge so active sessions never lapse.
    config.touch_interval_ms ??= Math.max(1, Math.min(d.touch_interval_ms, Math.floor(o.maxAge / 4)));
  } else if (cookie.persistent === undefined && options.config?.cookie?.persistent === undefined) {
    // express-session without maxAge: a browser-session cookie.
    cookie.persistent = false;
  }
  config.cookie = cookie;
  return config;
}

function sameSite(v) {
  if (v === true || v === 'strict' || v === 'Strict') return 'strict';
  if (v === 'lax' || v === 'Lax') return 'lax';
  if (v === 'none' || v === 'None') return 'none';
  throw new TypeError(`${PREFIX}: cookie.sameSite must be 'lax', 'strict', true or 'none' (got ${JSON.stringify(v)}); a cookie without SameSite is not offered`);
}

const REFUSED = {
  genid: 'session IDs are 32 bytes from crypto.getRandomValues, minted by the core so every host issues the same kind; a custom generator could weaken them',
  store: "this middleware is the store: pass { client } (node-redis or ioredis) or { executor }; to keep express-session, use SessionLogicStore from 'session-logic/store' instead",
};

function refuse(options) {
  for (const [name, why] of Object.entries(REFUSED)) {
    if (options[name] !== undefined) throw new TypeError(`${PREFIX}: option \`${name}\` is not supported: ${why}`);
  }
  if (options.resave === true) {
    throw new TypeError(`${PREFIX}: \`resave: true\` is not supported: a save writes only the keys this request changed, so parallel requests keep each other's changes; the idle deadline slides on reads anyway. Drop the option or set it to false`);
  }
  if (options.saveUninitialized === true) {
    throw new TypeError(`${PREFIX}: \`saveUninitialized: true\` is not supported: nothing is stored and no cookie is set for a visitor until the session holds data (no empty sessions for bots). Drop the option or set it to false`);
  }
  if (options.unset !== undefined && options.unset !== 'keep' && options.unset !== 'destroy') {
    throw new TypeError(`${PREFIX}: \`unset\` must be 'keep' or 'destroy', got ${JSON.stringify(options.unset)}`);
  }
  const cookie = options.cookie ?? {};
  if (cookie.expires !== undefined) {
    throw new TypeError(`${PREFIX}: cookie.expires is not supported: one fixed date for every session is not a lifetime; use cookie.maxAge (milliseconds)`);
  }
  if (cookie.secure === 'auto') {
    throw new TypeError(`${PREFIX}: cookie.secure 'auto' is not supported: the core renders one cookie shape per deployment; use true behind HTTPS (the default) or false for plain-HTTP development`);
  }
  for (const name of ['partitioned', 'priority', 'signed', 'encode']) {
    if (cookie[name] !== undefined) throw new TypeError(`${PREFIX}: cookie.${name} is not supported by the core's cookie renderer`);
  }
}

/**
 * The middleware. Options: `client` (node-redis or ioredis, configured to
 * fail fast) or `executor` or `sessions`; express-session's `name`,
 * `cookie`, `rolling`, `saveUninitialized: false`, `resave: false`, `unset`,
 * `proxy`, `secret` (accepted, unused); `config` (the core's config);
 * `clientBinding(req)` (a fingerprint string, e.g. the User-Agent).
 */
export function session(options = {}) {
  const sessions = options.sessions ?? new Sessions({
    engine: options.engine ?? createEngine(coreConfig(options)),
    executor: options.executor ?? executorFor(options.client),
  });
  if (options.sessions) refuse(options);
  const unset = options.unset ?? 'keep';
  const binding = options.clientBinding;
  if (binding !== undefined && typeof binding !== 'function') {
    throw new TypeError(`${PREFIX}: clientBinding must be a function (req) => string`);
  }

  return function sessionLogic(req, res, next) {
    if (req.session !== undefined) return next();
    const client = binding ? binding(req) : undefined;
    sessions.load(req.headers.cookie, { client: client ?? undefined }).then(
      (outcome) => {
        const handle = new Handle(sessions, outcome.session);
        const view = new RequestSession(handle, sessions.engine, req);
        req.session = view;
        defineSessionID(req);
        deferHeaders(res, new Hold(req, res, handle, view, unset, next));
        next();
      },
      (err) => {
        vary(res);
        next(err);
      },
    );
  };
}

/** Requests whose prototype carries the `sessionID` getter. */
const SESSION_ID_ON = new WeakSet();

/**
 * `req.sessionID`, read live from `req.session`. On Express requests the
 * getter goes on the app's request prototype once (as the response hooks
 * do), so requests keep one shape; elsewhere it is an own accessor.
 */
function defineSessionID(req) {
  const proto = Object.getPrototypeOf(req);
  if (proto !== IncomingMessage.prototype && !Object.hasOwn(req, 'sessionID')) {
    if (!SESSION_ID_ON.has(proto)) {
      Object.defineProperty(proto, 'sessionID', {
        configurable: true,
        enumerable: true,
        get() {
          return this.session?.id;
        },
      });
      SESSION_ID_ON.add(proto);
    }
    return;
  }
  Object.defineProperty(req, 'sessionID', { configurable: true, enumerable: true, get: () => req.session?.id });
}

/** express-session exports the middleware as its default; so do we. */
export default session;

/**
 * Before the headers go out: write, then decorate the response. Returns
 * undefined when there was nothing to write (a read-only request: the
 * response goes on at once, unheld), else a promise of the write.
 */
function finish(req, res, handle, view, unset) {
  let pending;
  try {
    if (!handle.destroyed) {
      if (req.session === view) {
        view[SYNC]();
        if (handle.commitDue()) pending = handle.commit();
      } else if (unset === 'destroy') {
        pending = handle.destroy();
      }
    }
  } catch (e) {
    handle.close();
    throw e;
  }
  if (pending === undefined) {
    decorate(res, handle);
    handle.close();
    return undefined;
  }
  return pending.then(() => decorate(res, handle)).finally(() => handle.close());
}

function decorate(res, handle) {
  vary(res);
  if (handle.cookie) {
    res.appendHeader('Set-Cookie', handle.cookie);
    res.setHeader('Cache-Control', 'no-store');
  }
}

/** Add `Cookie` to the response's `Vary` unless it is there (or `*`). */
function vary(res) {
  if (res.headersSent) return;
  const current = res.getHeader('Vary');
  if (current === undefined) return void res.setHeader('Vary', 'Cookie');
  const text = Array.isArray(current) ? current.join(', ') : String(current);
  if (text.split(',').some((v) => ['cookie', '*'].includes(v.trim().toLowerCase()))) return;
  res.setHeader('Vary', text ? `${text}, Cookie` : 'Cookie');
}

/**
 * Hold the response at its first `writeHead`/`write`/`end`/`flushHeaders`
 * until `before()` settles, then replay the held calls in order. When
 * `before()` fails, the held calls are dropped and `failed(err)` answers
 * instead (Express's error handler). A stream piping into the response
 * sees `write` return true while held: the hold lasts one Redis round.
 *
 * On this hot path the hooks live on the app's response prototype (Express
 * gives every response `app.response` as its prototype), installed once:
 * a response only gets a small state object, instead of four closures and
 * own methods that change its shape. A response whose methods are already
 * wrapped by an earlier middleware, or that is not an Express response,
 * gets its own wrappers as before.
 */
const HOOKED = ['writeHead', 'write', 'end', 'flushHeaders'];
const HOLD = Symbol('session-logic.hold');
/** Prototype → the methods its hooks delegate to. */
const BASES = new WeakMap();

function hookPrototype(proto) {
  let bases = BASES.get(proto);
  if (bases) return bases;
  bases = {};
  for (const name of HOOKED) {
    const base = proto[name];
    bases[name] = base;
    Object.defineProperty(proto, name, {
      configurable: true,
      writable: true,
      value: function heldByPrototype(...args) {
        const h = this[HOLD];
        if (h === undefined || h.state === 'done') return base.apply(this, args);
        return hold(this, h, name, args);
      },
    });
  }
  BASES.set(proto, bases);
  return bases;
}

function hold(res, h, name, args) {
  if (h.state === 'open') {
    // A failure always answers asynchronously (through Express's error
    // handler, after the app's call returned), as a failed write does.
    let pending;
    try {
      pending = h.before();
    } catch (e) {
      pending = Promise.reject(e);
    }
    if (pending === undefined) {
      // Nothing to write: no hold, no replay.
      h.restore(res);
      h.state = 'done';
      return h.original[name].apply(res, args);
    }
    h.state = 'holding';
    pending.then(
      () => {
        h.restore(res);
        h.state = 'done';
        const held = h.held;
        h.held = null;
        for (let i = 0; i < held.length; i += 2) h.original[held[i]].apply(res, held[i + 1]);
      },
      (err) => {
        h.restore(res);
        h.state = 'done';
        h.held = null;
        vary(res);
        h.failed(err);
      },
    );
  }
  (h.held ??= []).push(name, args);
  return name === 'write' ? true : res;
}

/**
 * One response's hold: what `hold` needs, as one object per request (no
 * closures): `before()` runs the end-of-request write, `failed(err)` hands
 * its failure to Express's error handler.
 */
class Hold {
  constructor(req, res, handle, view, unset, next) {
    this.state = 'open';
    /** Held calls as (name, args) pairs; allocated on the first one. */
    this.held = null;
    this.req = req;
    this.res = res;
    this.handle = handle;
    this.view = view;
    this.unset = unset;
    this.next = next;
    /** The methods the hooks delegate to (set by deferHeaders). */
    this.original = null;
    /** Own wrappers to remove when done; null when the prototype hooks serve. */
    this.own = null;
  }

  before() {
    return finish(this.req, this.res, this.handle, this.view, this.unset);
  }

  failed(err) {
    this.handle.close();
    this.next(err);
  }

  restore(res) {
    if (this.own === null) return;
    for (const n of HOOKED) res[n] = this.own[n];
  }
}

function deferHeaders(res, h) {
  const proto = Object.getPrototypeOf(res);
  const shared = proto !== ServerResponse.prototype && HOOKED.every((n) => !Object.hasOwn(res, n));
  if (shared) {
    h.original = hookPrototype(proto);
    res[HOLD] = h;
    return;
  }
  const original = { writeHead: res.writeHead, write: res.write, end: res.end, flushHeaders: res.flushHeaders };
  h.original = original;
  h.own = original;
  for (const name of HOOKED) {
    res[name] = function held_(...args) {
      if (h.state === 'done') return original[name].apply(res, args);
      return hold(res, h, name, args);
    };
  }
}

const SYNC = Symbol('sync');
const LOAD = Symbol('load');
/**
 * The per-request state of a `req.session`, under a symbol key and not
 * enumerable: `Object.keys`, `JSON.stringify`, spreads and `for…in` see the
 * data only. (A WeakMap did the same job at the cost of an ephemeron entry
 * per request for the GC to trace.)
 */
const STATE = Symbol('session-logic.state');

function settle(promise, cb) {
  if (typeof cb !== 'function') return promise;
  promise.then(
    (v) => queueMicrotask(() => cb(null, v)),
    (e) => queueMicrotask(() => cb(e)),
  );
  return undefined;
}

/**
 * `req.session`: the data are its own enumerable properties; everything
 * else lives on the prototype (so `Object.keys(req.session)` is the data).
 */
export class RequestSession {
  constructor(handle, engine, req) {
    // One state object per request (the handle, and the data as last
    // loaded or saved, as JSON text); the data stay the only own properties.
    Object.defineProperty(this, STATE, { value: { handle, engine, req, snapshot: '{}' } });
    this[LOAD]();
  }

  /** The session ID once stored (`undefined` for a new session until it is saved). The bearer secret: never log it. */
  get id() {
    return this[STATE].handle.core.id ?? undefined;
  }

  /** The cookie's attributes, read-only: lifetimes are server-side config. */
  get cookie() {
    const { handle, engine } = this[STATE];
    return new SessionCookie(engine.config, handle.core.deadline ?? undefined);
  }

  /**
   * A new ID at the end of the request (or at `save`); the old ID never
   * yields data again. As in express-session the session starts empty (no
   * data, no bound user); `regenerate({ keepData: true }, cb)` keeps both
   * (a cart that survives sign-in).
   */
  regenerate(options, cb) {
    if (typeof options === 'function') [options, cb] = [undefined, options];
    const keep = options?.keepData === true;
    return settle(
      run(this, (h) => {
        if (!keep) {
          for (const key of Object.keys(this)) delete this[key];
          h.core.clearUser();
        }
        h.regenerateDue = true;
      }),
      cb,
    );
  }

  /** Delete the session now; `req.session` becomes undefined. */
  destroy(cb) {
    const { handle, req } = this[STATE];
    return settle(
      handle.destroy().then(() => {
        if (req && req.session === this) req.session = undefined;
      }),
      cb,
    );
  }

  /** Write the changes now (the end of the request writes only later changes). */
  save(cb) {
    return settle(
      run(this, async (h) => {
        this[SYNC]();
        await h.commit();
      }),
      cb,
    );
  }

  /** Replace the data with the stored session's, dropping unsaved changes. */
  reload(cb) {
    return settle(
      run(this, async (h) => {
        await h.reload();
        this[LOAD]();
      }),
      cb,
    );
  }

  /** Slide the idle deadline even if nothing changes (reads already do, throttled). */
  touch() {
    this[STATE].handle.touchDue = true;
    return this;
  }

  resetMaxAge() {
    return this.touch();
  }

  /** Bind the signed-in user (call `regenerate` in the same request). */
  bindUser(user) {
    const { handle } = this[STATE];
    handle.check();
    handle.core.setUser(String(user), Date.now());
    return this;
  }

  unbindUser() {
    const { handle } = this[STATE];
    handle.check();
    handle.core.clearUser();
    return this;
  }

  /** The bound user id, or `undefined`. */
  boundUser() {
    return this[STATE].handle.core.user ?? undefined;
  }

  /** When the bound user signed in (unix ms), or `undefined`. */
  authAt() {
    return this[STATE].handle.core.authAt ?? undefined;
  }

  /** When the session ends unless used again (unix ms), or `undefined` before it is stored. */
  expiresAt() {
    const { handle, engine } = this[STATE];
    return engine.expiresAt(handle.core) ?? undefined;
  }

  /** A keyed hash of the ID: the form that may be logged. */
  idHash() {
    const { handle, engine } = this[STATE];
    return engine.sidHash(handle.core) ?? undefined;
  }

  /** Sign the bound user out everywhere (this session too unless `keepCurrent`); resolves with the count. */
  logoutEverywhere(options, cb) {
    if (typeof options === 'function') [options, cb] = [undefined, options];
    const { req } = this[STATE];
    return settle(
      run(this, async (h) => {
        const count = await h.logoutEverywhere(options);
        if (h.destroyed && req && req.session === this) req.session = undefined;
        return count;
      }),
      cb,
    );
  }

  /** The bound user's live sessions (`current` marks this one). */
  listDevices(cb) {
    return settle(
      run(this, (h) => h.listDevices()),
      cb,
    );
  }

  /** Sign out one of the user's devices by its `handle`; resolves true if it existed. */
  signOutDevice(handle, cb) {
    return settle(
      run(this, (h) => h.signOutDevice(handle)),
      cb,
    );
  }

  /** Copy the core's data onto own properties and remember it as saved. */
  [LOAD]() {
    const state = this[STATE];
    for (const key of Object.keys(this)) delete this[key];
    // One JSON text for all the data: one call out of the module, one parse.
    const json = state.handle.core.dataJson();
    if (json !== '{}') {
      const data = JSON.parse(json);
      if (!json.includes('"__proto__"')) Object.assign(this, data);
      // A key named __proto__ is data, not this object's prototype.
      else for (const key of Object.keys(data)) Object.defineProperty(this, key, { value: data[key], writable: true, enumerable: true, configurable: true });
    }
    state.snapshot = json;
  }

  /**
   * Tell the core what changed since the last load or save. The common
   * case, nothing, costs one JSON.stringify of the data and a string
   * comparison with the text the data came from. Otherwise keys are
   * compared one by one as JSON text (which also catches changes inside
   * nested objects, and never reports a key whose value only reads
   * differently in Rust's and JS's JSON): changed keys are set, keys gone
   * (or now `undefined`) removed.
   */
  [SYNC]() {
    const state = this[STATE];
    const { handle } = state;
    handle.check();
    const now = JSON.stringify(this);
    if (now === state.snapshot) return;
    const before = JSON.parse(state.snapshot);
    const seen = new Set();
    for (const key of Object.keys(this)) {
      const value = this[key];
      const json = value === undefined ? undefined : JSON.stringify(value);
      if (json === undefined) continue;
      seen.add(key);
      if (!Object.hasOwn(before, key) || JSON.stringify(before[key]) !== json) handle.core.setJson(key, json);
    }
    for (const key of Object.keys(before)) {
      if (!seen.has(key)) handle.core.remove(key);
    }
    state.snapshot = now;
  }
}

function run(view, fn) {
  const { handle } = view[STATE];
  return Promise.resolve().then(() => {
    handle.check();
    return fn(handle);
  });
}

/** `req.session.cookie`: what the Set-Cookie carries, read-only. */
export class SessionCookie {
  #expires;
  #originalMaxAge;

  constructor(config, deadline) {
    const c = config.cookie;
    this.path = c.path;
    this.domain = c.domain ?? undefined;
    this.httpOnly = c.http_only;
    this.secure = c.secure;
    this.sameSite = c.same_site;
    this.#originalMaxAge = c.persistent ? config.absolute_lifetime_ms : null;
    this.#expires = c.persistent && deadline !== undefined ? new Date(deadline) : null;
    Object.freeze(this);
  }

  /** The cookie's lifetime when first set (the absolute lifetime), or null for a browser-session cookie. */
  get originalMaxAge() {
    return this.#originalMaxAge;
  }

  /** When the cookie expires (the session's absolute deadline), or null. */
  get expires() {
    return this.#expires ? new Date(this.#expires) : null;
  }

  set expires(_) {
    lifetimeIsConfig('expires');
  }

  /** Milliseconds until the cookie expires, or null for a browser-session cookie. */
  get maxAge() {
    return this.#expires ? this.#expires.getTime() - Date.now() : this.#originalMaxAge;
  }

  set maxAge(_) {
    lifetimeIsConfig('maxAge');
  }

  toJSON() {
    const { path, domain, httpOnly, secure, sameSite, originalMaxAge, expires } = this;
    return { path, domain, httpOnly, secure, sameSite, originalMaxAge, expires };
  }
}

function lifetimeIsConfig(name) {
  throw sessionError('usage', 500, `${PREFIX}: cookie.${name} cannot change per request: lifetimes are deployment config (option cookie.maxAge, or config idle_timeout_ms / absolute_lifetime_ms)`);
}
