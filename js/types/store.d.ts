// `session-logic/store`: a Store for express-session.
import type { Store, SessionData } from 'express-session';
import type { Executor } from './index.js';

export interface SessionLogicStoreOptions {
  /** node-redis or ioredis, configured to fail fast. */
  client?: unknown;
  executor?: Executor;
  /** Key prefix (default `sess:`); no glob characters. */
  prefix?: string;
  /** Seconds, for sessions whose cookie has no expiry (default one day); 0 or less deletes at save. */
  ttl?: number | ((sess: SessionData) => number);
  disableTouch?: boolean;
  /** SCAN COUNT and batch size for all/ids/length/clear (default 100). */
  scanCount?: number;
  timeoutMs?: number;
}

type Callback<T = void> = (err: any, value?: T) => void;

/**
 * Each session is one JSON string at `prefix + sid` (connect-redis's
 * format: either store reads the other's sessions), expiring at
 * `cookie.expires` to the millisecond. `touch` moves only Redis's deadline,
 * so a loaded session's `cookie.expires` is the one of its last save.
 * Errors are SessionErrors (`code`, `status`).
 */
export class SessionLogicStore extends Store {
  constructor(options?: SessionLogicStoreOptions);
  get(sid: string): Promise<SessionData | null>;
  get(sid: string, cb: Callback<SessionData | null>): void;
  set(sid: string, sess: SessionData): Promise<void>;
  set(sid: string, sess: SessionData, cb: Callback): void;
  touch(sid: string, sess: SessionData): Promise<void>;
  touch(sid: string, sess: SessionData, cb: Callback): void;
  destroy(sid: string): Promise<void>;
  destroy(sid: string, cb: Callback): void;
  ids(): Promise<string[]>;
  ids(cb: Callback<string[]>): void;
  length(): Promise<number>;
  length(cb: Callback<number>): void;
  all(): Promise<(SessionData & { id: string })[]>;
  all(cb: Callback<(SessionData & { id: string })[]>): void;
  clear(): Promise<void>;
  clear(cb: Callback): void;
}
export default SessionLogicStore;
