//! The per-session Redis hash: reserved `$`-metadata fields beside one JSON
//! value per top-level session key. Both hosts read and write this layout, so
//! a session created by Node is readable by Rust. Decoding is strict: a record
//! we did not write is a typed decode error, never a panic or a guess.
//!
//! | field       | value                                       |
//! |-------------|---------------------------------------------|
//! | `$v`        | format version, `1`                         |
//! | `$created`  | ms when this ID was minted                  |
//! | `$deadline` | absolute deadline, ms                       |
//! | `$touch`    | last touch, ms (idle deadline = touch+idle) |
//! | `$rev`      | revision, bumped by every save              |
//! | `$user`     | bound user id (optional)                    |
//! | `$auth_at`  | when the user signed in, ms (optional)      |
//! | `$bind`     | client-binding hash (optional)              |
//! | `$rotated`  | only in a rotated marker: grace instant, ms |
//! | other       | data: key → one JSON value                  |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::expiry::UnixMillis;
use crate::keys::UserId;
use crate::step::Reply;

pub(crate) const VERSION: &str = "$v";
pub(crate) const CREATED: &str = "$created";
pub(crate) const DEADLINE: &str = "$deadline";
pub(crate) const TOUCH: &str = "$touch";
pub(crate) const REV: &str = "$rev";
pub(crate) const USER: &str = "$user";
pub(crate) const AUTH_AT: &str = "$auth_at";
pub(crate) const BIND: &str = "$bind";
pub(crate) const ROTATED: &str = "$rotated";

/// The record format this crate writes.
pub(crate) const FORMAT_VERSION: &str = "1";

/// Session metadata as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// When this ID was minted.
    pub created: UnixMillis,
    /// Absolute deadline.
    pub deadline: UnixMillis,
    /// Last touch.
    pub touch: UnixMillis,
    /// Revision.
    pub rev: u64,
    /// Client-binding hash, if bound.
    pub binding: Option<String>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stored {
    /// No such key.
    Absent,
    /// A rotated marker, valid until the instant.
    Rotated(UnixMillis),
    /// A live-looking record (expiry is judged by the caller).
    Live {
        meta: Meta,
        user: Option<UserId>,
        auth_at: Option<UnixMillis>,
        data: BTreeMap<String, Value>,
    },
}

const WHAT: &str = "session record";

/// Decode a flat `HGETALL`-shaped reply.
pub(crate) fn decode(reply: &Reply) -> Result<Stored, DecodeError> {
    let Reply::Array(items) = reply else {
        return Err(DecodeError::new(
            WHAT,
            format!("expected an array reply, got {}", shape(reply)),
        ));
    };
    if items.is_empty() {
        return Ok(Stored::Absent);
    }
    if items.len() % 2 != 0 {
        return Err(DecodeError::new(WHAT, "odd number of field/value items"));
    }
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in items.chunks_exact(2) {
        let (Some(f), Some(v)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let f = text(f, "field name")?;
        let v = text(v, "field value")?;
        if fields.insert(f, v).is_some() {
            return Err(DecodeError::new(WHAT, format!("duplicate field {f:?}")));
        }
    }
    if let Some(until) = fields.get(ROTATED) {
        return Ok(Stored::Rotated(UnixMillis(number(ROTATED, until)?)));
    }
    match fields.get(VERSION) {
        Some(&FORMAT_VERSION) => {}
        Some(v) => {
            return Err(DecodeError::new(
                WHAT,
                format!(
                    "format version {v:?} is not {FORMAT_VERSION:?}; written by a newer or foreign writer"
                ),
            ));
        }
        None => {
            return Err(DecodeError::new(
                WHAT,
                "missing $v (not written by session-logic)",
            ));
        }
    }
    let required = |name: &str| -> Result<u64, DecodeError> {
        let v = fields
            .get(name)
            .ok_or_else(|| DecodeError::new(WHAT, format!("missing {name}")))?;
        number(name, v)
    };
    let meta = Meta {
        created: UnixMillis(required(CREATED)?),
        deadline: UnixMillis(required(DEADLINE)?),
        touch: UnixMillis(required(TOUCH)?),
        rev: required(REV)?,
        binding: fields.get(BIND).map(|s| (*s).to_owned()),
    };
    let user = match fields.get(USER) {
        Some(u) => {
            Some(UserId::new(*u).map_err(|e| DecodeError::new(WHAT, format!("$user: {e}")))?)
        }
        None => None,
    };
    let auth_at = match fields.get(AUTH_AT) {
        Some(a) => Some(UnixMillis(number(AUTH_AT, a)?)),
        None => None,
    };
    let mut data = BTreeMap::new();
    for (f, v) in fields {
        if f.starts_with('$') {
            continue; // metadata, including fields a newer minor writer may add
        }
        if f.is_empty() {
            return Err(DecodeError::new(WHAT, "empty data field name"));
        }
        let value: Value = serde_json::from_str(v)
            .map_err(|e| DecodeError::new(WHAT, format!("field {f:?} is not JSON: {e}")))?;
        data.insert(f.to_owned(), value);
    }
    Ok(Stored::Live {
        meta,
        user,
        auth_at,
        data,
    })
}

fn text<'a>(r: &'a Reply, what: &str) -> Result<&'a str, DecodeError> {
    match r {
        Reply::Bulk(b) => std::str::from_utf8(b)
            .map_err(|_| DecodeError::new(WHAT, format!("{what} is not UTF-8"))),
        other => Err(DecodeError::new(
            WHAT,
            format!("{what} is {}, not a bulk string", shape(other)),
        )),
    }
}

fn number(field: &str, v: &str) -> Result<u64, DecodeError> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::new(
            WHAT,
            format!("{field} is {v:?}, not a decimal integer"),
        ));
    }
    v.parse()
        .map_err(|_| DecodeError::new(WHAT, format!("{field} is {v:?}, out of range")))
}

/// One word describing a reply's shape, for messages.
pub(crate) fn shape(r: &Reply) -> &'static str {
    match r {
        Reply::Nil => "nil",
        Reply::Int(_) => "an integer",
        Reply::Bulk(_) => "a bulk string",
        Reply::Simple(_) => "a simple string",
        Reply::Array(_) => "an array",
        Reply::Error(_) => "an error",
    }
}

/// The metadata fields of a new record, in a fixed order.
pub(crate) fn encode_meta(
    meta: &Meta,
    user: Option<&UserId>,
    auth_at: Option<UnixMillis>,
) -> Vec<(String, String)> {
    let mut out = vec![
        (VERSION.to_owned(), FORMAT_VERSION.to_owned()),
        (CREATED.to_owned(), meta.created.0.to_string()),
        (DEADLINE.to_owned(), meta.deadline.0.to_string()),
        (TOUCH.to_owned(), meta.touch.0.to_string()),
        (REV.to_owned(), meta.rev.to_string()),
    ];
    if let Some(u) = user {
        out.push((USER.to_owned(), u.as_str().to_owned()));
    }
    if let Some(a) = auth_at {
        out.push((AUTH_AT.to_owned(), a.0.to_string()));
    }
    if let Some(b) = &meta.binding {
        out.push((BIND.to_owned(), b.clone()));
    }
    out
}

/// A data value as stored: compact JSON. serde_json's output for a `Value`
/// is deterministic (sorted maps, shortest float form) on every target.
pub(crate) fn encode_value(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn arr(pairs: &[(&str, &str)]) -> Reply {
        Reply::Array(
            pairs
                .iter()
                .flat_map(|(f, v)| [Reply::bulk(*f), Reply::bulk(*v)])
                .collect(),
        )
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("$v", "1"),
            ("$created", "10"),
            ("$deadline", "100"),
            ("$touch", "20"),
            ("$rev", "3"),
            ("cart", "[1,2]"),
        ]
    }

    #[test]
    fn a_written_record_decodes() {
        let Stored::Live {
            meta, data, user, ..
        } = decode(&arr(&good())).unwrap()
        else {
            panic!()
        };
        assert_eq!(meta.rev, 3);
        assert_eq!(data["cart"], serde_json::json!([1, 2]));
        assert!(user.is_none());
    }

    #[test]
    fn records_missing_metadata_are_decode_errors() {
        for drop in ["$v", "$created", "$deadline", "$touch", "$rev"] {
            let pairs: Vec<_> = good().into_iter().filter(|(f, _)| *f != drop).collect();
            let e = decode(&arr(&pairs)).unwrap_err();
            assert!(e.detail.contains(drop), "{e}");
        }
    }

    #[test]
    fn non_json_values_are_decode_errors() {
        let mut pairs = good();
        pairs.push(("x", "{not json"));
        assert!(decode(&arr(&pairs)).unwrap_err().detail.contains("\"x\""));
    }

    #[test]
    fn markers_and_absence_are_not_errors() {
        assert_eq!(decode(&Reply::Array(vec![])).unwrap(), Stored::Absent);
        assert_eq!(
            decode(&arr(&[("$rotated", "55")])).unwrap(),
            Stored::Rotated(UnixMillis(55))
        );
    }

    #[test]
    fn odd_shapes_are_decode_errors() {
        for r in [
            Reply::Nil,
            Reply::Int(1),
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)]),
            Reply::Array(vec![Reply::bulk("a")]),
        ] {
            assert!(decode(&r).is_err(), "{r:?}");
        }
        assert!(decode(&arr(&[("$v", "1"), ("$v", "1")])).is_err());
        assert!(
            decode(&Reply::Array(vec![
                Reply::Bulk(vec![0xff]),
                Reply::bulk("1")
            ]))
            .is_err()
        );
    }
}
