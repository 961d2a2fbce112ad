//! Touch hints, the host side of [`Engine::load_hinted`]: a bounded map of
//! session key → the `$touch` a load last found, or that a write under a new
//! ID (a first write, a regenerate) just set. `$touch` only moves
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

    /// Remember what an operation on `key` found: a loaded session's
    /// `$touch`, or the `$touch` of a session just written under a new ID
    /// (`key` from [`Engine::written_key`]); any other outcome forgets the
    /// key.
    ///
    /// [`Engine::written_key`]: crate::Engine::written_key
    pub fn observe(&mut self, key: String, outcome: &Outcome) {
        if self.capacity == 0 {
            return;
        }
        let session = match outcome {
            Outcome::Loaded(s) => Some(s),
            Outcome::Saved {
                session,
                cookie: Some(_),
            } => Some(session),
            _ => None,
        };
        if let Some(meta) = session.and_then(|s| s.meta()) {
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

    /// A session with data, first written at NOW: its outcome and cookie pair.
    fn created(engine: &Engine, mem: &mut Memory) -> (Outcome, String) {
        let mut s = engine.new_session();
        s.insert("a", json!(1)).unwrap();
        let saved = run(engine.save(s, Entropy([9; 32]), UnixMillis(NOW)), mem, NOW);
        let cookie = saved
            .cookie()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        (saved, cookie)
    }

    #[test]
    fn remembers_loaded_touches_forgets_the_rest_and_stays_bounded() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut mem = Memory::new();
        let (_, cookie) = created(&engine, &mut mem);
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

    #[test]
    fn a_session_written_under_a_new_id_is_remembered_by_its_key() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut mem = Memory::new();
        let (created, cookie) = created(&engine, &mut mem);
        let key = engine.written_key(&created).unwrap();
        assert_eq!(Some(&key), engine.session_key_for(Some(&cookie)).as_ref());
        let mut hints = TouchHints::new(4);
        hints.observe(key.clone(), &created);
        assert_eq!(hints.get(&key), Some(UnixMillis(NOW)));
        // The next load of the new ID reads with a plain HGETALL.
        let (mut op, _) = engine.load_with_hints(Some(&cookie), None, UnixMillis(NOW + 1), &hints);
        let Step::Round(round) = op.poll() else {
            panic!("a load of a known ID sends a round")
        };
        assert_eq!(
            round.commands().first().map(|c| c.name()),
            Some(b"HGETALL".as_slice())
        );
        // A regenerate's new ID too; the old one's load is not a write.
        let Outcome::Loaded(loaded) = run(
            engine.load(Some(&cookie), None, UnixMillis(NOW + 2)),
            &mut mem,
            NOW + 2,
        ) else {
            panic!("loaded")
        };
        let regenerated = run(
            engine.regenerate(loaded, Entropy([7; 32]), UnixMillis(NOW + 3)),
            &mut mem,
            NOW + 3,
        );
        let new_key = engine.written_key(&regenerated).unwrap();
        assert_ne!(new_key, key);
        hints.observe(new_key.clone(), &regenerated);
        assert_eq!(hints.get(&new_key), Some(UnixMillis(NOW + 3)));
        let loaded = run(
            engine.load(Some(&cookie), None, UnixMillis(NOW + 4)),
            &mut mem,
            NOW + 4,
        );
        assert_eq!(engine.written_key(&loaded), None);
    }
}
