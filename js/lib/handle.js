// One request's session, shared by the framework glue (Express middleware,
// fetch/Hono helper). It owns what a request may still do to its session
// (regenerate and touch are deferred to one write at the end; destroy and
// the user operations run at once) and the cookie that write produced.
// Every decision is the core's: this file only picks which operation to run
// and keeps the session the core returned.

import { isSessionError, sessionError } from './errors.js';

export { sessionError };

export class Handle {
  /** `sessions`: a `Sessions`; `core`: the session the load returned. */
  constructor(sessions, core) {
    this.sessions = sessions;
    this.core = core;
    /** The last Set-Cookie the core rendered for this request, if any. */
    this.cookie = null;
    this.regenerateDue = false;
    this.touchDue = false;
    this.destroyed = false;
    this.closed = false;
  }

  /** Throws when the request is over (the core session was freed). */
  check() {
    if (this.closed) throw sessionError('usage', 500, 'the session was used after its response was sent');
  }

  /**
   * Whether `commit` has anything to do; when not, a host may skip it (and
   * the wait for it) altogether.
   */
  commitDue() {
    this.check();
    if (this.destroyed) return false;
    const { core } = this;
    if (this.regenerateDue || core.needsSave) return true;
    if (this.touchDue && !core.isDirty && core.status === 'live') return true;
    this.touchDue = false;
    return false;
  }

  /**
   * Write what the request changed, in one operation: regenerate when
   * asked (new ID, same data), else save (the core writes only changed
   * fields, or nothing), or touch when asked and nothing changed.
   */
  async commit() {
    this.check();
    if (this.destroyed) return;
    const { sessions, core } = this;
    let outcome;
    if (this.regenerateDue) {
      outcome = await sessions.regenerate(core);
      this.regenerateDue = false;
    } else if (this.touchDue && !core.isDirty && core.status === 'live') {
      outcome = await sessions.touch(core);
    } else if (!core.needsSave) {
      // Read only: the save would write nothing and set no cookie.
      this.touchDue = false;
      return;
    } else {
      outcome = await sessions.save(core);
    }
    this.touchDue = false;
    this.adopt(outcome);
  }

  /** Keep what an operation returned: its session and its cookie. */
  adopt(outcome) {
    if (outcome.cookie) this.cookie = outcome.cookie;
    if (outcome.session && outcome.session !== this.core) {
      this.core.free();
      this.core = outcome.session;
    }
  }

  /** Delete the session now; the response gets the removal cookie. */
  async destroy() {
    this.check();
    if (this.destroyed) return;
    const outcome = await this.sessions.destroy(this.core);
    this.destroyed = true;
    if (outcome.cookie) this.cookie = outcome.cookie;
  }

  /** Re-read the stored session; unsaved changes are dropped. */
  async reload() {
    this.check();
    const id = this.core.id;
    if (!id) throw sessionError('gone', 404, 'the session cannot be reloaded: it has not been saved');
    const outcome = await this.sessions.loadId(id);
    if (outcome.kind !== 'loaded') {
      outcome.session?.free();
      throw sessionError('gone', 404, `the session cannot be reloaded: it is ${outcome.kind === 'none' ? 'gone' : outcome.kind}`);
    }
    this.adopt(outcome);
  }

  user() {
    this.check();
    const user = this.core.user;
    if (user == null) throw sessionError('usage', 400, 'this session has no bound user: call bindUser(id) first');
    return user;
  }

  /**
   * Sign the user out on every device (2 rounds whatever their number);
   * with `keepCurrent` this session survives (after a password change).
   */
  async logoutEverywhere({ keepCurrent = false } = {}) {
    const user = this.user();
    const keep = keepCurrent && this.core.status === 'live' ? this.core : undefined;
    // Unsaved changes (a user bound in this request) may not be in the
    // index yet: then only a destroy is sure to remove this session.
    const storedAsIs = !this.core.isDirty;
    const outcome = await this.sessions.destroyAllForUser(user, { keep });
    if (!keep) {
      if (storedAsIs) {
        this.destroyed = true;
        this.cookie = this.sessions.engine.removalCookie();
      } else {
        await this.destroy();
      }
    }
    return outcome.count;
  }

  async listDevices() {
    const user = this.user();
    const outcome = await this.sessions.listUserSessions(user, { current: this.core });
    return outcome.devices;
  }

  /** Sign out one device by the `handle` `listDevices` gave; true if it existed. */
  async signOutDevice(handle) {
    const user = this.user();
    const outcome = await this.sessions.destroyUserSession(user, handle);
    return outcome.count > 0;
  }

  /** The request is over: free the core session. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.core.free();
  }
}

/** Is `e` an error the response should show as `{ code, message }`? */
export function publicError(e) {
  return isSessionError(e) ? { code: e.code, message: e.message } : { code: 'internal', message: 'internal error' };
}
