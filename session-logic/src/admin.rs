//! What operators' tools need to know about a store, decided here so that
//! every host's admin commands agree with the rules: which key names are
//! session records, user indexes or someone else's; what a stored record
//! says (decoded strictly, data values optional); and revoking sessions of a
//! user found by scanning when the user's index is gone (through the same
//! `revoke` script as logout-everywhere, so a session that changed owner in
//! between is left alone).
//!
//! The host does the scanning (`SCAN` cursors, batching, bounds); the core
//! never iterates a keyspace.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::engine::Engine;
use crate::error::DecodeError;
use crate::expiry::UnixMillis;
use crate::keys::{Keyspace, UserId};
use crate::record::{self, Meta, Stored};
use crate::step::Reply;

/// What a key name is in this deployment's keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A session record (or rotation marker); `member` is its index member.
    Session {
        /// The key without its prefix, as the user index stores it.
        member: String,
    },
    /// A per-user index.
    UserIndex,
    /// Not ours: outside the prefix, or a shape we never write.
    Foreign,
}

impl Keyspace {
    /// Classify a key name.
    pub fn classify(&self, key: &str) -> KeyKind {
        let Some(rest) = key.strip_prefix(self.prefix()) else {
            return KeyKind::Foreign;
        };
        if rest.starts_with("user:") {
            KeyKind::UserIndex
        } else if self.is_member(rest) {
            KeyKind::Session {
                member: rest.to_owned(),
            }
        } else {
            KeyKind::Foreign
        }
    }
}

/// A stored record as an operator sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RecordView {
    /// No such key.
    Absent,
    /// The marker a regenerated ID leaves for its grace period.
    Rotated {
        /// End of the grace period.
        grace_until: UnixMillis,
    },
    /// A session record.
    Live {
        /// When the ID was minted.
        created: UnixMillis,
        /// Absolute deadline.
        deadline: UnixMillis,
        /// Last touch.
        touch: UnixMillis,
        /// When idleness ends it unless used (`min(touch + idle, deadline)`).
        expires_at: UnixMillis,
        /// Revision.
        rev: u64,
        /// Bound user.
        user: Option<String>,
        /// When the user signed in.
        auth_at: Option<UnixMillis>,
        /// Bound to a client fingerprint.
        client_bound: bool,
        /// Data keys with their encoded size in bytes.
        sizes: BTreeMap<String, usize>,
        /// Data values, only when asked for.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<BTreeMap<String, Value>>,
    },
}

impl Engine {
    /// When a stored session ends unless used again:
    /// `min(touch + idle timeout, absolute deadline)`.
    pub fn expires_at(&self, meta: &Meta) -> UnixMillis {
        crate::expiry::expires_at(meta.touch, self.config().idle_timeout_ms, meta.deadline)
    }

    /// Decode an `HGETALL` reply of a session key for display; values are
    /// included only with `with_values` (they may be personal data).
    pub fn inspect_record(
        &self,
        reply: &Reply,
        with_values: bool,
    ) -> Result<RecordView, DecodeError> {
        Ok(match record::decode(reply)? {
            Stored::Absent => RecordView::Absent,
            Stored::Rotated(until) => RecordView::Rotated { grace_until: until },
            Stored::Live {
                meta,
                user,
                auth_at,
                data,
            } => RecordView::Live {
                created: meta.created,
                deadline: meta.deadline,
                touch: meta.touch,
                expires_at: self.expires_at(&meta),
                rev: meta.rev,
                user: user.map(String::from),
                auth_at,
                client_bound: meta.binding.is_some(),
                sizes: data
                    .iter()
                    .map(|(k, v)| (k.clone(), record::encode_value(v).len()))
                    .collect(),
                data: with_values.then_some(data),
            },
        })
    }

    /// Revoke the sessions with these index `members` (e.g. found by a scan)
    /// while they still belong to `user`: one round, the same `revoke`
    /// script (and `WAIT`) as logout-everywhere. Members that are not
    /// session-shaped are skipped. Ends in `Destroyed { count }`.
    pub fn revoke_members(&self, user: &UserId, members: Vec<String>) -> crate::engine::Op {
        self.op(crate::ops::user::DestroyAll::members(user.clone(), members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::memory::Memory;
    use crate::outcome::Outcome;
    use crate::step::{Command, Round, Step};
    use crate::{Entropy, Op};
    use serde_json::json;

    fn drive(mut op: Op, mem: &mut Memory, now: UnixMillis) -> Outcome {
        loop {
            match op.poll() {
                Step::Done(r) => return r.unwrap(),
                Step::Round(round) => op.handle_replies(mem.execute_round(&round, now)),
            }
        }
    }

    fn hgetall(mem: &mut Memory, key: &str, now: UnixMillis) -> Reply {
        let round = Round(vec![Command::new([
            b"HGETALL".to_vec(),
            key.as_bytes().to_vec(),
        ])]);
        mem.execute_round(&round, now).remove(0)
    }

    #[test]
    fn classify_inspect_and_revoke_by_members() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut mem = Memory::default();
        let now = UnixMillis(1_700_000_000_000);
        let mut s = engine.new_session();
        s.insert("cart", json!([1, 2])).unwrap();
        s.set_user(UserId::new("ann").unwrap(), now);
        let saved = drive(engine.save(s, Entropy([7; 32]), now), &mut mem, now);
        let id = saved.session().unwrap().id().unwrap().clone();
        let key = engine.keyspace().session_key(&id);
        let user_key = engine.keyspace().user_key(&UserId::new("ann").unwrap());

        let KeyKind::Session { member } = engine.keyspace().classify(&key) else {
            panic!("{key} is a session key");
        };
        assert_eq!(engine.keyspace().classify(&user_key), KeyKind::UserIndex);
        assert_eq!(engine.keyspace().classify("other:x"), KeyKind::Foreign);
        assert_eq!(engine.keyspace().classify("sess:short"), KeyKind::Foreign);

        let view = engine
            .inspect_record(&hgetall(&mut mem, &key, now), false)
            .unwrap();
        let RecordView::Live {
            user,
            sizes,
            data,
            expires_at,
            ..
        } = &view
        else {
            panic!("{view:?}")
        };
        assert_eq!(user.as_deref(), Some("ann"));
        assert_eq!(sizes.get("cart"), Some(&5));
        assert!(data.is_none(), "values only on request");
        assert_eq!(*expires_at, now.plus(engine.config().idle_timeout_ms));
        let with = engine
            .inspect_record(&hgetall(&mut mem, &key, now), true)
            .unwrap();
        assert!(
            matches!(with, RecordView::Live { data: Some(d), .. } if d["cart"] == json!([1, 2]))
        );

        // Another user's name does not revoke it; the owner's does.
        let bob = UserId::new("bob").unwrap();
        let out = drive(
            engine.revoke_members(&bob, vec![member.clone()]),
            &mut mem,
            now,
        );
        assert_eq!(
            out,
            Outcome::Destroyed {
                cookie: None,
                count: 0
            }
        );
        let ann = UserId::new("ann").unwrap();
        let junk = vec!["not a member".to_owned(), member];
        let out = drive(engine.revoke_members(&ann, junk), &mut mem, now);
        assert_eq!(
            out,
            Outcome::Destroyed {
                cookie: None,
                count: 1
            }
        );
        assert_eq!(
            engine
                .inspect_record(&hgetall(&mut mem, &key, now), false)
                .unwrap(),
            RecordView::Absent
        );
        let out = drive(engine.revoke_members(&ann, Vec::new()), &mut mem, now);
        assert_eq!(
            out,
            Outcome::Destroyed {
                cookie: None,
                count: 0
            }
        );
    }
}
