// `session-logic/express`: the Express/Connect middleware.
import type { Device, Engine, Executor, Sessions } from './index.js';

export interface CookieOptions {
  /** Idle timeout in ms (the session ends this long after its last use); absent: a browser-session cookie. */
  maxAge?: number | null;
  path?: string;
  domain?: string;
  httpOnly?: boolean;
  /** Default true; false for plain-HTTP development. `'auto'` is refused. */
  secure?: boolean;
  sameSite?: 'lax' | 'strict' | 'none' | true;
}

export interface SessionOptions {
  /** node-redis or ioredis, configured to fail fast. */
  client?: unknown;
  executor?: Executor;
  sessions?: Sessions;
  engine?: Engine;
  /** The core's config (prefix, idle_timeout_ms, absolute_lifetime_ms, …). */
  config?: object;
  /** The cookie name (default `sid`). */
  name?: string;
  cookie?: CookieOptions;
  /** Accepted; the idle deadline always slides server-side. */
  rolling?: boolean;
  /** Only false: nothing is stored for a visitor until the session holds data. */
  saveUninitialized?: false;
  /** Only false: only changed keys are written. */
  resave?: false;
  unset?: 'keep' | 'destroy';
  /** Accepted, unused: the browser enforces `Secure`. */
  proxy?: boolean;
  /** Accepted, unused: IDs carry 256 random bits and are checked against Redis. */
  secret?: string | string[];
  /** A client fingerprint for client binding, e.g. the User-Agent. */
  clientBinding?: (req: any) => string | undefined;
}

/** `req.session.cookie`: the attributes the Set-Cookie carries (read-only). */
export interface SessionCookie {
  readonly path: string;
  readonly domain: string | undefined;
  readonly httpOnly: boolean;
  readonly secure: boolean;
  readonly sameSite: 'lax' | 'strict' | 'none';
  readonly originalMaxAge: number | null;
  readonly expires: Date | null;
  readonly maxAge: number | null;
}

type Callback<T = void> = (err: Error | null, value?: T) => void;

/** `req.session`: the data are its own properties; these are its methods. */
export interface RequestSessionMethods {
  /** The ID once stored (the bearer secret: never log it; see `idHash`). */
  readonly id: string | undefined;
  readonly cookie: SessionCookie;
  /** A new ID; the session starts empty unless `keepData`. */
  regenerate(options?: { keepData?: boolean }): Promise<void>;
  regenerate(options: { keepData?: boolean } | undefined, cb: Callback): void;
  regenerate(cb: Callback): void;
  destroy(): Promise<void>;
  destroy(cb: Callback): void;
  save(): Promise<void>;
  save(cb: Callback): void;
  reload(): Promise<void>;
  reload(cb: Callback): void;
  touch(): this;
  resetMaxAge(): this;
  bindUser(user: string): this;
  unbindUser(): this;
  boundUser(): string | undefined;
  authAt(): number | undefined;
  expiresAt(): number | undefined;
  idHash(): string | undefined;
  logoutEverywhere(options?: { keepCurrent?: boolean }): Promise<number>;
  logoutEverywhere(options: { keepCurrent?: boolean } | undefined, cb: Callback<number>): void;
  logoutEverywhere(cb: Callback<number>): void;
  listDevices(): Promise<Device[]>;
  listDevices(cb: Callback<Device[]>): void;
  signOutDevice(handle: string): Promise<boolean>;
  signOutDevice(handle: string, cb: Callback<boolean>): void;
}

export type RequestSession = RequestSessionMethods & { [key: string]: any };

/** The middleware: `app.use(session({ client, cookie: { maxAge } }))`. Throws TypeError on a refused option. */
export function session(options?: SessionOptions): (req: any, res: any, next: (err?: unknown) => void) => void;
export default session;

/** The core config an options object maps to. */
export function coreConfig(options?: SessionOptions): Record<string, unknown>;

declare module 'express-serve-static-core' {
  interface Request {
    session: RequestSession;
    sessionID: string | undefined;
  }
}
