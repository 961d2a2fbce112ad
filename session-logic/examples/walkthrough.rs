//! # Walkthrough: the session rules, one request at a time
//!
//! `scripts/run` (that is, `cargo run --release -p session-logic --example
//! walkthrough`) drives the real [`Engine`] against the in-memory backend
//! [`Memory`] through the same ten-line host loop every host runs (see
//! `Host::run`). For each request it prints the operations, the rounds they
//! cost with each command's name and key, the outcome, and the keys left in
//! memory. A session ID is never printed: only `Engine::sid_hash`, the keyed
//! hash that logs may carry, also inside the Set-Cookie lines shown.
//!
//! The clock starts at a fixed instant and moves only when a step says so, so
//! every run prints the same steps, rounds and outcomes; only the hashes differ.
//!
//! Entropy: the core has no RNG. A real host passes 32 bytes from the OS
//! CSPRNG (e.g. the `getrandom` crate) to every operation that may mint an ID.
//! This example keeps to std and hashes std's per-process random SipHash keys
//! (`RandomState`), the time and a counter with SHA-256: fine for a demo, not
//! for production.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use session_logic::memory::Memory;
use session_logic::scripts::Script;
use session_logic::{
    Command, Config, Engine, Entropy, Op, Outcome, Session, SessionId, Step, UnixMillis, UserId,
};
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;

struct Host {
    engine: Engine,
    redis: Memory,
    /// The app server's clock.
    now: UnixMillis,
    /// How far Redis's clock lags the app server's (0 except in step 10).
    redis_lag: u64,
    draws: u64,
    /// Rounds since the last `request_done`.
    rounds: u32,
}

impl Host {
    /// The host loop (everything but the printing is what a real host does).
    fn run(&mut self, what: &str, mut op: Op) -> Res<Outcome> {
        println!("  {what}");
        let mut rounds = 0;
        let result = loop {
            match op.poll() {
                Step::Round(round) => {
                    rounds += 1;
                    for cmd in round.commands() {
                        println!("      round {rounds}: {}", self.describe(cmd));
                    }
                    let replies = self.redis.execute_round(&round, self.redis_now());
                    op.handle_replies(replies);
                }
                Step::Done(result) => break result,
            }
        };
        let outcome = result?;
        let detail = self.detail(&outcome);
        println!("    → {detail} ({rounds} round{})", plural(rounds));
        self.rounds += rounds;
        if let Some(set_cookie) = outcome.cookie() {
            println!("      Set-Cookie: {}", self.redact(set_cookie));
        }
        Ok(outcome)
    }

    fn load(&mut self, cookie: Option<&str>) -> Res<Session> {
        let shown = cookie.map_or("none".to_owned(), |c| self.redact(c));
        let op = self.engine.load(cookie, None, self.now);
        let outcome = self.run(&format!("load(Cookie: {shown})"), op)?;
        Ok(outcome
            .into_session()
            .ok_or("load always yields a session")?)
    }

    fn save(&mut self, session: Session) -> Res<Outcome> {
        let entropy = self.entropy();
        self.run("save", self.engine.save(session, entropy, self.now))
    }

    fn regenerate(&mut self, what: &str, session: Session) -> Res<Outcome> {
        let entropy = self.entropy();
        self.run(what, self.engine.regenerate(session, entropy, self.now))
    }

    /// The `Cookie` header a browser sends back after this outcome's Set-Cookie.
    fn browser(outcome: &Outcome) -> Res<String> {
        let set_cookie = outcome.cookie().ok_or("expected a Set-Cookie")?;
        Ok(set_cookie.split(';').next().unwrap_or_default().to_owned())
    }

    /// Check and print the round trips one whole request cost.
    fn request_done(&mut self, budget: u32) -> Res<()> {
        let used = std::mem::take(&mut self.rounds);
        if used != budget {
            return Err(format!("this request took {used} rounds, the budget is {budget}").into());
        }
        println!("  = {used} round trip{} for the request", plural(used));
        Ok(())
    }

    fn redis_now(&self) -> UnixMillis {
        UnixMillis(self.now.0 - self.redis_lag)
    }

    fn advance(&mut self, ms: u64, why: &str) {
        self.now = self.now.plus(ms);
        println!(
            "  (clock +{}: {why})",
            if ms < MINUTE {
                format!("{} s", ms / SECOND)
            } else {
                format!("{} min", ms / MINUTE)
            }
        );
    }

    fn keys(&self) {
        let mut keys: Vec<String> = (self.redis.keys(self.redis_now()).iter())
            .map(|k| short_key(&String::from_utf8_lossy(k)))
            .collect();
        if keys.is_empty() {
            keys.push("(none)".into());
        }
        println!("  keys in memory: {}", keys.join(", "));
    }

    /// Command name (and script) plus key: never the arguments.
    fn describe(&self, cmd: &Command) -> String {
        let name = String::from_utf8_lossy(cmd.name()).into_owned();
        let body = cmd.args().get(1).map(Vec::as_slice).unwrap_or_default();
        let script = Script::from_sha1(body).or_else(|| Script::from_source(body));
        let name = match script {
            Some(s) if name.starts_with("EVAL") => format!("{name} {}", s.name()),
            _ => name,
        };
        let key = cmd.key().map(|k| short_key(&String::from_utf8_lossy(k)));
        format!("{name} {}", key.unwrap_or_default())
    }

    /// `name=<sid_hash …>; attributes…`: a cookie with its ID replaced.
    fn redact(&self, cookie: &str) -> String {
        let (pair, attrs) = cookie
            .split_once(';')
            .map_or((cookie, None), |(p, a)| (p, Some(a)));
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = match SessionId::parse(value, self.engine.config().id_format) {
            Some(id) => format!("<sid_hash {}>", self.engine.sid_hash(&id)),
            None if value.len() > 12 => "<not an ID>".to_owned(),
            None => value.to_owned(),
        };
        attrs.map_or(format!("{name}={value}"), |a| format!("{name}={value};{a}"))
    }

    fn detail(&self, outcome: &Outcome) -> String {
        let sid = |s: &Session| s.id().map_or(String::new(), |id| self.engine.sid_hash(id));
        let data = |s: &Session| serde_json::to_string(s.data()).unwrap_or_default();
        match outcome {
            Outcome::None { reason, .. } => {
                let reason = serde_json::to_value(reason).unwrap_or_default();
                format!("none ({})", reason.as_str().unwrap_or("?"))
            }
            Outcome::Loaded(s) => {
                let user = s
                    .user()
                    .map_or(String::new(), |u| format!(", user {}", u.as_str()));
                format!("loaded {}: {}{user}", sid(s), data(s))
            }
            Outcome::Saved { session, .. } if session.id().is_none() => {
                "saved, nothing stored".into()
            }
            Outcome::Saved { session, .. } => format!("saved {}", sid(session)),
            Outcome::Destroyed { count, .. } => format!("destroyed, {count} session(s)"),
            Outcome::Devices(devices) => {
                let list: Vec<String> = (devices.iter())
                    .map(|d| {
                        let age = self.now.since(d.created) / SECOND;
                        let here = if d.current { ", this one" } else { "" };
                        format!(
                            "{}… created {age}s ago{here}",
                            d.handle.get(..8).unwrap_or("")
                        )
                    })
                    .collect();
                format!("devices: [{}]", list.join("; "))
            }
            other => other.name().to_owned(),
        }
    }

    fn entropy(&mut self) -> Entropy {
        self.draws += 1;
        entropy(self.draws)
    }
}

/// 32 bytes for one operation. Demo entropy only (see the module docs): a
/// real host reads the OS CSPRNG here.
fn entropy(draw: u64) -> Entropy {
    let mut h = Sha256::new();
    for lane in 0..4u64 {
        let mut sip = RandomState::new().build_hasher();
        sip.write_u64(draw);
        sip.write_u64(lane);
        h.update(sip.finish().to_le_bytes());
    }
    let t = SystemTime::now().duration_since(UNIX_EPOCH);
    h.update(t.map_or(0, |d| d.as_nanos()).to_le_bytes());
    h.update(draw.to_le_bytes());
    Entropy(h.finalize().into())
}

/// Session keys end in 43 characters of hash: show the first 10.
fn short_key(key: &str) -> String {
    match key.strip_prefix("sess:") {
        Some(member) if member.len() == 43 => format!("sess:{}…", member.get(..10).unwrap_or("")),
        _ => key.to_owned(),
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn step(title: &str) {
    println!("\n── {title}");
}

fn main() -> Res<()> {
    // sid_hash is keyed: a host picks a random log key at start-up.
    let log_key = entropy(0).0.iter().map(|b| format!("{b:02x}")).collect();
    let config = Config {
        log_key: Some(log_key),
        ..Config::default()
    };
    let mut host = Host {
        engine: Engine::new(config)?,
        redis: Memory::new(),
        now: UnixMillis(1_700_000_000_000),
        redis_lag: 0,
        draws: 0,
        rounds: 0,
    };
    // Production Redis has our scripts loaded (a NOSCRIPT reply would cost one
    // resend as EVAL, which the engine does by itself).
    for script in Script::ALL {
        let load = ["SCRIPT", "LOAD", script.source()].map(Vec::from);
        host.redis.execute(&Command(load.to_vec()), host.now);
    }
    println!("session-logic walkthrough: Engine + in-memory Redis, default config");
    println!("(idle 30 min, absolute 24 h, touch every 60 s, rotation grace 5 s)");

    step("1. A visitor with no cookie reads a page: 0 rounds, nothing written");
    let s = host.load(None)?;
    host.save(s)?;
    host.request_done(0)?;
    host.keys();

    step("2. First write: the visitor puts an apple in the cart: 1 round");
    let mut s = host.load(None)?;
    s.insert("cart", json!(["apple"]))?;
    let guest = Host::browser(&host.save(s)?)?;
    host.request_done(1)?;
    host.keys();

    step("3. A read-only request: 1 round (the due touch rides in the same command)");
    host.advance(2 * MINUTE, "touch interval passed");
    let s = host.load(Some(&guest))?;
    host.save(s)?;
    host.request_done(1)?;

    step("4. A request that changes data: 2 rounds (load, save)");
    host.advance(30 * SECOND, "touch not due");
    let mut s = host.load(Some(&guest))?;
    s.insert("cart", json!(["apple", "pear"]))?;
    host.save(s)?;
    host.request_done(2)?;

    step("5. Sign-in on the laptop: set_user + regenerate, 1 round (+1 for the load)");
    let alice = UserId::new("alice")?;
    let mut s = host.load(Some(&guest))?;
    s.set_user(alice.clone(), host.now);
    let laptop = Host::browser(&host.regenerate("regenerate", s)?)?;
    host.request_done(2)?;
    host.keys();
    host.advance(SECOND, "a late request still carries the old cookie");
    host.load(Some(&guest))?;
    host.request_done(1)?;
    host.advance(5 * SECOND, "the grace period is over");
    host.load(Some(&guest))?;
    host.request_done(1)?;

    step("6. Alice signs in on a second device, her phone");
    let mut s = host.load(None)?;
    s.set_user(alice.clone(), host.now);
    let phone = Host::browser(&host.regenerate("regenerate (new session: a create)", s)?)?;
    host.request_done(1)?;
    host.keys();

    step("7. \"My devices\", asked from the laptop: 2 rounds (+1 for the load)");
    host.advance(MINUTE, "later");
    let current = host.load(Some(&laptop))?;
    let op = host
        .engine
        .list_user_sessions(&alice, Some(&current), host.now);
    host.run("list_user_sessions(alice)", op)?;
    host.request_done(3)?;

    step("8. Log out everywhere except this laptop: 2 rounds for any number (+1)");
    let current = host.load(Some(&laptop))?;
    let op = host
        .engine
        .destroy_all_for_user(&alice, Some(&current), host.now);
    host.run("destroy_all_for_user(alice, keep this one)", op)?;
    host.request_done(3)?;
    println!("  the phone's next request:");
    let s = host.load(Some(&phone))?;
    host.save(s)?;
    host.request_done(1)?;
    host.keys();

    step("9. Sign out (destroy) on the laptop: 1 round (+1), removal cookie");
    let s = host.load(Some(&laptop))?;
    let op = host.engine.destroy(s, host.now);
    host.run("destroy", op)?;
    host.request_done(2)?;
    host.keys();

    step("10. An expired session after a clock jump");
    let mut s = host.load(None)?;
    s.insert("cart", json!(["plum"]))?;
    let late = Host::browser(&host.save(s)?)?;
    host.request_done(1)?;
    host.advance(31 * MINUTE, "the app server's clock jumps, Redis's not");
    host.redis_lag = 31 * MINUTE;
    let s = host.load(Some(&late))?;
    host.save(s)?;
    host.request_done(1)?;
    host.keys();
    host.redis_lag = 0;
    println!("  (Redis's clock catches up: its TTL fires)");
    host.keys();

    step("11. Malformed and planted cookies: parsed strictly, never adopted");
    host.load(Some("sid=../../admin; theme=dark"))?;
    host.request_done(0)?;
    let planted = format!("sid={}", "A".repeat(43));
    let mut s = host.load(Some(&planted))?;
    s.insert("cart", json!(["fig"]))?;
    host.save(s)?;
    host.request_done(2)?;
    host.keys();

    println!("\ndone: every request stayed within the manual's round-trip budget");
    Ok(())
}
