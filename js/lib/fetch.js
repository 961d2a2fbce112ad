// Sessions for web-standard `Request`/`Response` handlers: a plain fetch
// handler (`withSession`) and Hono (`honoSession`). Same contract as the
// Express middleware: one load when the request carries our cookie, one
// write of what changed after the handler, `Vary: Cookie` on every response
// that read the session, `Cache-Control: no-store` with every Set-Cookie,
// and Redis failures as SessionErrors (a JSON 503), never an empty session.
// Runtime-agnostic: import it from the Node entry or, after `init`, from
// the edge entry.

import { Sessions, createEngine, isSessionError } from './host.js';
import { executorFor } from './executors.js';
import { Handle, publicError } from './handle.js';

function sessionsFrom(options) {
  if (options.sessions) return options.sessions;
  return new Sessions({
    engine: options.engine ?? createEngine(options.config ?? {}),
    executor: options.executor ?? executorFor(options.client),
  });
}

/** The session of one request, with explicit `get`/`set`. */
export class FetchSession {
  #handle;
  #engine;

  constructor(handle, engine) {
    this.#handle = handle;
    this.#engine = engine;
  }

  get #core() {
    this.#handle.check();
    return this.#handle.core;
  }

  /** The ID once stored (the bearer secret: never log it; see `idHash`). */
  get id() {
    return this.#core.id ?? undefined;
  }

  /** `'new'`, `'live'` or `'rotated'` (an old ID after a regenerate: no data). */
  get status() {
    return this.#core.status;
  }

  get(key) {
    return this.#core.get(key);
  }

  has(key) {
    return this.#core.has(key);
  }

  /** Store a JSON value (saved after the handler; only changed keys are written). */
  set(key, value) {
    this.#core.set(key, value);
    return this;
  }

  remove(key) {
    return this.#core.remove(key);
  }

  clear() {
    this.#core.clear();
  }

  keys() {
    return this.#core.keys();
  }

  data() {
    return this.#core.data();
  }

  /** New ID, same data, written after the handler (call on sign-in and privilege change). */
  regenerate() {
    this.#handle.check();
    this.#handle.regenerateDue = true;
  }

  /** Slide the idle deadline even if nothing changes. */
  touch() {
    this.#handle.check();
    this.#handle.touchDue = true;
  }

  /** Delete the session now; the response removes the cookie. */
  destroy() {
    return this.#handle.destroy();
  }

  bindUser(user) {
    this.#core.setUser(String(user), Date.now());
  }

  unbindUser() {
    this.#core.clearUser();
  }

  get user() {
    return this.#core.user ?? undefined;
  }

  get authAt() {
    return this.#core.authAt ?? undefined;
  }

  /** When the session ends unless used again (unix ms). */
  get expiresAt() {
    return this.#engine.expiresAt(this.#core) ?? undefined;
  }

  /** A keyed hash of the ID: the form that may be logged. */
  get idHash() {
    return this.#engine.sidHash(this.#core) ?? undefined;
  }

  logoutEverywhere(options) {
    return this.#handle.logoutEverywhere(options);
  }

  listDevices() {
    return this.#handle.listDevices();
  }

  signOutDevice(handle) {
    return this.#handle.signOutDevice(handle);
  }
}

/**
 * Wrap a fetch handler: `withSession((request, session, ...rest) =>
 * Response, { client | executor | sessions, config, clientBinding })`.
 * A SessionError (Redis down, oversized data) becomes a JSON response with
 * its status, unless `onError(error, request)` answers instead.
 */
export function withSession(handler, options = {}) {
  const sessions = sessionsFrom(options);
  const binding = options.clientBinding;
  const onError = options.onError ?? ((e) => errorResponse(e));
  return async (request, ...rest) => {
    let handle;
    try {
      const outcome = await sessions.load(request.headers.get('cookie'), { client: binding?.(request) ?? undefined });
      handle = new Handle(sessions, outcome.session);
    } catch (e) {
      if (!isSessionError(e)) throw e;
      return onError(e, request);
    }
    try {
      const response = await handler(request, new FetchSession(handle, sessions.engine), ...rest);
      try {
        await handle.commit();
      } catch (e) {
        if (!isSessionError(e)) throw e;
        return onError(e, request);
      }
      return decorate(response, handle.cookie);
    } finally {
      handle.close();
    }
  };
}

/**
 * Hono middleware: `app.use(honoSession({ client }))`, then
 * `c.get('session')` in handlers. Load and save failures are thrown as
 * SessionErrors for `app.onError` (`err.status` is the HTTP status).
 */
export function honoSession(options = {}) {
  const sessions = sessionsFrom(options);
  const binding = options.clientBinding;
  const name = options.key ?? 'session';
  return async (c, next) => {
    const outcome = await sessions.load(c.req.header('cookie'), { client: binding?.(c.req.raw) ?? undefined });
    const handle = new Handle(sessions, outcome.session);
    try {
      c.set(name, new FetchSession(handle, sessions.engine));
      await next();
      await handle.commit();
      const decorated = decorate(c.res, handle.cookie);
      if (decorated !== c.res) c.res = decorated;
    } finally {
      handle.close();
    }
  };
}

/** A SessionError as a JSON response with its status. */
export function errorResponse(e) {
  return new Response(JSON.stringify(publicError(e)), {
    status: e?.status ?? 500,
    headers: { 'content-type': 'application/json', vary: 'Cookie', 'cache-control': 'no-store' },
  });
}

/** Add Vary, Set-Cookie and Cache-Control; copies the response when its headers are immutable. */
export function decorate(response, cookie) {
  try {
    apply(response.headers, cookie);
    return response;
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    const copy = new Response(response.body, response);
    apply(copy.headers, cookie);
    return copy;
  }
}

function apply(headers, cookie) {
  const vary = headers.get('vary');
  if (!vary) headers.set('vary', 'Cookie');
  else if (!vary.split(',').some((v) => ['cookie', '*'].includes(v.trim().toLowerCase()))) headers.set('vary', `${vary}, Cookie`);
  if (cookie) {
    headers.append('set-cookie', cookie);
    headers.set('cache-control', 'no-store');
  }
}
