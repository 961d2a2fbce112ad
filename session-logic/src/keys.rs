//! Key naming: which Redis key holds what. Hashed session keys by default (a
//! leaked key list or MONITOR output does not reveal live IDs), escaped user
//! ids (no input can forge another key or pick a Cluster hash slot) and
//! escaped glob patterns for SCAN.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, IdFormat, KeyScheme};
use crate::error::InputError;
use crate::id::SessionId;

/// Longest user id accepted, in bytes.
pub const MAX_USER_ID: usize = 256;

/// An application user id, bound to sessions for logout-everywhere.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Any 1..=256-byte string without control characters.
    pub fn new(id: impl Into<String>) -> Result<UserId, InputError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_USER_ID {
            return Err(InputError::new(
                "user id",
                format!("must be 1..={MAX_USER_ID} bytes"),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(InputError::new(
                "user id",
                "must not contain control characters",
            ));
        }
        Ok(UserId(id))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl TryFrom<String> for UserId {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UserId::new(s)
    }
}

impl From<UserId> for String {
    fn from(u: UserId) -> String {
        u.0
    }
}

/// The naming rules of one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
    scheme: KeyScheme,
    id_format: IdFormat,
}

impl Keyspace {
    pub(crate) fn new(config: &Config) -> Keyspace {
        Keyspace {
            prefix: config.prefix.clone(),
            scheme: config.key_scheme,
            id_format: config.id_format,
        }
    }

    /// The index member for a session: the key without its prefix. With the
    /// hashed scheme this is base64url(SHA-256(id)), which reveals nothing.
    pub(crate) fn member(&self, id: &SessionId) -> String {
        match self.scheme {
            KeyScheme::Hashed => URL_SAFE_NO_PAD.encode(Sha256::digest(id.expose().as_bytes())),
            KeyScheme::Plain => id.expose().to_owned(),
        }
    }

    /// The session's record key.
    pub fn session_key(&self, id: &SessionId) -> String {
        self.member_key(&self.member(id))
    }

    /// Whether `member` has the shape of a session member of this scheme
    /// (so turning it into a key can only ever name a session record).
    pub(crate) fn is_member(&self, member: &str) -> bool {
        match self.scheme {
            KeyScheme::Hashed => {
                member.len() == 43
                    && member
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
            KeyScheme::Plain => SessionId::parse(member, self.id_format).is_some(),
        }
    }

    /// The index member of a stored session (empty for a new one).
    pub(crate) fn member_of(&self, session: &crate::session::Session) -> String {
        session.id().map(|id| self.member(id)).unwrap_or_default()
    }

    /// The record key for an index member.
    pub(crate) fn member_key(&self, member: &str) -> String {
        format!("{}{}", self.prefix, member)
    }

    /// The user's index key: prefix + "user:" + escaped id. Session members are
    /// base64 text, which never contains ':', so the two kinds never collide;
    /// escaping is injective, so two user ids never share a key.
    pub fn user_key(&self, user: &UserId) -> String {
        let mut k = format!("{}user:", self.prefix);
        for b in user.as_str().bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
                k.push(char::from(b));
            } else {
                k.push_str(&format!("%{b:02X}"));
            }
        }
        k
    }

    /// A `SCAN MATCH` pattern for every key of this deployment, with the
    /// prefix's glob characters escaped.
    pub fn scan_pattern(&self) -> String {
        let mut p = escape_glob(&self.prefix);
        p.push('*');
        p
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A short public token derived from `input` under a domain `tag`: 22
/// base64url characters (132 bits) of SHA-256(tag, 0, input). Used for the
/// client-binding hash and device handles, which must never reveal an ID.
pub(crate) fn tagged_hash(tag: &str, input: &str) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0]);
    h.update(input.as_bytes());
    let full = URL_SAFE_NO_PAD.encode(h.finalize());
    full.get(..22).unwrap_or(&full).to_owned()
}

/// Escape `* ? [ ] \` for a Redis glob pattern.
pub fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ks() -> Keyspace {
        Keyspace::new(&Config::default())
    }

    #[test]
    fn hashed_keys_do_not_contain_the_id() {
        let id = SessionId::mint(&[5; 32], IdFormat::Base64url);
        let key = ks().session_key(&id);
        assert!(key.starts_with("sess:"));
        assert_eq!(key.len(), 5 + 43);
        assert!(!key.contains(id.expose()));
    }

    #[test]
    fn user_ids_cannot_forge_hash_tags_or_other_keys() {
        let k = ks().user_key(&UserId::new("{evil}:x*").unwrap());
        assert_eq!(k, "sess:user:%7Bevil%7D%3Ax%2A");
        assert!(!k[5..].contains(['{', '}', '*']));
        // Escaping is injective: the literal text of an escape is escaped too.
        assert_ne!(
            ks().user_key(&UserId::new("%7B").unwrap()),
            ks().user_key(&UserId::new("{").unwrap())
        );
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(ks().scan_pattern(), "sess:*");
    }

    #[test]
    fn user_ids_reject_empty_long_and_control() {
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a".repeat(257)).is_err());
        assert!(UserId::new("a\nb").is_err());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
    }
}
