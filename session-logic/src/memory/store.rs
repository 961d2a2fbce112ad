//! The keyspace: typed values, expiry instants and a stable scan order. Owns
//! the rule "a key whose expiry instant is at or before `now` does not exist",
//! for `&self` readers too, and removes such keys eagerly in instant order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// All keys, with an index by expiry instant and one by creation order (the
/// SCAN cursor, so a key that lives through a whole scan is always returned).
#[derive(Clone, Debug, Default)]
pub(super) struct Db {
    entries: BTreeMap<Vec<u8>, Entry>,
    expiries: BTreeSet<(u64, Vec<u8>)>,
    created: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
}

/// One key's value and expiry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) data: Data,
    expire: Option<u64>,
    seq: u64,
}

/// A value of one of the three types we use.
#[derive(Clone, Debug)]
pub(super) enum Data {
    Str(Vec<u8>),
    Hash(Hash),
    ZSet(ZSet),
}

impl Data {
    /// The name TYPE replies with.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::ZSet(_) => "zset",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Data::Str(_) => false,
            Data::Hash(h) => h.is_empty(),
            Data::ZSet(z) => z.is_empty(),
        }
    }
}

impl Entry {
    /// The expiry instant, if any.
    pub(super) fn expire(&self) -> Option<u64> {
        self.expire
    }

    fn live(&self, now: u64) -> bool {
        self.expire.is_none_or(|at| at > now)
    }
}

impl Db {
    /// Removes every key whose instant is at or before `now`.
    pub(super) fn purge(&mut self, now: u64) {
        while let Some((at, key)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.remove(&key);
        }
    }

    /// The live entry under `key`.
    pub(super) fn get(&self, key: &[u8], now: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.live(now))
    }

    /// The live entry under `key`, for writing; an expired one is removed first.
    pub(super) fn get_mut(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// Stores `data` under `key`. An existing key keeps its scan position and,
    /// when `keep_ttl`, its expiry; a new key has none.
    pub(super) fn put(&mut self, key: &[u8], data: Data, keep_ttl: bool, now: u64) {
        if let Some(entry) = self.get_mut(key, now) {
            entry.data = data;
            if !keep_ttl {
                self.set_expire(key, None, now);
            }
            return;
        }
        self.next_seq = self.next_seq.saturating_add(1);
        let seq = self.next_seq;
        self.created.insert(seq, key.to_vec());
        self.entries.insert(
            key.to_vec(),
            Entry {
                data,
                expire: None,
                seq,
            },
        );
    }

    /// Deletes `key`; true when it existed (live or not yet purged).
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                if let Some(at) = entry.expire {
                    self.expiries.remove(&(at, key.to_vec()));
                }
                self.created.remove(&entry.seq);
                true
            }
            None => false,
        }
    }

    /// Sets or clears the expiry of an existing key; an instant at or before
    /// `now` deletes it, like Redis's `checkAlreadyExpired`.
    pub(super) fn set_expire(&mut self, key: &[u8], at: Option<u64>, now: u64) {
        if at.is_some_and(|at| at <= now) {
            self.remove(key);
            return;
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(old) = entry.expire.take() {
            self.expiries.remove(&(old, key.to_vec()));
        }
        if let Some(at) = at {
            entry.expire = Some(at);
            self.expiries.insert((at, key.to_vec()));
        }
    }

    /// Deletes `key` when its hash or sorted set has become empty.
    pub(super) fn drop_if_empty(&mut self, key: &[u8]) {
        if self.entries.get(key).is_some_and(|e| e.data.is_empty()) {
            self.remove(key);
        }
    }

    /// Live keys in key order.
    pub(super) fn live(&self, now: u64) -> impl Iterator<Item = (&Vec<u8>, &Entry)> {
        self.entries.iter().filter(move |(_, e)| e.live(now))
    }

    /// Live keys created at or after scan position `from`, in creation order,
    /// with the position that follows each.
    pub(super) fn scan_from(
        &self,
        from: u64,
        now: u64,
    ) -> impl Iterator<Item = (u64, &[u8], &Entry)> {
        self.created.range(from..).filter_map(move |(&seq, key)| {
            let entry = self.entries.get(key)?;
            entry.live(now).then_some((seq, key.as_slice(), entry))
        })
    }
}

/// A hash that remembers insertion order, like a small Redis listpack hash:
/// HGETALL lists fields in the order they were first set.
#[derive(Clone, Debug, Default)]
pub(super) struct Hash {
    fields: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl Hash {
    pub(super) fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.fields.get(field).map(|(_, v)| v.as_slice())
    }

    /// Sets `field`; true when it is new (an existing field keeps its place).
    pub(super) fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        if let Some((_, v)) = self.fields.get_mut(field) {
            *v = value.to_vec();
            return false;
        }
        self.next = self.next.saturating_add(1);
        self.order.insert(self.next, field.to_vec());
        self.fields
            .insert(field.to_vec(), (self.next, value.to_vec()));
        true
    }

    /// Removes `field`; true when it existed.
    pub(super) fn del(&mut self, field: &[u8]) -> bool {
        match self.fields.remove(field) {
            Some((pos, _)) => {
                self.order.remove(&pos);
                true
            }
            None => false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Fields and values in insertion order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.order.values().filter_map(|f| {
            self.fields
                .get(f)
                .map(|(_, v)| (f.as_slice(), v.as_slice()))
        })
    }
}

/// A score in rank order. Scores are never NaN (every write path rejects
/// it), and -0 ranks equal to 0 as in Redis, where the member breaks the tie.
#[derive(Clone, Copy, Debug)]
pub(super) struct Score(pub(super) f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// A sorted set ordered by (score, member bytes), like Redis's.
#[derive(Clone, Debug, Default)]
pub(super) struct ZSet {
    scores: BTreeMap<Vec<u8>, f64>,
    ranked: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    pub(super) fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Inserts `member` or moves it to `score`. A listpack stores scores as
    /// text where -0 prints as "0", so -0 is kept as 0.
    pub(super) fn insert(&mut self, member: &[u8], score: f64) {
        let score = if score == 0.0 { 0.0 } else { score };
        if let Some(old) = self.scores.insert(member.to_vec(), score) {
            self.ranked.remove(&(Score(old), member.to_vec()));
        }
        self.ranked.insert((Score(score), member.to_vec()));
    }

    /// Removes `member`; true when it existed.
    pub(super) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.ranked.remove(&(Score(old), member.to_vec()));
                true
            }
            None => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Members in rank order (ascending score, then member bytes).
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (f64, &[u8])> {
        self.ranked.iter().map(|(s, m)| (s.0, m.as_slice()))
    }
}
