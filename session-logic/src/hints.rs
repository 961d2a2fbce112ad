//! Touch hints, the host side of [`Engine::load_hinted`]: a bounded map of
//! session key → the `$touch` a load last found. `$touch` only moves
//! forward, so a remembered value is a lower bound, and while it is younger
//! than the touch interval a load reads with a plain `HGETALL` instead of
//! the load script. A missing or stale hint only means the script runs.
//!
//! Keys, not IDs, are remembered (a key is a hash of the ID). When full the
//! map is emptied, which costs one script call per session afterwards and
//! nothing else. Hosts wrap it in whatever sharing they need (a mutex in
//! the native host, a `RefCell` in the single-threaded wasm one).
//!
//! [`Engine::load_hinted`]: crate::Engine::load_hinted

use std::collections::HashMap;

use crate::expiry::UnixMillis;
use crate::outcome::Outcome;

/// Keys kept by [`TouchHints::default`].
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Session key → last seen `$touch`, bounded.
#[derive(Clone, Debug)]
pub struct TouchHints {
    map: HashMap<String, UnixMillis>,
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
            map: HashMap::new(),
            capacity,
        }
    }

    /// The hint for `key` ([`Engine::session_key_for`]), if any.
    ///
    /// [`Engine::session_key_for`]: crate::Engine::session_key_for
    pub fn get(&self, key: &str) -> Option<UnixMillis> {
        self.map.get(key).copied()
    }

    /// Remember what a load of `key` found: a loaded session's `$touch`;
    /// any other outcome forgets the key.
    pub fn observe(&mut self, key: String, outcome: &Outcome) {
        if self.capacity == 0 {
            return;
        }
        if let Outcome::Loaded(s) = outcome
            && let Some(meta) = s.meta()
        {
            if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
                self.map.clear();
            }
            self.map.insert(key, meta.touch);
        } else {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::memory::Memory;
    use crate::step::Step;
    use crate::{Config, Engine, Entropy, Op};

    const NOW: u64 = 1_700_000_000_000;

    fn run(mut op: Op, mem: &mut Memory, now: u64) -> Outcome {
        loop {
            match op.poll() {
                Step::Round(round) => op.handle_replies(mem.execute_round(&round, UnixMillis(now))),
                Step::Done(result) => return result.unwrap(),
            }
        }
    }

    #[test]
    fn remembers_loaded_touches_forgets_the_rest_and_stays_bounded() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut mem = Memory::new();
        let mut s = engine.new_session();
        s.insert("a", json!(1)).unwrap();
        let saved = run(
            engine.save(s, Entropy([9; 32]), UnixMillis(NOW)),
            &mut mem,
            NOW,
        );
        let cookie = saved
            .cookie()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let key = engine.session_key_for(Some(&cookie)).unwrap();
        let load = |mem: &mut Memory, cookie: &str| {
            run(
                engine.load(Some(cookie), None, UnixMillis(NOW + 1)),
                mem,
                NOW + 1,
            )
        };

        let mut hints = TouchHints::new(2);
        hints.observe(key.clone(), &load(&mut mem, &cookie));
        assert_eq!(hints.get(&key), Some(UnixMillis(NOW)));
        hints.observe("k1".into(), &load(&mut mem, &cookie));
        hints.observe("k2".into(), &load(&mut mem, &cookie));
        assert_eq!(hints.get(&key), None, "full: emptied before k2");
        assert!(hints.get("k2").is_some());
        let planted = load(&mut mem, "sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        hints.observe("k2".into(), &planted);
        assert_eq!(hints.get("k2"), None);
    }
}
