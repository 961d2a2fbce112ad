//! The Lua scripts, one file each, embedded at compile time with their SHA-1
//! so the machine can emit EVALSHA and fall back to EVAL on NOSCRIPT. Every
//! script touches exactly one key (Cluster-safe) and takes `now` as an
//! argument, never Redis `TIME`, so real Redis, the in-memory backend and the
//! conformance vectors agree exactly.

use std::sync::OnceLock;

/// One of our scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Script {
    /// Read a record, throttled touch.
    Load,
    /// Apply a delta to a live record.
    Save,
    /// Create a record under a fresh key, refusing collisions.
    Create,
    /// Turn a live record into a rotated marker.
    Retire,
    /// Maintain a per-user index.
    Index,
    /// Delete a session only while it belongs to a given user.
    Revoke,
}

impl Script {
    /// Every script, in a fixed order.
    pub const ALL: [Script; 6] = [
        Script::Load,
        Script::Save,
        Script::Create,
        Script::Retire,
        Script::Index,
        Script::Revoke,
    ];

    /// The Lua source.
    pub fn source(self) -> &'static str {
        match self {
            Script::Load => include_str!("load.lua"),
            Script::Save => include_str!("save.lua"),
            Script::Create => include_str!("create.lua"),
            Script::Retire => include_str!("retire.lua"),
            Script::Index => include_str!("index.lua"),
            Script::Revoke => include_str!("revoke.lua"),
        }
    }

    /// Lowercase name, as in the file name.
    pub fn name(self) -> &'static str {
        match self {
            Script::Load => "load",
            Script::Save => "save",
            Script::Create => "create",
            Script::Retire => "retire",
            Script::Index => "index",
            Script::Revoke => "revoke",
        }
    }

    /// Hex SHA-1 of the source, as Redis computes it for EVALSHA.
    pub fn sha1(self) -> &'static str {
        static SHAS: OnceLock<[String; 6]> = OnceLock::new();
        let shas = SHAS.get_or_init(|| {
            Script::ALL.map(|s| sha1_smol::Sha1::from(s.source()).digest().to_string())
        });
        // `self as usize` indexes ALL in declaration order, which has exactly 6 entries.
        shas.get(self as usize)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The script whose SHA-1 is `sha` (for the in-memory backend).
    pub fn from_sha1(sha: &[u8]) -> Option<Script> {
        Script::ALL
            .into_iter()
            .find(|s| s.sha1().as_bytes().eq_ignore_ascii_case(sha))
    }

    /// The script whose source is `src` (EVAL in the in-memory backend).
    pub fn from_source(src: &[u8]) -> Option<Script> {
        Script::ALL
            .into_iter()
            .find(|s| s.source().as_bytes() == src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_distinct_40_hex_digits() {
        let mut seen = std::collections::BTreeSet::new();
        for s in Script::ALL {
            assert_eq!(s.sha1().len(), 40);
            assert!(seen.insert(s.sha1()));
            assert_eq!(Script::from_sha1(s.sha1().as_bytes()), Some(s));
            assert_eq!(Script::from_source(s.source().as_bytes()), Some(s));
        }
    }
}
