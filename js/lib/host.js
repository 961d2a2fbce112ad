// The JS host: a loop of a few lines around the wasm core, plus the two
// host inputs (clock and entropy). Every rule lives in the core; this file
// only moves rounds to an executor and replies back (DESIGN.md, "The sans-IO
// contract"). The Express middleware and the express-session Store sit on
// top of `Sessions` later; nothing here knows about HTTP.

import { Engine, Memory, Session } from '../pkg/session_logic.js';
import { isSessionError } from './errors.js';
import { packReplies, unpackRound } from './wire.js';

export { Engine, Memory, Session, isSessionError, packReplies, unpackRound };

/**
 * A transport failure an executor could not turn into replies (timeout,
 * connection refused or lost). `runOp` hands it to the core, which turns it
 * into a typed `backend_timeout` / `backend_unavailable` error (503).
 */
export class TransportFailure extends Error {
  constructor(kind, message, options) {
    super(message, options);
    this.name = 'TransportFailure';
    this.kind = kind;
  }
}


/** 32 bytes from the platform CSPRNG (Node 20+, browsers, edge runtimes). */
export function entropy() {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}

/**
 * Build an engine from a config object (or JSON text). When `log_key` is
 * absent a random one is supplied, as DESIGN.md asks of every host, so
 * `sidHash` values cannot be reversed by someone who guesses IDs.
 * An invalid config throws a SessionError with code `config`.
 */
export function createEngine(config = {}) {
  let cfg = typeof config === 'string' ? JSON.parse(config) : { ...config };
  if (cfg.log_key == null) {
    cfg.log_key = Array.from(entropy(), (b) => b.toString(16).padStart(2, '0')).join('');
  }
  return new Engine(cfg);
}

/**
 * Drive one operation to its outcome: send each round through `execute`
 * (one pipeline per round), feed the replies back, repeat. A round leaves
 * the module and its replies enter it as one packed buffer each (see
 * wire.js); executors still see argv arrays (of Buffers, or of strings for
 * an executor marked `text = true`) and answer plain replies. An
 * executor that throws reports a transport failure; the core decides what
 * it means. Resolves with the outcome, rejects with a SessionError. Frees
 * the op.
 */
export async function runOp(op, execute) {
  try {
    let step = op.step();
    while (typeof step !== 'string') {
      let replies;
      try {
        replies = await execute(unpackRound(step, 1, execute.text === true));
      } catch (e) {
        op.fail(failureKind(e), String(e?.message ?? e));
        step = op.step();
        continue;
      }
      step = op.step(packReplies(replies));
    }
    // Done: the outcome as JSON text, its session handed over apart.
    const outcome = JSON.parse(step);
    if (outcome.session === true) outcome.session = op.takeSession();
    return outcome;
  } finally {
    op.free();
  }
}

function failureKind(e) {
  if (e instanceof TransportFailure) return e.kind;
  const text = `${e?.name ?? ''} ${e?.message ?? ''}`;
  if (/timeout|timed out/i.test(text)) return 'timeout';
  return 'unavailable';
}

/**
 * The operations with the host inputs filled in: `now` from `clock`, IDs
 * from `crypto.getRandomValues`. Each method is one `runOp`.
 */
export class Sessions {
  constructor({ engine, config, executor, clock = Date.now, random = entropy } = {}) {
    if (typeof executor !== 'function') throw new TypeError('Sessions needs an executor (round => replies)');
    this.engine = engine ?? createEngine(config);
    this.executor = executor;
    this.clock = clock;
    this.random = random;
  }

  /** Load from a Cookie header; `client` is the binding fingerprint. */
  load(cookieHeader, { client } = {}) {
    return runOp(this.engine.load(cookieHeader ?? null, client ?? null, this.clock()), this.executor);
  }

  loadId(id, { client } = {}) {
    return runOp(this.engine.loadId(id, client ?? null, this.clock()), this.executor);
  }

  save(session) {
    return runOp(this.engine.save(session, this.random(), this.clock()), this.executor);
  }

  regenerate(session) {
    return runOp(this.engine.regenerate(session, this.random(), this.clock()), this.executor);
  }

  destroy(session) {
    return runOp(this.engine.destroy(session, this.clock()), this.executor);
  }

  touch(session) {
    return runOp(this.engine.touch(session, this.clock()), this.executor);
  }

  /** Logout everywhere; `keep` survives (e.g. after a password change). */
  destroyAllForUser(user, { keep } = {}) {
    const now = this.clock();
    const op = keep ? this.engine.destroyAllForUserExcept(user, keep, now) : this.engine.destroyAllForUser(user, now);
    return runOp(op, this.executor);
  }

  listUserSessions(user, { current } = {}) {
    const now = this.clock();
    const op = current ? this.engine.listUserSessionsFrom(user, current, now) : this.engine.listUserSessions(user, now);
    return runOp(op, this.executor);
  }

  destroyUserSession(user, handle) {
    return runOp(this.engine.destroyUserSession(user, handle, this.clock()), this.executor);
  }
}
