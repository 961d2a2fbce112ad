//! What can fail, as data. Outcomes such as "no cookie", "expired" or
//! "rotated" are not errors; these are. Each kind has a stable `code()` and a
//! `status_hint()` every host (Rust and JS) maps to an HTTP status.

use serde::{Deserialize, Serialize};

use crate::step::BackendFailure;

/// An operation's failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Error {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis answered with an error, timed out, or could not be reached.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A reply or record did not have the shape we write.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A value, field or record exceeds its configured limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The caller passed something we cannot accept (a reserved key, a bad user id).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The host broke the loop contract (wrong reply count, replies with no round).
    #[error(transparent)]
    Usage(#[from] UsageError),
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Backend(b) => b.code(),
            Error::Decode(_) => "decode",
            Error::TooLarge(_) => "too_large",
            Error::Input(_) => "invalid_input",
            Error::Usage(_) => "usage",
        }
    }

    /// The HTTP status a host should answer with.
    pub fn status_hint(&self) -> u16 {
        match self {
            Error::Config(_) | Error::Decode(_) | Error::Usage(_) => 500,
            Error::Backend(b) => b.status_hint(),
            Error::TooLarge(_) => 413,
            Error::Input(_) => 400,
        }
    }
}

/// A configuration field that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("invalid config: {field} {message}")]
pub struct ConfigError {
    /// The offending field, dotted (`cookie.name`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &str, message: String) -> Self {
        ConfigError {
            field: field.into(),
            message,
        }
    }
}

/// Why the backend failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum BackendError {
    /// The host's transport failed (timeout, connection refused, …).
    #[error("redis unavailable: {failure:?}")]
    Failure {
        /// What the host reported.
        failure: BackendFailure,
    },
    /// Redis answered with an error reply.
    #[error("redis error reply {code}: {message}")]
    Reply {
        /// First word of the reply (`ERR`, `NOPERM`, `READONLY`, `OOM`, …).
        code: String,
        /// The whole reply text.
        message: String,
    },
    /// `WAIT` reported fewer replicas than `durable_revocation` requires.
    #[error(
        "revocation reached {acked} of {wanted} replicas within the timeout; it may be lost on failover"
    )]
    NotDurable {
        /// Replicas that acknowledged.
        acked: i64,
        /// Replicas required.
        wanted: u32,
    },
    /// Every derived ID collided: the host's entropy source is broken.
    #[error(
        "{attempts} fresh session IDs all collided with existing keys; the host's entropy source is broken"
    )]
    Collision {
        /// Attempts made.
        attempts: u32,
    },
}

impl BackendError {
    fn code(&self) -> &'static str {
        match self {
            BackendError::Failure {
                failure: BackendFailure::Timeout,
            } => "backend_timeout",
            BackendError::Failure { .. } => "backend_unavailable",
            BackendError::Reply { code, .. } if code == "NOPERM" => "backend_noperm",
            BackendError::Reply { .. } => "backend_error",
            BackendError::NotDurable { .. } => "backend_not_durable",
            BackendError::Collision { .. } => "backend_collision",
        }
    }

    fn status_hint(&self) -> u16 {
        match self {
            BackendError::Reply { code, .. } if code == "NOPERM" => 500,
            BackendError::Collision { .. } => 500,
            _ => 503,
        }
    }

    /// From a Redis error reply's text.
    pub(crate) fn reply(text: &str) -> Self {
        let code = text.split_whitespace().next().unwrap_or("ERR").to_owned();
        BackendError::Reply {
            code,
            message: text.to_owned(),
        }
    }
}

/// A reply or record that is not what we write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("corrupt {what}: {detail}")]
pub struct DecodeError {
    /// What was being decoded (`session record`, `load reply`, …).
    pub what: String,
    /// What was wrong.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn new(what: &str, detail: impl Into<String>) -> Self {
        DecodeError {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// A size limit was exceeded; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "{what} is {size} bytes, over the limit of {limit} ({field}); store less or raise the limit"
)]
pub struct TooLarge {
    /// `field`, `record`, `fields`.
    pub what: String,
    /// The config field that sets the limit.
    pub field: String,
    /// Actual size (bytes or count).
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// Input refused before anything was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("invalid {what}: {detail}")]
pub struct InputError {
    /// What was refused (`data key`, `user id`, `device handle`).
    pub what: String,
    /// Why.
    pub detail: String,
}

impl InputError {
    pub(crate) fn new(what: &str, detail: impl Into<String>) -> Self {
        InputError {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// The host did not follow the loop contract; the operation is poisoned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("host loop misuse: {0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noperm_is_its_own_code() {
        let e = Error::Backend(BackendError::reply(
            "NOPERM this user has no permissions to access the 'x' key",
        ));
        assert_eq!(e.code(), "backend_noperm");
        assert_eq!(e.status_hint(), 500);
        let e = Error::Backend(BackendError::Failure {
            failure: BackendFailure::Timeout,
        });
        assert_eq!((e.code(), e.status_hint()), ("backend_timeout", 503));
    }

    #[test]
    fn messages_name_the_limit_and_the_fix() {
        let e = TooLarge {
            what: "field \"cart\"".into(),
            field: "max_field_bytes".into(),
            size: 70000,
            limit: 65536,
        };
        assert!(e.to_string().contains("max_field_bytes"));
    }
}
