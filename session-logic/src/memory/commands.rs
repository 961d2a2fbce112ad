//! The data commands our machines and scripts use, each checked against Redis
//! 7.0.15: argument parsing order, error texts, reply shapes, and the rule
//! that a hash or sorted set left empty is deleted while writes keep the TTL.

use super::glob::Glob;
use super::number::{cstr, eq_ci, fmt_g17, string2d, string2ll, strtod};
use super::store::{Data, Db, Hash, ZSet};
use crate::step::Reply;

pub(super) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
pub(super) const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";
const RANGE_NOT_FLOAT: &str = "ERR min or max is not a float";
const LEX_RANGE: &str = "ERR min or max not valid string range item";

/// An error reply from a fixed text.
pub(super) fn err(text: &str) -> Reply {
    Reply::Error(text.to_owned())
}

/// Bytes as they appear inside an error text (Redis copies them verbatim;
/// ours must be a `String`).
pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every command the backend knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmd {
    Ping,
    Get,
    Set,
    Del,
    Exists,
    Type,
    PExpireAt,
    PExpire,
    Pttl,
    HGetAll,
    HGet,
    HMGet,
    HSet,
    HDel,
    HIncrBy,
    ZAdd,
    ZRem,
    ZCard,
    ZRange,
    ZRemRangeByScore,
    Scan,
    Wait,
    Script,
    EvalSha,
    Eval,
}

/// Name (as in arity errors) and Redis arity (negative: at least).
const TABLE: [(Cmd, &str, i64); 25] = [
    (Cmd::Ping, "ping", -1),
    (Cmd::Get, "get", 2),
    (Cmd::Set, "set", -3),
    (Cmd::Del, "del", -2),
    (Cmd::Exists, "exists", -2),
    (Cmd::Type, "type", 2),
    (Cmd::PExpireAt, "pexpireat", -3),
    (Cmd::PExpire, "pexpire", -3),
    (Cmd::Pttl, "pttl", 2),
    (Cmd::HGetAll, "hgetall", 2),
    (Cmd::HGet, "hget", 3),
    (Cmd::HMGet, "hmget", -3),
    (Cmd::HSet, "hset", -4),
    (Cmd::HDel, "hdel", -3),
    (Cmd::HIncrBy, "hincrby", 4),
    (Cmd::ZAdd, "zadd", -4),
    (Cmd::ZRem, "zrem", -3),
    (Cmd::ZCard, "zcard", 2),
    (Cmd::ZRange, "zrange", -4),
    (Cmd::ZRemRangeByScore, "zremrangebyscore", 4),
    (Cmd::Scan, "scan", -2),
    (Cmd::Wait, "wait", 3),
    (Cmd::Script, "script", -2),
    (Cmd::EvalSha, "evalsha", -3),
    (Cmd::Eval, "eval", -3),
];

impl Cmd {
    /// Case-insensitive, binary-safe lookup, like Redis's command table.
    pub(super) fn lookup(name: &[u8]) -> Option<Cmd> {
        TABLE
            .iter()
            .find(|(_, n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(c, _, _)| *c)
    }

    fn entry(self) -> (&'static str, i64) {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .map(|(_, n, a)| (*n, *a))
            .unwrap_or(("", -1))
    }

    /// Lower-case name.
    pub(super) fn name(self) -> &'static str {
        self.entry().0
    }

    /// True when `argc` (name included) satisfies the arity.
    pub(super) fn arity_ok(self, argc: usize) -> bool {
        arity_ok(self.entry().1, argc)
    }
}

/// Redis's arity rule: exact when positive, a minimum when negative.
pub(super) fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// `ERR wrong number of arguments for '<name>' command`.
pub(super) fn arity_error(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Argument `i`, or empty when absent (arity has been checked by then).
pub(super) fn arg<'a>(a: &[&'a [u8]], i: usize) -> &'a [u8] {
    a.get(i).copied().unwrap_or_default()
}

fn now_i64(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

fn int(n: usize) -> Reply {
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Runs a data command whose arity has been checked; `a[0]` is the name.
pub(super) fn call(db: &mut Db, cmd: Cmd, a: &[&[u8]], now: u64) -> Reply {
    let key = arg(a, 1);
    let reply = match cmd {
        Cmd::Ping => match a {
            [_] => Reply::Simple("PONG".to_owned()),
            [_, msg] => Reply::Bulk(msg.to_vec()),
            _ => arity_error("ping"),
        },
        Cmd::Get => get(db, key, now),
        Cmd::Set => set(db, a, now),
        Cmd::Del => {
            let mut n = 0;
            for k in a.iter().skip(1) {
                if db.get_mut(k, now).is_some() && db.remove(k) {
                    n += 1;
                }
            }
            int(n)
        }
        Cmd::Exists => int(a
            .iter()
            .skip(1)
            .filter(|k| db.get(k, now).is_some())
            .count()),
        Cmd::Type => Reply::Simple(
            db.get(key, now)
                .map_or("none", |e| e.data.type_name())
                .to_owned(),
        ),
        Cmd::PExpireAt => expire(db, a, now, 0, "pexpireat"),
        Cmd::PExpire => expire(db, a, now, now_i64(now), "pexpire"),
        Cmd::Pttl => Reply::Int(pttl(db, key, now)),
        Cmd::HGetAll => match db.get(key, now).map(|e| &e.data) {
            None => Reply::Array(Vec::new()),
            Some(Data::Hash(h)) => Reply::Array(
                h.iter()
                    .flat_map(|(f, v)| [Reply::Bulk(f.to_vec()), Reply::Bulk(v.to_vec())])
                    .collect(),
            ),
            Some(_) => err(WRONGTYPE),
        },
        Cmd::HGet => match db.get(key, now).map(|e| &e.data) {
            None => Reply::Nil,
            Some(Data::Hash(h)) => h
                .get(arg(a, 2))
                .map_or(Reply::Nil, |v| Reply::Bulk(v.to_vec())),
            Some(_) => err(WRONGTYPE),
        },
        Cmd::HMGet => {
            let hash = match db.get(key, now).map(|e| &e.data) {
                None => None,
                Some(Data::Hash(h)) => Some(h),
                Some(_) => return err(WRONGTYPE),
            };
            Reply::Array(
                a.iter()
                    .skip(2)
                    .map(|f| match hash.and_then(|h| h.get(f)) {
                        Some(v) => Reply::Bulk(v.to_vec()),
                        None => Reply::Nil,
                    })
                    .collect(),
            )
        }
        Cmd::HSet => hset(db, a, now),
        Cmd::HDel => match db.get_mut(key, now).map(|e| &mut e.data) {
            None => Reply::Int(0),
            Some(Data::Hash(h)) => int(a.iter().skip(2).filter(|f| h.del(f)).count()),
            Some(_) => err(WRONGTYPE),
        },
        Cmd::HIncrBy => hincrby(db, a, now),
        Cmd::ZAdd => zadd(db, a, now),
        Cmd::ZRem => match db.get_mut(key, now).map(|e| &mut e.data) {
            None => Reply::Int(0),
            Some(Data::ZSet(z)) => int(a.iter().skip(2).filter(|m| z.remove(m)).count()),
            Some(_) => err(WRONGTYPE),
        },
        Cmd::ZCard => match db.get(key, now).map(|e| &e.data) {
            None => Reply::Int(0),
            Some(Data::ZSet(z)) => int(z.len()),
            Some(_) => err(WRONGTYPE),
        },
        Cmd::ZRange => zrange(db, a, now),
        Cmd::ZRemRangeByScore => zremrangebyscore(db, a, now),
        Cmd::Scan => scan(db, a, now),
        // Served by the backend itself (they need its script cache or replica count).
        Cmd::Wait | Cmd::Script | Cmd::EvalSha | Cmd::Eval => err("ERR command not available here"),
    };
    if !matches!(cmd, Cmd::Del | Cmd::Scan) {
        db.drop_if_empty(key);
    }
    reply
}

fn get(db: &Db, key: &[u8], now: u64) -> Reply {
    match db.get(key, now).map(|e| &e.data) {
        None => Reply::Nil,
        Some(Data::Str(v)) => Reply::Bulk(v.clone()),
        Some(_) => err(WRONGTYPE),
    }
}

/// PTTL's number: -2 missing, -1 no TTL, else milliseconds left.
pub(super) fn pttl(db: &Db, key: &[u8], now: u64) -> i64 {
    match db.get(key, now) {
        None => -2,
        Some(e) => match e.expire() {
            None => -1,
            Some(at) => i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX),
        },
    }
}

#[derive(Default)]
struct SetFlags {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    ex: bool,
    px: bool,
    exat: bool,
    pxat: bool,
}

fn set(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    let key = arg(a, 1);
    let mut f = SetFlags::default();
    let mut expire: Option<&[u8]> = None;
    let mut j = 3;
    while j < a.len() {
        let opt = arg(a, j);
        let next = a.get(j + 1).copied();
        if eq_ci(opt, "nx") && !f.xx {
            f.nx = true;
        } else if eq_ci(opt, "xx") && !f.nx {
            f.xx = true;
        } else if eq_ci(opt, "get") {
            f.get = true;
        } else if eq_ci(opt, "keepttl") && !f.ex && !f.exat && !f.px && !f.pxat {
            f.keepttl = true;
        } else if eq_ci(opt, "ex") && !f.keepttl && !f.exat && !f.px && !f.pxat && next.is_some() {
            f.ex = true;
            expire = next;
            j += 1;
        } else if eq_ci(opt, "px") && !f.keepttl && !f.ex && !f.exat && !f.pxat && next.is_some() {
            f.px = true;
            expire = next;
            j += 1;
        } else if eq_ci(opt, "exat") && !f.keepttl && !f.ex && !f.px && !f.pxat && next.is_some() {
            f.exat = true;
            expire = next;
            j += 1;
        } else if eq_ci(opt, "pxat") && !f.keepttl && !f.ex && !f.exat && !f.px && next.is_some() {
            f.pxat = true;
            expire = next;
            j += 1;
        } else {
            return err(SYNTAX);
        }
        j += 1;
    }
    let mut when: Option<i64> = None;
    if let Some(text) = expire {
        let Some(mut ms) = string2ll(text) else {
            return err(NOT_INT);
        };
        let seconds = f.ex || f.exat;
        let invalid = Reply::Error("ERR invalid expire time in 'set' command".to_owned());
        if ms <= 0 || (seconds && ms > i64::MAX / 1000) {
            return invalid;
        }
        if seconds {
            ms *= 1000;
        }
        if f.ex || f.px {
            match ms.checked_add(now_i64(now)) {
                Some(at) => ms = at,
                None => return invalid,
            }
        }
        when = Some(ms);
    }
    let old = if f.get {
        match get(db, key, now) {
            e @ Reply::Error(_) => return e,
            old => Some(old),
        }
    } else {
        None
    };
    let found = db.get(key, now).is_some();
    if (f.nx && found) || (f.xx && !found) {
        return old.unwrap_or(Reply::Nil);
    }
    let value = arg(a, 2).to_vec();
    db.put(key, Data::Str(value), f.keepttl, now);
    if let Some(at) = when {
        db.set_expire(key, Some(u64::try_from(at).unwrap_or(0)), now);
    }
    old.unwrap_or_else(|| Reply::Simple("OK".to_owned()))
}

fn expire(db: &mut Db, a: &[&[u8]], now: u64, base: i64, name: &str) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in a.iter().skip(3) {
        if eq_ci(opt, "nx") {
            nx = true;
        } else if eq_ci(opt, "xx") {
            xx = true;
        } else if eq_ci(opt, "gt") {
            gt = true;
        } else if eq_ci(opt, "lt") {
            lt = true;
        } else {
            return Reply::Error(format!("ERR Unsupported option {}", lossy(cstr(opt))));
        }
    }
    if nx && (xx || gt || lt) {
        return err("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return err("ERR GT and LT options at the same time are not compatible");
    }
    let Some(when) = string2ll(arg(a, 2)) else {
        return err(NOT_INT);
    };
    let Some(when) = when.checked_add(base) else {
        return Reply::Error(format!("ERR invalid expire time in '{name}' command"));
    };
    let key = arg(a, 1);
    let Some(entry) = db.get_mut(key, now) else {
        return Reply::Int(0);
    };
    let current = entry
        .expire()
        .map(|at| i64::try_from(at).unwrap_or(i64::MAX));
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| when <= c))
        || (lt && current.is_some_and(|c| when >= c));
    if refused {
        return Reply::Int(0);
    }
    // A past-or-present instant deletes the key (Redis's checkAlreadyExpired).
    let at = u64::try_from(when).unwrap_or(0);
    db.set_expire(key, Some(at), now);
    Reply::Int(1)
}

/// The hash under `key`, created when missing.
fn hash_for_write<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<&'d mut Hash, Reply> {
    match db.get(key, now).map(|e| &e.data) {
        Some(Data::Hash(_)) => {}
        Some(_) => return Err(err(WRONGTYPE)),
        None => db.put(key, Data::Hash(Hash::default()), false, now),
    }
    match db.get_mut(key, now).map(|e| &mut e.data) {
        Some(Data::Hash(h)) => Ok(h),
        _ => Err(err(WRONGTYPE)),
    }
}

/// The sorted set under `key`, created when missing.
fn zset_for_write<'d>(db: &'d mut Db, key: &[u8], now: u64) -> Result<&'d mut ZSet, Reply> {
    match db.get(key, now).map(|e| &e.data) {
        Some(Data::ZSet(_)) => {}
        Some(_) => return Err(err(WRONGTYPE)),
        None => db.put(key, Data::ZSet(ZSet::default()), false, now),
    }
    match db.get_mut(key, now).map(|e| &mut e.data) {
        Some(Data::ZSet(z)) => Ok(z),
        _ => Err(err(WRONGTYPE)),
    }
}

fn hset(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    if a.len() % 2 == 1 {
        return arity_error("hset");
    }
    let h = match hash_for_write(db, arg(a, 1), now) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let mut created = 0;
    for pair in a.get(2..).unwrap_or_default().chunks_exact(2) {
        if let [f, v] = pair
            && h.set(f, v)
        {
            created += 1;
        }
    }
    int(created)
}

fn hincrby(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    let Some(incr) = string2ll(arg(a, 3)) else {
        return err(NOT_INT);
    };
    let h = match hash_for_write(db, arg(a, 1), now) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let field = arg(a, 2);
    let old = match h.get(field) {
        Some(v) => match string2ll(v) {
            Some(n) => n,
            None => return err("ERR hash value is not an integer"),
        },
        None => 0,
    };
    let Some(new) = old.checked_add(incr) else {
        return err("ERR increment or decrement would overflow");
    };
    h.set(field, new.to_string().as_bytes());
    Reply::Int(new)
}

fn zadd(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    let (mut nx, mut xx, mut ch, mut incr, mut gt, mut lt) =
        (false, false, false, false, false, false);
    let mut at = 2;
    while let Some(opt) = a.get(at) {
        if eq_ci(opt, "nx") {
            nx = true;
        } else if eq_ci(opt, "xx") {
            xx = true;
        } else if eq_ci(opt, "ch") {
            ch = true;
        } else if eq_ci(opt, "incr") {
            incr = true;
        } else if eq_ci(opt, "gt") {
            gt = true;
        } else if eq_ci(opt, "lt") {
            lt = true;
        } else {
            break;
        }
        at += 1;
    }
    let rest = a.get(at..).unwrap_or_default();
    if rest.is_empty() || rest.len() % 2 == 1 {
        return err(SYNTAX);
    }
    if nx && xx {
        return err("ERR XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return err("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && rest.len() > 2 {
        return err("ERR INCR option supports a single increment-element pair");
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks_exact(2) {
        if let [score, member] = pair {
            let Some(score) = string2d(score) else {
                return err(NOT_FLOAT);
            };
            pairs.push((score, *member));
        }
    }
    let key = arg(a, 1);
    let absent_reply = if incr { Reply::Nil } else { Reply::Int(0) };
    match db.get(key, now).map(|e| &e.data) {
        Some(Data::ZSet(_)) => {}
        Some(_) => return err(WRONGTYPE),
        None if xx => return absent_reply,
        None => {}
    }
    let z = match zset_for_write(db, key, now) {
        Ok(z) => z,
        Err(e) => return e,
    };
    let (mut added, mut updated, mut processed) = (0usize, 0usize, 0usize);
    let mut last = 0.0;
    for (score, member) in pairs {
        match z.score(member) {
            Some(_) if nx => {}
            Some(cur) => {
                let new = if incr { score + cur } else { score };
                if new.is_nan() {
                    return err("ERR resulting score is not a number (NaN)");
                }
                if (lt && new >= cur) || (gt && new <= cur) {
                    continue;
                }
                processed += 1;
                last = new;
                // -0 and 0 compare equal: no move, the stored score stays.
                if new != cur {
                    z.insert(member, new);
                    updated += 1;
                }
            }
            None if xx => {}
            None => {
                z.insert(member, score);
                added += 1;
                processed += 1;
                last = score;
            }
        }
    }
    if incr {
        if processed > 0 {
            Reply::Bulk(fmt_g17(last).into_bytes())
        } else {
            Reply::Nil
        }
    } else {
        int(if ch { added + updated } else { added })
    }
}

/// A parsed `min`/`max` score bound (`(` makes it exclusive).
#[derive(Clone, Copy)]
struct ScoreRange {
    min: f64,
    minex: bool,
    max: f64,
    maxex: bool,
}

impl ScoreRange {
    /// zslParseRange: `strtod` over the C string, NaN refused.
    fn parse(min: &[u8], max: &[u8]) -> Option<ScoreRange> {
        let bound = |s: &[u8]| -> Option<(f64, bool)> {
            let (body, ex) = match s.split_first() {
                Some((b'(', rest)) => (rest, true),
                _ => (s, false),
            };
            let body = cstr(body);
            let r = strtod(body);
            (r.len == body.len() && !r.value.is_nan()).then_some((r.value, ex))
        };
        let (min, minex) = bound(min)?;
        let (max, maxex) = bound(max)?;
        Some(ScoreRange {
            min,
            minex,
            max,
            maxex,
        })
    }

    fn gte_min(&self, v: f64) -> bool {
        if self.minex {
            v > self.min
        } else {
            v >= self.min
        }
    }

    fn lte_max(&self, v: f64) -> bool {
        if self.maxex {
            v < self.max
        } else {
            v <= self.max
        }
    }
}

/// One end of a BYLEX range.
#[derive(Clone)]
enum LexBound {
    Min,
    Max,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

impl LexBound {
    fn parse(s: &[u8]) -> Option<LexBound> {
        match s.split_first() {
            Some((b'+', rest)) => (rest.first().is_none_or(|&b| b == 0)).then_some(LexBound::Max),
            Some((b'-', rest)) => (rest.first().is_none_or(|&b| b == 0)).then_some(LexBound::Min),
            Some((b'(', rest)) => Some(LexBound::Excl(rest.to_vec())),
            Some((b'[', rest)) => Some(LexBound::Incl(rest.to_vec())),
            _ => None,
        }
    }
}

fn lex_gte_min(min: &LexBound, v: &[u8]) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(s) => v >= s.as_slice(),
        LexBound::Excl(s) => v > s.as_slice(),
    }
}

fn lex_lte_max(max: &LexBound, v: &[u8]) -> bool {
    match max {
        LexBound::Max => true,
        LexBound::Min => false,
        LexBound::Incl(s) => v <= s.as_slice(),
        LexBound::Excl(s) => v < s.as_slice(),
    }
}

/// zslIsInLexRange's first test: the range itself is not empty.
fn lex_range_nonempty(min: &LexBound, max: &LexBound) -> bool {
    let rank = |b: &LexBound| match b {
        LexBound::Min => 0,
        LexBound::Max => 2,
        _ => 1,
    };
    let text = |b: &LexBound| match b {
        LexBound::Incl(s) | LexBound::Excl(s) => s.clone(),
        _ => Vec::new(),
    };
    let ex = |b: &LexBound| !matches!(b, LexBound::Incl(_));
    let cmp = if std::ptr::eq(min, max) {
        std::cmp::Ordering::Equal
    } else {
        rank(min)
            .cmp(&rank(max))
            .then_with(|| text(min).cmp(&text(max)))
    };
    !(cmp.is_gt() || (cmp.is_eq() && (ex(min) || ex(max))))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeBy {
    Rank,
    Score,
    Lex,
}

fn get_long(s: &[u8]) -> Result<i64, Reply> {
    string2ll(s).ok_or_else(|| err(NOT_INT))
}

fn zrange(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    let (mut withscores, mut rev) = (false, false);
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut by: Option<RangeBy> = None;
    let mut j = 4;
    while let Some(opt) = a.get(j) {
        let left = a.len() - j - 1;
        if eq_ci(opt, "withscores") {
            withscores = true;
        } else if eq_ci(opt, "limit") && left >= 2 {
            match (get_long(arg(a, j + 1)), get_long(arg(a, j + 2))) {
                (Ok(o), Ok(l)) => (offset, limit) = (o, l),
                (Err(e), _) | (_, Err(e)) => return e,
            }
            j += 2;
        } else if !rev && eq_ci(opt, "rev") {
            rev = true;
        } else if by.is_none() && eq_ci(opt, "bylex") {
            by = Some(RangeBy::Lex);
        } else if by.is_none() && eq_ci(opt, "byscore") {
            by = Some(RangeBy::Score);
        } else {
            return err(SYNTAX);
        }
        j += 1;
    }
    let by = by.unwrap_or(RangeBy::Rank);
    if limit != -1 && by == RangeBy::Rank {
        return err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if withscores && by == RangeBy::Lex {
        return err("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    }
    let (lo, hi) = if rev && by != RangeBy::Rank {
        (arg(a, 3), arg(a, 2))
    } else {
        (arg(a, 2), arg(a, 3))
    };
    enum Parsed {
        Rank(i64, i64),
        Score(ScoreRange),
        Lex(LexBound, LexBound),
    }
    let parsed = match by {
        RangeBy::Rank => match (get_long(lo), get_long(hi)) {
            (Ok(s), Ok(e)) => Parsed::Rank(s, e),
            (Err(e), _) | (_, Err(e)) => return e,
        },
        RangeBy::Score => match ScoreRange::parse(lo, hi) {
            Some(r) => Parsed::Score(r),
            None => return err(RANGE_NOT_FLOAT),
        },
        RangeBy::Lex => match (LexBound::parse(lo), LexBound::parse(hi)) {
            (Some(min), Some(max)) => Parsed::Lex(min, max),
            _ => return err(LEX_RANGE),
        },
    };
    let z = match db.get(arg(a, 1), now).map(|e| &e.data) {
        None => return Reply::Array(Vec::new()),
        Some(Data::ZSet(z)) => z,
        Some(_) => return err(WRONGTYPE),
    };
    let picked: Vec<(f64, &[u8])> = match parsed {
        Parsed::Rank(start, end) => by_rank(z, start, end, rev),
        Parsed::Score(r) => by_score(z, &r, offset, limit, rev),
        Parsed::Lex(min, max) => by_lex(z, &min, &max, offset, limit, rev),
    };
    let mut out = Vec::with_capacity(picked.len() * if withscores { 2 } else { 1 });
    for (score, member) in picked {
        out.push(Reply::Bulk(member.to_vec()));
        if withscores {
            out.push(Reply::Bulk(fmt_g17(score).into_bytes()));
        }
    }
    Reply::Array(out)
}

fn by_rank(z: &ZSet, start: i64, end: i64, rev: bool) -> Vec<(f64, &[u8])> {
    let len = i64::try_from(z.len()).unwrap_or(i64::MAX);
    let mut start = if start < 0 {
        len.saturating_add(start)
    } else {
        start
    };
    let mut end = if end < 0 {
        len.saturating_add(end)
    } else {
        end
    };
    if start < 0 {
        start = 0;
    }
    if start > end || start >= len {
        return Vec::new();
    }
    if end >= len {
        end = len - 1;
    }
    let skip = usize::try_from(start).unwrap_or(usize::MAX);
    let take = usize::try_from(end - start + 1).unwrap_or(0);
    if rev {
        z.iter().rev().skip(skip).take(take).collect()
    } else {
        z.iter().skip(skip).take(take).collect()
    }
}

/// Applies Redis's `while (eptr && offset--)` / `while (eptr && limit--)`
/// loops: a negative offset skips everything, a negative limit is no limit.
fn window<'z>(
    from: impl Iterator<Item = (f64, &'z [u8])>,
    offset: i64,
    limit: i64,
    keep: impl Fn(f64, &[u8]) -> bool,
) -> Vec<(f64, &'z [u8])> {
    if offset < 0 {
        return Vec::new();
    }
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = if limit < 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    from.skip(skip)
        .take(take)
        .take_while(|&(s, m)| keep(s, m))
        .collect()
}

fn by_score<'z>(
    z: &'z ZSet,
    r: &ScoreRange,
    offset: i64,
    limit: i64,
    rev: bool,
) -> Vec<(f64, &'z [u8])> {
    let len = i64::try_from(z.len()).unwrap_or(i64::MAX);
    if offset > 0 && offset >= len {
        return Vec::new();
    }
    if rev {
        let Some(pos) = z.iter().rev().position(|(s, _)| r.lte_max(s)) else {
            return Vec::new();
        };
        let first = z.iter().rev().nth(pos);
        if !first.is_some_and(|(s, _)| r.gte_min(s)) {
            return Vec::new();
        }
        window(z.iter().rev().skip(pos), offset, limit, |s, _| r.gte_min(s))
    } else {
        let Some(pos) = z.iter().position(|(s, _)| r.gte_min(s)) else {
            return Vec::new();
        };
        let first = z.iter().nth(pos);
        if !first.is_some_and(|(s, _)| r.lte_max(s)) {
            return Vec::new();
        }
        window(z.iter().skip(pos), offset, limit, |s, _| r.lte_max(s))
    }
}

fn by_lex<'z>(
    z: &'z ZSet,
    min: &LexBound,
    max: &LexBound,
    offset: i64,
    limit: i64,
    rev: bool,
) -> Vec<(f64, &'z [u8])> {
    let len = i64::try_from(z.len()).unwrap_or(i64::MAX);
    if offset > 0 && offset >= len {
        return Vec::new();
    }
    // zzlIsInLexRange: a non-empty range, last member >= min, first member <= max.
    let in_range = lex_range_nonempty(min, max)
        && z.iter()
            .next_back()
            .is_some_and(|(_, m)| lex_gte_min(min, m))
        && z.iter().next().is_some_and(|(_, m)| lex_lte_max(max, m));
    if !in_range {
        return Vec::new();
    }
    if rev {
        let Some(pos) = z.iter().rev().position(|(_, m)| lex_lte_max(max, m)) else {
            return Vec::new();
        };
        if !z
            .iter()
            .rev()
            .nth(pos)
            .is_some_and(|(_, m)| lex_gte_min(min, m))
        {
            return Vec::new();
        }
        window(z.iter().rev().skip(pos), offset, limit, |_, m| {
            lex_gte_min(min, m)
        })
    } else {
        let Some(pos) = z.iter().position(|(_, m)| lex_gte_min(min, m)) else {
            return Vec::new();
        };
        if !z.iter().nth(pos).is_some_and(|(_, m)| lex_lte_max(max, m)) {
            return Vec::new();
        }
        window(z.iter().skip(pos), offset, limit, |_, m| {
            lex_lte_max(max, m)
        })
    }
}

fn zremrangebyscore(db: &mut Db, a: &[&[u8]], now: u64) -> Reply {
    let Some(range) = ScoreRange::parse(arg(a, 2), arg(a, 3)) else {
        return err(RANGE_NOT_FLOAT);
    };
    let z = match db.get_mut(arg(a, 1), now).map(|e| &mut e.data) {
        None => return Reply::Int(0),
        Some(Data::ZSet(z)) => z,
        Some(_) => return err(WRONGTYPE),
    };
    let doomed: Vec<Vec<u8>> = z
        .iter()
        .filter(|&(s, _)| range.gte_min(s) && range.lte_max(s))
        .map(|(_, m)| m.to_vec())
        .collect();
    for m in &doomed {
        z.remove(m);
    }
    int(doomed.len())
}

/// parseScanCursorOrReply: `strtoul` base 10 over the C string, no leading space.
fn scan_cursor(s: &[u8]) -> Option<u64> {
    let s = cstr(s);
    match s.first() {
        None => return Some(0),
        Some(&b) if super::number::is_c_space(b) => return None,
        Some(_) => {}
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { v.wrapping_neg() } else { v })
}

fn scan(db: &Db, a: &[&[u8]], now: u64) -> Reply {
    let Some(cursor) = scan_cursor(arg(a, 1)) else {
        return err("ERR invalid cursor");
    };
    let mut count: i64 = 10;
    let mut pattern: Option<Glob> = None;
    let mut type_name: Option<&[u8]> = None;
    let mut i = 2;
    while let Some(opt) = a.get(i) {
        let left = a.len() - i;
        if eq_ci(opt, "count") && left >= 2 {
            count = match get_long(arg(a, i + 1)) {
                Ok(n) => n,
                Err(e) => return e,
            };
            if count < 1 {
                return err(SYNTAX);
            }
        } else if eq_ci(opt, "match") && left >= 2 {
            let pat = arg(a, i + 1);
            pattern = (pat != b"*").then(|| Glob::new(pat));
        } else if eq_ci(opt, "type") && left >= 2 {
            type_name = Some(cstr(arg(a, i + 1)));
        } else {
            return err(SYNTAX);
        }
        i += 2;
    }
    let budget = usize::try_from(count).unwrap_or(usize::MAX);
    let mut keys = Vec::new();
    let mut next = 0;
    for (n, (seq, key, entry)) in db.scan_from(cursor, now).enumerate() {
        if n == budget {
            next = seq;
            break;
        }
        let wanted = pattern.as_ref().is_none_or(|g| g.matches(key))
            && type_name.is_none_or(|t| t.eq_ignore_ascii_case(entry.data.type_name().as_bytes()));
        if wanted {
            keys.push(Reply::Bulk(key.to_vec()));
        }
    }
    Reply::Array(vec![
        Reply::Bulk(next.to_string().into_bytes()),
        Reply::Array(keys),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::Memory;
    use crate::expiry::UnixMillis;
    use crate::step::{Command, Reply};

    const NOW: u64 = 1_700_000_000_000;

    fn at(m: &mut Memory, now: u64, args: &[&str]) -> Reply {
        m.execute(
            &Command(args.iter().map(|a| a.as_bytes().to_vec()).collect()),
            UnixMillis(now),
        )
    }
    fn run(m: &mut Memory, args: &[&str]) -> Reply {
        at(m, NOW, args)
    }
    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }
    fn bulks(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(|s| bulk(s)).collect())
    }
    fn error(s: &str) -> Reply {
        Reply::Error(s.to_owned())
    }
    fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }
    const WRONGTYPE: &str = super::WRONGTYPE;
    const NOT_INT: &str = super::NOT_INT;

    #[test]
    fn strings_set_get_type_and_overwrite() {
        let mut m = Memory::new();
        assert_eq!(run(&mut m, &["GET", "s"]), Reply::Nil);
        assert_eq!(run(&mut m, &["TYPE", "s"]), Reply::Simple("none".into()));
        assert_eq!(run(&mut m, &["set", "s", "v"]), ok());
        assert_eq!(run(&mut m, &["GET", "s"]), bulk("v"));
        assert_eq!(run(&mut m, &["TYPE", "s"]), Reply::Simple("string".into()));
        run(&mut m, &["HSET", "h", "f", "v"]);
        assert_eq!(run(&mut m, &["GET", "h"]), error(WRONGTYPE));
        assert_eq!(run(&mut m, &["PEXPIRE", "h", "5000"]), Reply::Int(1));
        // SET replaces any type and clears the TTL.
        assert_eq!(run(&mut m, &["SET", "h", "x"]), ok());
        assert_eq!(run(&mut m, &["TYPE", "h"]), Reply::Simple("string".into()));
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(-1));
    }

    #[test]
    fn set_options_follow_redis() {
        let mut m = Memory::new();
        assert_eq!(run(&mut m, &["SET", "s", "1", "NX"]), ok());
        assert_eq!(run(&mut m, &["SET", "s", "2", "NX"]), Reply::Nil);
        assert_eq!(run(&mut m, &["SET", "s", "3", "XX", "GET"]), bulk("1"));
        assert_eq!(run(&mut m, &["SET", "s", "4", "PX", "1000"]), ok());
        assert_eq!(run(&mut m, &["SET", "s", "5", "KEEPTTL"]), ok());
        assert_eq!(run(&mut m, &["PTTL", "s"]), Reply::Int(1000));
        assert_eq!(
            run(&mut m, &["SET", "s", "5", "PX", "0"]),
            error("ERR invalid expire time in 'set' command")
        );
        assert_eq!(run(&mut m, &["SET", "s", "5", "PX", "x"]), error(NOT_INT));
        assert_eq!(
            run(&mut m, &["SET", "s", "5", "EX", "1", "PX", "1"]),
            error("ERR syntax error")
        );
        assert_eq!(
            run(&mut m, &["SET", "s", "5", "PX"]),
            error("ERR syntax error")
        );
        assert_eq!(run(&mut m, &["SET", "s", "5", "PXAT", "1"]), ok());
        assert_eq!(run(&mut m, &["EXISTS", "s"]), Reply::Int(0));
        run(&mut m, &["HSET", "h", "f", "v"]);
        assert_eq!(run(&mut m, &["SET", "h", "5", "GET"]), error(WRONGTYPE));
    }

    #[test]
    fn del_and_exists_count_keys() {
        let mut m = Memory::new();
        run(&mut m, &["SET", "a", "1"]);
        run(&mut m, &["HSET", "b", "f", "v"]);
        assert_eq!(run(&mut m, &["EXISTS", "a", "a", "b", "c"]), Reply::Int(3));
        assert_eq!(run(&mut m, &["DEL", "a", "a", "b", "c"]), Reply::Int(2));
        assert_eq!(run(&mut m, &["EXISTS", "a", "b"]), Reply::Int(0));
    }

    #[test]
    fn arity_and_unknown_command_texts_match_redis() {
        let mut m = Memory::new();
        assert_eq!(
            run(&mut m, &["get"]),
            error("ERR wrong number of arguments for 'get' command")
        );
        assert_eq!(
            run(&mut m, &["HSET", "h", "f"]),
            error("ERR wrong number of arguments for 'hset' command")
        );
        assert_eq!(
            run(&mut m, &["HSET", "h", "f", "v", "g"]),
            error("ERR wrong number of arguments for 'hset' command")
        );
        assert_eq!(
            run(&mut m, &["PING", "a", "b"]),
            error("ERR wrong number of arguments for 'ping' command")
        );
        assert_eq!(run(&mut m, &["PING"]), Reply::Simple("PONG".into()));
        assert_eq!(run(&mut m, &["PING", "hi"]), bulk("hi"));
        assert_eq!(
            run(&mut m, &["foo", "a", "b"]),
            error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            run(&mut m, &["foo", "a\r\nb"]),
            error("ERR unknown command 'foo', with args beginning with: 'a  b' ")
        );
        assert_eq!(
            m.execute(&Command(Vec::new()), UnixMillis(NOW)),
            error("ERR unknown command '', with args beginning with: ")
        );
        let long = "y".repeat(100);
        let reply = run(&mut m, &["x", &long, &"z".repeat(100)]);
        assert_eq!(
            reply,
            error(&format!(
                "ERR unknown command 'x', with args beginning with: '{long}' '{}' ",
                "z".repeat(25)
            ))
        );
    }

    #[test]
    fn hash_commands_keep_insertion_order_and_ttl() {
        let mut m = Memory::new();
        assert_eq!(
            run(&mut m, &["HSET", "h", "a", "1", "b", "2", "c", "3"]),
            Reply::Int(3)
        );
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", &(NOW + 5000).to_string()]),
            Reply::Int(1)
        );
        assert_eq!(
            run(&mut m, &["HSET", "h", "b", "20", "d", "4"]),
            Reply::Int(1)
        );
        assert_eq!(run(&mut m, &["HDEL", "h", "a", "zz"]), Reply::Int(1));
        assert_eq!(run(&mut m, &["HSET", "h", "a", "10"]), Reply::Int(1));
        assert_eq!(
            run(&mut m, &["HGETALL", "h"]),
            bulks(&["b", "20", "c", "3", "d", "4", "a", "10"])
        );
        assert_eq!(run(&mut m, &["HGET", "h", "c"]), bulk("3"));
        assert_eq!(run(&mut m, &["HGET", "h", "zz"]), Reply::Nil);
        assert_eq!(
            run(&mut m, &["HMGET", "h", "d", "zz"]),
            Reply::Array(vec![bulk("4"), Reply::Nil])
        );
        assert_eq!(
            run(&mut m, &["HMGET", "nope", "d"]),
            Reply::Array(vec![Reply::Nil])
        );
        assert_eq!(run(&mut m, &["HGETALL", "nope"]), Reply::Array(vec![]));
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(5000));
        assert_eq!(
            run(&mut m, &["HDEL", "h", "a", "b", "c", "d"]),
            Reply::Int(4)
        );
        assert_eq!(run(&mut m, &["EXISTS", "h"]), Reply::Int(0));
        run(&mut m, &["SET", "s", "v"]);
        for args in [
            &["HGETALL", "s"][..],
            &["HGET", "s", "f"],
            &["HMGET", "s", "f"],
            &["HSET", "s", "f", "v"],
            &["HDEL", "s", "f"],
        ] {
            assert_eq!(run(&mut m, args), error(WRONGTYPE), "{args:?}");
        }
    }

    #[test]
    fn hincrby_follows_redis() {
        let mut m = Memory::new();
        assert_eq!(run(&mut m, &["HINCRBY", "h", "$rev", "1"]), Reply::Int(1));
        assert_eq!(run(&mut m, &["HINCRBY", "h", "$rev", "-5"]), Reply::Int(-4));
        assert_eq!(run(&mut m, &["HGET", "h", "$rev"]), bulk("-4"));
        assert_eq!(
            run(&mut m, &["HINCRBY", "h", "$rev", "1.5"]),
            error(NOT_INT)
        );
        run(&mut m, &["HSET", "h", "t", " 5"]);
        assert_eq!(
            run(&mut m, &["HINCRBY", "h", "t", "1"]),
            error("ERR hash value is not an integer")
        );
        run(&mut m, &["HSET", "h", "big", "9223372036854775807"]);
        assert_eq!(
            run(&mut m, &["HINCRBY", "h", "big", "1"]),
            error("ERR increment or decrement would overflow")
        );
    }

    #[test]
    fn expire_commands_follow_redis_7() {
        let mut m = Memory::new();
        let later = (NOW + 10_000).to_string();
        assert_eq!(run(&mut m, &["PEXPIREAT", "h", &later]), Reply::Int(0));
        run(&mut m, &["HSET", "h", "f", "v"]);
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(-1));
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", &later, "XX"]),
            Reply::Int(0)
        );
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", &later, "NX"]),
            Reply::Int(1)
        );
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(10_000));
        assert_eq!(run(&mut m, &["PEXPIRE", "h", "20000", "LT"]), Reply::Int(0));
        assert_eq!(run(&mut m, &["PEXPIRE", "h", "20000", "GT"]), Reply::Int(1));
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(20_000));
        assert_eq!(run(&mut m, &["PEXPIREAT", "h", "x"]), error(NOT_INT));
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", "1", "foo"]),
            error("ERR Unsupported option foo")
        );
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", "1", "nx", "xx"]),
            error("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        assert_eq!(
            run(&mut m, &["PEXPIRE", "h", "9223372036854775807"]),
            error("ERR invalid expire time in 'pexpire' command")
        );
        // An instant at or before now deletes the key and still answers 1.
        assert_eq!(
            run(&mut m, &["PEXPIREAT", "h", &NOW.to_string()]),
            Reply::Int(1)
        );
        assert_eq!(run(&mut m, &["EXISTS", "h"]), Reply::Int(0));
        run(&mut m, &["HSET", "h", "f", "v"]);
        assert_eq!(run(&mut m, &["PEXPIRE", "h", "-1"]), Reply::Int(1));
        assert_eq!(run(&mut m, &["PTTL", "h"]), Reply::Int(-2));
    }

    #[test]
    fn a_key_is_absent_from_its_expiry_instant_on() {
        let mut m = Memory::new();
        run(&mut m, &["HSET", "h", "f", "v"]);
        run(&mut m, &["PEXPIREAT", "h", &(NOW + 100).to_string()]);
        assert_eq!(m.pttl(b"h", UnixMillis(NOW + 99)), 1);
        assert_eq!(m.keys(UnixMillis(NOW + 99)), vec![b"h".to_vec()]);
        // `&self` readers agree with commands without any purge having run.
        assert_eq!(m.pttl(b"h", UnixMillis(NOW + 100)), -2);
        assert!(m.keys(UnixMillis(NOW + 100)).is_empty());
        assert!(m.snapshot(UnixMillis(NOW + 100)).is_empty());
        assert_eq!(
            at(&mut m, NOW + 100, &["HGETALL", "h"]),
            Reply::Array(vec![])
        );
        assert_eq!(
            at(&mut m, NOW + 100, &["HSET", "h", "g", "w"]),
            Reply::Int(1)
        );
        assert_eq!(at(&mut m, NOW + 100, &["HGETALL", "h"]), bulks(&["g", "w"]));
        assert_eq!(at(&mut m, NOW + 100, &["PTTL", "h"]), Reply::Int(-1));
    }

    #[test]
    fn zadd_zrange_and_score_text_match_redis_7_0() {
        let mut m = Memory::new();
        assert_eq!(
            run(
                &mut m,
                &[
                    "ZADD",
                    "z",
                    "1.1",
                    "a",
                    "1e20",
                    "b",
                    "-0",
                    "c",
                    "0.1",
                    "d",
                    "1700000000000",
                    "e",
                    "inf",
                    "f"
                ]
            ),
            Reply::Int(6)
        );
        assert_eq!(
            run(&mut m, &["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
            bulks(&[
                "c",
                "0",
                "d",
                "0.10000000000000001",
                "a",
                "1.1000000000000001",
                "e",
                "1700000000000",
                "b",
                "1e+20",
                "f",
                "inf"
            ])
        );
        assert_eq!(
            run(&mut m, &["ZADD", "z", "2", "a", "3", "g"]),
            Reply::Int(1)
        );
        assert_eq!(run(&mut m, &["ZCARD", "z"]), Reply::Int(7));
        assert_eq!(
            run(&mut m, &["ZRANGE", "z", "-2", "-1"]),
            bulks(&["b", "f"])
        );
        assert_eq!(run(&mut m, &["ZRANGE", "z", "5", "1"]), bulks(&[]));
        assert_eq!(
            run(&mut m, &["ZRANGE", "z", "-100", "1"]),
            bulks(&["c", "d"])
        );
        assert_eq!(
            run(&mut m, &["ZRANGE", "z", "0", "1", "REV"]),
            bulks(&["f", "b"])
        );
        assert_eq!(
            run(&mut m, &["ZRANGE", "z", "(1", "3", "BYSCORE"]),
            bulks(&["a", "g"])
        );
        assert_eq!(run(&mut m, &["ZRANGE", "z", "x", "1"]), error(NOT_INT));
        assert_eq!(
            run(&mut m, &["ZADD", "z", "x", "a"]),
            error("ERR value is not a valid float")
        );
        assert_eq!(
            run(&mut m, &["ZADD", "z", "nan", "a"]),
            error("ERR value is not a valid float")
        );
        assert_eq!(
            run(&mut m, &["ZADD", "z", "1", "a", "2"]),
            error("ERR syntax error")
        );
        assert_eq!(
            run(&mut m, &["ZADD", "z", "CH", "5", "a", "5", "h"]),
            Reply::Int(2)
        );
        assert_eq!(run(&mut m, &["ZADD", "z", "INCR", "1.5", "a"]), bulk("6.5"));
        assert_eq!(
            run(&mut m, &["ZADD", "z", "NX", "INCR", "1", "a"]),
            Reply::Nil
        );
        assert_eq!(run(&mut m, &["ZREM", "z", "a", "zz"]), Reply::Int(1));
        assert_eq!(run(&mut m, &["ZCARD", "nope"]), Reply::Int(0));
        assert_eq!(run(&mut m, &["ZRANGE", "nope", "0", "-1"]), bulks(&[]));
        run(&mut m, &["SET", "s", "v"]);
        for args in [
            &["ZADD", "s", "1", "a"][..],
            &["ZRANGE", "s", "0", "1"],
            &["ZCARD", "s"],
            &["ZREM", "s", "a"],
        ] {
            assert_eq!(run(&mut m, args), error(WRONGTYPE), "{args:?}");
        }
    }

    #[test]
    fn zremrangebyscore_bounds_and_empty_sets() {
        let mut m = Memory::new();
        run(
            &mut m,
            &["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"],
        );
        run(&mut m, &["PEXPIRE", "z", "1000"]);
        assert_eq!(
            run(&mut m, &["ZREMRANGEBYSCORE", "z", "-inf", "(2"]),
            Reply::Int(1)
        );
        assert_eq!(
            run(&mut m, &["ZREMRANGEBYSCORE", "z", "(3", "+inf"]),
            Reply::Int(1)
        );
        assert_eq!(run(&mut m, &["ZRANGE", "z", "0", "-1"]), bulks(&["b", "c"]));
        assert_eq!(run(&mut m, &["PTTL", "z"]), Reply::Int(1000));
        assert_eq!(
            run(&mut m, &["ZREMRANGEBYSCORE", "z", "x", "1"]),
            error("ERR min or max is not a float")
        );
        assert_eq!(
            run(&mut m, &["ZREMRANGEBYSCORE", "z", "-inf", "+inf"]),
            Reply::Int(2)
        );
        assert_eq!(run(&mut m, &["EXISTS", "z"]), Reply::Int(0));
        assert_eq!(
            run(&mut m, &["ZREMRANGEBYSCORE", "z", "-inf", "+inf"]),
            Reply::Int(0)
        );
    }

    fn scan_all(m: &mut Memory, extra: &[&str]) -> Vec<Vec<u8>> {
        let mut cursor = "0".to_owned();
        let mut seen = Vec::new();
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let Reply::Array(parts) = run(m, &args) else {
                panic!("scan reply")
            };
            let [Reply::Bulk(next), Reply::Array(keys)] = parts.as_slice() else {
                panic!("scan shape")
            };
            seen.extend(keys.iter().map(|k| match k {
                Reply::Bulk(k) => k.clone(),
                other => panic!("{other:?}"),
            }));
            cursor = String::from_utf8(next.clone()).unwrap();
            if cursor == "0" {
                return seen;
            }
        }
    }

    #[test]
    fn scan_returns_every_matching_key_once() {
        let mut m = Memory::new();
        for i in 0..25 {
            run(&mut m, &["SET", &format!("sess:{i}"), "v"]);
        }
        run(&mut m, &["SET", "sess:*", "v"]);
        run(&mut m, &["HSET", "other", "f", "v"]);
        let mut all = scan_all(&mut m, &["COUNT", "7"]);
        all.sort();
        assert_eq!(all, m.keys(UnixMillis(NOW)));
        assert_eq!(
            scan_all(&mut m, &["MATCH", "sess:\\*"]),
            vec![b"sess:*".to_vec()]
        );
        assert_eq!(
            scan_all(&mut m, &["MATCH", "sess:[1-2]?", "COUNT", "3"]).len(),
            15
        );
        assert_eq!(scan_all(&mut m, &["TYPE", "hash"]), vec![b"other".to_vec()]);
        assert_eq!(run(&mut m, &["SCAN", "x"]), error("ERR invalid cursor"));
        assert_eq!(
            run(&mut m, &["SCAN", "0", "COUNT", "0"]),
            error("ERR syntax error")
        );
        assert_eq!(
            run(&mut m, &["SCAN", "0", "FOO"]),
            error("ERR syntax error")
        );
    }

    #[test]
    fn scan_never_skips_a_key_that_lives_through_the_scan() {
        let mut m = Memory::new();
        for i in 0..20 {
            run(&mut m, &["SET", &format!("k{i:02}"), "v"]);
        }
        let Reply::Array(parts) = run(&mut m, &["SCAN", "0", "COUNT", "5"]) else {
            panic!()
        };
        let [Reply::Bulk(next), Reply::Array(first)] = parts.as_slice() else {
            panic!()
        };
        // Deleting what was already returned must not shift the cursor.
        for k in first {
            let Reply::Bulk(k) = k else { panic!() };
            run(&mut m, &["DEL", std::str::from_utf8(k).unwrap()]);
        }
        let rest = scan_all_from(&mut m, std::str::from_utf8(next).unwrap());
        assert_eq!(rest.len(), 15);
    }

    fn scan_all_from(m: &mut Memory, cursor: &str) -> Vec<Vec<u8>> {
        let mut cursor = cursor.to_owned();
        let mut seen = Vec::new();
        loop {
            let Reply::Array(parts) = run(m, &["SCAN", &cursor, "COUNT", "5"]) else {
                panic!()
            };
            let [Reply::Bulk(next), Reply::Array(keys)] = parts.as_slice() else {
                panic!()
            };
            seen.extend(keys.iter().cloned());
            cursor = String::from_utf8(next.clone()).unwrap();
            if cursor == "0" {
                return seen
                    .into_iter()
                    .map(|k| {
                        if let Reply::Bulk(k) = k {
                            k
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
            }
        }
    }

    #[test]
    fn wait_reports_the_configured_replicas() {
        let mut m = Memory::new();
        assert_eq!(run(&mut m, &["WAIT", "1", "100"]), Reply::Int(0));
        m.set_replicas(2);
        assert_eq!(run(&mut m, &["WAIT", "1", "100"]), Reply::Int(2));
        assert_eq!(run(&mut m, &["WAIT", "x", "100"]), error(NOT_INT));
        assert_eq!(
            run(&mut m, &["WAIT", "1", "x"]),
            error("ERR timeout is not an integer or out of range")
        );
        assert_eq!(
            run(&mut m, &["WAIT", "1", "-1"]),
            error("ERR timeout is negative")
        );
    }
}
