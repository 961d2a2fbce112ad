//! The two inputs the core refuses to produce itself: the current time and
//! session-ID entropy. Entropy comes only from the OS CSPRNG; if that fails
//! the request fails, it never falls back to a weaker source.

use std::time::{SystemTime, UNIX_EPOCH};

use session_logic::{Entropy, UnixMillis};

/// Milliseconds since the Unix epoch from the system clock (0 if the clock
/// is set before 1970; saturating far in the future).
pub fn now() -> UnixMillis {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    UnixMillis(ms)
}

/// 32 bytes from the OS CSPRNG (`getrandom`).
pub fn entropy() -> Result<Entropy, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Entropy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_differs_between_calls() {
        assert_ne!(entropy().unwrap().0, entropy().unwrap().0);
    }

    #[test]
    fn now_is_after_2023() {
        assert!(now().0 > 1_700_000_000_000);
    }
}
