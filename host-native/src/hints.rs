//! The layer's touch hints: the core's bounded [`session_logic::TouchHints`]
//! map behind a mutex, shared by every request of a [`SessionLayer`] (or of
//! several, see [`SessionLayer::with_touch_hints`]). While a session's last
//! seen `$touch` is younger than the touch interval its load is a plain
//! `HGETALL` instead of the load script; see `session_logic::hints`.
//!
//! [`SessionLayer`]: crate::SessionLayer
//! [`SessionLayer::with_touch_hints`]: crate::SessionLayer::with_touch_hints

use std::sync::{Mutex, MutexGuard, PoisonError};

use session_logic::{Outcome, UnixMillis};

/// Shared, bounded map of session key → last seen `$touch`.
#[derive(Debug, Default)]
pub struct TouchHints(Mutex<session_logic::TouchHints>);

impl TouchHints {
    /// At most `capacity` keys (0 turns hints off).
    pub fn new(capacity: usize) -> Self {
        TouchHints(Mutex::new(session_logic::TouchHints::new(capacity)))
    }

    /// The hint for `key`, if any.
    pub fn get(&self, key: &str) -> Option<UnixMillis> {
        self.lock().get(key)
    }

    /// Remember what a load of `key` found (see the core type).
    pub fn observe(&self, key: String, outcome: &Outcome) {
        self.lock().observe(key, outcome);
    }

    /// `f` with the map locked (briefly: the native engine builds a load
    /// under it, parsing the cookie and hashing the ID once).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&session_logic::TouchHints) -> T) -> T {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, session_logic::TouchHints> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
