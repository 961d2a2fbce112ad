//! Time as an input, and the expiry rule: a session dies at the earlier of its
//! idle deadline (last touch + idle timeout, sliding) and its absolute deadline.
//! Redis TTL is set to exactly that instant, and the machine re-checks it.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, always supplied by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }
    /// `self - other` in ms, zero when `other` is later.
    pub fn since(self, other: UnixMillis) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// The instant a session stops being valid: min(touch + idle, absolute deadline).
pub(crate) fn expires_at(touch: UnixMillis, idle_ms: u64, deadline: UnixMillis) -> UnixMillis {
    touch.plus(idle_ms).min(deadline)
}

/// True when a session with this metadata is dead at `now`.
pub(crate) fn is_expired(
    now: UnixMillis,
    touch: UnixMillis,
    idle_ms: u64,
    deadline: UnixMillis,
) -> bool {
    now >= expires_at(touch, idle_ms, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_the_earlier_of_idle_and_absolute() {
        assert_eq!(
            expires_at(UnixMillis(100), 50, UnixMillis(1000)),
            UnixMillis(150)
        );
        assert_eq!(
            expires_at(UnixMillis(990), 50, UnixMillis(1000)),
            UnixMillis(1000)
        );
        assert!(is_expired(
            UnixMillis(150),
            UnixMillis(100),
            50,
            UnixMillis(1000)
        ));
        assert!(!is_expired(
            UnixMillis(149),
            UnixMillis(100),
            50,
            UnixMillis(1000)
        ));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(UnixMillis(u64::MAX).plus(5), UnixMillis(u64::MAX));
        assert_eq!(UnixMillis(1).since(UnixMillis(5)), 0);
    }
}
