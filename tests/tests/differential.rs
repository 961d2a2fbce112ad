//! Differential test: the proof that the Lua scripts and the in-memory backend
//! are the same program. The same random sequences of operations (same config,
//! `now`, entropy and order) run against [`Memory`] and against a real
//! `redis-server`; the outcome of every step and, at the end of each case, the
//! keyspace (records, indexes, markers, TTLs) must agree.
//!
//! ## The clock
//!
//! The machine's `now` is an input; real Redis expires keys by its own wall
//! clock. Every case starts at wall-clock + 1 day, so every `PEXPIREAT`
//! instant lies in Redis's future and Redis never expires a key on its own
//! during a case. Each sequence then runs twice, under two clock models:
//!
//! * [`Clock::Virtual`] — Redis at the machine's clock. Before every round the
//!   harness deletes each key whose *own* expiry instant in Redis
//!   (`PEXPIRETIME`, i.e. what the scripts set, not what the in-memory backend
//!   set) is at or before `now`. That is exactly what Redis's lazy expiry
//!   would do if its clock read `now`, so no normalisation at all is needed:
//!   outcomes, key sets, record contents and exact expiry instants must match.
//! * [`Clock::Wall`] — Redis keeps every record the in-memory backend has
//!   already expired by TTL (an app clock ahead of the Redis clock). This is
//!   what proves the scripts' own liveness checks: a logically expired record
//!   that is still present must behave like an absent one (no data, no
//!   resurrection). See [`wall_clock_equivalent`] for the differences this
//!   model forces, each of which is only an artefact of Redis not having
//!   reaped a key yet.
//!
//! Knobs: `DIFF_CASES` (number of seeds, default 1500), `DIFF_SEEDS_FROM`
//! (first seed, default 0), `DIFF_SEED` (run one seed only), `DIFF_OPS` (max
//! ops per sequence, default 30). A mismatch is shrunk to a minimal sequence
//! and printed with both outcomes, both transcripts and the Redis log path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use session_logic::config::IdFormat;
use session_logic::memory::{Memory, Value as MemValue};
use session_logic::scripts::Script;
use session_logic::step::{Command, Reply, Round, Step};
use session_logic::{Config, Engine, Entropy, Error, Op, Outcome, Session, UnixMillis, UserId};
use session_tests::{RedisCluster, RedisServer, execute_round, execute_round_cluster};

// ---------------------------------------------------------------------------
// Deterministic randomness

/// SplitMix64: tiny, seedable, and good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_5E55_1011_D1FF)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Deployments

const MIN: u64 = 60_000;

/// Short timings so sequences cross touch intervals, idle timeouts, grace
/// periods and absolute deadlines within a few steps.
fn short() -> Json {
    json!({
        "idle_timeout_ms": MIN,
        "absolute_lifetime_ms": 5 * MIN / 2,
        "touch_interval_ms": 10_000,
        "rotation_grace_ms": 5_000,
    })
}

fn with(mut base: Json, extra: Json) -> Json {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// Timings where most of a session's life lies within one idle timeout of
/// its absolute deadline, so writes often meet the `min(now + idle,
/// deadline)` TTL branch.
fn tight() -> Json {
    json!({
        "idle_timeout_ms": 20_000,
        "absolute_lifetime_ms": 30_000,
        "touch_interval_ms": 5_000,
        "rotation_grace_ms": 3_000,
    })
}

/// Every config a sequence may run under: (name, config JSON).
fn variants() -> Vec<(&'static str, Json)> {
    vec![
        ("short", short()),
        ("tight", tight()),
        (
            "tight_rotate_cap2",
            with(
                tight(),
                json!({"rotate_every_ms": 10_000, "max_sessions_per_user": 2}),
            ),
        ),
        ("cap2", with(short(), json!({"max_sessions_per_user": 2}))),
        ("cap1", with(short(), json!({"max_sessions_per_user": 1}))),
        ("rotate", with(short(), json!({"rotate_every_ms": 100_000}))),
        ("reject", with(short(), json!({"client_binding": "reject"}))),
        (
            "cap2_rotate",
            with(
                short(),
                json!({"max_sessions_per_user": 2, "rotate_every_ms": 90_000}),
            ),
        ),
        (
            "vapor_report",
            with(
                short(),
                json!({
                    "prefix": "vrs-",
                    "key_scheme": "plain",
                    "id_format": "base64_padded",
                    "client_binding": "report",
                    "cookie": {"name": "vapor-session", "persistent": false},
                }),
            ),
        ),
        (
            "small_limits",
            with(
                short(),
                json!({"max_fields": 3, "max_field_bytes": 48, "max_record_bytes": 300}),
            ),
        ),
        ("defaults", json!({})),
        (
            "cap2_plain_report",
            with(
                short(),
                json!({
                    "max_sessions_per_user": 2,
                    "key_scheme": "plain",
                    "client_binding": "report",
                    "rotate_every_ms": 40_000,
                }),
            ),
        ),
    ]
}

const USERS: [&str; 3] = ["alice", "bob", "{c}*?[x]"];
const CLIENTS: [&str; 2] = ["UA/1", "UA/2"];
const DATA_KEYS: [&str; 4] = ["cart", "n", "prefs", "ü"];
const SLOTS: usize = 4;

// ---------------------------------------------------------------------------
// Operations

/// 32 bytes of entropy; printed by a short tag only.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Bytes32([u8; 32]);

impl fmt::Debug for Bytes32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}", self.0[0], self.0[1])
    }
}

/// The entropy of a save or regenerate.
#[derive(Clone, Copy, Debug)]
enum Ent {
    Fresh(Bytes32),
    /// Entropy an earlier action also drew: mints an ID that may exist.
    Reused(Bytes32),
}

impl Ent {
    fn entropy(self) -> Entropy {
        match self {
            Ent::Fresh(b) | Ent::Reused(b) => Entropy(b.0),
        }
    }
}

/// Which `Cookie` header a load presents.
#[derive(Clone, Debug)]
enum CookiePick {
    /// No header.
    Absent,
    /// The cookie issued `back` cookies before the latest (mod count; no
    /// header if none), decorated: 0 plain, 1 after another cookie, 2 after a
    /// bogus value of the same name, 3 followed by the cookie issued before it.
    Issued { back: usize, decorate: u8 },
    /// A well-formed ID nobody issued (strict mode: never adopted).
    Planted(Bytes32),
    /// A cookie that is not a well-formed ID (no Redis call).
    Malformed(u8),
}

/// Which handle a per-device sign-out names.
#[derive(Clone, Debug)]
enum HandlePick {
    /// From the last device list of that user (mod count; unknown if none).
    Listed(usize),
    /// Well-formed but names no device.
    Unknown,
    /// Not a handle at all.
    Bad,
}

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, Json),
    Remove(usize),
    Clear,
}

/// One step of a sequence. Sessions are held in slots, as concurrent
/// requests (or one browser over time) would hold them.
#[derive(Clone, Debug)]
enum Action {
    Advance(u64),
    Load {
        slot: usize,
        cookie: CookiePick,
        client: Option<usize>,
    },
    /// Pure: change data in the held session (a new one if the slot is empty).
    Edit {
        slot: usize,
        edits: Vec<Edit>,
    },
    /// Pure: bind a user (sign-in).
    SetUser {
        slot: usize,
        user: usize,
    },
    /// Pure: unbind the user.
    ClearUser {
        slot: usize,
    },
    Save {
        slot: usize,
        entropy: Ent,
    },
    Regenerate {
        slot: usize,
        entropy: Ent,
    },
    Destroy {
        slot: usize,
    },
    Touch {
        slot: usize,
    },
    DestroyAll {
        user: usize,
        keep: Option<usize>,
    },
    List {
        user: usize,
        current: Option<usize>,
    },
    DestroyOne {
        user: usize,
        handle: HandlePick,
    },
    ScriptFlush,
}

fn random_value(rng: &mut Rng) -> Json {
    match rng.below(9) {
        0 => json!(rng.below(1000)),
        1 => json!(-(rng.below(1_000_000) as i64)),
        2 => json!(["apple", rng.below(10), null, true]),
        3 => json!({"b": rng.below(5), "a": [1.5, "x\"y"], "z": {}}),
        4 => json!("é😀 \\ \"quoted\""),
        5 => json!(0.1 + rng.below(100) as f64),
        6 => json!(null),
        // Over `small_limits`' max_field_bytes, well under the defaults.
        7 => json!("x".repeat(20 + rng.index(60))),
        _ => json!(format!("v{}", rng.below(100))),
    }
}

fn random_step(rng: &mut Rng, config: &Config) -> u64 {
    let idle = config.idle_timeout_ms;
    let touch = config.touch_interval_ms;
    let grace = config.rotation_grace_ms;
    let life = config.absolute_lifetime_ms;
    match rng.below(12) {
        0 => 1 + rng.below(1000),
        1 => 1 + rng.below(touch),
        2 => touch,
        3 => touch.saturating_sub(1),
        4 => idle / 2 + rng.below(idle / 2),
        5 => idle,
        6 => idle + 1,
        7 => (grace + rng.below(3)).saturating_sub(1),
        8 => life,
        9 => config.rotate_every_ms.unwrap_or(life / 3),
        10 => rng.below(life),
        _ => 1 + rng.below(5000),
    }
}

/// The time between two requests of a busy site.
fn random_gap(rng: &mut Rng, config: &Config) -> u64 {
    match rng.below(6) {
        0 | 1 => 1 + rng.below(1000),
        2 => 1 + rng.below(config.touch_interval_ms),
        3 => config.touch_interval_ms,
        4 => 1 + rng.below(config.idle_timeout_ms / 2),
        _ => config.rotation_grace_ms,
    }
}

/// Builds sequences out of request-shaped chunks (read, read-modify-write,
/// sign-in, device management, ...), so most steps reach Redis with a
/// session that exists; shrinking later works on single actions.
struct Generator<'r> {
    rng: &'r mut Rng,
    used: Vec<Bytes32>,
}

impl Generator<'_> {
    fn slot(&mut self) -> usize {
        self.rng.index(SLOTS)
    }

    fn entropy(&mut self) -> Ent {
        // Reusing entropy mints the same ID again: the collision-retry path.
        if !self.used.is_empty() && self.rng.chance(10) {
            return Ent::Reused(self.used[self.rng.index(self.used.len())]);
        }
        let e = Bytes32(self.rng.bytes32());
        self.used.push(e);
        Ent::Fresh(e)
    }

    fn client(&mut self) -> Option<usize> {
        self.rng.chance(85).then(|| self.rng.index(CLIENTS.len()))
    }

    fn issued(&mut self) -> CookiePick {
        CookiePick::Issued {
            back: if self.rng.chance(60) {
                0
            } else {
                self.rng.index(6)
            },
            decorate: if self.rng.chance(75) {
                0
            } else {
                self.rng.below(4) as u8
            },
        }
    }

    fn load(&mut self, slot: usize, cookie: CookiePick) -> Action {
        Action::Load {
            slot,
            cookie,
            client: self.client(),
        }
    }

    fn edit(&mut self, slot: usize) -> Action {
        let n = 1 + self.rng.below(3);
        let edits = (0..n)
            .map(|_| match self.rng.below(10) {
                0..=6 => Edit::Insert(self.rng.index(DATA_KEYS.len()), random_value(self.rng)),
                7..=8 => Edit::Remove(self.rng.index(DATA_KEYS.len())),
                _ => Edit::Clear,
            })
            .collect();
        Action::Edit { slot, edits }
    }

    fn save(&mut self, slot: usize) -> Action {
        Action::Save {
            slot,
            entropy: self.entropy(),
        }
    }

    /// Mostly the first user, so per-user caps and lists have sessions to act on.
    fn user(&mut self) -> usize {
        if self.rng.chance(60) {
            0
        } else {
            self.rng.index(USERS.len())
        }
    }

    fn maybe_slot(&mut self) -> Option<usize> {
        self.rng.chance(60).then(|| self.rng.index(SLOTS))
    }

    fn chunk(&mut self, config: &Config) -> Vec<Action> {
        let slot = self.slot();
        match self.rng.below(100) {
            0..=11 => vec![Action::Advance(random_step(self.rng, config))],
            // A request that only reads.
            12..=25 => {
                let cookie = self.issued();
                vec![self.load(slot, cookie)]
            }
            // A request that changes data.
            26..=41 => {
                let cookie = self.issued();
                vec![self.load(slot, cookie), self.edit(slot), self.save(slot)]
            }
            // A first write without a cookie, sometimes signed in (a new device).
            42..=47 => {
                let mut chunk = vec![self.load(slot, CookiePick::Absent), self.edit(slot)];
                if self.rng.chance(70) {
                    chunk.push(Action::SetUser {
                        slot,
                        user: self.user(),
                    });
                }
                chunk.push(self.save(slot));
                chunk
            }
            // A planted or malformed cookie, then a write (must not adopt it).
            48..=51 => {
                let cookie = if self.rng.chance(50) {
                    CookiePick::Planted(Bytes32(self.rng.bytes32()))
                } else {
                    CookiePick::Malformed(self.rng.below(6) as u8)
                };
                vec![self.load(slot, cookie), self.edit(slot), self.save(slot)]
            }
            // Sign-in: bind a user, then regenerate (or just save). Often
            // the first, oldest session: indexed with the earliest deadline,
            // it must never be what the per-user cap evicts.
            52..=59 => {
                let user = self.user();
                let slot = if self.rng.chance(50) { 0 } else { slot };
                let second = if self.rng.chance(50) {
                    Action::Regenerate {
                        slot,
                        entropy: self.entropy(),
                    }
                } else {
                    self.save(slot)
                };
                vec![Action::SetUser { slot, user }, second]
            }
            60..=61 => vec![Action::ClearUser { slot }, self.save(slot)],
            62..=66 => vec![Action::Regenerate {
                slot,
                entropy: self.entropy(),
            }],
            67..=70 => vec![Action::Destroy { slot }],
            71..=73 => vec![Action::Touch { slot }],
            // A held (possibly stale) session written again.
            74..=78 => vec![self.edit(slot), self.save(slot)],
            79..=82 => vec![Action::DestroyAll {
                user: self.user(),
                keep: self.maybe_slot(),
            }],
            83..=87 => vec![Action::List {
                user: self.user(),
                current: self.maybe_slot(),
            }],
            88..=93 => {
                let user = self.user();
                let handle = match self.rng.below(8) {
                    0 => HandlePick::Unknown,
                    1 => HandlePick::Bad,
                    _ => HandlePick::Listed(self.rng.index(4)),
                };
                vec![
                    Action::List {
                        user,
                        current: None,
                    },
                    Action::DestroyOne { user, handle },
                ]
            }
            94..=96 => vec![Action::ScriptFlush],
            _ => {
                let edit = self.edit(slot);
                vec![edit]
            }
        }
    }
}

fn random_sequence(rng: &mut Rng, config: &Config, max_ops: usize) -> Vec<Action> {
    let target = 1 + rng.index(max_ops);
    let mut g = Generator {
        rng,
        used: Vec::new(),
    };
    let mut out = Vec::new();
    if g.rng.chance(80) {
        out.extend([g.edit(0), g.save(0)]);
    }
    while out.len() < target {
        // Requests are spread out in time, mostly closer together than the
        // idle timeout, so sessions live long enough to meet their deadline.
        if g.rng.chance(45) {
            let gap = random_gap(g.rng, config);
            out.push(Action::Advance(gap));
        }
        let chunk = g.chunk(config);
        out.extend(chunk);
    }
    out.truncate(max_ops);
    out
}

// ---------------------------------------------------------------------------
// Backends and the host loop

/// Which clock model the Redis side runs under (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    Virtual,
    Wall,
}

trait Backend {
    fn round(&mut self, round: &Round, now: UnixMillis) -> Vec<Reply>;
    fn flush_scripts(&mut self);
}

struct MemoryBackend(Memory);

impl Backend for MemoryBackend {
    fn round(&mut self, round: &Round, now: UnixMillis) -> Vec<Reply> {
        self.0.execute_round(round, now)
    }
    fn flush_scripts(&mut self) {
        self.0.flush_scripts();
    }
}

/// Deletes every key whose own expiry instant is at or before ARGV[1]: Redis's
/// lazy expiry as it would act if its clock read the machine's `now`. It reads
/// the instants Redis holds (what our scripts set), never the memory side's.
const REAP: &str = "local n = 0 \
    for _, k in ipairs(redis.call('KEYS', '*')) do \
      local at = redis.call('PEXPIRETIME', k) \
      if at >= 0 and at <= tonumber(ARGV[1]) then redis.call('DEL', k) n = n + 1 end \
    end return n";

struct RedisBackend<'c> {
    conn: &'c mut redis::Connection,
    clock: Clock,
    /// A deliberately broken copy of one script, run on the Redis side only.
    mutant: Option<&'c Mutant>,
}

/// A deliberately broken copy of one of our scripts: `find` replaced by
/// `replace` in its source. Redis runs the copy (as `EVAL`) wherever the
/// machine sends that script, the in-memory backend keeps the real one, and
/// the differential test must notice.
struct Mutant {
    name: &'static str,
    script: Script,
    find: &'static str,
    replace: &'static str,
}

impl Mutant {
    fn source(&self) -> String {
        let real = self.script.source();
        assert!(
            real.contains(self.find),
            "mutant {}: {}.lua no longer contains {:?}; update the mutant",
            self.name,
            self.script.name(),
            self.find
        );
        real.replacen(self.find, self.replace, 1)
    }

    /// `round` with every call of the mutated script replaced by `EVAL` of the copy.
    fn rewrite(&self, round: &Round) -> Round {
        let source = self.source().into_bytes();
        Round(
            round
                .commands()
                .iter()
                .map(|cmd| {
                    let script = match cmd.0.get(1) {
                        Some(body) if cmd.name() == b"EVALSHA" => Script::from_sha1(body),
                        Some(body) if cmd.name() == b"EVAL" => Script::from_source(body),
                        _ => None,
                    };
                    if script != Some(self.script) {
                        return cmd.clone();
                    }
                    let mut argv = cmd.0.clone();
                    argv[0] = b"EVAL".to_vec();
                    argv[1] = source.clone();
                    Command(argv)
                })
                .collect(),
        )
    }
}

impl RedisBackend<'_> {
    fn reap(&mut self, now: UnixMillis) {
        if self.clock == Clock::Virtual {
            let _: i64 = redis::cmd("EVAL")
                .arg(REAP)
                .arg(0)
                .arg(now.0)
                .query(self.conn)
                .unwrap_or_else(|e| panic!("reaping expired keys failed: {e}"));
        }
    }
}

impl Backend for RedisBackend<'_> {
    fn round(&mut self, round: &Round, now: UnixMillis) -> Vec<Reply> {
        self.reap(now);
        let mutated = self.mutant.map(|m| m.rewrite(round));
        execute_round(self.conn, mutated.as_ref().unwrap_or(round))
            .unwrap_or_else(|e| panic!("transport failure: {e}"))
    }
    fn flush_scripts(&mut self) {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(self.conn)
            .unwrap_or_else(|e| panic!("SCRIPT FLUSH failed: {e}"));
    }
}

/// One round as sent and answered, for mismatch reports.
type Transcript = Vec<(Round, Vec<Reply>)>;

/// The host loop of the crate docs, bounded so a machine that never finishes
/// fails the test instead of hanging it.
fn drive(
    mut op: Op,
    backend: &mut dyn Backend,
    now: UnixMillis,
) -> (Result<Outcome, Error>, Transcript) {
    let mut transcript = Vec::new();
    for _ in 0..16 {
        match op.poll() {
            Step::Round(round) => {
                let replies = backend.round(&round, now);
                transcript.push((round, replies.clone()));
                op.handle_replies(replies);
            }
            Step::Done(result) => return (result, transcript),
        }
    }
    panic!("operation did not finish within 16 rounds: {transcript:?}");
}

// ---------------------------------------------------------------------------
// One side of the comparison

/// What one backend's host holds between requests.
struct Side {
    slots: Vec<Option<Session>>,
    /// `name=value` of every Set-Cookie issued, in order.
    jar: Vec<String>,
    /// Device handles from the last list, by user.
    handles: BTreeMap<usize, Vec<String>>,
}

impl Side {
    fn new() -> Side {
        Side {
            slots: vec![None; SLOTS],
            jar: Vec::new(),
            handles: BTreeMap::new(),
        }
    }

    fn issued(&self, back: usize) -> Option<&str> {
        let n = self.jar.len();
        (n > 0).then(|| self.jar[n - 1 - back % n].as_str())
    }
}

/// The result of one action on one side.
// Short-lived, one per action: boxing the outcome would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Performed {
    /// Nothing was sent (a pure edit, a clock step, an empty slot).
    Local,
    Ran {
        result: Result<Outcome, Error>,
        transcript: Transcript,
    },
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Canonical base64 of 32 bytes (the first 16 for the 128-bit format) in
/// the deployment's ID format.
fn encode_id(bytes: &[u8; 32], format: IdFormat) -> String {
    let (alphabet, bytes) = match format {
        IdFormat::Base64url => (B64URL, &bytes[..]),
        IdFormat::Base64Padded => (B64STD, &bytes[..]),
        IdFormat::Base64url128 => (B64URL, &bytes[..16]),
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    if format == IdFormat::Base64Padded {
        out.push('=');
    }
    out
}

fn cookie_header(engine: &Engine, side: &Side, pick: &CookiePick) -> Option<String> {
    let name = &engine.config().cookie.name;
    match pick {
        CookiePick::Absent => None,
        CookiePick::Planted(b) => Some(format!(
            "{name}={}",
            encode_id(&b.0, engine.config().id_format)
        )),
        CookiePick::Malformed(kind) => Some(match kind {
            0 => format!("{name}=short"),
            1 => format!("{name}={}", "+".repeat(43)),
            2 => format!("{name}={}", "a".repeat(9000)),
            3 => "other=1; theme=dark".to_owned(),
            4 => format!("{name}="),
            _ => format!("{name}={}x", "A".repeat(43)),
        }),
        CookiePick::Issued { back, decorate } => {
            let c = side.issued(*back)?;
            Some(match decorate {
                0 => c.to_owned(),
                1 => format!("theme=dark; {c}"),
                2 => format!("{name}=bogus; {c}"),
                _ => format!("{c}; {}", side.issued(back + 1).unwrap_or(c)),
            })
        }
    }
}

/// Run one action on one side, updating what its host holds.
fn perform(
    engine: &Engine,
    action: &Action,
    side: &mut Side,
    backend: &mut dyn Backend,
    now: &mut UnixMillis,
) -> Performed {
    let t = *now;
    let op = match action {
        Action::Advance(ms) => {
            *now = now.plus(*ms);
            return Performed::Local;
        }
        Action::ScriptFlush => {
            backend.flush_scripts();
            return Performed::Local;
        }
        Action::Edit { slot, edits } => {
            let s = side.slots[*slot].get_or_insert_with(|| engine.new_session());
            for e in edits {
                match e {
                    // The sizes of `small_limits` are enforced by save, not insert.
                    Edit::Insert(k, v) => {
                        s.insert(DATA_KEYS[*k], v.clone()).unwrap();
                    }
                    Edit::Remove(k) => {
                        s.remove(DATA_KEYS[*k]);
                    }
                    Edit::Clear => s.clear(),
                }
            }
            return Performed::Local;
        }
        Action::SetUser { slot, user } => {
            let s = side.slots[*slot].get_or_insert_with(|| engine.new_session());
            s.set_user(UserId::new(USERS[*user]).unwrap(), t);
            return Performed::Local;
        }
        Action::ClearUser { slot } => {
            if let Some(s) = side.slots[*slot].as_mut() {
                s.clear_user();
            }
            return Performed::Local;
        }
        Action::Load { cookie, client, .. } => {
            let header = cookie_header(engine, side, cookie);
            engine.load(header.as_deref(), client.map(|c| CLIENTS[c]), t)
        }
        Action::Save { slot, entropy } | Action::Regenerate { slot, entropy } => {
            let Some(s) = side.slots[*slot].clone() else {
                return Performed::Local;
            };
            if matches!(action, Action::Save { .. }) {
                engine.save(s, entropy.entropy(), t)
            } else {
                engine.regenerate(s, entropy.entropy(), t)
            }
        }
        Action::Destroy { slot } | Action::Touch { slot } => {
            let Some(s) = side.slots[*slot].clone() else {
                return Performed::Local;
            };
            if matches!(action, Action::Destroy { .. }) {
                engine.destroy(s, t)
            } else {
                engine.touch(s, t)
            }
        }
        Action::DestroyAll { user, keep } => {
            let keep = keep.and_then(|k| side.slots[k].as_ref());
            engine.destroy_all_for_user(&UserId::new(USERS[*user]).unwrap(), keep, t)
        }
        Action::List { user, current } => {
            let current = current.and_then(|k| side.slots[k].as_ref());
            engine.list_user_sessions(&UserId::new(USERS[*user]).unwrap(), current, t)
        }
        Action::DestroyOne { user, handle } => {
            let listed = side.handles.get(user).filter(|h| !h.is_empty());
            let handle = match (handle, listed) {
                (HandlePick::Listed(i), Some(h)) => h[i % h.len()].clone(),
                (HandlePick::Bad, _) => "x".to_owned(),
                _ => "A".repeat(22),
            };
            engine.destroy_user_session(&UserId::new(USERS[*user]).unwrap(), &handle, t)
        }
    };
    let (result, transcript) = drive(op, backend, t);
    if let Ok(outcome) = &result {
        if let Some(c) = outcome.cookie() {
            let pair = c.split(';').next().unwrap_or_default();
            if pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()) {
                side.jar.push(pair.to_owned());
            }
        }
        match (action, outcome) {
            (Action::List { user, .. }, Outcome::Devices(devices)) => {
                side.handles
                    .insert(*user, devices.iter().map(|d| d.handle.clone()).collect());
            }
            (Action::Load { slot, .. }, o) => {
                if let Some(s) = o.session() {
                    side.slots[*slot] = Some(s.clone());
                }
            }
            // Only a write that landed changes what the slot holds; after
            // `Rotated` or `Gone` the request ends and the stale session
            // stays, so later writes with it must keep failing.
            (
                Action::Save { slot, .. }
                | Action::Regenerate { slot, .. }
                | Action::Touch { slot },
                Outcome::Saved { session, .. },
            ) => {
                side.slots[*slot] = Some(session.clone());
            }
            // A destroyed session stays in its slot: later saves must find it
            // gone and must not resurrect it.
            _ => {}
        }
    }
    Performed::Ran { result, transcript }
}

// ---------------------------------------------------------------------------
// Comparison

/// The comparable form of an operation's result: the outcome's JSON, or for
/// an error its stable code (messages may name Redis-side details).
fn result_json(result: &Result<Outcome, Error>) -> Json {
    match result {
        Ok(o) => json!({ "ok": serde_json::to_value(o).unwrap() }),
        Err(e) => json!({ "err": e.code() }),
    }
}

/// Under [`Clock::Wall`], Redis still holds records that the in-memory backend
/// has already dropped because their TTL passed (as a Redis whose clock lags
/// the application's would). That alone makes the two answer differently, and
/// only in these ways, which are therefore treated as equal:
///
/// 1. load: memory finds no key and says `None{reason: unknown}`; Redis finds
///    the logically expired record and the machine says `Expired`. Both carry
///    the same fresh session (stale cookie, same binding), so the request
///    goes on identically; a Redis whose clock read `now` would have given
///    memory's answer.
/// 2. destroy / logout everywhere / per-device sign-out: `DEL` of a logically
///    expired record counts 1 in Redis and 0 in memory, so Redis's `count` may
///    be higher; everything else (the cookie) must match.
///
/// 3. save / touch / regenerate of a session whose ID was regenerated longer
///    ago than the grace period: memory has reaped the rotated marker at its
///    grace instant (`save.lua`/`retire.lua` return 0: `Gone` with a removal
///    cookie); Redis still holds it, and the scripts return -1 for any marker
///    without comparing its grace instant to `now` (`Rotated`, or for
///    regenerate `Gone` without a cookie). Nothing is written either way.
///
/// Sequences under this clock never reuse entropy: minting an ID whose
/// logically expired record Redis still holds makes `create.lua` (which checks
/// `EXISTS`) see a collision and retry with a derived ID, while memory
/// creates it; both are correct, but the IDs then differ for the rest of the
/// case. The virtual clock covers entropy reuse exactly.
fn wall_clock_equivalent(mem: &Json, redis: &Json) -> bool {
    if mem["ok"]["none"]["reason"] == "unknown"
        && let Some(session) = redis["ok"].get("expired")
    {
        return *mem == json!({"ok": {"none": {"reason": "unknown", "session": session}}});
    }
    let removal = mem["ok"]["gone"]["cookie"]
        .as_str()
        .is_some_and(|c| c.contains("Max-Age=0"));
    if removal
        && (redis["ok"]["rotated"]["status"] == "rotated"
            || redis["ok"]["gone"] == json!({"cookie": null}))
    {
        return true;
    }
    if let (Some(m), Some(r)) = (mem["ok"].get("destroyed"), redis["ok"].get("destroyed")) {
        let (Some(mc), Some(rc)) = (m["count"].as_u64(), r["count"].as_u64()) else {
            return false;
        };
        return m["cookie"] == r["cookie"] && rc >= mc;
    }
    false
}

/// The same sequence with every reused entropy replaced by fresh bytes.
fn without_entropy_reuse(actions: &[Action]) -> Vec<Action> {
    let fresh = |e: &Ent, i: usize| match *e {
        Ent::Reused(mut b) => {
            b.0[31] ^= 0xA5;
            b.0[30] ^= i as u8;
            Ent::Fresh(b)
        }
        fresh => fresh,
    };
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Action::Save { slot, entropy } => Action::Save {
                slot: *slot,
                entropy: fresh(entropy, i),
            },
            Action::Regenerate { slot, entropy } => Action::Regenerate {
                slot: *slot,
                entropy: fresh(entropy, i),
            },
            other => other.clone(),
        })
        .collect()
}

/// One key's contents, comparable across backends.
#[derive(Clone, Debug, PartialEq)]
enum Content {
    Str(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// (member, score), sorted by member.
    ZSet(Vec<(Vec<u8>, f64)>),
}

type Keyspace = BTreeMap<Vec<u8>, (Content, Option<u64>)>;

fn memory_keyspace(mem: &Memory, now: UnixMillis) -> Keyspace {
    mem.snapshot(now)
        .into_iter()
        .map(|(k, (v, at))| {
            let content = match v {
                MemValue::Str(s) => Content::Str(s),
                MemValue::Hash(h) => Content::Hash(h),
                MemValue::ZSet(z) => {
                    let mut z: Vec<(Vec<u8>, f64)> = z.into_iter().map(|(s, m)| (m, s)).collect();
                    z.sort_by(|a, b| a.0.cmp(&b.0));
                    Content::ZSet(z)
                }
            };
            (k, (content, at.map(|a| a.0)))
        })
        .collect()
}

fn redis_keyspace(conn: &mut redis::Connection) -> Keyspace {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    let mut out = Keyspace::new();
    for key in keys {
        let ty: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let content = match ty.as_str() {
            "hash" => {
                let flat: Vec<Vec<u8>> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
                Content::Hash(
                    flat.chunks(2)
                        .map(|p| (p[0].clone(), p[1].clone()))
                        .collect(),
                )
            }
            "zset" => {
                let flat: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(conn)
                    .unwrap();
                let mut z: Vec<(Vec<u8>, f64)> = flat
                    .chunks(2)
                    .map(|p| {
                        (
                            p[0].clone(),
                            String::from_utf8_lossy(&p[1]).parse().unwrap(),
                        )
                    })
                    .collect();
                z.sort_by(|a, b| a.0.cmp(&b.0));
                Content::ZSet(z)
            }
            "string" => Content::Str(redis::cmd("GET").arg(&key).query(conn).unwrap()),
            other => panic!(
                "unexpected key type {other} at {}",
                String::from_utf8_lossy(&key)
            ),
        };
        let at: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(conn).unwrap();
        out.insert(key, (content, u64::try_from(at).ok()));
    }
    out
}

/// When a key stops mattering by its own content: a record at min(touch +
/// idle, deadline), a rotated marker at its grace instant, an index at its
/// latest score. `None` when the content says nothing (kept).
fn logical_expiry(content: &Content, idle: u64) -> Option<u64> {
    let num = |h: &BTreeMap<Vec<u8>, Vec<u8>>, f: &str| {
        h.get(f.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
    };
    match content {
        Content::Hash(h) => num(h, "$rotated").or_else(|| {
            Some(
                num(h, "$touch")?
                    .saturating_add(idle)
                    .min(num(h, "$deadline")?),
            )
        }),
        Content::ZSet(z) => z.iter().map(|(_, s)| *s as u64).max(),
        Content::Str(_) => None,
    }
}

fn show_key(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

/// Compare the final keyspaces. Virtual clock: everything, exact expiry
/// instants included. Wall clock: only keys still logically alive at `now`
/// (Redis keeps the others until its own clock gets there), with TTL presence.
fn compare_keyspaces(
    mem: &Keyspace,
    redis: &Keyspace,
    clock: Clock,
    now: u64,
    idle: u64,
) -> Result<(), String> {
    let alive = |ks: &Keyspace| -> Keyspace {
        ks.iter()
            .filter(|(_, (c, _))| {
                clock == Clock::Virtual || logical_expiry(c, idle).is_none_or(|at| at > now)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (m, r) = (alive(mem), alive(redis));
    let mut problems = Vec::new();
    for k in m
        .keys()
        .chain(r.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (m.get(k), r.get(k)) {
            (Some(a), None) => problems.push(format!("only in memory: {} = {a:?}", show_key(k))),
            (None, Some(b)) => problems.push(format!("only in redis: {} = {b:?}", show_key(k))),
            (Some((ca, ta)), Some((cb, tb))) => {
                if ca != cb {
                    problems.push(format!("{}: memory {ca:?} / redis {cb:?}", show_key(k)));
                }
                let ttl_ok = match clock {
                    Clock::Virtual => ta == tb,
                    Clock::Wall => ta.is_some() && tb.is_some(),
                };
                if !ttl_ok {
                    problems.push(format!(
                        "{}: expiry memory {ta:?} / redis {tb:?}",
                        show_key(k)
                    ));
                }
                if ta.is_none() {
                    problems.push(format!("{}: no TTL", show_key(k)));
                }
            }
            (None, None) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------
// Cases

struct Case {
    seed: u64,
    variant: &'static str,
    config: Config,
    actions: Vec<Action>,
}

/// Why a case failed.
struct Mismatch {
    step: Option<usize>,
    detail: String,
    /// Issued session IDs, blanked out of the report.
    ids: Vec<String>,
}

/// Coverage of what the sequences exercised, so a generator that stopped
/// reaching the interesting paths fails loudly.
#[derive(Default)]
struct Coverage {
    outcomes: BTreeMap<String, u64>,
    /// Script-level events: NOSCRIPT fallbacks, create collisions, cap
    /// evictions, retire results.
    events: BTreeMap<&'static str, u64>,
    ops: u64,
    rounds: u64,
}

impl Coverage {
    fn record(&mut self, result: &Result<Outcome, Error>, transcript: &Transcript) {
        let name = match result {
            Ok(Outcome::None { reason, .. }) => format!(
                "none:{}",
                serde_json::to_value(reason).unwrap().as_str().unwrap()
            ),
            Ok(Outcome::Saved {
                cookie: Some(_), ..
            }) => "saved+cookie".to_owned(),
            Ok(Outcome::Destroyed { count, .. }) if *count > 0 => "destroyed>0".to_owned(),
            Ok(Outcome::Devices(d)) if !d.is_empty() => "devices>0".to_owned(),
            Ok(o) => o.name().to_owned(),
            Err(e) => format!("error:{}", e.code()),
        };
        *self.outcomes.entry(name).or_default() += 1;
        self.ops += 1;
        self.rounds += transcript.len() as u64;
        for (round, replies) in transcript {
            for (cmd, reply) in round.commands().iter().zip(replies) {
                let script = match cmd.args().get(1) {
                    Some(body) if cmd.name() == b"EVALSHA" => Script::from_sha1(body),
                    Some(body) if cmd.name() == b"EVAL" => Script::from_source(body),
                    _ => None,
                };
                let event = match (script, reply) {
                    (_, Reply::Error(e)) if e.starts_with("NOSCRIPT") => "noscript",
                    (_, Reply::Error(_)) => "error reply",
                    (Some(Script::Create), Reply::Int(0)) => "create collision",
                    (Some(Script::Index), Reply::Array(a)) if !a.is_empty() => "cap eviction",
                    (Some(Script::Retire), Reply::Int(1)) => "retired",
                    (Some(Script::Retire), Reply::Array(_)) => "retired after a parallel save",
                    (Some(Script::Retire), Reply::Int(0)) => "retire: gone",
                    (Some(Script::Retire), Reply::Int(_)) => "retire: already rotated",
                    (Some(Script::Save), Reply::Int(0)) => "save: gone",
                    (Some(Script::Save), Reply::Int(-1)) => "save: rotated",
                    _ => continue,
                };
                *self.events.entry(event).or_default() += 1;
            }
        }
    }
}

/// Run `actions` on both backends from empty stores, comparing every step.
fn run_case(
    case: &Case,
    actions: &[Action],
    clock: Clock,
    conn: &mut redis::Connection,
    base: u64,
    coverage: Option<&mut Coverage>,
) -> Result<(), Mismatch> {
    run_case_with(case, actions, clock, conn, base, coverage, None)
}

/// [`run_case`] with Redis running `mutant` in place of the real script.
fn run_case_with(
    case: &Case,
    actions: &[Action],
    clock: Clock,
    conn: &mut redis::Connection,
    base: u64,
    mut coverage: Option<&mut Coverage>,
    mutant: Option<&Mutant>,
) -> Result<(), Mismatch> {
    let _: () = redis::cmd("FLUSHALL").query(conn).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(conn).unwrap();
    let engine = Engine::new(case.config.clone()).unwrap();
    let mut memory = MemoryBackend(Memory::new());
    let mut mem_side = Side::new();
    let mut redis_side = Side::new();
    let (mut mem_now, mut redis_now) = (UnixMillis(base), UnixMillis(base));
    for (i, action) in actions.iter().enumerate() {
        let a = perform(&engine, action, &mut mem_side, &mut memory, &mut mem_now);
        let b = {
            let mut redis = RedisBackend {
                conn,
                clock,
                mutant,
            };
            perform(&engine, action, &mut redis_side, &mut redis, &mut redis_now)
        };
        match (a, b) {
            (Performed::Local, Performed::Local) => {}
            (
                Performed::Ran {
                    result: ra,
                    transcript: ta,
                },
                Performed::Ran {
                    result: rb,
                    transcript: tb,
                },
            ) => {
                let (ja, jb) = (result_json(&ra), result_json(&rb));
                let equal = ja == jb || (clock == Clock::Wall && wall_clock_equivalent(&ja, &jb));
                if !equal {
                    return Err(Mismatch {
                        step: Some(i),
                        detail: format!(
                            "at now = base + {} ms, {action:?}\n  memory: {}\n  redis:  {}\n  memory rounds:\n{}  redis rounds:\n{}",
                            mem_now.0 - base,
                            render(&ra),
                            render(&rb),
                            show_transcript(&ta),
                            show_transcript(&tb),
                        ),
                        ids: issued_ids(&[&mem_side, &redis_side]),
                    });
                }
                if let Some(c) = coverage.as_deref_mut() {
                    c.record(&ra, &ta);
                }
            }
            _ => {
                return Err(Mismatch {
                    step: Some(i),
                    detail: format!("{action:?}: one side sent a round, the other did not"),
                    ids: issued_ids(&[&mem_side, &redis_side]),
                });
            }
        }
    }
    let mut redis = RedisBackend {
        conn,
        clock,
        mutant,
    };
    redis.reap(redis_now);
    let m = memory_keyspace(&memory.0, mem_now);
    let r = redis_keyspace(conn);
    compare_keyspaces(&m, &r, clock, mem_now.0, case.config.idle_timeout_ms).map_err(|detail| {
        Mismatch {
            step: None,
            detail: format!(
                "final keyspace differs at now = base + {} ms:\n{detail}",
                mem_now.0 - base
            ),
            ids: issued_ids(&[&mem_side, &redis_side]),
        }
    })
}

/// Every session ID the hosts were handed a cookie for.
fn issued_ids(sides: &[&Side]) -> Vec<String> {
    sides
        .iter()
        .flat_map(|s| &s.jar)
        .filter_map(|c| c.split_once('=').map(|(_, v)| v.to_owned()))
        .collect()
}

/// Rounds and replies, one command per line; script sources abbreviated.
fn show_transcript(t: &Transcript) -> String {
    let mut out = String::new();
    for (n, (round, replies)) in t.iter().enumerate() {
        for (cmd, reply) in round.commands().iter().zip(replies) {
            let args: Vec<String> = cmd
                .args()
                .iter()
                .map(|a| {
                    let a = String::from_utf8_lossy(a);
                    if a.len() > 80 {
                        format!("<{} bytes>", a.len())
                    } else {
                        format!("{a:?}")
                    }
                })
                .collect();
            out.push_str(&format!(
                "    round {n}: {} -> {}\n",
                args.join(" "),
                serde_json::to_string(reply).unwrap()
            ));
        }
    }
    out
}

fn render(result: &Result<Outcome, Error>) -> String {
    match result {
        Ok(o) => serde_json::to_string(o).unwrap(),
        Err(e) => format!("error {} ({e})", e.code()),
    }
}

/// Greedy delta debugging: drop chunks of actions while the case still fails.
fn shrink(case: &Case, clock: Clock, conn: &mut redis::Connection, base: u64) -> Vec<Action> {
    let mut actions = case.actions.clone();
    let mut chunk = actions.len().div_ceil(2).max(1);
    loop {
        let mut progressed = false;
        let mut start = 0;
        while start < actions.len() {
            let mut candidate = actions.clone();
            candidate.drain(start..(start + chunk).min(candidate.len()));
            if run_case(case, &candidate, clock, conn, base, None).is_err() {
                actions = candidate;
                progressed = true;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 && !progressed {
            return actions;
        }
        if !progressed {
            chunk = chunk.div_ceil(2);
        }
    }
}

/// Session IDs never reach test output: every token shaped like one (43
/// base64url characters, or 44 standard-base64 characters ending in `=`) is
/// printed as `<id>`. Hashed keys look the same and are hidden too.
fn redact(text: &str, ids: &[String]) -> String {
    let mut text = text.to_owned();
    for id in ids {
        text = text.replace(id.as_str(), "<id>");
    }

    fn flush(token: &mut String, out: &mut String) {
        let n = token.len();
        let is_id = n == 43 || (n == 44 && token.ends_with('='));
        out.push_str(if is_id { "<id>" } else { token.as_str() });
        token.clear();
    }
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/') {
            token.push(c);
        } else if c == '=' && !token.is_empty() {
            token.push(c);
            flush(&mut token, &mut out);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The case of `seed` under each clock model: the same config and actions
/// (without entropy reuse under the wall clock, see the module docs).
fn cases_of(seed: u64, variants: &[(&'static str, Json)], max_ops: usize) -> Vec<(Clock, Case)> {
    let (variant, json) = variants[(seed % variants.len() as u64) as usize].clone();
    let config: Config = serde_json::from_value(json).unwrap();
    let mut rng = Rng::new(seed);
    let actions = random_sequence(&mut rng, &config, max_ops);
    [Clock::Virtual, Clock::Wall]
        .into_iter()
        .map(|clock| {
            let case = Case {
                seed,
                variant,
                config: config.clone(),
                actions: match clock {
                    Clock::Virtual => actions.clone(),
                    Clock::Wall => without_entropy_reuse(&actions),
                },
            };
            (clock, case)
        })
        .collect()
}

#[test]
fn memory_backend_and_real_redis_agree_on_random_sequences() {
    let started = Instant::now();
    let server = RedisServer::start();
    let mut conn = server.client();
    let cases = env_u64("DIFF_CASES").unwrap_or(1500);
    let max_ops = env_u64("DIFF_OPS").unwrap_or(30) as usize;
    let seeds: Vec<u64> = match env_u64("DIFF_SEED") {
        Some(s) => vec![s],
        None => {
            let from = env_u64("DIFF_SEEDS_FROM").unwrap_or(0);
            (from..from + cases).collect()
        }
    };
    // Every PEXPIREAT instant is >= now >= base, a day after the wall clock:
    // Redis never expires a key by its own clock during the run.
    let base = wall_ms() + 24 * 60 * MIN;
    let variants = variants();
    let mut coverage = Coverage::default();
    let mut failures: Vec<String> = Vec::new();
    for &seed in &seeds {
        for (clock, case) in cases_of(seed, &variants, max_ops) {
            let Err(first) = run_case(
                &case,
                &case.actions,
                clock,
                &mut conn,
                base,
                Some(&mut coverage),
            ) else {
                continue;
            };
            let minimal = if failures.len() < 8 {
                shrink(&case, clock, &mut conn, base)
            } else {
                case.actions.clone()
            };
            let again = run_case(&case, &minimal, clock, &mut conn, base, None)
                .err()
                .unwrap_or(first);
            let steps: Vec<String> = minimal
                .iter()
                .enumerate()
                .map(|(i, a)| format!("    {i:2}: {a:?}"))
                .collect();
            failures.push(redact(
                &format!(
                    "seed {} ({}, {:?} clock), {} of {} actions kept, mismatch at step {:?}:\n{}\n  minimal sequence:\n{}",
                    case.seed,
                    case.variant,
                    clock,
                    minimal.len(),
                    case.actions.len(),
                    again.step,
                    again.detail,
                    steps.join("\n"),
                ),
                &again.ids,
            ));
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "differential: {} sequences x 2 clocks, {} operations, {} rounds in {elapsed:.1?}\noutcomes: {:?}\nscript events: {:?}",
        seeds.len(),
        coverage.ops,
        coverage.rounds,
        coverage.outcomes,
        coverage.events,
    );
    if !failures.is_empty() {
        let shown = failures.len().min(10);
        panic!(
            "{} mismatches between the in-memory backend and redis-server (log: {}), base now = {base}; \
             rerun one with DIFF_SEED=<seed>; the first {shown}:\n\n{}",
            failures.len(),
            server.log_path().display(),
            failures[..shown].join("\n\n")
        );
    }
    if seeds.len() >= 200 {
        for must in [
            "loaded",
            "none:no_cookie",
            "none:malformed",
            "none:unknown",
            "none:binding_mismatch",
            "rotated",
            "saved+cookie",
            "saved",
            "gone",
            "destroyed>0",
            "devices>0",
            "error:too_large",
        ] {
            assert!(
                coverage.outcomes.contains_key(must),
                "no sequence reached outcome {must}: {:?}",
                coverage.outcomes
            );
        }
        for must in [
            "noscript",
            "create collision",
            "cap eviction",
            "retired",
            "retire: gone",
            "retire: already rotated",
            "save: gone",
            "save: rotated",
        ] {
            assert!(
                coverage.events.contains_key(must),
                "no sequence reached script event {must}: {:?}",
                coverage.events
            );
        }
    }
}

/// Copies of the scripts, each missing one thing a rule depends on. The
/// slimmed scripts (one HMGET, one HSET, a marker written in place, an index
/// expiry that only extends) are only as safe as this test is sharp: each
/// copy must be caught within a bounded number of random sequences.
const MUTANTS: &[Mutant] = &[
    Mutant {
        name: "save without its liveness check (resurrection)",
        script: Script::Save,
        find: "if not t or not d or now >= math.min(t + tonumber(ARGV[2]), d) then return 0 end",
        replace: "if not t or not d then return 0 end",
    },
    Mutant {
        name: "save that writes a session that is gone",
        script: Script::Save,
        find: "if not f[1] or not f[2] then return 0 end",
        replace: "if not f[1] or not f[2] then f[1] = ARGV[1] f[2] = ARGV[3] end",
    },
    Mutant {
        name: "save that does not bump the revision",
        script: Script::Save,
        find: "local rev = (tonumber(f[4]) or 0) + 1",
        replace: "local rev = tonumber(f[4]) or 0",
    },
    Mutant {
        name: "save that never touches",
        script: Script::Save,
        find: "if now > t and",
        replace: "if false and",
    },
    Mutant {
        name: "save that touches on every write",
        script: Script::Save,
        find: "now - t >= tonumber(ARGV[4])",
        replace: "true",
    },
    Mutant {
        name: "retire that does not mark the old record",
        script: Script::Retire,
        find: "redis.call('HSET', KEYS[1], '$rotated', ARGV[3])",
        replace: "redis.call('HSET', KEYS[1], '$retired', ARGV[3])",
    },
    Mutant {
        name: "retire that ignores a parallel save",
        script: Script::Retire,
        find: "f[4] ~= ARGV[4]",
        replace: "false",
    },
    Mutant {
        name: "retire that keeps the old record's expiry",
        script: Script::Retire,
        find: "redis.call('PEXPIREAT', KEYS[1], ARGV[3])",
        replace: "",
    },
    Mutant {
        name: "index without a TTL on a new key",
        script: Script::Index,
        find: "redis.call('PEXPIREAT', KEYS[1], ARGV[3], 'NX')",
        replace: "",
    },
    Mutant {
        name: "index that never prunes",
        script: Script::Index,
        find: "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])",
        replace: "",
    },
    Mutant {
        name: "revoke that deletes rotated markers",
        script: Script::Revoke,
        find: "f[1] == ARGV[1] and not f[2]",
        replace: "f[1] == ARGV[1]",
    },
    Mutant {
        name: "load that touches a rotated marker",
        script: Script::Load,
        find: "if rotated or not touch",
        replace: "if not touch",
    },
];

#[test]
fn deliberately_broken_scripts_are_caught() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let base = wall_ms() + 24 * 60 * MIN;
    let variants = variants();
    let limit = env_u64("DIFF_MUTANT_SEEDS").unwrap_or(600);
    let mut missed = Vec::new();
    for mutant in MUTANTS {
        let caught = (0..limit).find(|&seed| {
            cases_of(seed, &variants, 30)
                .into_iter()
                .any(|(clock, case)| {
                    run_case_with(
                        &case,
                        &case.actions,
                        clock,
                        &mut conn,
                        base,
                        None,
                        Some(mutant),
                    )
                    .is_err()
                })
        });
        match caught {
            Some(seed) => eprintln!("mutant caught by seed {seed}: {}", mutant.name),
            None => missed.push(mutant.name),
        }
    }
    assert!(
        missed.is_empty(),
        "the differential test did not notice these broken scripts within {limit} seeds: {missed:?}"
    );
}

// ---------------------------------------------------------------------------
// Cluster

/// Runs `op` on the cluster and fails on any error outcome or CROSSSLOT reply.
fn cluster_run(conn: &mut redis::cluster::ClusterConnection, op: Op, what: &str) -> Outcome {
    let mut op = op;
    for _ in 0..16 {
        match op.poll() {
            Step::Round(round) => {
                let replies =
                    execute_round_cluster(conn, &round).unwrap_or_else(|e| panic!("{what}: {e}"));
                for r in &replies {
                    if let Reply::Error(e) = r {
                        assert!(!e.contains("CROSSSLOT"), "{what}: {e}");
                    }
                }
                op.handle_replies(replies);
            }
            Step::Done(result) => {
                return result.unwrap_or_else(|e| panic!("{what} failed: {e} ({})", e.code()));
            }
        }
    }
    panic!("{what} did not finish");
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

fn cookie_pair(outcome: &Outcome) -> String {
    outcome
        .cookie()
        .expect("a Set-Cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn cluster_runs_every_operation_without_crossslot() {
    let cluster = RedisCluster::start(3);
    let mut conn = cluster.client();
    let engine = Engine::new(Config::default()).unwrap();
    let now = UnixMillis(wall_ms());
    let alice = UserId::new("alice").unwrap();
    let mut entropy = Rng::new(7);

    // Create (lazy: load without cookie, then the first write).
    let mut s = cluster_run(
        &mut conn,
        engine.load(None, None, now),
        "load without cookie",
    )
    .into_session()
    .unwrap();
    s.insert("cart", json!(["apple"])).unwrap();
    let created = cluster_run(
        &mut conn,
        engine.save(s, Entropy(entropy.bytes32()), now),
        "create",
    );
    let cookie = cookie_pair(&created);

    // Load and save a change.
    let loaded = cluster_run(
        &mut conn,
        engine.load(Some(&cookie), None, now.plus(1000)),
        "load",
    );
    let Outcome::Loaded(mut s) = loaded else {
        panic!("expected loaded, got {}", loaded.name())
    };
    s.insert("n", json!(1)).unwrap();
    s.remove("cart");
    let saved = cluster_run(
        &mut conn,
        engine.save(s, Entropy(entropy.bytes32()), now.plus(1000)),
        "save",
    );
    let s = saved.into_session().unwrap();

    // Sign in: set_user + regenerate (create new key, retire old, index).
    let mut s = s;
    s.set_user(alice.clone(), now.plus(2000));
    let regenerated = cluster_run(
        &mut conn,
        engine.regenerate(s, Entropy(entropy.bytes32()), now.plus(2000)),
        "regenerate",
    );
    let current = regenerated.into_session().unwrap();
    let old = cluster_run(
        &mut conn,
        engine.load(Some(&cookie), None, now.plus(2500)),
        "load old id",
    );
    assert!(
        matches!(old, Outcome::Rotated(_)),
        "old id after regenerate: {}",
        old.name()
    );

    // Two more devices of alice, each created with the user bound.
    for i in 0..2 {
        let mut d = engine.new_session();
        d.insert("device", json!(i)).unwrap();
        d.set_user(alice.clone(), now.plus(3000));
        cluster_run(
            &mut conn,
            engine.save(d, Entropy(entropy.bytes32()), now.plus(3000)),
            "create device",
        );
    }

    // List devices, sign out one of them.
    let listed = cluster_run(
        &mut conn,
        engine.list_user_sessions(&alice, Some(&current), now.plus(4000)),
        "list devices",
    );
    let Outcome::Devices(devices) = listed else {
        panic!("expected devices, got {}", listed.name())
    };
    assert_eq!(devices.len(), 3, "{devices:?}");
    assert_eq!(devices.iter().filter(|d| d.current).count(), 1);
    let other = devices.iter().find(|d| !d.current).unwrap();
    let one = cluster_run(
        &mut conn,
        engine.destroy_user_session(&alice, &other.handle, now.plus(4000)),
        "destroy one device",
    );
    assert!(
        matches!(one, Outcome::Destroyed { count: 1, .. }),
        "{}",
        show(&one)
    );

    // Sign out the other devices, keeping the current one.
    let all = cluster_run(
        &mut conn,
        engine.destroy_all_for_user(&alice, Some(&current), now.plus(5000)),
        "destroy all for user",
    );
    assert!(
        matches!(all, Outcome::Destroyed { count: 1, .. }),
        "{}",
        show(&all)
    );
    let listed = cluster_run(
        &mut conn,
        engine.list_user_sessions(&alice, Some(&current), now.plus(5000)),
        "list devices again",
    );
    assert!(
        matches!(&listed, Outcome::Devices(d) if d.len() == 1 && d[0].current),
        "{}",
        show(&listed)
    );

    // Destroy the current session.
    let gone = cluster_run(
        &mut conn,
        engine.destroy(current, now.plus(6000)),
        "destroy",
    );
    assert!(
        matches!(gone, Outcome::Destroyed { count: 1, .. }),
        "{}",
        show(&gone)
    );
    let after = cluster_run(
        &mut conn,
        engine.list_user_sessions(&alice, None, now.plus(6000)),
        "list after destroy",
    );
    assert!(
        matches!(&after, Outcome::Devices(d) if d.is_empty()),
        "{}",
        show(&after)
    );
}
