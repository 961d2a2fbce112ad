//! Session IDs: 32 bytes of host entropy as text, and the strict parser that
//! runs before any Redis call. Anything that is not exactly a well-formed ID is
//! "no session": never a Redis lookup, never an error page.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::IdFormat;

/// 32 bytes of CSPRNG output supplied by the host for one operation.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entropy(pub [u8; 32]);

impl fmt::Debug for Entropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Entropy(..)")
    }
}

impl Entropy {
    /// The bytes for attempt `n`: attempt 0 is the host's entropy itself,
    /// later attempts are SHA-256(entropy || n), so a retry is fully
    /// determined by the inputs (vectors stay reproducible).
    pub(crate) fn attempt(&self, n: u32) -> [u8; 32] {
        if n == 0 {
            return self.0;
        }
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(n.to_be_bytes());
        h.finalize().into()
    }
}

/// A syntactically valid session ID. Debug output is redacted; `Display`
/// is reserved for the cookie value, so IDs never reach logs by accident.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl SessionId {
    /// Mint from 32 random bytes (the 128-bit format uses the first 16).
    pub(crate) fn mint(bytes: &[u8; 32], format: IdFormat) -> SessionId {
        SessionId(match format {
            IdFormat::Base64url => URL_SAFE_NO_PAD.encode(bytes),
            IdFormat::Base64Padded => STANDARD.encode(bytes),
            IdFormat::Base64url128 => URL_SAFE_NO_PAD.encode(bytes.get(..16).unwrap_or(bytes)),
        })
    }

    /// Strict parse: exact length and alphabet of `format`, decoding to 32
    /// bytes (16 for the 128-bit format) with canonical trailing bits.
    /// Anything else is `None`.
    pub fn parse(text: &str, format: IdFormat) -> Option<SessionId> {
        let (len, engine, bytes) = match format {
            IdFormat::Base64url => (43, &URL_SAFE_NO_PAD, 32),
            IdFormat::Base64Padded => (44, &STANDARD, 32),
            IdFormat::Base64url128 => (22, &URL_SAFE_NO_PAD, 16),
        };
        if text.len() != len {
            return None;
        }
        // The engines reject non-canonical trailing bits, so each value has
        // exactly one accepted spelling.
        let decoded = engine.decode(text).ok()?;
        (decoded.len() == bytes).then(|| SessionId(text.to_owned()))
    }

    /// The cookie value. Never log this; log `Engine::sid_hash` instead.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn minted_ids_are_43_chars_of_base64url_and_parse_back() {
        let id = SessionId::mint(&[0xfb; 32], IdFormat::Base64url);
        assert_eq!(id.expose().len(), 43);
        assert!(
            id.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(SessionId::parse(id.expose(), IdFormat::Base64url), Some(id));
    }

    #[test]
    fn vapor_padded_ids_parse_only_when_configured() {
        let id = SessionId::mint(&[7; 32], IdFormat::Base64Padded);
        assert_eq!(id.expose().len(), 44);
        assert!(id.expose().ends_with('='));
        assert!(SessionId::parse(id.expose(), IdFormat::Base64Padded).is_some());
        assert!(SessionId::parse(id.expose(), IdFormat::Base64url).is_none());
    }

    #[test]
    fn wrong_length_alphabet_or_trailing_bits_is_no_session() {
        let good = SessionId::mint(&[1; 32], IdFormat::Base64url)
            .expose()
            .to_owned();
        for bad in [
            "",
            "abc",
            &good[..42],
            &format!("{good}A"),
            &good.replace(|_: char| true, "+"),
        ] {
            assert!(
                SessionId::parse(bad, IdFormat::Base64url).is_none(),
                "{bad:?}"
            );
        }
        // Same bytes, non-canonical last character (low bits set).
        let mut chars: Vec<char> = good.chars().collect();
        let last = chars.last_mut().unwrap();
        *last = if *last == 'E' { 'F' } else { 'B' };
        let noncanonical: String = chars.into_iter().collect();
        assert!(SessionId::parse(&noncanonical, IdFormat::Base64url).is_none());
    }

    #[test]
    fn tower_sessions_shaped_ids_are_22_chars_of_128_bits() {
        let id = SessionId::mint(&[0xab; 32], IdFormat::Base64url128);
        assert_eq!(id.expose().len(), 22);
        assert_eq!(
            SessionId::parse(id.expose(), IdFormat::Base64url128),
            Some(id.clone())
        );
        assert!(SessionId::parse(id.expose(), IdFormat::Base64url).is_none());
        let long = SessionId::mint(&[0xab; 32], IdFormat::Base64url);
        assert!(SessionId::parse(long.expose(), IdFormat::Base64url128).is_none());
        // Non-canonical trailing bits are refused here too.
        // The last character carries 2 bits; its low 4 must be zero, so
        // the next letter of the alphabet spells the same bytes wrongly.
        let mut text = id.expose().to_owned();
        let last = text.pop().unwrap();
        assert!(matches!(last, 'A' | 'Q' | 'g' | 'w'), "{last}");
        text.push(char::from(u8::try_from(last).unwrap() + 1));
        assert!(SessionId::parse(&text, IdFormat::Base64url128).is_none());
    }

    #[test]
    fn debug_never_shows_the_id() {
        let id = SessionId::mint(&[9; 32], IdFormat::Base64url);
        assert_eq!(format!("{id:?}"), "SessionId(..)");
    }

    #[test]
    fn retry_attempts_derive_distinct_bytes() {
        let e = Entropy([3; 32]);
        assert_eq!(e.attempt(0), [3; 32]);
        assert_ne!(e.attempt(1), e.attempt(2));
    }
}
