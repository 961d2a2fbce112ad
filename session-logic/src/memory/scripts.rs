//! Our six Lua scripts re-enacted line by line with Redis 7.0's Lua 5.1
//! semantics, so the in-memory backend writes and replies exactly as real
//! Redis does for any argv: `tonumber` on odd text, float comparisons,
//! `unpack` ranges (empty, out of bounds, too large), numbers passed to
//! `redis.call` as `%.17g`, and errors that abort the script (earlier writes
//! stay) with Redis's `… script: <sha>, on @user_script:<line>.` text. Each
//! function names the line of its `.lua` file next to what it mirrors.

use std::borrow::Cow;

use super::commands::{self, Cmd};
use super::number::{fmt_g17, lua_tonumber};
use super::store::Db;
use crate::scripts::Script;
use crate::step::Reply;

/// Lua 5.1's `LUAI_MAXCSTACK`: `unpack` refuses more results than this minus its own arguments.
const LUAI_MAXCSTACK: i32 = 8000;

/// The SHA-1 of each `.lua` file as this module mirrors it. Editing a script
/// changes its SHA-1 and fails `emulation_follows_the_lua_sources` until the
/// emulation below is updated line by line.
#[cfg(test)]
const MIRRORED: [(Script, &str); 6] = [
    (Script::Load, "e7cf0a1b3b5d9c21abe8c520f66de5b4d579e705"),
    (Script::Save, "3e3fb5c0fb5134e8a7332aee3a3dbbd154136f30"),
    (Script::Create, "73851df7e8f32c13f352f56d2a8af543ad20d5ed"),
    (Script::Retire, "065c2c0d3822ac2e8f647dd1076dc8de5444b830"),
    (Script::Index, "cf5db4509a4ed71b40d87f0f57818c9db1c66692"),
    (Script::Revoke, "221f5a623a1b222c7ec6d24254cbd640e1b4a649"),
];

/// A value handed to `redis.call`.
#[derive(Clone, Copy, Debug)]
enum Arg<'a> {
    Str(&'a [u8]),
    Num(f64),
    Nil,
}

use Arg::{Num, Str};

/// A script step: `Err` is the reply that ends the script.
type Lua<T> = Result<T, Reply>;

/// Runs `script` with the given KEYS and ARGV at `now`.
pub(super) fn run(db: &mut Db, script: Script, keys: &[&[u8]], argv: &[&[u8]], now: u64) -> Reply {
    let mut run = Run {
        db,
        now,
        sha: script.sha1(),
        key: keys.first().copied(),
        argv,
    };
    let out = match script {
        Script::Load => run.load(),
        Script::Save => run.save(),
        Script::Create => run.create(),
        Script::Retire => run.retire(),
        Script::Index => run.index(),
        Script::Revoke => run.revoke(),
    };
    out.unwrap_or_else(|e| e)
}

/// What save.lua and retire.lua found under KEYS[1].
enum Record {
    /// `f[3]`: a rotated marker inside its grace (the script returns -1).
    Rotated,
    /// Missing, unparsable or expired metadata (the script returns 0).
    Dead,
    /// A live record.
    Live(Live),
}

/// What the record check read: now, t, d, f[2] and f[4].
struct Live {
    now: f64,
    t: f64,
    d: f64,
    deadline: Vec<u8>,
    /// `f[4]`, the stored revision (`false` when missing).
    rev: Option<Vec<u8>>,
}

struct Run<'d, 'a> {
    db: &'d mut Db,
    now: u64,
    sha: &'static str,
    key: Option<&'a [u8]>,
    argv: &'a [&'a [u8]],
}

/// `(int)(lua_Integer)d` as luaL_checkint computes it on x86-64: truncation,
/// with cvttsd2si's i64::MIN for NaN and out-of-range values, then the low 32 bits.
fn lua_int(d: f64) -> i32 {
    lua_integer(d) as i32
}

/// `(long long)d` on x86-64, used when a script returns a number.
fn lua_integer(d: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if d.is_nan() || !(-LIMIT..LIMIT).contains(&d) {
        i64::MIN
    } else {
        d as i64
    }
}

/// Lua 5.1 `math.min(a, b)`.
fn math_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// An integer reply as the Lua number the script sees.
fn lua_number(reply: &Reply) -> f64 {
    match reply {
        Reply::Int(n) => *n as f64,
        _ => 0.0,
    }
}

/// An array reply as the Lua table the script sees (`false` for nil entries).
fn table(reply: &Reply) -> Vec<Option<&[u8]>> {
    match reply {
        Reply::Array(items) => items
            .iter()
            .map(|r| match r {
                Reply::Bulk(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl<'a> Run<'_, 'a> {
    /// KEYS[1].
    fn k(&self) -> Arg<'a> {
        self.key.map_or(Arg::Nil, Str)
    }

    /// ARGV[i], 1-based.
    fn a(&self, i: usize) -> Arg<'a> {
        i.checked_sub(1)
            .and_then(|i| self.argv.get(i))
            .map_or(Arg::Nil, |s| Str(s))
    }

    /// tonumber(ARGV[i]).
    fn num(&self, i: usize) -> Option<f64> {
        match self.a(i) {
            Str(s) => lua_tonumber(s),
            _ => None,
        }
    }

    /// #ARGV.
    fn argc(&self) -> i32 {
        i32::try_from(self.argv.len()).unwrap_or(i32::MAX)
    }

    /// The script's error reply for an error raised at `line`.
    fn fail(&self, line: u32, err: &str) -> Reply {
        Reply::Error(format!(
            "{err} script: {}, on @user_script:{line}.",
            self.sha
        ))
    }

    /// A Lua runtime error at `line`.
    fn runtime(&self, line: u32, msg: &str) -> Reply {
        self.fail(line, &format!("ERR user_script:{line}: {msg}"))
    }

    /// Lua 5.1's "attempt to compare" for `a < b` / `a <= b` with a nil side.
    fn order_error(&self, line: u32, a: Option<f64>, b: Option<f64>) -> Reply {
        let name = |v: Option<f64>| if v.is_some() { "number" } else { "nil" };
        let msg = if a.is_none() && b.is_none() {
            "attempt to compare two nil values".to_owned()
        } else {
            format!("attempt to compare {} with {}", name(a), name(b))
        };
        self.runtime(line, &msg)
    }

    /// `a < b` (Lua compiles `b > a` to this too).
    fn lt(&self, line: u32, a: Option<f64>, b: Option<f64>) -> Lua<bool> {
        match (a, b) {
            (Some(x), Some(y)) => Ok(x < y),
            _ => Err(self.order_error(line, a, b)),
        }
    }

    /// `a <= b` (Lua compiles `b >= a` to this too).
    fn le(&self, line: u32, a: Option<f64>, b: Option<f64>) -> Lua<bool> {
        match (a, b) {
            (Some(x), Some(y)) => Ok(x <= y),
            _ => Err(self.order_error(line, a, b)),
        }
    }

    /// `x + tonumber(…)` where the right side is a temporary.
    fn add(&self, line: u32, x: f64, y: Option<f64>) -> Lua<f64> {
        y.map(|y| x + y)
            .ok_or_else(|| self.runtime(line, "attempt to perform arithmetic on a nil value"))
    }

    /// `unpack(t, i, e)` from a call site with `nargs` arguments.
    fn unpack<'t>(
        &self,
        line: u32,
        t: &[&'t [u8]],
        i: i32,
        e: i32,
        nargs: i32,
    ) -> Lua<Vec<Arg<'t>>> {
        if i > e {
            return Ok(Vec::new());
        }
        let n = e.wrapping_sub(i).wrapping_add(1);
        if n <= 0 || n > LUAI_MAXCSTACK - nargs {
            return Err(self.runtime(line, "too many results to unpack"));
        }
        Ok((i..=e)
            .map(|k| {
                usize::try_from(k)
                    .ok()
                    .and_then(|k| k.checked_sub(1))
                    .and_then(|k| t.get(k))
                    .map_or(Arg::Nil, |s| Str(s))
            })
            .collect())
    }

    /// `redis.call(…)`: converts the arguments, runs the command, and turns an
    /// error reply into the script's error.
    fn call(&mut self, line: u32, args: &[Arg<'_>]) -> Lua<Reply> {
        let mut argv: Vec<Cow<'_, [u8]>> = Vec::with_capacity(args.len());
        for arg in args {
            match *arg {
                Str(s) => argv.push(Cow::Borrowed(s)),
                Num(n) => argv.push(Cow::Owned(fmt_g17(n).into_bytes())),
                Arg::Nil => {
                    return Err(self.fail(
                        line,
                        "ERR Lua redis lib command arguments must be strings or integers",
                    ));
                }
            }
        }
        let argv: Vec<&[u8]> = argv.iter().map(AsRef::as_ref).collect();
        let Some(cmd) = argv.first().and_then(|name| Cmd::lookup(name)) else {
            return Err(self.fail(line, "ERR Unknown Redis command called from script"));
        };
        if !cmd.arity_ok(argv.len()) {
            return Err(self.fail(
                line,
                "ERR Wrong number of args calling Redis command from script",
            ));
        }
        match commands::call(self.db, cmd, &argv, self.now) {
            Reply::Error(e) => Err(self.fail(line, &e)),
            reply => Ok(reply),
        }
    }

    /// `redis.call(name, KEYS[1], more…)`.
    fn call_key(&mut self, line: u32, name: &'static str, more: &[Arg<'_>]) -> Lua<Reply> {
        let mut args = Vec::with_capacity(more.len() + 2);
        args.push(Str(name.as_bytes()));
        args.push(self.k());
        args.extend_from_slice(more);
        self.call(line, &args)
    }

    /// The record check shared by save.lua (lines 12-16) and retire.lua
    /// (lines 11-15), `first` being the HMGET line.
    fn check_record(&mut self, first: u32) -> Lua<Record> {
        let f = self.call_key(
            first,
            "HMGET",
            &[
                Str(b"$touch"),
                Str(b"$deadline"),
                Str(b"$rotated"),
                Str(b"$rev"),
            ],
        )?;
        let f = table(&f);
        let at = |i: usize| f.get(i).copied().flatten();
        if let Some(until) = at(2) {
            // `(tonumber(f[3]) or 0) > tonumber(ARGV[1])` compiles to
            // `tonumber(ARGV[1]) < (…)`: a marker counts only inside its grace.
            let until = lua_tonumber(until).unwrap_or(0.0);
            return Ok(if self.lt(first + 1, self.num(1), Some(until))? {
                Record::Rotated
            } else {
                Record::Dead
            });
        }
        let (Some(touch), Some(deadline)) = (at(0), at(1)) else {
            return Ok(Record::Dead);
        };
        let now = self.num(1);
        let (Some(t), Some(d)) = (lua_tonumber(touch), lua_tonumber(deadline)) else {
            return Ok(Record::Dead);
        };
        let line = first + 4;
        let m = math_min(self.add(line, t, self.num(2))?, d);
        let Some(now) = now else {
            return Err(self.order_error(line, Some(m), None));
        };
        if m <= now {
            return Ok(Record::Dead);
        }
        Ok(Record::Live(Live {
            now,
            t,
            d,
            deadline: deadline.to_vec(),
            rev: at(3).map(<[u8]>::to_vec),
        }))
    }

    /// load.lua
    fn load(&mut self) -> Lua<Reply> {
        let r = self.call_key(8, "HGETALL", &[])?;
        let items = table(&r);
        let (mut touch, mut deadline, mut rotated) = (None, None, false);
        for pair in items.chunks(2) {
            let value = pair.get(1).copied().flatten();
            match pair.first().copied().flatten() {
                Some(b"$touch") => touch = value,
                Some(b"$deadline") => deadline = value,
                Some(b"$rotated") => rotated = true,
                _ => {}
            }
        }
        // line 16
        let (false, Some(touch), Some(deadline)) = (rotated, touch, deadline) else {
            return Ok(r);
        };
        // lines 17-18
        let now = self.num(1);
        let (Some(t), Some(d)) = (lua_tonumber(touch), lua_tonumber(deadline)) else {
            return Ok(r);
        };
        let m = math_min(self.add(18, t, self.num(2))?, d);
        let Some(now) = now else {
            return Err(self.order_error(18, Some(m), None));
        };
        if m <= now {
            return Ok(r);
        }
        // line 19: `now - t >= tonumber(ARGV[3])`
        if self.le(19, self.num(3), Some(now - t))? {
            let deadline = deadline.to_vec();
            self.call_key(20, "HSET", &[Str(b"$touch"), self.a(1)])?;
            if self.lt(21, self.num(4), Some(d))? {
                self.call_key(22, "PEXPIREAT", &[self.a(4)])?;
            } else {
                self.call_key(24, "PEXPIREAT", &[Str(&deadline)])?;
            }
        }
        Ok(r)
    }

    /// save.lua
    fn save(&mut self) -> Lua<Reply> {
        let Live {
            now,
            t,
            d,
            deadline,
            rev,
        } = match self.check_record(12)? {
            Record::Rotated => return Ok(Reply::Int(-1)),
            Record::Dead => return Ok(Reply::Int(0)),
            Record::Live(live) => live,
        };
        // lines 17-18
        let n = self.num(5);
        let rev = rev.as_deref().and_then(lua_tonumber).unwrap_or(0.0) + 1.0;
        // line 19: `now > t and now - t >= tonumber(ARGV[4])`
        let touch = t < now && self.le(19, self.num(4), Some(now - t))?;
        // lines 20 / 27: `5 + 2 * n` is evaluated before HSET is called.
        let line = if touch { 20 } else { 27 };
        let Some(n) = n else {
            return Err(self.runtime(
                line,
                "attempt to perform arithmetic on local 'n' (a nil value)",
            ));
        };
        let pairs = self.unpack(line, self.argv, 6, lua_int(5.0 + 2.0 * n), 3)?;
        let mut args = vec![Str(b"$rev"), Num(rev)];
        if touch {
            args.extend([Str(b"$touch"), self.a(1)]);
        }
        args.extend(pairs);
        self.call_key(line, "HSET", &args)?;
        if touch {
            if self.lt(21, self.num(3), Some(d))? {
                self.call_key(22, "PEXPIREAT", &[self.a(3)])?;
            } else {
                self.call_key(24, "PEXPIREAT", &[Str(&deadline)])?;
            }
        }
        // line 29
        if 5.0 + 2.0 * n < f64::from(self.argc()) {
            let fields = self.unpack(29, self.argv, lua_int(6.0 + 2.0 * n), self.argc(), 3)?;
            self.call_key(29, "HDEL", &fields)?;
        }
        Ok(Reply::Int(lua_integer(rev)))
    }

    /// create.lua
    fn create(&mut self) -> Lua<Reply> {
        if lua_number(&self.call_key(6, "EXISTS", &[])?) == 1.0 {
            return Ok(Reply::Int(0));
        }
        let pairs = self.unpack(7, self.argv, 2, self.argc(), 3)?;
        self.call_key(7, "HSET", &pairs)?;
        self.call_key(8, "PEXPIREAT", &[self.a(1)])?;
        Ok(Reply::Int(1))
    }

    /// retire.lua
    fn retire(&mut self) -> Lua<Reply> {
        let rev = match self.check_record(11)? {
            Record::Rotated => return Ok(Reply::Int(-1)),
            Record::Dead => return Ok(Reply::Int(0)),
            Record::Live(live) => live.rev,
        };
        // line 16: `f[4] ~= ARGV[4] and HGETALL or 1`
        let same = matches!((&rev, self.a(4)), (Some(b), Str(x)) if b.as_slice() == x);
        let r = if same {
            Reply::Int(1)
        } else {
            self.call_key(16, "HGETALL", &[])?
        };
        self.call_key(17, "HSET", &[Str(b"$rotated"), self.a(3)])?;
        self.call_key(18, "PEXPIREAT", &[self.a(3)])?;
        // line 19
        Ok(r)
    }

    /// index.lua
    fn index(&mut self) -> Lua<Reply> {
        self.call_key(9, "ZREMRANGEBYSCORE", &[Str(b"-inf"), self.a(1)])?;
        self.call_key(10, "ZADD", &[self.a(3), self.a(4)])?;
        // lines 11-13
        let extended = self.call_key(11, "PEXPIREAT", &[self.a(3), Str(b"GT")])?;
        if lua_number(&extended) == 0.0 {
            self.call_key(12, "PEXPIREAT", &[self.a(3), Str(b"NX")])?;
        }
        // lines 14-23
        let mut evicted: Vec<Vec<u8>> = Vec::new();
        let Some(cap) = self.num(2) else {
            return Err(self.order_error(16, Some(0.0), None));
        };
        if 0.0 < cap {
            let count = lua_number(&self.call_key(17, "ZCARD", &[])?);
            if cap < count {
                let keep = match self.a(4) {
                    Str(s) => Some(s),
                    _ => None,
                };
                // lines 19-21
                let oldest = self.call_key(19, "ZRANGE", &[Num(0.0), Num(count - cap)])?;
                for m in table(&oldest).into_iter().map_while(|m| m) {
                    if (evicted.len() as f64) < count - cap && Some(m) != keep {
                        evicted.push(m.to_vec());
                    }
                }
            }
        }
        // line 24
        Ok(Reply::Array(evicted.into_iter().map(Reply::Bulk).collect()))
    }

    /// revoke.lua.
    fn revoke(&mut self) -> Lua<Reply> {
        // line 8
        let f = self.call_key(8, "HMGET", &[Str(b"$user"), Str(b"$rotated")])?;
        let f = table(&f);
        // line 9: `f[1] == ARGV[1] and not f[2]`
        let owned =
            matches!((f.first().copied().flatten(), self.a(1)), (Some(b), Str(u)) if b == u);
        if owned && f.get(1).copied().flatten().is_none() {
            // line 10
            return self.call_key(10, "DEL", &[]);
        }
        Ok(Reply::Int(0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Memory;
    use super::MIRRORED;
    use crate::expiry::UnixMillis;
    use crate::scripts::Script;
    use crate::step::{Command, Reply};

    const NOW: u64 = 1_700_000_000_000;
    const IDLE: u64 = 3_600_000;
    const LIFETIME: u64 = 86_400_000;

    fn cmd(args: &[&[u8]]) -> Command {
        Command(args.iter().map(|a| a.to_vec()).collect())
    }
    fn run(m: &mut Memory, now: u64, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        m.execute(&cmd(&args), UnixMillis(now))
    }
    fn eval(m: &mut Memory, now: u64, script: Script, key: &str, argv: &[String]) -> Reply {
        let mut args: Vec<&[u8]> = vec![b"EVAL", script.source().as_bytes(), b"1", key.as_bytes()];
        args.extend(argv.iter().map(|a| a.as_bytes()));
        m.execute(&cmd(&args), UnixMillis(now))
    }
    fn s(n: u64) -> String {
        n.to_string()
    }
    fn strs(items: &[&str]) -> Vec<String> {
        items.iter().map(|i| (*i).to_owned()).collect()
    }
    fn bulks(items: &[&str]) -> Reply {
        Reply::Array(
            items
                .iter()
                .map(|i| Reply::Bulk(i.as_bytes().to_vec()))
                .collect(),
        )
    }
    fn field(m: &mut Memory, now: u64, key: &str, f: &str) -> Reply {
        run(m, now, &["HGET", key, f])
    }
    /// A live session touched at `touch`, created by create.lua.
    fn session(m: &mut Memory, key: &str, touch: u64) {
        let argv = vec![
            s(touch + IDLE),
            "$touch".into(),
            s(touch),
            "$deadline".into(),
            s(touch + LIFETIME),
            "$rev".into(),
            "0".into(),
            "cart".into(),
            "[1]".into(),
        ];
        assert_eq!(eval(m, touch, Script::Create, key, &argv), Reply::Int(1));
    }
    fn load_args(now: u64, interval: u64) -> Vec<String> {
        vec![s(now), s(IDLE), s(interval), s(now + IDLE)]
    }

    #[test]
    fn emulation_follows_the_lua_sources() {
        for (script, sha) in MIRRORED {
            assert_eq!(
                script.sha1(),
                sha,
                "{}.lua changed: update memory/scripts.rs to mirror it, then MIRRORED",
                script.name()
            );
        }
    }

    #[test]
    fn create_writes_once_and_reports_a_collision() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        assert_eq!(m.pttl(b"s", UnixMillis(NOW)), IDLE as i64);
        let again = vec![s(NOW + 5), "$touch".into(), "1".into()];
        assert_eq!(
            eval(&mut m, NOW, Script::Create, "s", &again),
            Reply::Int(0)
        );
        assert_eq!(
            field(&mut m, NOW, "s", "$touch"),
            Reply::Bulk(s(NOW).into_bytes())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(NOW)), IDLE as i64);
    }

    #[test]
    fn create_without_pairs_fails_like_redis_and_writes_nothing() {
        let mut m = Memory::new();
        let sha = Script::Create.sha1();
        assert_eq!(
            eval(&mut m, NOW, Script::Create, "s", &[s(NOW + 5)]),
            Reply::Error(format!(
                "ERR Wrong number of args calling Redis command from script script: {sha}, on @user_script:7."
            ))
        );
        assert_eq!(
            eval(
                &mut m,
                NOW,
                Script::Create,
                "s",
                &strs(&["1", "a", "b", "c"])
            ),
            Reply::Error(format!(
                "ERR wrong number of arguments for 'hset' command script: {sha}, on @user_script:7."
            ))
        );
        assert!(m.keys(UnixMillis(NOW)).is_empty());
        // A past expiry instant: HSET happened, then PEXPIREAT deleted the key.
        assert_eq!(
            eval(&mut m, NOW, Script::Create, "s", &strs(&["5", "a", "b"])),
            Reply::Int(1)
        );
        assert!(m.keys(UnixMillis(NOW)).is_empty());
    }

    #[test]
    fn load_returns_absent_and_marker_records_untouched() {
        let mut m = Memory::new();
        assert_eq!(
            eval(&mut m, NOW, Script::Load, "s", &load_args(NOW, 0)),
            bulks(&[])
        );
        assert!(m.keys(UnixMillis(NOW)).is_empty());
        run(&mut m, NOW, &["HSET", "r", "$rotated", &s(NOW + 5000)]);
        run(&mut m, NOW, &["PEXPIREAT", "r", &s(NOW + 5000)]);
        let marker = bulks(&["$rotated", &s(NOW + 5000)]);
        assert_eq!(
            eval(&mut m, NOW, Script::Load, "r", &load_args(NOW, 0)),
            marker
        );
        assert_eq!(m.pttl(b"r", UnixMillis(NOW)), 5000);
    }

    #[test]
    fn load_never_touches_an_expired_record() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        run(&mut m, NOW, &["PEXPIREAT", "s", &s(NOW + 10 * IDLE)]);
        let later = NOW + IDLE;
        let reply = eval(&mut m, later, Script::Load, "s", &load_args(later, 0));
        let Reply::Array(items) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(items.len(), 8);
        assert_eq!(
            field(&mut m, later, "s", "$touch"),
            Reply::Bulk(s(NOW).into_bytes())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(later)), 9 * IDLE as i64);
    }

    #[test]
    fn load_touches_at_most_once_per_interval() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let interval = 60_000;
        // Throttled: no write, TTL unchanged.
        let soon = NOW + interval - 1;
        let before = eval(&mut m, soon, Script::Load, "s", &load_args(soon, interval));
        assert_eq!(
            field(&mut m, soon, "s", "$touch"),
            Reply::Bulk(s(NOW).into_bytes())
        );
        assert_eq!(
            m.pttl(b"s", UnixMillis(soon)),
            IDLE as i64 - (interval as i64 - 1)
        );
        // Due: touch and slide, and the reply is the record as read.
        let due = NOW + interval;
        let reply = eval(&mut m, due, Script::Load, "s", &load_args(due, interval));
        assert_eq!(reply, before);
        assert_eq!(
            field(&mut m, due, "s", "$touch"),
            Reply::Bulk(s(due).into_bytes())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(due)), IDLE as i64);
        // Near the absolute deadline the TTL stops at the deadline.
        let late = NOW + LIFETIME - 1000;
        run(&mut m, due, &["HSET", "s", "$touch", &s(late - 10)]);
        run(&mut m, due, &["PEXPIREAT", "s", &s(NOW + LIFETIME)]);
        eval(
            &mut m,
            late,
            Script::Load,
            "s",
            &load_args(late, interval.min(5)),
        );
        assert_eq!(m.pttl(b"s", UnixMillis(late)), 1000);
    }

    /// Touch interval 0: every save past the last touch slides the deadline.
    fn save_args(now: u64, set: &[(&str, &str)], del: &[&str]) -> Vec<String> {
        let mut a = vec![s(now), s(IDLE), s(now + IDLE), s(0), s(set.len() as u64)];
        for (f, v) in set {
            a.push((*f).to_owned());
            a.push((*v).to_owned());
        }
        a.extend(del.iter().map(|d| (*d).to_owned()));
        a
    }

    #[test]
    fn save_applies_only_the_delta_and_bumps_the_revision() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let at = NOW + 1000;
        let argv = save_args(at, &[("a", "1"), ("b", "2")], &["cart"]);
        assert_eq!(eval(&mut m, at, Script::Save, "s", &argv), Reply::Int(1));
        let argv = save_args(at, &[("a", "3")], &[]);
        assert_eq!(eval(&mut m, at, Script::Save, "s", &argv), Reply::Int(2));
        assert_eq!(
            run(&mut m, at, &["HGETALL", "s"]),
            bulks(&[
                "$touch",
                &s(at),
                "$deadline",
                &s(NOW + LIFETIME),
                "$rev",
                "2",
                "a",
                "3",
                "b",
                "2"
            ])
        );
        assert_eq!(m.pttl(b"s", UnixMillis(at)), IDLE as i64);
        // Same instant as the last touch: data changes, no touch.
        run(&mut m, at, &["PEXPIRE", "s", "5000"]);
        assert_eq!(
            eval(&mut m, at, Script::Save, "s", &save_args(at, &[], &["a"])),
            Reply::Int(3)
        );
        assert_eq!(m.pttl(b"s", UnixMillis(at)), 5000);
    }

    #[test]
    fn save_touches_at_most_once_per_touch_interval() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let interval = 60_000;
        let at = NOW + 1000;
        let mut argv = save_args(at, &[("a", "1")], &[]);
        argv[3] = s(interval);
        assert_eq!(eval(&mut m, at, Script::Save, "s", &argv), Reply::Int(1));
        assert_eq!(field(&mut m, at, "s", "a"), Reply::Bulk(b"1".to_vec()));
        assert_eq!(
            field(&mut m, at, "s", "$touch"),
            Reply::Bulk(s(NOW).into_bytes())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(at)), (IDLE - 1000) as i64);
        let due = NOW + interval;
        let mut argv = save_args(due, &[("a", "2")], &[]);
        argv[3] = s(interval);
        assert_eq!(eval(&mut m, due, Script::Save, "s", &argv), Reply::Int(2));
        assert_eq!(
            field(&mut m, due, "s", "$touch"),
            Reply::Bulk(s(due).into_bytes())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(due)), IDLE as i64);
    }

    #[test]
    fn save_never_resurrects() {
        let mut m = Memory::new();
        let argv = save_args(NOW, &[("a", "1")], &[]);
        assert_eq!(eval(&mut m, NOW, Script::Save, "s", &argv), Reply::Int(0));
        assert!(m.keys(UnixMillis(NOW)).is_empty());
        // Expired by its metadata while Redis still holds it.
        session(&mut m, "s", NOW);
        run(&mut m, NOW, &["PEXPIRE", "s", &s(10 * IDLE)]);
        let late = NOW + IDLE;
        let argv = save_args(late, &[("a", "1")], &[]);
        assert_eq!(eval(&mut m, late, Script::Save, "s", &argv), Reply::Int(0));
        assert_eq!(field(&mut m, late, "s", "a"), Reply::Nil);
        // A rotated marker.
        run(
            &mut m,
            NOW,
            &[
                "HSET",
                "r",
                "$rotated",
                "99999999999999",
                "$touch",
                "1",
                "$deadline",
                "1",
            ],
        );
        // Inside its grace: -1 (rotated); a stale marker is simply gone: 0.
        assert_eq!(eval(&mut m, NOW, Script::Save, "r", &argv), Reply::Int(-1));
        run(&mut m, NOW, &["HSET", "r", "$rotated", "1"]);
        assert_eq!(eval(&mut m, NOW, Script::Save, "r", &argv), Reply::Int(0));
    }

    #[test]
    fn save_with_a_bad_count_errors_like_lua() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let mut argv = save_args(NOW + 1, &[], &[]);
        argv[4] = "x".into();
        let sha = Script::Save.sha1();
        assert_eq!(
            eval(&mut m, NOW + 1, Script::Save, "s", &argv),
            Reply::Error(format!(
                "ERR user_script:20: attempt to perform arithmetic on local 'n' (a nil value) script: {sha}, on @user_script:20."
            ))
        );
        // n = 2^31: `5 + 2 * n` wraps to 5 in luaL_checkint, an empty
        // unpack: HSET writes only the revision and the touch.
        argv[4] = "2147483648".into();
        assert_eq!(
            eval(&mut m, NOW + 1, Script::Save, "s", &argv),
            Reply::Int(1)
        );
        assert_eq!(
            field(&mut m, NOW + 1, "s", "$touch"),
            Reply::Bulk(s(NOW + 1).into_bytes())
        );
        // A touch interval that is not a number fails the comparison, but
        // only once a touch could be due (`now > t` comes first).
        let mut argv = save_args(NOW + 2, &[], &[]);
        argv[3] = "x".into();
        assert_eq!(
            eval(&mut m, NOW + 2, Script::Save, "s", &argv),
            Reply::Error(format!(
                "ERR user_script:19: attempt to compare nil with number script: {sha}, on @user_script:19."
            ))
        );
        assert_eq!(
            eval(
                &mut m,
                NOW + 1,
                Script::Save,
                "s",
                &save_args(NOW + 1, &[], &[])
            ),
            Reply::Int(2)
        );
    }

    #[test]
    fn retire_marks_the_record_in_place_once() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let grace = NOW + 5000;
        // A revision that moved on returns the record being retired.
        session(&mut m, "moved", NOW);
        let stale = vec![s(NOW + 1), s(IDLE), s(grace), s(7)];
        assert!(matches!(
            eval(&mut m, NOW + 1, Script::Retire, "moved", &stale),
            Reply::Array(items) if items.len() == 8
        ));
        let argv = vec![s(NOW + 1), s(IDLE), s(grace), s(0)];
        assert_eq!(
            eval(&mut m, NOW + 1, Script::Retire, "s", &argv),
            Reply::Int(1)
        );
        // Marked, not rewritten: `$rotated` beside the old fields, which
        // expire with the marker at the grace instant.
        assert_eq!(
            field(&mut m, NOW + 1, "s", "$rotated"),
            Reply::Bulk(s(grace).into_bytes())
        );
        assert_eq!(
            field(&mut m, NOW + 1, "s", "cart"),
            Reply::Bulk(b"[1]".to_vec())
        );
        assert_eq!(m.pttl(b"s", UnixMillis(NOW + 1)), 4999);
        assert_eq!(
            eval(&mut m, NOW + 1, Script::Retire, "s", &argv),
            Reply::Int(-1)
        );
        // Neither a load nor a save gets past the marker.
        assert_eq!(
            eval(
                &mut m,
                NOW + 2,
                Script::Save,
                "s",
                &save_args(NOW + 2, &[("a", "1")], &[])
            ),
            Reply::Int(-1)
        );
        assert_eq!(field(&mut m, NOW + 2, "s", "a"), Reply::Nil);
        assert_eq!(
            eval(&mut m, NOW + 1, Script::Retire, "gone", &argv),
            Reply::Int(0)
        );
        assert!(m.keys(UnixMillis(grace)).is_empty());
    }

    #[test]
    fn a_failing_call_keeps_the_writes_before_it() {
        let mut m = Memory::new();
        session(&mut m, "s", NOW);
        let sha = Script::Save.sha1();
        // `tonumber('0x10')` is 16, but PEXPIREAT wants a decimal integer:
        // the HSET before it stays.
        let mut argv = save_args(NOW + 2, &[("a", "b")], &[]);
        argv[2] = "0x10".into();
        assert_eq!(
            eval(&mut m, NOW + 2, Script::Save, "s", &argv),
            Reply::Error(format!(
                "ERR value is not an integer or out of range script: {sha}, on @user_script:22."
            ))
        );
        assert_eq!(field(&mut m, NOW + 2, "s", "a"), Reply::Bulk(b"b".to_vec()));
        assert_eq!(
            field(&mut m, NOW + 2, "s", "$rev"),
            Reply::Bulk(b"1".to_vec())
        );
        // No grace instant: HSET gets a nil argument, nothing is marked.
        assert_eq!(
            eval(&mut m, NOW + 3, Script::Retire, "s", &[s(NOW + 3), s(IDLE)]),
            Reply::Error(format!(
                "ERR Lua redis lib command arguments must be strings or integers script: {}, on @user_script:17.",
                Script::Retire.sha1()
            ))
        );
        assert_eq!(field(&mut m, NOW + 3, "s", "$rotated"), Reply::Nil);
        run(&mut m, NOW, &["SET", "str", "v"]);
        assert_eq!(
            eval(&mut m, NOW, Script::Load, "str", &load_args(NOW, 0)),
            Reply::Error(format!(
                "WRONGTYPE Operation against a key holding the wrong kind of value script: {}, on @user_script:8.",
                Script::Load.sha1()
            ))
        );
    }

    fn index_args(now: u64, cap: u64, score: u64, member: &str) -> Vec<String> {
        vec![s(now), s(cap), s(score), member.to_owned()]
    }

    #[test]
    fn index_prunes_adds_and_only_ever_extends_its_expiry() {
        let mut m = Memory::new();
        let (a, b, c) = (NOW + 1000, NOW + 2000, NOW + 3000);
        // A new key gets its TTL through NX.
        let reply = eval(&mut m, NOW, Script::Index, "u", &index_args(NOW, 0, b, "b"));
        assert_eq!(reply, bulks(&[]));
        assert_eq!(m.pttl(b"u", UnixMillis(NOW)), 2000);
        // A later deadline extends it (GT), an earlier one leaves it.
        eval(&mut m, NOW, Script::Index, "u", &index_args(NOW, 0, c, "c"));
        assert_eq!(m.pttl(b"u", UnixMillis(NOW)), 3000);
        eval(&mut m, NOW, Script::Index, "u", &index_args(NOW, 0, a, "a"));
        assert_eq!(m.pttl(b"u", UnixMillis(NOW)), 3000);
        assert_eq!(
            run(&mut m, NOW, &["ZRANGE", "u", "0", "-1"]),
            bulks(&["a", "b", "c"])
        );
        // `a` and `b` are past their deadlines at b: pruned.
        eval(&mut m, b, Script::Index, "u", &index_args(b, 0, c, "d"));
        assert_eq!(
            run(&mut m, b, &["ZRANGE", "u", "0", "-1"]),
            bulks(&["c", "d"])
        );
        assert!(m.keys(UnixMillis(c)).is_empty());
    }

    #[test]
    fn index_cap_evicts_the_oldest_but_never_the_new_member() {
        let mut m = Memory::new();
        for (score, member) in [(NOW + 1000, "a"), (NOW + 2000, "b"), (NOW + 3000, "c")] {
            eval(
                &mut m,
                NOW,
                Script::Index,
                "u",
                &index_args(NOW, 0, score, member),
            );
        }
        assert_eq!(
            eval(
                &mut m,
                NOW,
                Script::Index,
                "u",
                &index_args(NOW, 2, NOW + 4000, "d")
            ),
            bulks(&["a", "b"])
        );
        // Named entries stay until pruned by deadline (their sessions are
        // revoked by the caller; an entry may outlive its key, never the
        // other way round).
        assert_eq!(
            run(&mut m, NOW, &["ZRANGE", "u", "0", "-1"]),
            bulks(&["a", "b", "c", "d"])
        );
        // The new member has the earliest deadline: the next oldest go instead.
        assert_eq!(
            eval(
                &mut m,
                NOW,
                Script::Index,
                "u",
                &index_args(NOW, 2, NOW + 500, "e")
            ),
            bulks(&["a", "b", "c"])
        );
        assert_eq!(m.pttl(b"u", UnixMillis(NOW)), 4000);
    }
}
