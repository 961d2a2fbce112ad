// The one error shape every part of the package throws: the core's
// SessionError (`code`, `status`, `message`, `detail`), also for misuse the
// JS side detects before the core sees it.

/** An error in the core's shape. */
export function sessionError(code, status, message) {
  const e = new Error(message);
  e.name = 'SessionError';
  e.code = code;
  e.status = status;
  e.detail = { kind: code };
  return e;
}

/** Is `e` a SessionError thrown by the core (code, status, message, detail)? */
export function isSessionError(e) {
  return e instanceof Error && e.name === 'SessionError' && typeof e.code === 'string';
}
