//! The session a request works with: plain data plus the record of what this
//! request changed. `insert`/`remove`/`clear` are pure and only remember the
//! delta; `Engine::save` sends exactly that delta. No locks, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::expiry::UnixMillis;
use crate::id::SessionId;
use crate::keys::UserId;
use crate::record::Meta;

/// Longest data key, bytes.
const MAX_KEY: usize = 256;

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not stored yet: created lazily by the first save that has data.
    New,
    /// Stored and live.
    Live,
    /// The request carried a regenerated ID inside its grace period: no data,
    /// and writes are dropped (the browser already holds the new cookie).
    Rotated,
}

/// One pending change to a data key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    Set,
    Delete,
}

/// A session's data and the delta this request made to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub(crate) id: Option<SessionId>,
    pub(crate) status: Status,
    pub(crate) meta: Option<Meta>,
    pub(crate) user: Option<UserId>,
    pub(crate) auth_at: Option<UnixMillis>,
    /// The user whose index holds this session in Redis.
    pub(crate) indexed_user: Option<UserId>,
    pub(crate) data: BTreeMap<String, Value>,
    pub(crate) changes: BTreeMap<String, Change>,
    pub(crate) user_changed: bool,
    /// The request carried a cookie that led nowhere; an explicit destroy
    /// then sends a removal cookie.
    pub(crate) stale_cookie: bool,
    /// Client-binding hash to store when this session is created.
    pub(crate) binding: Option<String>,
    pub(crate) binding_mismatch: bool,
    pub(crate) rotation_due: bool,
}

impl Session {
    pub(crate) fn fresh(stale_cookie: bool, binding: Option<String>) -> Session {
        Session {
            id: None,
            status: Status::New,
            meta: None,
            user: None,
            auth_at: None,
            indexed_user: None,
            data: BTreeMap::new(),
            changes: BTreeMap::new(),
            user_changed: false,
            stale_cookie,
            binding,
            binding_mismatch: false,
            rotation_due: false,
        }
    }

    /// The ID, once stored. Never log it; log `Engine::sid_hash`.
    pub fn id(&self) -> Option<&SessionId> {
        self.id.as_ref()
    }

    /// New, live or rotated.
    pub fn status(&self) -> Status {
        self.status
    }

    /// A data value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// All data, sorted by key.
    pub fn data(&self) -> &BTreeMap<String, Value> {
        &self.data
    }

    /// Set a data value. Keys are 1..=256 bytes and must not start with `$`
    /// (reserved for metadata). Setting an equal value records no change.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<Option<Value>, InputError> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(InputError::new(
                "data key",
                format!("must be 1..={MAX_KEY} bytes"),
            ));
        }
        if key.starts_with('$') {
            return Err(InputError::new(
                "data key",
                format!("{key:?} starts with '$', which is reserved for metadata"),
            ));
        }
        if self.data.get(&key) == Some(&value) {
            return Ok(Some(value));
        }
        self.changes.insert(key.clone(), Change::Set);
        Ok(self.data.insert(key, value))
    }

    /// Remove a data value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let old = self.data.remove(key);
        if old.is_some() {
            self.changes.insert(key.to_owned(), Change::Delete);
        }
        old
    }

    /// Remove every data value.
    pub fn clear(&mut self) {
        let keys: Vec<String> = self.data.keys().cloned().collect();
        for k in keys {
            self.remove(&k);
        }
    }

    /// Bind a user (sign-in): stores the user id and `auth_at = now`, and
    /// indexes the session for logout-everywhere. Call `Engine::regenerate`
    /// for the same request (fixation defence).
    pub fn set_user(&mut self, user: UserId, now: UnixMillis) {
        self.user = Some(user);
        self.auth_at = Some(now);
        self.user_changed = true;
    }

    /// Unbind the user (sign-out that keeps the session).
    pub fn clear_user(&mut self) {
        if self.user.is_some() {
            self.user = None;
            self.auth_at = None;
            self.user_changed = true;
        }
    }

    /// The bound user.
    pub fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// When the bound user signed in: apps ask this before sensitive actions.
    pub fn auth_at(&self) -> Option<UnixMillis> {
        self.auth_at
    }

    /// Stored metadata (created, deadline, last touch, revision).
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// Whether `save` has anything to write.
    pub fn is_dirty(&self) -> bool {
        !self.changes.is_empty() || self.user_changed
    }

    /// Whether `save` would send anything: changes to write, or an ID
    /// renewal due. Hosts skip the save (and the entropy it takes) when not;
    /// its outcome would be the same session and no cookie.
    pub fn needs_save(&self) -> bool {
        self.status != Status::Rotated && (self.is_dirty() || self.rotation_due)
    }

    /// The client fingerprint differs from the one stored (policy `report`).
    pub fn binding_mismatch(&self) -> bool {
        self.binding_mismatch
    }

    /// `rotate_every` has elapsed: the next save renews the ID.
    pub fn rotation_due(&self) -> bool {
        self.rotation_due
    }

    /// Nothing stored and nothing to store.
    pub(crate) fn is_empty_new(&self) -> bool {
        self.status == Status::New && self.data.is_empty() && self.user.is_none()
    }

    /// Forget the delta after it was written.
    pub(crate) fn mark_saved(&mut self) {
        self.changes.clear();
        self.user_changed = false;
        self.indexed_user = self.user.clone();
        self.stale_cookie = false;
        self.rotation_due = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_records_only_real_changes() {
        let mut s = Session::fresh(false, None);
        s.insert("a", json!(1)).unwrap();
        s.mark_saved();
        s.insert("a", json!(1)).unwrap();
        assert!(!s.is_dirty());
        s.insert("a", json!(2)).unwrap();
        assert!(s.is_dirty());
    }

    #[test]
    fn reserved_and_empty_keys_are_refused() {
        let mut s = Session::fresh(false, None);
        assert!(s.insert("$v", json!(1)).is_err());
        assert!(s.insert("", json!(1)).is_err());
        assert!(s.insert("k".repeat(257), json!(1)).is_err());
    }

    #[test]
    fn clear_deletes_every_key() {
        let mut s = Session::fresh(false, None);
        s.insert("a", json!(1)).unwrap();
        s.insert("b", json!(2)).unwrap();
        s.mark_saved();
        s.clear();
        assert_eq!(s.changes.len(), 2);
        assert!(s.changes.values().all(|c| *c == Change::Delete));
    }
}
