//! The whole sans-IO surface between a machine and a host: commands go out as
//! argv in rounds, replies come back as a small RESP-shaped enum.
//!
//! A host sends one [`Round`] as one pipeline and feeds back exactly one
//! [`Reply`] per [`Command`], in order. Nothing here knows about sockets.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::outcome::Outcome;

/// One Redis command as raw argv. All our arguments are UTF-8, but the type is
/// bytes so hosts never re-encode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Command(#[serde(with = "argv_text")] pub Vec<Vec<u8>>);

impl Command {
    /// A command from its arguments (`&str`, `&[u8]`, `String`, `Vec<u8>`…).
    pub fn new<I, A>(args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Vec<u8>>,
    {
        Command(args.into_iter().map(Into::into).collect())
    }

    /// The command name (`EVALSHA`, `DEL`, …), upper case as we emit it.
    pub fn name(&self) -> &[u8] {
        self.0.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// The argv, command name first.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// The key this command touches, if any: every command we emit touches at
    /// most one key, which is what keeps a round Cluster-safe.
    pub fn key(&self) -> Option<&[u8]> {
        let name = self.name();
        let at = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
            3
        } else if name.eq_ignore_ascii_case(b"WAIT") || name.eq_ignore_ascii_case(b"SCAN") {
            return None;
        } else {
            1
        };
        self.0.get(at).map(Vec::as_slice)
    }
}

/// A batch of commands the host sends as one pipeline (one round trip). In
/// Cluster, commands of one round may go to different nodes concurrently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Round(pub Vec<Command>);

impl Round {
    /// The commands, in the order their replies must come back.
    pub fn commands(&self) -> &[Command] {
        &self.0
    }
    /// Number of commands (= number of replies expected).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when the round holds no command (never yielded by a machine).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One reply, shaped like RESP2. Errors from Redis are data, not failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Null bulk / null array.
    Nil,
    /// Integer reply.
    Int(i64),
    /// Bulk string.
    Bulk(#[serde(with = "bytes_text")] Vec<u8>),
    /// Simple string (`OK`, `QUEUED`).
    Simple(String),
    /// Array (also what a host should flatten RESP3 maps and sets into).
    Array(Vec<Reply>),
    /// Error reply, e.g. `NOSCRIPT No matching script` or `WRONGTYPE …`.
    Error(String),
}

impl Reply {
    /// Convenience for hosts and tests: a bulk reply from text.
    pub fn bulk(s: impl Into<Vec<u8>>) -> Self {
        Reply::Bulk(s.into())
    }
}

/// A transport-level failure the host could not turn into replies: the
/// connection dropped, the command timed out, the pool is exhausted. It goes
/// into the machine so "Redis down → 503" is decided once, here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum BackendFailure {
    /// The command did not answer within the host's timeout.
    Timeout,
    /// The connection could not be made or was lost.
    Unavailable(String),
    /// Anything else the host's client reported.
    Other(String),
}

/// What a machine wants next.
// Returned once per round; boxing the outcome would add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Send this round as one pipeline and feed back the replies.
    Round(Round),
    /// The operation finished.
    Done(Result<Outcome, Error>),
}

/// Argv as JSON: text when UTF-8 (always, for what we emit), else `{"hex": …}`.
mod argv_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::bytes_text;

    #[derive(Serialize, Deserialize)]
    struct Arg(#[serde(with = "bytes_text")] Vec<u8>);

    pub(super) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let args: Vec<Arg> = v.iter().map(|a| Arg(a.clone())).collect();
        args.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let args = Vec::<Arg>::deserialize(d)?;
        Ok(args.into_iter().map(|a| a.0).collect())
    }
}

/// Bytes as JSON text when UTF-8, else `{"hex": "…"}` so vectors stay readable
/// and still carry hostile non-UTF-8 replies.
pub(crate) mod bytes_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Hex { hex: String },
    }

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(t) => Repr::Text(t.to_owned()).serialize(s),
            Err(_) => Repr::Hex {
                hex: v.iter().map(|b| format!("{b:02x}")).collect(),
            }
            .serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(t.into_bytes()),
            Repr::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    return Err(D::Error::custom("odd-length hex"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|p| u8::from_str_radix(p, 16).ok())
                            .ok_or_else(|| D::Error::custom("bad hex"))
                    })
                    .collect()
            }
        }
    }
}
