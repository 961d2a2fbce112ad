//! The round-trip budget (DESIGN.md, "the performance contract"), one test
//! per row, against a real redis-server. A round is one `Step::Round` the host
//! saw, i.e. one pipeline and one network round trip; each test also pins the
//! number of commands in every round. Scripts are loaded first (`SCRIPT LOAD`
//! of every `Script::ALL` source), as on a warm server, so the NOSCRIPT→EVAL
//! fallback (one extra round, once per script per server) is not counted.
//!
//! | operation                                        | rounds |
//! |--------------------------------------------------|--------|
//! | request that only reads (incl. throttled touch)  | 1      |
//! | request that changes data                        | 2      |
//! | first write of a new session                     | 1      |
//! | regenerate (after load)                          | 1      |
//! | destroy                                          | 1      |
//! | logout everywhere, any number of sessions        | 2      |

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use session_logic::outcome::Absent;
use session_logic::scripts::Script;
use session_logic::step::{Reply, Step};
use session_logic::{Config, Engine, Entropy, Error, Op, Outcome, Session, UnixMillis, UserId};
use session_tests::{RedisServer, execute_round};

/// A server with every script already in its cache, and a connection to it.
fn warm_server() -> (RedisServer, redis::Connection) {
    let server = RedisServer::start();
    let mut conn = server.client();
    for script in Script::ALL {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.source())
            .query(&mut conn)
            .unwrap();
        assert_eq!(sha, script.sha1(), "SHA-1 of {}.lua", script.name());
    }
    (server, conn)
}

/// A day after the wall clock: every TTL the scripts set lies in Redis's future.
fn start_time() -> UnixMillis {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    UnixMillis(u64::try_from(wall).unwrap() + 24 * 3600 * 1000)
}

/// What the host saw while driving one operation.
struct Run {
    result: Result<Outcome, Error>,
    /// Commands in each round, in order; its length is the round count.
    rounds: Vec<usize>,
}

impl Run {
    fn ok(self) -> (Outcome, Vec<usize>) {
        match self.result {
            Ok(o) => (o, self.rounds),
            Err(e) => panic!("operation failed: {e} ({})", e.code()),
        }
    }
}

/// The host loop, counting rounds and commands. Fails on NOSCRIPT: the
/// budget is for a warm server.
fn drive(conn: &mut redis::Connection, mut op: Op) -> Run {
    let mut rounds = Vec::new();
    loop {
        match op.poll() {
            Step::Round(round) => {
                rounds.push(round.len());
                let replies = execute_round(conn, &round).unwrap();
                for r in &replies {
                    if let Reply::Error(e) = r {
                        assert!(!e.starts_with("NOSCRIPT"), "scripts were preloaded: {e}");
                    }
                }
                op.handle_replies(replies);
                assert!(rounds.len() <= 8, "runaway operation: {rounds:?}");
            }
            Step::Done(result) => return Run { result, rounds },
        }
    }
}

fn cookie_pair(outcome: &Outcome) -> String {
    let c = outcome.cookie().expect("a Set-Cookie");
    c.split(';').next().unwrap().to_owned()
}

fn entropy(n: u64) -> Entropy {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..16].copy_from_slice(&(n ^ 0x9E37_79B9_7F4A_7C15).to_le_bytes());
    b[31] = 0x5A;
    Entropy(b)
}

/// A stored session with one data key (and a user if given): its cookie.
fn create(
    conn: &mut redis::Connection,
    engine: &Engine,
    now: UnixMillis,
    n: u64,
    user: Option<&UserId>,
) -> String {
    let mut s = engine.new_session();
    s.insert("n", json!(n)).unwrap();
    if let Some(u) = user {
        s.set_user(u.clone(), now);
    }
    let (outcome, _) = drive(conn, engine.save(s, entropy(n), now)).ok();
    cookie_pair(&outcome)
}

fn load(
    conn: &mut redis::Connection,
    engine: &Engine,
    cookie: &str,
    now: UnixMillis,
) -> (Session, Vec<usize>) {
    match drive(conn, engine.load(Some(cookie), None, now)).ok() {
        (Outcome::Loaded(s), rounds) => (s, rounds),
        (other, _) => panic!("expected a loaded session, got {}", show(&other)),
    }
}

/// An outcome for a failure message, without session IDs: the `id` of a
/// session and any cookie value are blanked.
fn show(outcome: &Outcome) -> String {
    fn blank(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if (k == "id" || k == "cookie") && v.is_string() {
                        *v = serde_json::Value::String("<redacted>".into());
                    } else {
                        blank(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(outcome).unwrap();
    blank(&mut v);
    v.to_string()
}

fn dbsize(conn: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(conn).unwrap()
}

/// `calls` per command from `INFO commandstats`.
fn command_calls(conn: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// A `MONITOR` connection: every command Redis executes, one line each,
/// marked `[db lua]` when a script issued it and `[db addr]` when a client did.
struct Monitor {
    lines: BufReader<TcpStream>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut lines = BufReader::new(stream);
        let mut ok = String::new();
        lines.read_line(&mut ok).unwrap();
        assert_eq!(ok.trim_end(), "+OK");
        Monitor { lines }
    }

    /// Lines (lower-cased) up to, excluding, the `ECHO marker` the caller sent last.
    fn until_echo(&mut self, marker: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.lines.read_line(&mut line).unwrap() > 0,
                "MONITOR closed"
            );
            // Arguments appear as the client sent them: compare names in lower case.
            let line = line.trim_end().to_ascii_lowercase();
            if line.contains("\"echo\"") && line.contains(marker) {
                return out;
            }
            out.push(line);
        }
    }
}

#[test]
fn read_only_request_costs_one_round() {
    let (server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let config = engine.config().clone();
    let t0 = start_time();
    let cookie = create(&mut conn, &engine, t0, 1, None);

    // Inside the touch interval: one round of one command, nothing written.
    let (s, rounds) = load(&mut conn, &engine, &cookie, t0.plus(1000));
    assert_eq!(rounds, vec![1], "read-only load");
    assert_eq!(s.meta().unwrap().touch, t0);

    // The touch is due: still one round of one command (the touch rides in
    // the load script), and Redis runs exactly one top-level command.
    let due = t0.plus(config.touch_interval_ms + 1);
    let mut monitor = Monitor::start(server.port());
    let before = command_calls(&mut conn);
    let (s, rounds) = load(&mut conn, &engine, &cookie, due);
    let after = command_calls(&mut conn);
    let _: String = redis::cmd("ECHO")
        .arg("budget-marker")
        .query(&mut conn)
        .unwrap();
    assert_eq!(rounds, vec![1], "read-only load with a due touch");
    assert_eq!(s.meta().unwrap().touch, due);

    // commandstats also counts what scripts call, so the delta is the one
    // EVALSHA plus exactly the commands load.lua issues for a due touch.
    let mut delta: BTreeMap<String, u64> = after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    delta.remove("info");
    let expected: BTreeMap<String, u64> = [
        ("evalsha", 1),
        ("hgetall", 1),
        ("hset", 1),
        ("pexpireat", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(
        delta, expected,
        "INFO commandstats delta of one read-only request"
    );

    // MONITOR tells top-level commands from script calls: one EVALSHA from
    // the client, everything else from inside it.
    let lines = monitor.until_echo("budget-marker");
    let top_level: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains(" lua]") && !l.contains("\"info\""))
        .collect();
    assert_eq!(top_level.len(), 1, "top-level commands: {top_level:#?}");
    assert!(top_level[0].contains("\"evalsha\""), "{}", top_level[0]);
    assert_eq!(
        lines.iter().filter(|l| l.contains(" lua]")).count(),
        3,
        "{lines:#?}"
    );

    // The touch landed: $touch and the TTL moved with it.
    let key = engine.keyspace().session_key(s.id().unwrap());
    let touch: String = redis::cmd("HGET")
        .arg(&key)
        .arg("$touch")
        .query(&mut conn)
        .unwrap();
    assert_eq!(touch, due.0.to_string());
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        at,
        i64::try_from(due.plus(config.idle_timeout_ms).0).unwrap()
    );
}

#[test]
fn changing_request_costs_two_rounds() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let t0 = start_time();
    let cookie = create(&mut conn, &engine, t0, 1, None);

    let now = t0.plus(5000);
    let (mut s, load_rounds) = load(&mut conn, &engine, &cookie, now);
    s.insert("cart", json!(["apple"])).unwrap();
    s.remove("n");
    let (saved, save_rounds) = drive(&mut conn, engine.save(s, entropy(99), now)).ok();
    assert!(
        matches!(saved, Outcome::Saved { cookie: None, .. }),
        "{}",
        show(&saved)
    );
    assert_eq!(load_rounds, vec![1], "load");
    assert_eq!(save_rounds, vec![1], "save of a delta");
    assert_eq!(load_rounds.len() + save_rounds.len(), 2);

    let (s, _) = load(&mut conn, &engine, &cookie, now.plus(1000));
    assert_eq!(s.get("cart"), Some(&json!(["apple"])));
    assert_eq!(s.get("n"), None);
}

#[test]
fn first_write_of_new_session_costs_one_round() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let now = start_time();

    // No cookie: the load costs nothing.
    let (none, rounds) = drive(&mut conn, engine.load(None, None, now)).ok();
    assert_eq!(rounds, Vec::<usize>::new(), "load without a cookie");
    let Outcome::None {
        reason: Absent::NoCookie,
        session: mut s,
    } = none
    else {
        panic!("expected none, got {}", show(&none))
    };
    s.insert("cart", json!(["apple"])).unwrap();
    let (saved, rounds) = drive(&mut conn, engine.save(s, entropy(1), now)).ok();
    assert_eq!(rounds, vec![1], "first write: one create");
    let cookie = cookie_pair(&saved);
    assert_eq!(dbsize(&mut conn), 1);

    // Signed in on the first write: the index update joins the same round.
    let mut s = engine.new_session();
    s.insert("cart", json!(["pear"])).unwrap();
    s.set_user(UserId::new("alice").unwrap(), now);
    let (_, rounds) = drive(&mut conn, engine.save(s, entropy(2), now)).ok();
    assert_eq!(rounds, vec![2], "first write with a user: create + index");
    assert_eq!(dbsize(&mut conn), 3);

    let (s, _) = load(&mut conn, &engine, &cookie, now.plus(1));
    assert_eq!(s.get("cart"), Some(&json!(["apple"])));
}

#[test]
fn regenerate_after_load_costs_one_round() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let t0 = start_time();
    let alice = UserId::new("alice").unwrap();

    // Sign-in: load, bind the user, regenerate.
    let cookie = create(&mut conn, &engine, t0, 1, None);
    let now = t0.plus(1000);
    let (mut s, load_rounds) = load(&mut conn, &engine, &cookie, now);
    s.set_user(alice.clone(), now);
    let (regenerated, rounds) = drive(&mut conn, engine.regenerate(s, entropy(2), now)).ok();
    assert_eq!(load_rounds, vec![1]);
    assert_eq!(
        rounds,
        vec![3],
        "regenerate with sign-in: create + retire + index"
    );
    let new_cookie = cookie_pair(&regenerated);
    assert_ne!(new_cookie, cookie);

    // Privilege change of a signed-in session: the index swaps old for new
    // member in the same round.
    let (s, _) = load(&mut conn, &engine, &new_cookie, now.plus(1000));
    let (again, rounds) = drive(&mut conn, engine.regenerate(s, entropy(3), now.plus(1000))).ok();
    assert_eq!(
        rounds,
        vec![3],
        "regenerate of a signed-in session: create + retire + index"
    );
    let newest = cookie_pair(&again);

    // Anonymous session: create + retire.
    let anon = create(&mut conn, &engine, t0, 4, None);
    let (s, _) = load(&mut conn, &engine, &anon, now);
    let (_, rounds) = drive(&mut conn, engine.regenerate(s, entropy(5), now)).ok();
    assert_eq!(rounds, vec![2], "anonymous regenerate: create + retire");

    // The old IDs answer Rotated inside the grace period; the newest loads.
    let (old, _) = drive(&mut conn, engine.load(Some(&cookie), None, now.plus(1500))).ok();
    assert!(matches!(old, Outcome::Rotated(_)), "{}", show(&old));
    let (s, _) = load(&mut conn, &engine, &newest, now.plus(1500));
    assert_eq!(s.user(), Some(&alice));
}

#[test]
fn destroy_costs_one_round() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let t0 = start_time();

    let cookie = create(&mut conn, &engine, t0, 1, None);
    let (s, _) = load(&mut conn, &engine, &cookie, t0.plus(1000));
    let (destroyed, rounds) = drive(&mut conn, engine.destroy(s, t0.plus(1000))).ok();
    assert_eq!(rounds, vec![1], "destroy: DEL");
    assert!(
        matches!(
            destroyed,
            Outcome::Destroyed {
                count: 1,
                cookie: Some(_)
            }
        ),
        "{}",
        show(&destroyed)
    );
    assert_eq!(dbsize(&mut conn), 0);

    // Signed in: still one command. The index entry is left to deadline
    // pruning (an entry may outlive its key, never the other way round).
    let alice = UserId::new("alice").unwrap();
    let cookie = create(&mut conn, &engine, t0, 2, Some(&alice));
    let (s, _) = load(&mut conn, &engine, &cookie, t0.plus(1000));
    let (destroyed, rounds) = drive(&mut conn, engine.destroy(s, t0.plus(1000))).ok();
    assert_eq!(rounds, vec![1], "destroy with a user: DEL");
    assert!(
        matches!(destroyed, Outcome::Destroyed { count: 1, .. }),
        "{}",
        show(&destroyed)
    );
    assert_eq!(
        dbsize(&mut conn),
        1,
        "the record is gone; the index waits for pruning"
    );
}

#[test]
fn logout_everywhere_costs_two_rounds_for_any_number_of_sessions() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let t0 = start_time();
    for (u, n) in [1u64, 10, 1000].into_iter().enumerate() {
        let user = UserId::new(format!("user-{u}")).unwrap();
        let other = UserId::new(format!("other-{u}")).unwrap();
        let bystander = create(&mut conn, &engine, t0, 1_000_000 + n, Some(&other));
        let cookies: Vec<String> = (0..n)
            .map(|i| create(&mut conn, &engine, t0.plus(i), n * 10_000 + i, Some(&user)))
            .collect();
        let now = t0.plus(n + 1000);

        let (outcome, rounds) =
            drive(&mut conn, engine.destroy_all_for_user(&user, None, now)).ok();
        assert_eq!(
            rounds.len(),
            2,
            "logout everywhere of {n} sessions: {rounds:?}"
        );
        assert_eq!(
            rounds,
            vec![1, usize::try_from(n).unwrap()],
            "ZRANGE, then revoke x {n}"
        );
        assert!(
            matches!(outcome, Outcome::Destroyed { count, .. } if count == n),
            "{}",
            show(&outcome)
        );

        // Every session of the user is gone; left are the user's index
        // (pruned by deadline) and the bystander (record + its index).
        assert_eq!(dbsize(&mut conn), 3, "after logging out {n} sessions");
        for c in cookies.iter().step_by(97) {
            let (o, _) = drive(&mut conn, engine.load(Some(c), None, now)).ok();
            assert!(
                matches!(
                    o,
                    Outcome::None {
                        reason: Absent::Unknown,
                        ..
                    }
                ),
                "{}",
                show(&o)
            );
        }
        load(&mut conn, &engine, &bystander, now);
        let _: () = redis::cmd("FLUSHDB").query(&mut conn).unwrap();
    }
}

#[test]
fn visitor_without_session_data_writes_nothing() {
    let (_server, mut conn) = warm_server();
    let engine = Engine::new(Config::default()).unwrap();
    let now = start_time();

    let (none, rounds) = drive(&mut conn, engine.load(None, None, now)).ok();
    assert_eq!(rounds, Vec::<usize>::new(), "load without a cookie");
    let s = none.into_session().unwrap();
    let (saved, rounds) = drive(&mut conn, engine.save(s, entropy(1), now)).ok();
    assert_eq!(
        rounds,
        Vec::<usize>::new(),
        "save of an untouched new session"
    );
    assert!(
        matches!(saved, Outcome::Saved { cookie: None, .. }),
        "no Set-Cookie: {}",
        show(&saved)
    );
    assert_eq!(dbsize(&mut conn), 0);

    // A bot replaying a planted well-formed ID: one lookup, never adopted, no
    // write and no Set-Cookie (a flood of forged IDs costs no writes).
    let planted = format!("sid={}", "A".repeat(43));
    let (none, rounds) = drive(&mut conn, engine.load(Some(&planted), None, now)).ok();
    assert_eq!(rounds, vec![1]);
    let s = none.into_session().unwrap();
    let (saved, rounds) = drive(&mut conn, engine.save(s, entropy(2), now)).ok();
    assert_eq!(rounds, Vec::<usize>::new());
    assert!(
        matches!(&saved, Outcome::Saved { session, cookie: None } if session.id().is_none()),
        "{}",
        show(&saved)
    );
    assert_eq!(dbsize(&mut conn), 0);
}
