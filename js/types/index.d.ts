// Hand-written declarations for the public API of the `session-logic` npm
// package (Node entry; the edge entry adds `init`/`initSync`, see edge.d.ts).

/** A round: one argv array per command, in the order replies must come back. */
export type Round = Uint8Array[][];

/**
 * One reply in the core's shape. Strings and bytes are bulk replies; an
 * `Error` or `{ error }` is a Redis error reply (data, not a failure).
 */
export type Reply =
  | null
  | undefined
  | number
  | bigint
  | string
  | Uint8Array
  | Reply[]
  | Error
  | { error: string }
  | { simple: string };

/** Sends one round as one pipeline; throws (e.g. TransportFailure) when the round could not complete. */
export type Executor = (round: Round) => Promise<Reply[]>;

/** Errors from the core: a stable code, an HTTP status hint, and the typed detail. */
export interface SessionError extends Error {
  name: 'SessionError';
  code:
    | 'config'
    | 'backend_timeout'
    | 'backend_unavailable'
    | 'backend_noperm'
    | 'backend_error'
    | 'backend_not_durable'
    | 'backend_collision'
    | 'decode'
    | 'too_large'
    | 'invalid_input'
    | 'usage'
    | (string & {});
  status: number;
  detail: { kind: string; [field: string]: unknown };
}

export type Status = 'new' | 'live' | 'rotated';
export type AbsentReason = 'no_cookie' | 'malformed' | 'unknown' | 'binding_mismatch';
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A session: data plus the delta this request made (what `save` sends). */
export class Session {
  private constructor();
  /** The session ID once stored; the bearer secret: never log it (use `Engine.sidHash`). */
  readonly id: string | undefined;
  readonly status: Status;
  readonly isDirty: boolean;
  /** Whether `save` would write anything (changes, or an ID renewal due). */
  readonly needsSave: boolean;
  readonly user: string | undefined;
  /** When the bound user signed in (unix ms). */
  readonly authAt: number | undefined;
  readonly bindingMismatch: boolean;
  /** The absolute deadline (unix ms) once stored. */
  readonly deadline: number | undefined;
  get(key: string): JsonValue | undefined;
  has(key: string): boolean;
  /** Throws SessionError `invalid_input` for a reserved (`$…`) or over-long key or a non-JSON value. */
  set(key: string, value: unknown): void;
  remove(key: string): boolean;
  clear(): void;
  keys(): string[];
  data(): Record<string, JsonValue>;
  /** All data as JSON text (keys sorted), in one call. */
  dataJson(): string;
  /** `set` with the value already as JSON text. */
  setJson(key: string, json: string): void;
  setUser(user: string, now: number): void;
  clearUser(): void;
  /** The core's serialized state (contains the ID: never log it). */
  exportState(): unknown;
  static importState(state: unknown): Session;
  clone(): Session;
  free(): void;
}

export interface Device {
  handle: string;
  created: number;
  lastSeen: number;
  expiresAt: number;
  authAt: number | null;
  current: boolean;
}

export type Outcome =
  | { kind: 'loaded'; session: Session }
  | { kind: 'none'; reason: AbsentReason; session: Session }
  | { kind: 'expired'; session: Session }
  | { kind: 'rotated'; session: Session }
  | { kind: 'saved'; session: Session; cookie: string | null }
  | { kind: 'gone'; cookie: string | null }
  | { kind: 'destroyed'; cookie: string | null; count: number }
  | { kind: 'devices'; devices: Device[] };

export type Step = { round: Round } | { outcome: Outcome } | { error: SessionError };

/** A running operation: `next()`, then `next(replies)` per round, until outcome or error. */
export class Op {
  private constructor();
  next(replies?: Reply[]): Step;
  /**
   * The packed hot path: replies in as one buffer (`packReplies`), and out
   * either the next round as one buffer (`unpackRound`) or, when done, the
   * outcome as JSON text with `"session": true` for the session that
   * `takeSession()` hands over. Throws the SessionError of a failed op.
   */
  step(replies?: Uint8Array): Uint8Array | string;
  takeSession(): Session | undefined;
  fail(kind: 'timeout' | 'unavailable' | 'other', detail?: string | null): void;
  free(): void;
}

/** The rules of one deployment. `now` is unix ms; entropy is 32 CSPRNG bytes. */
export class Engine {
  /** Throws SessionError `config` naming the field and the fix. */
  constructor(config?: object | string);
  readonly config: Record<string, unknown>;
  readonly cookieName: string;
  sidHash(session: Session): string | undefined;
  /** When a stored session ends unless used again (unix ms). */
  expiresAt(session: Session): number | undefined;
  /** The Set-Cookie that deletes the session cookie. */
  removalCookie(): string;
  newSession(): Session;
  /**
   * Load from a Cookie header. The engine remembers each loaded session's
   * last touch (a bounded map of Redis keys), so reads inside the touch
   * interval are a plain HGETALL instead of the load script.
   */
  load(cookieHeader: string | null | undefined, client: string | null | undefined, now: number): Op;
  /** `load` with an explicit touch hint (unix ms), ignoring the engine's own. */
  loadHinted(cookieHeader: string | null | undefined, client: string | null | undefined, now: number, touchHint?: number): Op;
  loadId(id: string, client: string | null | undefined, now: number): Op;
  save(session: Session, entropy: Uint8Array, now: number): Op;
  regenerate(session: Session, entropy: Uint8Array, now: number): Op;
  destroy(session: Session, now: number): Op;
  touch(session: Session, now: number): Op;
  destroyAllForUser(user: string, now: number): Op;
  destroyAllForUserExcept(user: string, keep: Session, now: number): Op;
  listUserSessions(user: string, now: number): Op;
  listUserSessionsFrom(user: string, current: Session, now: number): Op;
  destroyUserSession(user: string, handle: string, now: number): Op;
  free(): void;
}

/** The in-memory backend: the session commands and scripts with Redis 7.0 semantics, `now` passed in. */
export class Memory {
  constructor();
  executeRound(round: (Uint8Array | string)[][], now: number): Reply[];
  flushScripts(): void;
  setReplicas(n: number): void;
  keys(now: number): string[];
  free(): void;
}

export class TransportFailure extends Error {
  constructor(kind: 'timeout' | 'unavailable' | 'other', message: string, options?: { cause?: unknown });
  kind: 'timeout' | 'unavailable' | 'other';
}

export function isSessionError(e: unknown): e is SessionError;
export function entropy(): Uint8Array;
/** An Engine with a random `log_key` when none is configured. */
export function createEngine(config?: object | string): Engine;
/** One round's replies packed for `Op.step` (a view on a shared scratch buffer: pass it on at once). */
export function packReplies(replies: Reply[]): Uint8Array;
/** A packed round from `Op.step` as argv arrays. */
export function unpackRound(bytes: Uint8Array, offset?: number): Uint8Array[][];
/** Drive one op to its outcome; rejects with a SessionError. Frees the op. */
export function runOp(op: Op, execute: Executor): Promise<Outcome>;

export interface SessionsOptions {
  engine?: Engine;
  config?: object;
  executor: Executor;
  clock?: () => number;
  random?: () => Uint8Array;
}

/** The operations with clock and entropy filled in. */
export class Sessions {
  constructor(options: SessionsOptions);
  readonly engine: Engine;
  load(cookieHeader: string | null | undefined, options?: { client?: string }): Promise<Outcome>;
  loadId(id: string, options?: { client?: string }): Promise<Outcome>;
  save(session: Session): Promise<Outcome>;
  regenerate(session: Session): Promise<Outcome>;
  destroy(session: Session): Promise<Outcome>;
  touch(session: Session): Promise<Outcome>;
  destroyAllForUser(user: string, options?: { keep?: Session }): Promise<Outcome>;
  listUserSessions(user: string, options?: { current?: Session }): Promise<Outcome>;
  destroyUserSession(user: string, handle: string): Promise<Outcome>;
}

export interface ExecutorOptions {
  /** Bound on one round, ms (default 2000); a hung round fails within 1.25× of it. */
  timeoutMs?: number;
  /**
   * ioredis: rounds of string argv, passed to the client as they are (for
   * callers that build commands as text, like SessionLogicStore). The
   * node-redis executor takes string and byte rounds alike.
   */
  text?: boolean;
}

export function memoryExecutor(memory?: Memory, clock?: () => number): Executor & { memory: Memory };
/** node-redis v4+: one `sendCommand` per command, issued together (auto-pipelined). */
export function nodeRedisExecutor(client: { multi(): any }, options?: ExecutorOptions): Executor;
/** ioredis: `pipeline()` of `callBuffer`s per round. */
export function ioredisExecutor(redis: { pipeline(): any }, options?: ExecutorOptions): Executor;
/** Any `send(argv)` client; commands of a round are issued together. */
export function sendCommandExecutor(
  send: (argv: string[] | Uint8Array[]) => Promise<unknown>,
  options?: ExecutorOptions & { binary?: boolean; isReplyError?: (e: unknown) => boolean },
): Executor;
export function isReplyError(e: unknown): boolean;
export function normalize(reply: unknown): Reply;

/** node-redis (`createClient`) or ioredis: the executor for it. */
export function executorFor(client: unknown, options?: ExecutorOptions): Executor;

/** Where sessions are stored: a client, an executor, or a ready `Sessions`. */
export interface StoreOptions {
  client?: unknown;
  executor?: Executor;
  sessions?: Sessions;
  engine?: Engine;
  /** The core's config (prefix, idle_timeout_ms, cookie, …). */
  config?: object;
}

/** One request's session in a fetch or Hono handler. */
export class FetchSession {
  private constructor();
  /** The ID once stored (the bearer secret: never log it). */
  readonly id: string | undefined;
  readonly status: Status;
  readonly user: string | undefined;
  readonly authAt: number | undefined;
  readonly expiresAt: number | undefined;
  /** A keyed hash of the ID: the form that may be logged. */
  readonly idHash: string | undefined;
  get(key: string): JsonValue | undefined;
  has(key: string): boolean;
  set(key: string, value: unknown): this;
  remove(key: string): boolean;
  clear(): void;
  keys(): string[];
  data(): Record<string, JsonValue>;
  /** New ID, same data, written after the handler. */
  regenerate(): void;
  touch(): void;
  destroy(): Promise<void>;
  bindUser(user: string): void;
  unbindUser(): void;
  logoutEverywhere(options?: { keepCurrent?: boolean }): Promise<number>;
  listDevices(): Promise<Device[]>;
  signOutDevice(handle: string): Promise<boolean>;
}

export interface FetchSessionOptions extends StoreOptions {
  /** A client fingerprint for client binding, e.g. the User-Agent. */
  clientBinding?: (request: Request) => string | undefined;
}

/** Wrap a fetch handler; SessionErrors become JSON responses with their status unless `onError` answers. */
export function withSession<Rest extends unknown[]>(
  handler: (request: Request, session: FetchSession, ...rest: Rest) => Response | Promise<Response>,
  options?: FetchSessionOptions & { onError?: (error: SessionError, request: Request) => Response | Promise<Response> },
): (request: Request, ...rest: Rest) => Promise<Response>;

/** Hono middleware: `c.get('session')` (or `c.get(key)`) is the FetchSession. */
export function honoSession(options?: FetchSessionOptions & { key?: string }): (c: any, next: () => Promise<void>) => Promise<void>;

/** A SessionError as a JSON response `{ code, message }` with its status. */
export function errorResponse(error: SessionError): Response;
/** Add Vary, Set-Cookie and Cache-Control to a response (copied when its headers are immutable). */
export function decorate(response: Response, cookie: string | null): Response;
