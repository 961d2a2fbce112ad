//! The in-memory backend: exactly the Redis commands and Lua scripts our
//! machines emit, with Redis 7.0's semantics and reply texts, and time passed
//! in. Hosts embed it when no Redis URL is given, and property tests use it as
//! the oracle, so it owns one rule: for the commands it knows, a reply from
//! [`Memory`] is the reply `redis-server` 7.0 would give.
//!
//! It is pure like the rest of the crate: no I/O, no clock (every call takes
//! `now`), no randomness, no hash-map iteration. A key whose expiry instant is
//! at or before `now` does not exist.
//!
//! Commands: PING GET SET DEL EXISTS TYPE PEXPIREAT PEXPIRE PTTL HGETALL HGET
//! HMGET HSET HDEL HINCRBY ZADD ZREM ZCARD ZRANGE ZREMRANGEBYSCORE SCAN WAIT
//! SCRIPT EVALSHA EVAL, with their Redis 7.0 options. Differences from
//! `redis-server` 7.0, all deliberate:
//!
//! - EVAL and SCRIPT LOAD accept only this crate's scripts, which are
//!   re-enacted in Rust (same writes, replies and error texts as the Lua).
//! - At exactly its expiry instant a key is gone here; Redis still serves it
//!   for that millisecond (it expires keys when `now > instant`).
//! - WAIT never blocks: it answers [`Memory::set_replicas`] at once.
//! - SCAN cursors are creation-order positions (a key alive for the whole
//!   scan is returned exactly once), not Redis's hash-table cursors.
//! - Hashes keep insertion order, as Redis does only while a hash fits its
//!   listpack (up to 128 fields of up to 64 bytes); sorted sets store -0 as 0
//!   the same way.
//! - Error texts are `String`s, so non-UTF-8 bytes Redis would echo (unknown
//!   command names, options) are replaced by U+FFFD.
//!
//! ```
//! use session_logic::expiry::UnixMillis;
//! use session_logic::memory::Memory;
//! use session_logic::step::{Command, Reply};
//!
//! let mut redis = Memory::new();
//! let now = UnixMillis(1_700_000_000_000);
//! let cmd = |args: &[&str]| Command(args.iter().map(|a| a.as_bytes().to_vec()).collect());
//! assert_eq!(redis.execute(&cmd(&["HSET", "k", "a", "1"]), now), Reply::Int(1));
//! assert_eq!(redis.execute(&cmd(&["PEXPIREAT", "k", "1700000001000"]), now), Reply::Int(1));
//! assert_eq!(redis.pttl(b"k", now), 1000);
//! assert!(redis.keys(now.plus(1000)).is_empty());
//! ```

mod commands;
mod glob;
mod number;
mod scripts;
mod store;

use std::collections::{BTreeMap, BTreeSet};

use self::commands::{Cmd, NOT_INT, arg, arity_error, arity_ok, err, lossy};
use self::number::{cstr, eq_ci, string2ll};
use self::store::{Data, Db};
use crate::expiry::UnixMillis;
use crate::scripts::Script;
use crate::step::{Command, Reply, Round};

/// The in-memory backend.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    db: Db,
    loaded: BTreeSet<Script>,
    replicas: i64,
}

/// One key's contents in a [`Memory::snapshot`], for comparing backends.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string (`SET`).
    Str(Vec<u8>),
    /// A hash, by field (field order is not part of the comparison: Redis
    /// loses insertion order once a hash outgrows its listpack).
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// A sorted set as (score, member) in rank order.
    ZSet(Vec<(f64, Vec<u8>)>),
}

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
const ONLY_OURS: &str = "ERR the in-memory backend runs only session-logic's own scripts";

/// `SCRIPT` subcommands: name (as in arity errors) and arity.
const SCRIPT_SUBCOMMANDS: [(&str, i64); 6] = [
    ("debug", 3),
    ("exists", -3),
    ("flush", -2),
    ("help", 2),
    ("kill", 2),
    ("load", 3),
];

const SCRIPT_HELP: [&str; 17] = [
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DEBUG (YES|SYNC|NO)",
    "    Set the debug mode for subsequent scripts executed.",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
];

impl Memory {
    /// An empty keyspace with no scripts loaded and no replicas.
    pub fn new() -> Self {
        Self::default()
    }

    /// Execute one command at `now`, as Redis would. Never panics.
    pub fn execute(&mut self, cmd: &Command, now: UnixMillis) -> Reply {
        self.db.purge(now.0);
        let argv: Vec<&[u8]> = cmd.args().iter().map(Vec::as_slice).collect();
        let name = arg(&argv, 0);
        let Some(command) = Cmd::lookup(name) else {
            return unknown_command(&argv);
        };
        if command == Cmd::Script && argv.len() >= 2 {
            return self.script(&argv);
        }
        if !command.arity_ok(argv.len()) {
            return arity_error(command.name());
        }
        match command {
            Cmd::Wait => self.wait(&argv),
            Cmd::Eval => self.eval(&argv, false, now.0),
            Cmd::EvalSha => self.eval(&argv, true, now.0),
            _ => commands::call(&mut self.db, command, &argv, now.0),
        }
    }

    /// Execute a round (pipeline) in order.
    pub fn execute_round(&mut self, round: &Round, now: UnixMillis) -> Vec<Reply> {
        round
            .commands()
            .iter()
            .map(|c| self.execute(c, now))
            .collect()
    }

    /// Forget loaded scripts, like SCRIPT FLUSH (next EVALSHA gets NOSCRIPT).
    pub fn flush_scripts(&mut self) {
        self.loaded.clear();
    }

    /// Replicas that WAIT reports as acknowledged (default 0; negative counts as 0).
    pub fn set_replicas(&mut self, n: i64) {
        self.replicas = n.max(0);
    }

    /// Live keys at `now`, sorted (for tests and admin stats).
    pub fn keys(&self, now: UnixMillis) -> Vec<Vec<u8>> {
        self.db.live(now.0).map(|(k, _)| k.clone()).collect()
    }

    /// Milliseconds until `key` expires at `now` (like PTTL: -2 missing, -1 no TTL).
    pub fn pttl(&self, key: &[u8], now: UnixMillis) -> i64 {
        commands::pttl(&self.db, key, now.0)
    }

    /// A deterministic snapshot of every live key: contents and expiry instant.
    pub fn snapshot(&self, now: UnixMillis) -> BTreeMap<Vec<u8>, (Value, Option<UnixMillis>)> {
        self.db
            .live(now.0)
            .map(|(key, entry)| {
                let value = match &entry.data {
                    Data::Str(s) => Value::Str(s.clone()),
                    Data::Hash(h) => {
                        Value::Hash(h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect())
                    }
                    Data::ZSet(z) => Value::ZSet(z.iter().map(|(s, m)| (s, m.to_vec())).collect()),
                };
                (key.clone(), (value, entry.expire().map(UnixMillis)))
            })
            .collect()
    }

    /// WAIT: never blocks; reports the configured replicas.
    fn wait(&self, argv: &[&[u8]]) -> Reply {
        if string2ll(arg(argv, 1)).is_none() {
            return err(NOT_INT);
        }
        match string2ll(arg(argv, 2)) {
            None => err("ERR timeout is not an integer or out of range"),
            Some(t) if t < 0 => err("ERR timeout is negative"),
            Some(_) => Reply::Int(self.replicas),
        }
    }

    /// SCRIPT with a subcommand.
    fn script(&mut self, argv: &[&[u8]]) -> Reply {
        let sub = arg(argv, 1);
        let Some(&(name, arity)) = SCRIPT_SUBCOMMANDS
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(sub))
        else {
            let sub = lossy(truncated(cstr(sub)));
            let container = lossy(cstr(arg(argv, 0))).to_ascii_uppercase();
            let text = format!("ERR unknown subcommand '{sub}'. Try {container} HELP.");
            return Reply::Error(text.replace(['\r', '\n'], " "));
        };
        if !arity_ok(arity, argv.len()) {
            return arity_error(&format!("script|{name}"));
        }
        match name {
            "exists" => Reply::Array(
                argv.iter()
                    .skip(2)
                    .map(|sha| {
                        let loaded =
                            Script::from_sha1(sha).is_some_and(|s| self.loaded.contains(&s));
                        Reply::Int(i64::from(loaded))
                    })
                    .collect(),
            ),
            "flush" => {
                let mode_ok = match argv.get(2) {
                    None => true,
                    Some(mode) => argv.len() == 3 && (eq_ci(mode, "sync") || eq_ci(mode, "async")),
                };
                if !mode_ok {
                    return err("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
                }
                self.flush_scripts();
                Reply::Simple("OK".to_owned())
            }
            "load" => match Script::from_source(arg(argv, 2)) {
                Some(script) => {
                    self.loaded.insert(script);
                    Reply::Bulk(script.sha1().as_bytes().to_vec())
                }
                None => err(ONLY_OURS),
            },
            "kill" => err("NOTBUSY No scripts in execution right now."),
            "help" => Reply::Array(
                SCRIPT_HELP
                    .iter()
                    .map(|l| Reply::Simple((*l).to_owned()))
                    .collect(),
            ),
            _ => err("ERR the in-memory backend does not support SCRIPT DEBUG"),
        }
    }

    /// EVAL / EVALSHA.
    fn eval(&mut self, argv: &[&[u8]], by_sha: bool, now: u64) -> Reply {
        let body = arg(argv, 1);
        if by_sha && body.len() != 40 {
            return err(NOSCRIPT);
        }
        let Some(numkeys) = string2ll(arg(argv, 2)) else {
            return err(NOT_INT);
        };
        let rest = argv.get(3..).unwrap_or_default();
        if numkeys > i64::try_from(rest.len()).unwrap_or(i64::MAX) {
            return err("ERR Number of keys can't be greater than number of args");
        }
        let Ok(numkeys) = usize::try_from(numkeys) else {
            return err("ERR Number of keys can't be negative");
        };
        let script = if by_sha {
            match Script::from_sha1(body).filter(|s| self.loaded.contains(s)) {
                Some(script) => script,
                None => return err(NOSCRIPT),
            }
        } else {
            match Script::from_source(body) {
                Some(script) => {
                    self.loaded.insert(script);
                    script
                }
                None => return err(ONLY_OURS),
            }
        };
        let (keys, args) = rest.split_at_checked(numkeys).unwrap_or((rest, &[]));
        scripts::run(&mut self.db, script, keys, args, now)
    }
}

/// At most 128 bytes, as Redis's `%.128s`.
fn truncated(s: &[u8]) -> &[u8] {
    s.get(..128).unwrap_or(s)
}

/// Redis's reply to an unknown command: the name and the first ~128 bytes of
/// arguments, C strings, line breaks turned to spaces.
fn unknown_command(argv: &[&[u8]]) -> Reply {
    let mut args: Vec<u8> = Vec::new();
    for a in argv.iter().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = cstr(a);
        args.push(b'\'');
        args.extend_from_slice(a.get(..room).unwrap_or(a));
        args.extend_from_slice(b"' ");
    }
    let name = truncated(cstr(arg(argv, 0)));
    let text = format!(
        "ERR unknown command '{}', with args beginning with: {}",
        lossy(name),
        lossy(&args)
    );
    Reply::Error(text.replace(['\r', '\n'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn command(args: &[&[u8]]) -> Command {
        Command(args.iter().map(|a| a.to_vec()).collect())
    }
    fn run(m: &mut Memory, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        m.execute(&command(&args), UnixMillis(NOW))
    }
    fn noscript() -> Reply {
        Reply::Error(NOSCRIPT.to_owned())
    }

    #[test]
    fn evalsha_needs_an_earlier_eval_or_load_since_the_last_flush() {
        let mut m = Memory::new();
        let (sha, src) = (Script::Load.sha1(), Script::Load.source());
        let args = ["1", "k", "1", "2", "3", "4"];
        let evalsha: Vec<&str> = ["EVALSHA", sha].into_iter().chain(args).collect();
        let eval: Vec<&str> = ["EVAL", src].into_iter().chain(args).collect();
        assert_eq!(run(&mut m, &evalsha), noscript());
        assert_eq!(run(&mut m, &eval), Reply::Array(vec![]));
        assert_eq!(run(&mut m, &evalsha), Reply::Array(vec![]));
        let upper = sha.to_ascii_uppercase();
        assert_eq!(
            run(&mut m, &["EVALSHA", &upper, "1", "k", "1", "2", "3", "4"]),
            Reply::Array(vec![])
        );
        m.flush_scripts();
        assert_eq!(run(&mut m, &evalsha), noscript());
        assert_eq!(
            run(&mut m, &["SCRIPT", "LOAD", src]),
            Reply::Bulk(sha.as_bytes().to_vec())
        );
        assert_eq!(run(&mut m, &evalsha), Reply::Array(vec![]));
        assert_eq!(
            run(&mut m, &["SCRIPT", "FLUSH"]),
            Reply::Simple("OK".into())
        );
        assert_eq!(run(&mut m, &evalsha), noscript());
    }

    #[test]
    fn eval_argument_checks_come_in_redis_order() {
        let mut m = Memory::new();
        let src = Script::Create.source();
        assert_eq!(run(&mut m, &["EVALSHA", "short", "x"]), noscript());
        assert_eq!(
            run(&mut m, &["EVALSHA", &"0".repeat(40), "x"]),
            Reply::Error(NOT_INT.into())
        );
        assert_eq!(run(&mut m, &["EVALSHA", &"0".repeat(40), "0"]), noscript());
        assert_eq!(
            run(&mut m, &["EVAL", src, "2", "k"]),
            Reply::Error("ERR Number of keys can't be greater than number of args".into())
        );
        assert_eq!(
            run(&mut m, &["EVAL", src, "-1"]),
            Reply::Error("ERR Number of keys can't be negative".into())
        );
        assert_eq!(
            run(&mut m, &["EVAL", "return 1", "0"]),
            Reply::Error(ONLY_OURS.into())
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "LOAD", "return 1"]),
            Reply::Error(ONLY_OURS.into())
        );
        // numkeys 0: KEYS[1] is nil and the first redis.call refuses it.
        assert_eq!(
            run(&mut m, &["EVAL", src, "0", "1"]),
            Reply::Error(format!(
                "ERR Lua redis lib command arguments must be strings or integers script: {}, on @user_script:6.",
                Script::Create.sha1()
            ))
        );
    }

    #[test]
    fn script_subcommands_follow_redis() {
        let mut m = Memory::new();
        let load = Script::Load.sha1();
        run(&mut m, &["SCRIPT", "LOAD", Script::Load.source()]);
        assert_eq!(
            run(
                &mut m,
                &["SCRIPT", "EXISTS", load, Script::Save.sha1(), "nope"]
            ),
            Reply::Array(vec![Reply::Int(1), Reply::Int(0), Reply::Int(0)])
        );
        assert_eq!(
            run(&mut m, &["SCRIPT"]),
            Reply::Error("ERR wrong number of arguments for 'script' command".into())
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "LOAD"]),
            Reply::Error("ERR wrong number of arguments for 'script|load' command".into())
        );
        assert_eq!(
            run(&mut m, &["script", "foo"]),
            Reply::Error("ERR unknown subcommand 'foo'. Try SCRIPT HELP.".into())
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "FLUSH", "x"]),
            Reply::Error("ERR SCRIPT FLUSH only support SYNC|ASYNC option".into())
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "FLUSH", "async"]),
            Reply::Simple("OK".into())
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "EXISTS", load]),
            Reply::Array(vec![Reply::Int(0)])
        );
        assert_eq!(
            run(&mut m, &["SCRIPT", "KILL"]),
            Reply::Error("NOTBUSY No scripts in execution right now.".into())
        );
    }

    #[test]
    fn a_round_runs_in_order_and_snapshots_are_plain_data() {
        let mut m = Memory::new();
        let round = Round(vec![
            command(&[b"HSET", b"h", b"f", b"v"]),
            command(&[b"PEXPIREAT", b"h", b"1700000005000"]),
            command(&[b"ZADD", b"z", b"2", b"b", b"1", b"a"]),
            command(&[b"SET", b"s", b"x"]),
            command(&[b"HGET", b"h", b"f"]),
        ]);
        let replies = m.execute_round(&round, UnixMillis(NOW));
        assert_eq!(
            replies,
            vec![
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(2),
                Reply::Simple("OK".into()),
                Reply::Bulk(b"v".to_vec())
            ]
        );
        let snap = m.snapshot(UnixMillis(NOW));
        let hash = BTreeMap::from([(b"f".to_vec(), b"v".to_vec())]);
        assert_eq!(
            snap.get(&b"h"[..]),
            Some(&(Value::Hash(hash), Some(UnixMillis(NOW + 5000))))
        );
        assert_eq!(
            snap.get(&b"z"[..]),
            Some(&(
                Value::ZSet(vec![(1.0, b"a".to_vec()), (2.0, b"b".to_vec())]),
                None
            ))
        );
        assert_eq!(
            snap.get(&b"s"[..]),
            Some(&(Value::Str(b"x".to_vec()), None))
        );
        assert_eq!(
            m.keys(UnixMillis(NOW)),
            vec![b"h".to_vec(), b"s".to_vec(), b"z".to_vec()]
        );
        assert_eq!(
            m.keys(UnixMillis(NOW + 5000)),
            vec![b"s".to_vec(), b"z".to_vec()]
        );
    }

    /// Deterministic xorshift64*.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
            from[self.below(from.len())]
        }
    }

    const NAMES: [&[u8]; 31] = [
        b"PING",
        b"GET",
        b"SET",
        b"DEL",
        b"EXISTS",
        b"TYPE",
        b"PEXPIREAT",
        b"PEXPIRE",
        b"PTTL",
        b"HGETALL",
        b"HGET",
        b"HMGET",
        b"HSET",
        b"HDEL",
        b"HINCRBY",
        b"ZADD",
        b"ZREM",
        b"ZCARD",
        b"ZRANGE",
        b"ZREMRANGEBYSCORE",
        b"SCAN",
        b"WAIT",
        b"SCRIPT",
        b"EVALSHA",
        b"EVAL",
        b"zadd",
        b"hSet",
        b"",
        b"FOO",
        b"\0",
        b"EVALSHA",
    ];
    const TOKENS: [&[u8]; 52] = [
        b"k",
        b"h",
        b"z",
        b"s",
        b"",
        b" ",
        b"0",
        b"1",
        b"-1",
        b"2",
        b"3",
        b"1.5",
        b"nan",
        b"inf",
        b"-inf",
        b"+inf",
        b"(1",
        b"(",
        b"[a",
        b"-",
        b"+",
        b"1e400",
        b"0x10",
        b"-0",
        b"01",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"9223372036854775808",
        b"2147483648",
        b"1e10",
        b"NX",
        b"XX",
        b"GT",
        b"LT",
        b"CH",
        b"INCR",
        b"WITHSCORES",
        b"REV",
        b"BYSCORE",
        b"BYLEX",
        b"LIMIT",
        b"MATCH",
        b"COUNT",
        b"TYPE",
        b"*",
        b"[^a-]\\",
        b"$touch",
        b"$deadline",
        b"$rotated",
        b"$rev",
        b"\xff\0\r\n",
        b"1700000000000",
    ];

    fn hostile_command(rng: &mut Rng, now: u64) -> Command {
        let mut args: Vec<Vec<u8>> = Vec::new();
        let name = rng.pick(&NAMES);
        args.push(name.to_vec());
        if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
            let script = Script::ALL[rng.below(Script::ALL.len())];
            let body = if name == b"EVAL" {
                script.source()
            } else {
                script.sha1()
            };
            args.push(body.as_bytes().to_vec());
            args.push(if rng.below(10) == 0 {
                rng.pick(&TOKENS).to_vec()
            } else {
                b"1".to_vec()
            });
        } else if name == b"SCRIPT" {
            let sub: &[&[u8]] = &[
                b"LOAD", b"EXISTS", b"FLUSH", b"KILL", b"HELP", b"DEBUG", b"x",
            ];
            args.push(rng.pick(sub).to_vec());
            if rng.below(2) == 0 {
                args.push(Script::ALL[rng.below(5)].source().as_bytes().to_vec());
            }
        }
        let count = match rng.below(100) {
            0 if rng.below(5) == 0 => 7_990 + rng.below(20),
            1..=9 => rng.below(40),
            _ => rng.below(9),
        };
        for _ in 0..count {
            let arg = match rng.below(8) {
                0 => (now as i64 + rng.below(4_000_000) as i64 - 2_000_000)
                    .to_string()
                    .into_bytes(),
                1 => (0..rng.below(6)).map(|_| rng.next() as u8).collect(),
                2 => rng.below(12).to_string().into_bytes(),
                _ => rng.pick(&TOKENS).to_vec(),
            };
            args.push(arg);
        }
        Command(args)
    }

    #[test]
    fn no_panic_on_hostile_argv() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut m = Memory::new();
        let mut now = NOW;
        for i in 0..200_000u32 {
            now = match rng.below(50) {
                0 => now.saturating_sub(rng.below(5_000_000) as u64),
                1 => rng.next(),
                _ => now + rng.below(2_000) as u64,
            };
            if now > NOW * 2 {
                now = NOW;
            }
            if i % 997 == 0 {
                m.flush_scripts();
            }
            let cmd = hostile_command(&mut rng, now);
            let _ = m.execute(&cmd, UnixMillis(now));
            if i % 2000 == 0 {
                let at = UnixMillis(now);
                let snap = m.snapshot(at);
                assert_eq!(snap.keys().cloned().collect::<Vec<_>>(), m.keys(at));
                for (key, (value, expiry)) in &snap {
                    match value {
                        Value::Hash(h) => assert!(!h.is_empty(), "empty hash kept"),
                        Value::ZSet(z) => assert!(!z.is_empty(), "empty zset kept"),
                        Value::Str(_) => {}
                    }
                    assert!(expiry.is_none_or(|e| e > at));
                    assert_ne!(m.pttl(key, at), -2);
                }
            }
        }
    }
}
