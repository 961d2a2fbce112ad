//! Touch hints: the `$touch` each session key had when this process last
//! loaded it. `$touch` only moves forward, so a remembered value is a lower
//! bound, and while it is younger than the touch interval the core reads
//! with a plain `HGETALL` instead of the load script (the same reply for a
//! fraction of Redis's CPU; see `session_logic::Engine::load_hinted`). A
//! missing or stale hint only means the script runs, as without hints.
//!
//! Keys, not IDs, are remembered (a key is a hash of the ID). The map is
//! bounded: when it is full it is emptied, which costs one script call per
//! session afterwards and nothing else.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use session_logic::{Outcome, UnixMillis};

/// Entries kept by [`TouchHints::default`]: ~100 bytes each.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Shared, bounded map of session key → last seen `$touch`.
#[derive(Debug)]
pub struct TouchHints {
    map: Mutex<HashMap<String, UnixMillis>>,
    capacity: usize,
}

impl Default for TouchHints {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl TouchHints {
    /// At most `capacity` keys (0 turns hints off).
    pub fn new(capacity: usize) -> Self {
        TouchHints {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The hint for `key`, if any.
    pub fn get(&self, key: &str) -> Option<UnixMillis> {
        self.lock().get(key).copied()
    }

    /// Remember what a load of `key` found: a loaded session's `$touch`;
    /// anything else forgets the key.
    pub fn observe(&self, key: String, outcome: &Outcome) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        match outcome {
            Outcome::Loaded(s) => {
                if let Some(meta) = s.meta() {
                    if map.len() >= self.capacity && !map.contains_key(&key) {
                        map.clear();
                    }
                    map.insert(key, meta.touch);
                }
            }
            _ => {
                map.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnixMillis>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use session_logic::{Config, Engine};

    use super::*;
    use crate::executor::{MemoryBackend, drive};

    async fn loaded(engine: &Engine, backend: &MemoryBackend, cookie: &str, now: u64) -> Outcome {
        drive(engine.load(Some(cookie), None, UnixMillis(now)), backend)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn remembers_loaded_touches_forgets_the_rest_and_stays_bounded() {
        let engine = Engine::new(Config::default()).unwrap();
        let backend = MemoryBackend::new();
        let now = crate::clock::now().0;
        let mut s = engine.new_session();
        s.insert("a", serde_json::json!(1)).unwrap();
        let saved = drive(
            engine.save(s, session_logic::Entropy([9; 32]), UnixMillis(now)),
            &backend,
        )
        .await
        .unwrap();
        let cookie = saved
            .cookie()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let key = engine.session_key_for(Some(&cookie)).unwrap();
        let hints = TouchHints::new(2);
        hints.observe(
            key.clone(),
            &loaded(&engine, &backend, &cookie, now + 1).await,
        );
        assert_eq!(hints.get(&key), Some(UnixMillis(now)));
        hints.observe(
            "k1".into(),
            &loaded(&engine, &backend, &cookie, now + 1).await,
        );
        hints.observe(
            "k2".into(),
            &loaded(&engine, &backend, &cookie, now + 1).await,
        );
        assert_eq!(hints.get(&key), None, "full: emptied before k2");
        assert!(hints.get("k2").is_some());
        let unknown = loaded(
            &engine,
            &backend,
            "sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            now,
        )
        .await;
        hints.observe("k2".into(), &unknown);
        assert_eq!(hints.get("k2"), None);
    }
}
