//! Property tests: random request sequences driven through `Engine` and the
//! in-memory backend (the reference model) with the ordinary host loop
//! (poll → execute_round → handle_replies), random clock jumps (small steps,
//! past the touch interval, the idle timeout, the absolute lifetime, the
//! rotation grace, and exactly onto those edges ±1 ms), two parallel
//! "requests" on one session, injected backend failures (a random subset or
//! prefix of a random round is applied, then `handle_failure(Timeout)`) and
//! `SCRIPT FLUSH` at random points, including between the rounds of one op.
//!
//! The harness keeps its own model of every ID it was ever handed (touch,
//! deadline, data, user, and whether it is live, destroyed, expired or
//! retired by a regenerate), built only from the rules and the outcomes the
//! machine returned. After every step it compares that model with the
//! backend's keyspace and loads every known cookie on a *copy* of the backend
//! (so the probes never touch the real state). Each named test enables the
//! one invariant it is named after.
//!
//! Tests named `repro_*` are shrunk counterexamples these properties found,
//! one per distinct cause; each fails until its cause is fixed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use session_logic::config::{Durability, IdFormat, KeyScheme};
use session_logic::error::BackendError;
use session_logic::memory::{Memory, Value as Stored};
use session_logic::outcome::Absent;
use session_logic::session::Status;
use session_logic::step::BackendFailure;
use session_logic::{
    Config, Engine, Entropy, Error, Op, Outcome, Reply, Round, Session, SessionId, Step,
    UnixMillis, UserId,
};

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;
const IDLE: u64 = 10 * MIN;
const ABS: u64 = 60 * MIN;
const TOUCH: u64 = MIN;
const GRACE: u64 = 5_000;
/// Rounds any op may take (NOSCRIPT fallbacks and collision retries included).
const MAX_ROUNDS: usize = 12;
/// Data keys the requests write.
const KEYS: [&str; 3] = ["a", "b", "c"];
/// Users, with characters that key escaping must neutralise.
const USERS: [&str; 3] = ["alice", "bob{x}", "c%7B*"];

type Res<T = ()> = Result<T, TestCaseError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(TestCaseError::fail(format!($($t)*))) };
}

// ---- configuration ------------------------------------------------------------

/// The deployment a sequence runs against.
#[derive(Clone, Copy, Debug)]
struct Setup {
    cap: Option<u32>,
    rotate: Option<u64>,
    plain: bool,
    durable: bool,
    preload: bool,
}

fn config(s: Setup) -> Config {
    Config {
        idle_timeout_ms: IDLE,
        absolute_lifetime_ms: ABS,
        touch_interval_ms: TOUCH,
        rotation_grace_ms: GRACE,
        rotate_every_ms: s.rotate,
        max_sessions_per_user: s.cap,
        key_scheme: if s.plain {
            KeyScheme::Plain
        } else {
            KeyScheme::Hashed
        },
        durable_revocation: s.durable.then_some(Durability {
            replicas: 1,
            timeout_ms: 100,
        }),
        ..Config::default()
    }
}

fn setup(cap: bool, rotate: bool) -> impl Strategy<Value = Setup> {
    let caps = if cap {
        proptest::option::of(1u32..3).boxed()
    } else {
        Just(None).boxed()
    };
    let rotates = if rotate {
        proptest::option::of(prop_oneof![Just(2 * MIN), Just(5 * MIN)]).boxed()
    } else {
        Just(None).boxed()
    };
    (caps, rotates, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(cap, rotate, plain, durable, preload)| Setup {
            cap,
            rotate,
            plain,
            durable,
            preload,
        },
    )
}

// ---- actions ------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Jump {
    Ms(u64),
    PastTouch(u64),
    PastIdle(u64),
    PastAbsolute(u64),
    PastGrace(u64),
    /// Onto an edge of a known session (0 idle, 1 absolute, 2 grace, 3
    /// touch throttle), plus `delta` ms.
    Edge {
        track: u8,
        kind: u8,
        delta: i8,
    },
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Wait(Jump),
    /// A visitor's first write: new session with one key (and maybe a user).
    Create {
        user: Option<u8>,
        key: u8,
        val: i64,
    },
    /// Request `slot` loads the cookie of a known session (or none).
    Load {
        slot: u8,
        target: Option<u8>,
    },
    Insert {
        slot: u8,
        key: u8,
        val: i64,
    },
    Remove {
        slot: u8,
        key: u8,
    },
    SetUser {
        slot: u8,
        user: u8,
    },
    ClearUser {
        slot: u8,
    },
    Save {
        slot: u8,
    },
    Regenerate {
        slot: u8,
    },
    Destroy {
        slot: u8,
    },
    Touch {
        slot: u8,
    },
    LogoutAll {
        user: u8,
        keep: Option<u8>,
    },
    Flush,
    /// SCRIPT FLUSH right before round `round` of the next op.
    FlushMid {
        round: u8,
    },
    /// The next op's round `round` fails after part of it was applied: a
    /// prefix (one pipeline) or any subset (Cluster: several nodes).
    Fail {
        round: u8,
        mask: u8,
        prefix: bool,
    },
}

/// Relative weights of the actions in a sequence.
#[derive(Clone, Copy)]
struct Mix {
    wait: u32,
    create: u32,
    load: u32,
    mutate: u32,
    user: u32,
    save: u32,
    regen: u32,
    destroy: u32,
    touch: u32,
    logout: u32,
    flush: u32,
    fail: u32,
}

const BASE_MIX: Mix = Mix {
    wait: 8,
    create: 4,
    load: 8,
    mutate: 5,
    user: 2,
    save: 5,
    regen: 2,
    destroy: 2,
    touch: 1,
    logout: 1,
    flush: 1,
    fail: 3,
};

fn jump() -> impl Strategy<Value = Jump> {
    prop_oneof![
        5 => (0u64..5_000).prop_map(Jump::Ms),
        2 => (5_000u64..IDLE).prop_map(Jump::Ms),
        2 => (0u64..3_000).prop_map(Jump::PastTouch),
        2 => (0u64..3_000).prop_map(Jump::PastIdle),
        1 => (0u64..3_000).prop_map(Jump::PastAbsolute),
        2 => (0u64..2_000).prop_map(Jump::PastGrace),
        4 => (any::<u8>(), 0u8..4, -1i8..=1).prop_map(|(track, kind, delta)| Jump::Edge {
            track,
            kind,
            delta
        }),
    ]
}

/// Which round of the next op a fault hits (most ops have one or two).
fn round_no() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => 2u8..4]
}

fn act(m: Mix) -> BoxedStrategy<Act> {
    let slot = || 0u8..2;
    let options: Vec<(u32, BoxedStrategy<Act>)> = vec![
        (m.wait, jump().prop_map(Act::Wait).boxed()),
        (
            m.create,
            (proptest::option::of(0u8..3), 0u8..3, 0i64..100)
                .prop_map(|(user, key, val)| Act::Create { user, key, val })
                .boxed(),
        ),
        (
            m.load,
            (slot(), proptest::option::weighted(0.9, any::<u8>()))
                .prop_map(|(slot, target)| Act::Load { slot, target })
                .boxed(),
        ),
        (
            m.mutate,
            (slot(), 0u8..3, 0i64..100)
                .prop_map(|(slot, key, val)| Act::Insert { slot, key, val })
                .boxed(),
        ),
        (
            m.mutate / 2,
            (slot(), 0u8..3)
                .prop_map(|(slot, key)| Act::Remove { slot, key })
                .boxed(),
        ),
        (
            m.user,
            (slot(), 0u8..3)
                .prop_map(|(slot, user)| Act::SetUser { slot, user })
                .boxed(),
        ),
        (
            m.user / 2,
            slot().prop_map(|slot| Act::ClearUser { slot }).boxed(),
        ),
        (m.save, slot().prop_map(|slot| Act::Save { slot }).boxed()),
        (
            m.regen,
            slot().prop_map(|slot| Act::Regenerate { slot }).boxed(),
        ),
        (
            m.destroy,
            slot().prop_map(|slot| Act::Destroy { slot }).boxed(),
        ),
        (m.touch, slot().prop_map(|slot| Act::Touch { slot }).boxed()),
        (
            m.logout,
            (0u8..3, proptest::option::of(slot()))
                .prop_map(|(user, keep)| Act::LogoutAll { user, keep })
                .boxed(),
        ),
        (
            m.flush,
            prop_oneof![
                Just(Act::Flush),
                round_no().prop_map(|round| Act::FlushMid { round })
            ]
            .boxed(),
        ),
        (
            m.fail,
            (round_no(), any::<u8>(), any::<bool>())
                .prop_map(|(round, mask, prefix)| Act::Fail {
                    round,
                    mask,
                    prefix,
                })
                .boxed(),
        ),
    ];
    Union::new_weighted(options.into_iter().filter(|(w, _)| *w > 0).collect()).boxed()
}

fn acts(m: Mix) -> impl Strategy<Value = Vec<Act>> {
    prop::collection::vec(act(m), 1..40)
}

// ---- the model ----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Why {
    Destroyed,
    Expired,
    /// The record was found gone (evicted by the per-user cap, or deleted
    /// by an op that then failed).
    Observed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Life {
    Live,
    Dead {
        at: u64,
        why: Why,
    },
    /// Replaced by a successful regenerate (or rotate_every) at `at`.
    Retired {
        at: u64,
        grace_until: u64,
    },
}

/// What a failed op may or may not have written.
#[derive(Clone, Debug)]
struct Pending {
    touch: u64,
    changes: BTreeMap<String, Option<i64>>,
    user: Option<Option<String>>,
}

/// Everything the harness knows about one ID it was handed.
#[derive(Clone, Debug)]
struct Track {
    id: SessionId,
    key: Vec<u8>,
    cookie: String,
    /// Creation, or the last explicit regenerate, of this lineage.
    origin: u64,
    deadline: u64,
    touch: u64,
    life: Life,
    data: BTreeMap<String, i64>,
    user: Option<String>,
    /// Users whose index may hold this ID (logout-everywhere may take it).
    ever_users: BTreeSet<String>,
    /// Nothing but the rules can end it (no failure, cap, or logout race).
    certain: bool,
    pending: Option<Pending>,
}

impl Track {
    fn expiry(&self) -> u64 {
        (self.touch + IDLE).min(self.deadline)
    }
}

/// One in-flight request: the session object and the harness's mirror of
/// what it changed.
#[derive(Clone, Debug)]
struct Slot {
    session: Session,
    track: Option<usize>,
    local: BTreeMap<String, i64>,
    changes: BTreeMap<String, Option<i64>>,
    user: Option<String>,
    user_change: Option<Option<String>>,
}

impl Slot {
    fn new(session: Session, track: Option<usize>) -> Slot {
        let local = ints(session.data());
        let user = session.user().map(|u| u.as_str().to_owned());
        Slot {
            session,
            track,
            local,
            changes: BTreeMap::new(),
            user,
            user_change: None,
        }
    }

    fn dirty(&self) -> bool {
        !self.changes.is_empty() || self.user_change.is_some()
    }
}

fn ints(data: &BTreeMap<String, Value>) -> BTreeMap<String, i64> {
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(i64::MIN)))
        .collect()
}

/// Which invariants a run asserts.
#[derive(Clone, Copy, Debug, Default)]
struct Checks {
    /// Destroyed or expired sessions never load with data.
    dead: bool,
    /// No write recreates a destroyed, expired or retired record.
    resurrect: bool,
    /// Deadlines and TTLs never exceed the absolute lifetime.
    absolute: bool,
    /// An old ID never yields data after a regenerate.
    old_id: bool,
    /// Logout-everywhere leaves no prior session of that user.
    logout: bool,
    /// Backend contents equal the model (data, user, touch, TTL).
    model: bool,
}

/// A session record as the backend holds it.
#[derive(Debug, Default)]
struct Rec {
    rotated: bool,
    touch: Option<u64>,
    deadline: Option<u64>,
    user: Option<String>,
    data: BTreeMap<String, i64>,
    expire: Option<u64>,
}

impl Rec {
    fn live(&self) -> bool {
        !self.rotated && self.deadline.is_some()
    }
}

type Snapshot = BTreeMap<Vec<u8>, (Stored, Option<UnixMillis>)>;

fn rec(snap: &Snapshot, key: &[u8]) -> Res<Option<Rec>> {
    let Some((value, expire)) = snap.get(key) else {
        return Ok(None);
    };
    let Stored::Hash(h) = value else {
        bail!("session key holds a non-hash: {value:?}");
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let num = |v: &[u8]| text(v).parse::<u64>().ok();
    let mut r = Rec {
        expire: expire.map(|e| e.0),
        ..Rec::default()
    };
    for (f, v) in h {
        match f.as_slice() {
            b"$rotated" => r.rotated = true,
            b"$touch" => r.touch = num(v),
            b"$deadline" => r.deadline = num(v),
            b"$user" => r.user = Some(text(v)),
            f if f.starts_with(b"$") => {}
            f => {
                let value: Value = serde_json::from_slice(v).unwrap_or(Value::Null);
                r.data.insert(text(f), value.as_i64().unwrap_or(i64::MIN));
            }
        }
    }
    Ok(Some(r))
}

struct Ran {
    result: Result<Outcome, Error>,
    failed: bool,
}

struct World {
    setup: Setup,
    engine: Engine,
    mem: Memory,
    now: u64,
    salt: [u8; 32],
    counter: u64,
    tracks: Vec<Track>,
    slots: [Option<Slot>; 2],
    fail: Option<(usize, u8, bool)>,
    flush_at: Option<usize>,
    checks: Checks,
    trace: String,
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

impl World {
    fn new(setup: Setup, checks: Checks, salt: [u8; 32]) -> World {
        let engine = Engine::new(config(setup)).unwrap();
        let mut mem = Memory::new();
        if setup.durable {
            mem.set_replicas(1);
        }
        if setup.preload {
            for script in session_logic::scripts::Script::ALL {
                let load = session_logic::Command(vec![
                    b"SCRIPT".to_vec(),
                    b"LOAD".to_vec(),
                    script.source().as_bytes().to_vec(),
                ]);
                mem.execute(&load, UnixMillis(T0));
            }
        }
        World {
            setup,
            engine,
            mem,
            now: T0,
            salt,
            counter: 0,
            tracks: Vec::new(),
            slots: [None, None],
            fail: None,
            flush_at: None,
            checks,
            trace: String::new(),
        }
    }

    fn note(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.trace, "  t+{}ms {}", self.now - T0, line.as_ref());
    }

    fn fail_with(&self, msg: String) -> TestCaseError {
        TestCaseError::fail(format!("{msg}\n-- trace --\n{}", self.trace))
    }

    /// 32 bytes of entropy, distinct for every op of the case.
    fn entropy(&mut self) -> Entropy {
        self.counter += 1;
        let mut bytes = self.salt;
        for (b, c) in bytes.iter_mut().zip(self.counter.to_le_bytes()) {
            *b ^= c;
        }
        bytes[31] ^= 0x5a;
        Entropy(bytes)
    }

    fn track_of(&self, id: &SessionId) -> Option<usize> {
        self.tracks.iter().position(|t| &t.id == id)
    }

    /// The host loop, with the armed failure and mid-op SCRIPT FLUSH.
    fn drive(&mut self, mut op: Op) -> Res<Ran> {
        let now = UnixMillis(self.now);
        let fail = self.fail.take();
        let flush = self.flush_at.take();
        for round_no in 0..MAX_ROUNDS {
            match op.poll() {
                Step::Done(result) => {
                    return Ok(Ran {
                        result,
                        failed: false,
                    });
                }
                Step::Round(round) => {
                    if flush == Some(round_no) {
                        self.mem.flush_scripts();
                    }
                    if let Some((r, mask, prefix)) = fail.filter(|f| f.0 == round_no) {
                        let cmds = round.commands();
                        let applied: Vec<_> = if prefix {
                            let k = usize::from(mask) % (cmds.len() + 1);
                            cmds[..k].to_vec()
                        } else {
                            cmds.iter()
                                .enumerate()
                                .filter(|(i, _)| mask & (1 << (i % 8)) != 0)
                                .map(|(_, c)| c.clone())
                                .collect()
                        };
                        let n = applied.len();
                        self.mem.execute_round(&Round(applied), now);
                        op.handle_failure(BackendFailure::Timeout);
                        self.note(format!(
                            "   (round {r} failed after {n}/{} commands applied)",
                            cmds.len()
                        ));
                        return match op.poll() {
                            Step::Done(result @ Err(Error::Backend(BackendError::Failure { .. }))) => {
                                Ok(Ran {
                                    result,
                                    failed: true,
                                })
                            }
                            other => Err(self.fail_with(format!(
                                "a failed round must end the op with a typed backend error, got {other:?}"
                            ))),
                        };
                    }
                    let replies = self.mem.execute_round(&round, now);
                    op.handle_replies(replies);
                }
            }
        }
        Err(self.fail_with(format!("op did not finish within {MAX_ROUNDS} rounds")))
    }

    fn step(&mut self, act: Act) -> Res {
        match act {
            Act::Wait(j) => self.wait(j),
            Act::Create { user, key, val } => self.create(user, key, val)?,
            Act::Load { slot, target } => self.load(usize::from(slot), target)?,
            Act::Insert { slot, key, val } => self.insert(usize::from(slot), key, val)?,
            Act::Remove { slot, key } => self.remove(usize::from(slot), key)?,
            Act::SetUser { slot, user } => self.set_user(usize::from(slot), user),
            Act::ClearUser { slot } => self.clear_user(usize::from(slot)),
            Act::Save { slot } => self.write(usize::from(slot), Kind::Save)?,
            Act::Regenerate { slot } => self.write(usize::from(slot), Kind::Regenerate)?,
            Act::Touch { slot } => self.write(usize::from(slot), Kind::Touch)?,
            Act::Destroy { slot } => self.destroy(usize::from(slot))?,
            Act::LogoutAll { user, keep } => self.logout_all(user, keep)?,
            Act::Flush => {
                self.note("SCRIPT FLUSH");
                self.mem.flush_scripts();
            }
            Act::FlushMid { round } => self.flush_at = Some(usize::from(round)),
            Act::Fail {
                round,
                mask,
                prefix,
            } => self.fail = Some((usize::from(round), mask, prefix)),
        }
        self.observe()?;
        self.probe()
    }

    fn wait(&mut self, j: Jump) {
        let dt = match j {
            Jump::Ms(ms) => ms,
            Jump::PastTouch(x) => TOUCH + x,
            Jump::PastIdle(x) => IDLE + x,
            Jump::PastAbsolute(x) => ABS + x,
            Jump::PastGrace(x) => GRACE + x,
            Jump::Edge { track, kind, delta } if !self.tracks.is_empty() => {
                let t = &self.tracks[usize::from(track) % self.tracks.len()];
                let edge = match (kind, t.life) {
                    (0, _) => t.touch + IDLE,
                    (1, _) => t.deadline,
                    (2, Life::Retired { grace_until, .. }) => grace_until,
                    (2, _) => t.expiry(),
                    _ => t.touch + TOUCH,
                };
                let target = edge.saturating_add_signed(i64::from(delta));
                target.saturating_sub(self.now).max(1)
            }
            Jump::Edge { .. } => 1,
        };
        self.now += dt;
        self.note(format!("wait {dt}ms"));
    }

    fn create(&mut self, user: Option<u8>, key: u8, val: i64) -> Res {
        let now = UnixMillis(self.now);
        let mut s = self.engine.new_session();
        let k = KEYS[usize::from(key) % KEYS.len()];
        s.insert(k, json!(val)).unwrap();
        let user = user.map(|u| USERS[usize::from(u) % USERS.len()].to_owned());
        if let Some(u) = &user {
            s.set_user(UserId::new(u.clone()).unwrap(), now);
        }
        let mut slot = Slot::new(s, None);
        slot.changes.insert(k.to_owned(), Some(val));
        slot.user_change = user.clone().map(Some);
        let e = self.entropy();
        let ran = self.drive(self.engine.save(slot.session.clone(), e, now))?;
        self.note(format!(
            "create {{{k}: {val}}} user {user:?} -> {}",
            show(&ran.result)
        ));
        match ran.result {
            Ok(Outcome::Saved {
                session,
                cookie: Some(c),
            }) => {
                self.new_track(&session, &c, self.now, self.now + ABS, &slot)?;
                Ok(())
            }
            Err(_) if ran.failed => Ok(()),
            other => Err(self.fail_with(format!("create gave {other:?}"))),
        }
    }

    /// Start tracking an ID the machine just handed out.
    fn new_track(
        &mut self,
        session: &Session,
        set_cookie: &str,
        origin: u64,
        deadline: u64,
        slot: &Slot,
    ) -> Res<usize> {
        let Some(id) = session.id().cloned() else {
            return Err(self.fail_with("a Set-Cookie without a session ID".into()));
        };
        let cookie = cookie_value(set_cookie);
        if cookie != format!("sid={}", id.expose()) {
            return Err(self.fail_with(format!("cookie {cookie:?} does not name the new ID")));
        }
        if self.track_of(&id).is_some() {
            return Err(self.fail_with("an ID was handed out twice".into()));
        }
        let meta = session.meta().unwrap();
        if self.checks.absolute && (meta.deadline.0 != deadline || deadline > origin + ABS) {
            return Err(self.fail_with(format!(
                "new ID has deadline {} but its lineage started at {origin} (expected {deadline})",
                meta.deadline.0
            )));
        }
        if self.checks.absolute {
            // The cookie lives no longer than the server-side deadline.
            let max_age = set_cookie
                .split("; ")
                .find_map(|a| a.strip_prefix("Max-Age="))
                .and_then(|n| n.parse::<u64>().ok());
            if max_age.is_none_or(|m| self.now + m * 1000 > deadline) {
                return Err(self.fail_with(format!(
                    "Set-Cookie {set_cookie:?} outlives the deadline t+{}ms",
                    deadline - T0
                )));
            }
        }
        let user = slot.user.clone();
        self.tracks.push(Track {
            key: self.engine.keyspace().session_key(&id).into_bytes(),
            id,
            cookie,
            origin,
            deadline,
            touch: self.now,
            life: Life::Live,
            data: slot.local.clone(),
            ever_users: user.iter().cloned().collect(),
            user,
            certain: true,
            pending: None,
        });
        Ok(self.tracks.len() - 1)
    }

    fn load(&mut self, slot_no: usize, target: Option<u8>) -> Res {
        // Mostly a live session (the interesting races), sometimes any ID
        // ever handed out (dead, expired, retired).
        let live: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].life == Life::Live)
            .collect();
        let target = target.filter(|_| !self.tracks.is_empty()).map(|t| {
            let t = usize::from(t);
            if t % 4 != 0 && !live.is_empty() {
                live[(t / 4) % live.len()]
            } else {
                (t / 4) % self.tracks.len()
            }
        });
        let cookie = target.map(|t| self.tracks[t].cookie.clone());
        let now = UnixMillis(self.now);
        let ran = self.drive(self.engine.load(cookie.as_deref(), None, now))?;
        self.note(format!(
            "load #{target:?} into {} -> {}",
            slot_name(slot_no),
            show(&ran.result)
        ));
        if let Some(t) = target {
            self.check_load(t, &ran.result, "request load")?;
        }
        self.slots[slot_no] = None;
        match ran.result {
            Ok(Outcome::Loaded(s)) => {
                let t = target.unwrap();
                let tr = &mut self.tracks[t];
                if self.now >= tr.touch + TOUCH {
                    tr.touch = self.now;
                }
                if let Some(u) = s.user() {
                    tr.ever_users.insert(u.as_str().to_owned());
                }
                self.slots[slot_no] = Some(Slot::new(s, Some(t)));
            }
            Ok(Outcome::None { session, .. })
            | Ok(Outcome::Expired(session))
            | Ok(Outcome::Rotated(session)) => {
                self.slots[slot_no] = Some(Slot::new(session, None));
            }
            Err(_) if ran.failed => {
                if let Some(t) = target {
                    self.uncertain(t, BTreeMap::new(), None);
                }
            }
            other => return Err(self.fail_with(format!("load gave {other:?}"))),
        }
        Ok(())
    }

    /// A failed op may have written: resolve against the backend later.
    fn uncertain(
        &mut self,
        t: usize,
        changes: BTreeMap<String, Option<i64>>,
        user: Option<Option<String>>,
    ) {
        let now = self.now;
        let tr = &mut self.tracks[t];
        tr.certain = false;
        let p = tr.pending.get_or_insert(Pending {
            touch: now,
            changes: BTreeMap::new(),
            user: None,
        });
        p.touch = now;
        p.changes.extend(changes);
        if user.is_some() {
            p.user = user;
        }
    }

    fn insert(&mut self, slot_no: usize, key: u8, val: i64) -> Res {
        let k = KEYS[usize::from(key) % KEYS.len()];
        if let Some(s) = self.slots[slot_no].as_mut() {
            s.session.insert(k, json!(val)).unwrap();
            if s.local.get(k) != Some(&val) {
                s.changes.insert(k.to_owned(), Some(val));
                s.local.insert(k.to_owned(), val);
            }
            self.check_mirror(slot_no)?;
        }
        Ok(())
    }

    fn remove(&mut self, slot_no: usize, key: u8) -> Res {
        let k = KEYS[usize::from(key) % KEYS.len()];
        if let Some(s) = self.slots[slot_no].as_mut() {
            s.session.remove(k);
            if s.local.remove(k).is_some() {
                s.changes.insert(k.to_owned(), None);
            }
            self.check_mirror(slot_no)?;
        }
        Ok(())
    }

    fn set_user(&mut self, slot_no: usize, user: u8) {
        let u = USERS[usize::from(user) % USERS.len()];
        let now = UnixMillis(self.now);
        if let Some(s) = self.slots[slot_no].as_mut() {
            s.session.set_user(UserId::new(u).unwrap(), now);
            s.user = Some(u.to_owned());
            s.user_change = Some(Some(u.to_owned()));
        }
    }

    fn clear_user(&mut self, slot_no: usize) {
        if let Some(s) = self.slots[slot_no].as_mut().filter(|s| s.user.is_some()) {
            s.session.clear_user();
            s.user = None;
            s.user_change = Some(None);
        }
    }

    /// Test-side sanity: the harness mirrors the session's data exactly.
    fn check_mirror(&self, slot_no: usize) -> Res {
        let s = self.slots[slot_no].as_ref().unwrap();
        if ints(s.session.data()) != s.local || s.session.is_dirty() != s.dirty() {
            return Err(self.fail_with(format!(
                "harness mirror out of step: {:?} vs {:?}",
                s.session.data(),
                s.local
            )));
        }
        Ok(())
    }

    fn write(&mut self, slot_no: usize, kind: Kind) -> Res {
        let Some(slot) = self.slots[slot_no].take() else {
            return Ok(());
        };
        let now = self.now;
        let pre_id = slot.session.id().cloned();
        let status = slot.session.status();
        let track = slot.track;
        let was = track.map(|t| self.tracks[t].life);
        if let (Some(t), Some(Some(u))) = (track, &slot.user_change) {
            self.tracks[t].ever_users.insert(u.clone());
        }
        let e = self.entropy();
        let when = UnixMillis(now);
        let op = match kind {
            Kind::Save => self.engine.save(slot.session.clone(), e, when),
            Kind::Touch => self.engine.touch(slot.session.clone(), when),
            Kind::Regenerate => self.engine.regenerate(slot.session.clone(), e, when),
        };
        let ran = self.drive(op)?;
        self.note(format!(
            "{kind:?} {} (#{track:?}, {status:?}, changes {:?}, user {:?}) -> {}",
            slot_name(slot_no),
            slot.changes,
            slot.user_change,
            show(&ran.result)
        ));
        match ran.result {
            Ok(Outcome::Saved { session, cookie }) => {
                let new_id = session.id().cloned();
                if new_id != pre_id {
                    let Some(c) = cookie else {
                        return Err(self.fail_with("a new ID without a Set-Cookie".into()));
                    };
                    let (origin, deadline) = match (status, track) {
                        (Status::New, _) => (now, now + ABS),
                        (Status::Live, Some(t)) => {
                            self.accepted(t, was, kind, "renewed its ID")?;
                            let old = &mut self.tracks[t];
                            if old.life == Life::Live {
                                old.life = Life::Retired {
                                    at: now,
                                    grace_until: now + GRACE,
                                };
                            }
                            if kind == Kind::Regenerate {
                                (now, now + ABS)
                            } else {
                                (old.origin, old.deadline)
                            }
                        }
                        _ => {
                            return Err(
                                self.fail_with(format!("{status:?} session renewed its ID"))
                            );
                        }
                    };
                    // A renewed ID carries the latest acknowledged record with
                    // this request's changes on top: a save that landed on the
                    // old ID after this request loaded is merged, not lost.
                    let expected = match (status, track) {
                        (Status::Live, Some(old)) if self.tracks[old].certain => {
                            let mut d = self.tracks[old].data.clone();
                            for (k, v) in &slot.changes {
                                match v {
                                    Some(v) => d.insert(k.clone(), *v),
                                    None => d.remove(k),
                                };
                            }
                            Some(d)
                        }
                        (Status::Live, Some(_)) => None,
                        _ => Some(slot.local.clone()),
                    };
                    let t = self.new_track(&session, &c, origin, deadline, &slot)?;
                    let next = Slot::new(session, Some(t));
                    self.tracks[t].data = next.local.clone();
                    if expected.is_some_and(|e| e != next.local) || next.user != slot.user {
                        return Err(self.fail_with(format!(
                            "renewed session carries {:?}/{:?}, the request had {:?}/{:?}",
                            next.local, next.user, slot.local, slot.user
                        )));
                    }
                    self.slots[slot_no] = Some(next);
                } else {
                    if status == Status::Live && (slot.dirty() || kind == Kind::Touch) {
                        let t = track.unwrap();
                        self.accepted(t, was, kind, "wrote to it")?;
                        let tr = &mut self.tracks[t];
                        for (k, v) in &slot.changes {
                            match v {
                                Some(v) => tr.data.insert(k.clone(), *v),
                                None => tr.data.remove(k),
                            };
                        }
                        if let Some(u) = &slot.user_change {
                            tr.user = u.clone();
                        }
                        // save.lua slides the deadline at most once per
                        // touch interval; an explicit touch always does.
                        if kind == Kind::Touch || now.saturating_sub(tr.touch) >= TOUCH {
                            tr.touch = tr.touch.max(now);
                        }
                    }
                    if status == Status::Live && cookie.is_some() {
                        return Err(self.fail_with("a same-ID save sent a cookie".into()));
                    }
                    // Nothing written (a new session has nothing to touch) keeps the delta.
                    let next = if session.is_dirty() {
                        Slot { session, ..slot }
                    } else {
                        Slot {
                            session,
                            changes: BTreeMap::new(),
                            user_change: None,
                            ..slot
                        }
                    };
                    self.slots[slot_no] = Some(next);
                    self.check_mirror(slot_no)?;
                }
            }
            Ok(Outcome::Rotated(s)) => {
                self.refused(track, was, status, kind, "Rotated")?;
                // A rotated request keeps its (dropped) delta; a live one that
                // met a marker gets a fresh rotated session.
                self.slots[slot_no] = Some(if s.is_dirty() {
                    Slot { session: s, ..slot }
                } else {
                    Slot::new(s, None)
                });
                self.check_mirror(slot_no)?;
            }
            Ok(Outcome::Gone { .. }) => self.refused(track, was, status, kind, "Gone")?,
            Err(_) if ran.failed => {
                if let Some(t) = track {
                    self.uncertain(t, slot.changes.clone(), slot.user_change.clone());
                }
            }
            other => return Err(self.fail_with(format!("{kind:?} gave {other:?}"))),
        }
        Ok(())
    }

    /// A write of a live session object was refused: its record must have
    /// been gone, expired or retired (or its fate unknown).
    fn refused(
        &self,
        track: Option<usize>,
        was: Option<Life>,
        status: Status,
        kind: Kind,
        how: &str,
    ) -> Res {
        let live = self.checks.model
            && status == Status::Live
            && was == Some(Life::Live)
            && track.is_some_and(|t| self.tracks[t].certain);
        if live {
            return Err(self.fail_with(format!(
                "{kind:?} of live #{} was refused as {how}",
                track.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// A write with a session object of #t succeeded: it must have been live.
    fn accepted(&self, t: usize, was: Option<Life>, kind: Kind, what: &str) -> Res {
        match was {
            Some(Life::Dead { at, why }) if self.checks.dead || self.checks.resurrect => Err(self
                .fail_with(format!(
                    "{kind:?} of #{t} {what} although it died ({why:?}) at t+{}ms",
                    at - T0
                ))),
            Some(Life::Retired { at, .. }) if self.checks.old_id || self.checks.resurrect => {
                Err(self.fail_with(format!(
                    "{kind:?} of #{t} {what} although a regenerate retired it at t+{}ms",
                    at - T0
                )))
            }
            _ => Ok(()),
        }
    }

    fn destroy(&mut self, slot_no: usize) -> Res {
        let Some(slot) = self.slots[slot_no].take() else {
            return Ok(());
        };
        let now = UnixMillis(self.now);
        let ran = self.drive(self.engine.destroy(slot.session.clone(), now))?;
        self.note(format!(
            "destroy {} (#{:?}) -> {}",
            slot_name(slot_no),
            slot.track,
            show(&ran.result)
        ));
        match (ran.result, slot.track) {
            (Ok(Outcome::Destroyed { .. }), Some(t)) => {
                if !matches!(self.tracks[t].life, Life::Dead { .. }) {
                    self.tracks[t].life = Life::Dead {
                        at: self.now,
                        why: Why::Destroyed,
                    };
                }
            }
            (Ok(Outcome::Destroyed { .. }), None) => {}
            (Err(_), Some(t)) if ran.failed => self.uncertain(t, BTreeMap::new(), None),
            (Err(_), None) if ran.failed => {}
            (other, _) => return Err(self.fail_with(format!("destroy gave {other:?}"))),
        }
        Ok(())
    }

    fn logout_all(&mut self, user: u8, keep: Option<u8>) -> Res {
        let u = USERS[usize::from(user) % USERS.len()];
        let now = UnixMillis(self.now);
        let keep_session = keep.and_then(|k| {
            self.slots[usize::from(k)]
                .as_ref()
                .map(|s| s.session.clone())
        });
        let keep_id = keep_session.as_ref().and_then(|s| s.id().cloned());
        // Every session bound to `u` (as the backend says) before it begins.
        let snap = self.mem.snapshot(now);
        let mut prior = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            if Some(&t.id) == keep_id.as_ref() {
                continue;
            }
            if rec(&snap, &t.key)?.is_some_and(|r| r.live() && r.user.as_deref() == Some(u)) {
                prior.push(i);
            }
        }
        let index_before = self.index_members(u);
        let op =
            self.engine
                .destroy_all_for_user(&UserId::new(u).unwrap(), keep_session.as_ref(), now);
        let ran = self.drive(op)?;
        self.note(format!(
            "logout everywhere {u:?} keep {:?} (bound before: {prior:?}) -> {}",
            keep_id.as_ref().and_then(|id| self.track_of(id)),
            show(&ran.result)
        ));
        for t in &mut self.tracks {
            if t.ever_users.contains(u) {
                t.certain = false;
            }
        }
        match ran.result {
            Ok(Outcome::Destroyed { .. }) => {
                let snap = self.mem.snapshot(now);
                for i in prior {
                    let alive = rec(&snap, &self.tracks[i].key)?.is_some_and(|r| r.live());
                    if alive {
                        if self.checks.logout {
                            let t = &self.tracks[i];
                            return Err(self.fail_with(format!(
                                "logout everywhere for {u:?} finished, but #{i} (bound to {u:?} before it began) is still live; {u:?}'s index held {index_before:?} when it began"
                            ))
                            .with_load(self, t));
                        }
                    } else if self.tracks[i].life == Life::Live {
                        self.tracks[i].life = Life::Dead {
                            at: self.now,
                            why: Why::Destroyed,
                        };
                    }
                }
                Ok(())
            }
            Err(_) if ran.failed => Ok(()),
            other => Err(self.fail_with(format!("logout everywhere gave {other:?}"))),
        }
    }

    fn index_members(&self, u: &str) -> Vec<String> {
        let key = self
            .engine
            .keyspace()
            .user_key(&UserId::new(u).unwrap())
            .into_bytes();
        match self.mem.snapshot(UnixMillis(self.now)).get(&key) {
            Some((Stored::ZSet(z), _)) => z
                .iter()
                .map(|(s, m)| {
                    let who = self
                        .tracks
                        .iter()
                        .position(|t| t.key.ends_with(m) && t.key.len() == m.len() + 5)
                        .map_or("?".to_owned(), |i| format!("#{i}"));
                    format!("{who}@t+{}", (*s as u64).saturating_sub(T0))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Compare the model with the backend's keyspace; settle what failed ops
    /// left open; retire what the rules expired.
    fn observe(&mut self) -> Res {
        let now = self.now;
        let snap = self.mem.snapshot(UnixMillis(now));
        if self.checks.absolute {
            for (k, (_, exp)) in &snap {
                if exp.is_none() {
                    return Err(
                        self.fail_with(format!("key {:?} has no TTL", String::from_utf8_lossy(k)))
                    );
                }
            }
        }
        for i in 0..self.tracks.len() {
            let r = rec(&snap, &self.tracks[i].key)?;
            let live = r.as_ref().filter(|r| r.live());
            match self.tracks[i].life {
                Life::Live => {
                    if let (Some(p), Some(r)) = (self.tracks[i].pending.take(), live) {
                        self.settle(i, &p, r)?;
                    }
                    let t = &self.tracks[i];
                    let expiry = t.expiry();
                    match live {
                        None => {
                            let why = if now >= expiry {
                                Why::Expired
                            } else {
                                Why::Observed
                            };
                            if why == Why::Observed
                                && self.checks.model
                                && t.certain
                                && self.setup.cap.is_none()
                            {
                                return Err(self.fail_with(format!(
                                    "#{i} vanished from the backend at t+{}ms though the rules keep it until t+{}ms (record: {r:?})",
                                    now - T0,
                                    expiry - T0
                                )));
                            }
                            self.tracks[i].life = Life::Dead { at: now, why };
                        }
                        Some(r) => {
                            if now >= expiry
                                && (self.checks.model || self.checks.dead || self.checks.absolute)
                            {
                                return Err(self.fail_with(format!(
                                    "#{i} is still stored at t+{}ms past its expiry t+{}ms (touch t+{}, deadline t+{}); backend has {r:?}",
                                    now - T0,
                                    expiry - T0,
                                    t.touch - T0,
                                    t.deadline - T0
                                )));
                            }
                            if self.checks.absolute {
                                let d = r.deadline.unwrap_or(u64::MAX);
                                if d > t.origin + ABS || r.expire.is_none_or(|e| e > d) {
                                    return Err(self.fail_with(format!(
                                        "#{i}: stored deadline {d} / TTL {:?} exceed origin {} + absolute lifetime",
                                        r.expire, t.origin
                                    )));
                                }
                            }
                            if self.checks.model {
                                let want = (
                                    Some(t.touch),
                                    Some(t.deadline),
                                    &t.data,
                                    &t.user,
                                    Some(expiry),
                                );
                                let got = (r.touch, r.deadline, &r.data, &r.user, r.expire);
                                if want != got {
                                    return Err(self.fail_with(format!(
                                        "#{i}: backend (touch, deadline, data, user, expire) = {got:?}, the rules say {want:?}"
                                    )));
                                }
                            }
                            if now >= expiry {
                                self.tracks[i].life = Life::Dead {
                                    at: now,
                                    why: Why::Expired,
                                };
                            }
                        }
                    }
                }
                Life::Dead { at, why } => {
                    if self.checks.resurrect && live.is_some() {
                        return Err(self.fail_with(format!(
                            "#{i} died ({why:?}) at t+{}ms but the backend holds a live record again: {r:?}",
                            at - T0
                        )));
                    }
                }
                Life::Retired { at, .. } => {
                    if self.checks.resurrect && live.is_some() {
                        return Err(self.fail_with(format!(
                            "#{i} was retired by a regenerate at t+{}ms but the backend holds a live record again: {r:?}",
                            at - T0
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// After a failed op: the backend holds either the old or the new value
    /// of everything that op sent; adopt what it holds.
    fn settle(&mut self, i: usize, p: &Pending, r: &Rec) -> Res {
        let t = &self.tracks[i];
        let mut want_any: Vec<String> = Vec::new();
        let touch = r.touch.unwrap_or(0);
        if touch != t.touch && touch != p.touch {
            want_any.push(format!("touch {touch} not in {{{}, {}}}", t.touch, p.touch));
        }
        for k in KEYS {
            let got = r.data.get(k).copied();
            let old = t.data.get(k).copied();
            let new = p.changes.get(k).copied();
            if got != old && new.is_none_or(|n| n != got) {
                want_any.push(format!("{k}={got:?} not old {old:?} / new {new:?}"));
            }
        }
        if r.user != t.user && p.user.as_ref().is_none_or(|u| u != &r.user) {
            want_any.push(format!(
                "user {:?} not old {:?} / new {:?}",
                r.user, t.user, p.user
            ));
        }
        if self.checks.model && !want_any.is_empty() {
            return Err(self.fail_with(format!(
                "#{i} after a failed op holds values no request wrote: {want_any:?}"
            )));
        }
        let t = &mut self.tracks[i];
        t.touch = touch;
        t.data = r.data.clone();
        t.user = r.user.clone();
        Ok(())
    }

    /// Load every known cookie on a copy of the backend.
    fn probe(&mut self) -> Res {
        let mut shadow = self.mem.clone();
        let now = UnixMillis(self.now);
        for i in 0..self.tracks.len() {
            let op = self.engine.load(Some(&self.tracks[i].cookie), None, now);
            let result = run_plain(&mut shadow, op, now)?;
            self.check_load(i, &result, "probe")?;
        }
        Ok(())
    }

    /// What loading #i's cookie may give, by the invariants enabled.
    fn check_load(&self, i: usize, result: &Result<Outcome, Error>, ctx: &str) -> Res {
        let t = &self.tracks[i];
        let now = self.now;
        let c = self.checks;
        let fail =
            |msg: String| Err(self.fail_with(format!("{ctx} of #{i} at t+{}ms: {msg}", now - T0)));
        match result {
            Ok(Outcome::Loaded(s)) => {
                if s.id() != Some(&t.id) {
                    return fail("loaded a different ID".into());
                }
                match t.life {
                    Life::Dead { at, why } if c.dead => {
                        return fail(format!(
                            "died ({why:?}) at t+{}ms (touch t+{}, deadline t+{}) but loaded with data {:?}",
                            at - T0,
                            t.touch - T0,
                            t.deadline - T0,
                            s.data()
                        ));
                    }
                    Life::Retired { at, .. } if c.old_id => {
                        return fail(format!(
                            "old ID of a regenerate at t+{}ms loaded with data {:?}",
                            at - T0,
                            s.data()
                        ));
                    }
                    _ => {}
                }
                if c.absolute {
                    let m = s.meta().unwrap();
                    let pttl = self.mem.pttl(&t.key, UnixMillis(now));
                    if now >= m.deadline.0
                        || m.deadline.0 > t.origin + ABS
                        || pttl <= 0
                        || now + pttl.unsigned_abs() > m.deadline.0
                    {
                        return fail(format!(
                            "deadline {} (lineage origin {}, now {now}) with PTTL {pttl}",
                            m.deadline.0, t.origin
                        ));
                    }
                }
                if c.model && t.life == Life::Live && t.pending.is_none() {
                    let user = s.user().map(|u| u.as_str().to_owned());
                    if ints(s.data()) != t.data || user != t.user {
                        return fail(format!(
                            "loaded {:?} user {user:?}, the last successful writes say {:?} user {:?}",
                            s.data(),
                            t.data,
                            t.user
                        ));
                    }
                }
            }
            Ok(Outcome::Rotated(_)) => match t.life {
                Life::Retired { grace_until, .. } if c.old_id && now >= grace_until => {
                    return fail(format!(
                        "old ID still Rotated after its grace (until t+{}ms)",
                        grace_until - T0
                    ));
                }
                Life::Live if c.model && t.certain => {
                    return fail("a live session loads as Rotated".into());
                }
                _ => {}
            },
            Ok(Outcome::None { reason, .. }) => {
                if *reason != Absent::Unknown {
                    return fail(format!("a well-formed cookie gave None({reason:?})"));
                }
                if c.model && t.life == Life::Live && t.certain {
                    return fail("a live session is unknown".into());
                }
            }
            Ok(Outcome::Expired(_)) => match t.life {
                Life::Retired { .. } if c.old_id => {
                    return fail("an old ID gave Expired instead of Rotated/None".into());
                }
                Life::Live if c.model && t.certain => {
                    return fail(format!(
                        "expired early (touch t+{}, deadline t+{})",
                        t.touch - T0,
                        t.deadline - T0
                    ));
                }
                _ => {}
            },
            Err(e)
                if ctx == "request load"
                    && matches!(e, Error::Backend(BackendError::Failure { .. })) => {}
            other => return fail(format!("unexpected {other:?}")),
        }
        Ok(())
    }
}

trait WithLoad {
    fn with_load(self, w: &World, t: &Track) -> TestCaseError;
}

impl WithLoad for TestCaseError {
    /// Append what loading the session's cookie gives now.
    fn with_load(self, w: &World, t: &Track) -> TestCaseError {
        let mut shadow = w.mem.clone();
        let now = UnixMillis(w.now);
        let got = run_plain(&mut shadow, w.engine.load(Some(&t.cookie), None, now), now)
            .map(|r| show(&r))
            .unwrap_or_default();
        TestCaseError::fail(format!(
            "{}\nloading its cookie now gives: {got}",
            message(&self)
        ))
    }
}

fn message(e: &TestCaseError) -> &str {
    match e {
        TestCaseError::Fail(r) | TestCaseError::Reject(r) => r.message(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Save,
    Touch,
    Regenerate,
}

fn slot_name(slot: usize) -> &'static str {
    if slot == 0 { "A" } else { "B" }
}

fn show(r: &Result<Outcome, Error>) -> String {
    match r {
        Ok(Outcome::Loaded(s)) => format!("loaded {:?} user {:?}", s.data(), s.user()),
        Ok(Outcome::None { reason, .. }) => format!("none({reason:?})"),
        Ok(o @ Outcome::Saved { session, cookie }) => format!(
            "{} {:?}{}",
            o.name(),
            session.status(),
            if cookie.is_some() { " +cookie" } else { "" }
        ),
        Ok(Outcome::Destroyed { count, .. }) => format!("destroyed {count}"),
        Ok(o) => o.name().to_owned(),
        Err(e) => format!("error {}", e.code()),
    }
}

/// The host loop without faults.
fn run_plain(mem: &mut Memory, mut op: Op, now: UnixMillis) -> Res<Result<Outcome, Error>> {
    for _ in 0..MAX_ROUNDS {
        match op.poll() {
            Step::Round(round) => {
                let replies = mem.execute_round(&round, now);
                op.handle_replies(replies);
            }
            Step::Done(result) => return Ok(result),
        }
    }
    bail!("op did not finish within {MAX_ROUNDS} rounds")
}

fn run_sequence(setup: Setup, checks: Checks, salt: u64, acts: &[Act]) -> Res {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&salt.rotate_left(i as u32 * 13).to_le_bytes());
    }
    let mut w = World::new(setup, checks, bytes);
    let _ = writeln!(w.trace, "  setup {setup:?}");
    for &a in acts {
        w.step(a)?;
    }
    Ok(())
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- the sequence invariants ----------------------------------------------------

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn expired_or_destroyed_session_never_yields_data(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(Mix { destroy: 3, ..BASE_MIX }),
    ) {
        let checks = Checks { dead: true, ..Checks::default() };
        run_sequence(setup, checks, salt, &acts)?;
    }

    #[test]
    fn nothing_is_resurrected(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(Mix { destroy: 3, touch: 3, regen: 3, ..BASE_MIX }),
    ) {
        let checks = Checks { resurrect: true, ..Checks::default() };
        run_sequence(setup, checks, salt, &acts)?;
    }

    #[test]
    fn absolute_lifetime_is_never_exceeded(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(Mix { wait: 12, ..BASE_MIX }),
    ) {
        let checks = Checks { absolute: true, ..Checks::default() };
        run_sequence(setup, checks, salt, &acts)?;
    }

    #[test]
    fn old_id_never_yields_data_after_regenerate(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(Mix { regen: 5, ..BASE_MIX }),
    ) {
        let checks = Checks { old_id: true, ..Checks::default() };
        run_sequence(setup, checks, salt, &acts)?;
    }

    #[test]
    fn logout_everywhere_leaves_no_prior_session_of_that_user(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(Mix { wait: 4, create: 6, mutate: 1, user: 6, save: 4, regen: 3, destroy: 3, logout: 4, ..BASE_MIX }),
    ) {
        let checks = Checks { logout: true, ..Checks::default() };
        run_sequence(setup, checks, salt, &acts)?;
    }

    #[test]
    fn in_memory_backend_matches_the_rules_for_random_sequences(
        setup in setup(true, true),
        salt in any::<u64>(),
        acts in acts(BASE_MIX),
    ) {
        let checks = Checks {
            dead: true,
            resurrect: true,
            absolute: true,
            old_id: true,
            logout: false,
            model: true,
        };
        run_sequence(setup, checks, salt, &acts)?;
    }
}

// ---- parallel requests on one session ---------------------------------------------

/// One step of a request in the parallel scenarios.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ev {
    Load,
    Change,
    Save,
}

/// The 20 ways to interleave two three-step requests: A's positions.
fn interleaving(pick: usize) -> Vec<(usize, Ev)> {
    let mut combos = Vec::new();
    for i in 0..6 {
        for j in i + 1..6 {
            for k in j + 1..6 {
                combos.push([i, j, k]);
            }
        }
    }
    let a = combos[pick % combos.len()];
    let (mut na, mut nb) = (0, 0);
    let evs = [Ev::Load, Ev::Change, Ev::Save];
    (0..6)
        .map(|pos| {
            if a.contains(&pos) {
                na += 1;
                (0, evs[na - 1])
            } else {
                nb += 1;
                (1, evs[nb - 1])
            }
        })
        .collect()
}

/// What one of the two requests changes.
#[derive(Clone, Copy, Debug)]
struct Edit {
    key: usize,
    remove: bool,
    value: i64,
    /// Write through `touch` instead of `save` (it sends the delta too).
    via_touch: bool,
}

const PKEYS: [&str; 4] = ["a", "b", "c", "d"];

fn edit() -> impl Strategy<Value = (bool, i64, bool)> {
    (any::<bool>(), 100i64..1000, proptest::bool::weighted(0.2))
}

/// What a later load saw after the race, what both requests wrote, and how.
struct Raced {
    got: BTreeMap<String, i64>,
    want: BTreeMap<String, i64>,
    log: String,
}

/// Run the two-request race; return the data a later load sees, or why not.
fn race(
    setup: Setup,
    user: bool,
    edits: [Edit; 2],
    pick: usize,
    gaps: &[u64],
    flush: u8,
) -> Res<Raced> {
    let mut w = World::new(setup, Checks::default(), [7; 32]);
    let mut now = T0;
    let mut s = w.engine.new_session();
    let mut want = BTreeMap::new();
    for (i, k) in PKEYS.iter().enumerate() {
        s.insert(*k, json!(i)).unwrap();
        want.insert((*k).to_owned(), i as i64);
    }
    if user {
        s.set_user(UserId::new("alice").unwrap(), UnixMillis(now));
    }
    let e = w.entropy();
    let created = run_plain(
        &mut w.mem,
        w.engine.save(s, e, UnixMillis(now)),
        UnixMillis(now),
    )?;
    let mut cookie = match &created {
        Ok(o) => cookie_value(o.cookie().unwrap_or_default()),
        Err(e) => bail!("create failed: {e:?}"),
    };
    let mut log = format!("t+0 create {want:?}\n");
    let mut sessions: [Option<Session>; 2] = [None, None];
    for (step, (who, ev)) in interleaving(pick).into_iter().enumerate() {
        now += gaps[step];
        if flush & (1 << step) != 0 {
            w.mem.flush_scripts();
            log.push_str("  SCRIPT FLUSH\n");
        }
        let at = UnixMillis(now);
        let edit = edits[who];
        let k = PKEYS[edit.key];
        let name = slot_name(who);
        match ev {
            Ev::Load => {
                let got = run_plain(&mut w.mem, w.engine.load(Some(&cookie), None, at), at)?;
                let _ = writeln!(log, "t+{} {name} loads -> {}", now - T0, show(&got));
                match got {
                    Ok(Outcome::Loaded(s)) => sessions[who] = Some(s),
                    other => {
                        bail!("{log}request {name} could not load the live session: {other:?}")
                    }
                }
            }
            Ev::Change => {
                let s = sessions[who].as_mut().unwrap();
                if edit.remove {
                    s.remove(k);
                } else {
                    s.insert(k, json!(edit.value)).unwrap();
                }
                let _ = writeln!(
                    log,
                    "t+{} {name} changes {k} (remove: {})",
                    now - T0,
                    edit.remove
                );
            }
            Ev::Save => {
                let s = sessions[who].take().unwrap();
                let op = if edit.via_touch {
                    w.engine.touch(s, at)
                } else {
                    let e = w.entropy();
                    w.engine.save(s, e, at)
                };
                let got = run_plain(&mut w.mem, op, at)?;
                let _ = writeln!(log, "t+{} {name} saves -> {}", now - T0, show(&got));
                // Only an acknowledged save must survive. A save that meets
                // the rotated marker is dropped and says so (Rotated):
                // forwarding old-ID writes into the renewed session would let
                // the holder of a pre-rotation ID write into it.
                match &got {
                    Ok(Outcome::Saved { .. }) if edit.remove => {
                        want.remove(k);
                    }
                    Ok(Outcome::Saved { .. }) => {
                        want.insert(k.to_owned(), edit.value);
                    }
                    Ok(Outcome::Rotated(_) | Outcome::Gone { cookie: None }) => {}
                    other => bail!("{log}save of {name} gave {other:?}"),
                }
                if let Some(c) = got.as_ref().ok().and_then(Outcome::cookie) {
                    cookie = cookie_value(c);
                }
            }
        }
    }
    now += gaps[6];
    let at = UnixMillis(now);
    let got = run_plain(&mut w.mem, w.engine.load(Some(&cookie), None, at), at)?;
    let _ = writeln!(log, "t+{} final load -> {}", now - T0, show(&got));
    match got {
        Ok(Outcome::Loaded(s)) => Ok(Raced {
            got: ints(s.data()),
            want,
            log,
        }),
        other => bail!("{log}the session is gone after both saves: {other:?}"),
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn parallel_saves_of_different_keys_both_survive(
        setup in setup(false, false),
        user in any::<bool>(),
        ka in 0usize..4,
        kb_offset in 1usize..4,
        (a_remove, va, a_touch) in edit(),
        (b_remove, vb, b_touch) in edit(),
        pick in 0usize..20,
        gaps in prop::collection::vec(prop_oneof![0u64..2_000, TOUCH - 1..TOUCH + 2, 0u64..IDLE / 8], 7),
        flush in any::<u8>(),
    ) {
        let edits = [
            Edit { key: ka, remove: a_remove, value: va, via_touch: a_touch },
            Edit { key: (ka + kb_offset) % 4, remove: b_remove, value: vb, via_touch: b_touch },
        ];
        let r = race(Setup { rotate: None, ..setup }, user, edits, pick, &gaps, flush)?;
        prop_assert_eq!(r.got, r.want, "{}", r.log);
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    /// The same race with `rotate_every` on: when the rotation falls due
    /// between the two loads and saves, one request renews the ID and the
    /// other's save meets the rotated marker.
    #[test]
    fn parallel_saves_of_different_keys_survive_rotate_every(
        setup in setup(false, false),
        ka in 0usize..4,
        kb_offset in 1usize..4,
        (a_remove, va, _a_touch) in edit(),
        (b_remove, vb, _b_touch) in edit(),
        pick in 0usize..20,
        gaps in prop::collection::vec(prop_oneof![0u64..2_000, 0u64..IDLE / 8], 7),
    ) {
        let edits = [
            Edit { key: ka, remove: a_remove, value: va, via_touch: false },
            Edit { key: (ka + kb_offset) % 4, remove: b_remove, value: vb, via_touch: false },
        ];
        let setup = Setup { rotate: Some(2 * MIN), ..setup };
        let r = race(setup, false, edits, pick, &gaps, 0)?;
        prop_assert_eq!(r.got, r.want, "{}", r.log);
    }
}

// ---- key naming -------------------------------------------------------------------

/// Redis Cluster's hash tag of a key: the bytes between the first `{` and
/// the next `}`, if that run is non-empty (keyHashSlot in cluster.c).
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

fn prefix() -> impl Strategy<Value = (String, bool)> {
    let piece = prop_oneof![
        4 => "[a-z0-9:_.-]{1,3}",
        1 => Just("{".to_owned()),
        1 => Just("}".to_owned()),
        1 => Just("{app}".to_owned()),
        1 => Just("é€".to_owned()),
    ];
    // Valid by construction: braces only with allow_hash_tag.
    (prop::collection::vec(piece, 1..5), any::<bool>()).prop_map(|(pieces, allow)| {
        let p = pieces.concat();
        let p = if allow { p } else { p.replace(['{', '}'], "") };
        (if p.is_empty() { "s:".to_owned() } else { p }, allow)
    })
}

fn nasty_user() -> impl Strategy<Value = UserId> {
    let c = prop_oneof![
        6 => prop::sample::select(vec![
            '{', '}', '*', '?', '[', ']', '\\', '%', ':', '7', 'B', 'D', 'a', 'Z', '-', '_',
            '.', '@', 'é', '€', '😀', ' ', '\u{feff}',
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(c, 1..12).prop_filter_map("not a valid user id", |cs| {
        UserId::new(cs.into_iter().collect::<String>()).ok()
    })
}

fn keyspace_engine(prefix: &str, allow: bool, plain: bool, padded: bool) -> Option<Engine> {
    Engine::new(Config {
        prefix: prefix.to_owned(),
        allow_hash_tag: allow,
        key_scheme: if plain {
            KeyScheme::Plain
        } else {
            KeyScheme::Hashed
        },
        id_format: if padded {
            IdFormat::Base64Padded
        } else {
            IdFormat::Base64url
        },
        ..Config::default()
    })
    .ok()
}

fn id_from(bytes: &[u8; 32], padded: bool) -> SessionId {
    let (text, format) = if padded {
        (STANDARD.encode(bytes), IdFormat::Base64Padded)
    } else {
        (URL_SAFE_NO_PAD.encode(bytes), IdFormat::Base64url)
    };
    SessionId::parse(&text, format).unwrap()
}

/// Undo the user-id escaping: `%XX` (upper-case hex) and the safe set only.
fn unescape_user(escaped: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = escaped.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = escaped.get(i + 1..i + 3)?;
                if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'@') => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn distinct_ids_and_user_ids_never_share_a_key(
        (prefix, allow) in prefix(),
        plain in any::<bool>(),
        padded in any::<bool>(),
        b1 in any::<[u8; 32]>(),
        flip in proptest::option::of((0usize..32, 1u8..=255)),
        b2 in any::<[u8; 32]>(),
        u1 in nasty_user(),
        u2 in nasty_user(),
    ) {
        let engine = keyspace_engine(&prefix, allow, plain, padded);
        prop_assert!(engine.is_some(), "prefix {:?} refused", prefix);
        let ks = engine.unwrap();
        let ks = ks.keyspace();
        let b2 = match flip {
            Some((i, m)) => { let mut b = b1; b[i] ^= m; b }
            None => b2,
        };
        let (id1, id2) = (id_from(&b1, padded), id_from(&b2, padded));
        let (s1, s2) = (ks.session_key(&id1), ks.session_key(&id2));
        let (k1, k2) = (ks.user_key(&u1), ks.user_key(&u2));
        if b1 != b2 {
            prop_assert_ne!(&s1, &s2, "two IDs share a session key");
        }
        if u1 != u2 {
            prop_assert_ne!(&k1, &k2, "two user ids share an index key");
        }
        for k in [&s1, &s2, &k1, &k2] {
            prop_assert!(k.starts_with(&prefix), "{k:?} lacks the prefix {prefix:?}");
        }
        for s in [&s1, &s2] {
            prop_assert!(s != &k1 && s != &k2, "a session key equals a user index key: {s:?}");
        }
        // Injective by construction: the escaped text decodes back to the id.
        for (u, k) in [(&u1, &k1), (&u2, &k2)] {
            let escaped = k.strip_prefix(&format!("{prefix}user:"));
            prop_assert!(escaped.is_some(), "{k:?}");
            let back = unescape_user(escaped.unwrap());
            prop_assert_eq!(back.as_deref(), Some(u.as_str()), "{:?}", k);
        }
    }

    #[test]
    fn no_user_input_picks_a_cluster_slot(
        (prefix, allow) in prefix(),
        plain in any::<bool>(),
        bytes in any::<[u8; 32]>(),
        user in nasty_user(),
    ) {
        let engine = keyspace_engine(&prefix, allow, plain, false);
        prop_assert!(engine.is_some(), "prefix {:?} refused", prefix);
        let engine = engine.unwrap();
        let ks = engine.keyspace();
        // Whatever tag the configured prefix has (none, unless it has one),
        // every key of ours has exactly that tag.
        let want = hash_tag(prefix.as_bytes());
        if !prefix.contains('{') {
            prop_assert!(want.is_none());
        }
        let uk = ks.user_key(&user);
        prop_assert_eq!(hash_tag(uk.as_bytes()), want, "user key {:?} (prefix {:?})", uk, prefix);
        let sk = ks.session_key(&id_from(&bytes, false));
        prop_assert_eq!(hash_tag(sk.as_bytes()), want, "session key {:?}", sk);
    }
}

// ---- hostile replies ----------------------------------------------------------------

/// Sessions in every state an op can be handed, from a real deployment.
struct Fixture {
    engine: Engine,
    cookie: String,
    id: String,
    member: String,
    user: UserId,
    new_dirty: Session,
    live: Session,
    live_dirty: Session,
    live_due: Session,
    rotated: Session,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        use sha2::Digest as _;
        let engine = Engine::new(Config {
            max_sessions_per_user: Some(2),
            rotate_every_ms: Some(2 * MIN),
            durable_revocation: Some(Durability {
                replicas: 1,
                timeout_ms: 50,
            }),
            client_binding: session_logic::config::BindingPolicy::Report,
            ..config(Setup {
                cap: None,
                rotate: None,
                plain: false,
                durable: false,
                preload: false,
            })
        })
        .unwrap();
        let mut mem = Memory::new();
        mem.set_replicas(1);
        let user = UserId::new("alice").unwrap();
        let at = |ms: u64| UnixMillis(T0 + ms);
        let mut run = |op: Op, ms: u64| run_plain(&mut mem, op, at(ms)).unwrap().unwrap();
        let mut s = engine.new_session();
        s.insert("cart", json!([1, 2])).unwrap();
        s.set_user(user.clone(), at(0));
        let new_dirty = s.clone();
        let created = run(engine.save(s, Entropy([1; 32]), at(0)), 0);
        let cookie = cookie_value(created.cookie().unwrap());
        let id = created.session().unwrap().id().unwrap().expose().to_owned();
        let member = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(id.as_bytes()));
        let live = run(engine.load(Some(&cookie), None, at(30_000)), 30_000)
            .into_session()
            .unwrap();
        let mut live_dirty = live.clone();
        live_dirty.insert("theme", json!("dark")).unwrap();
        live_dirty.remove("cart");
        live_dirty.set_user(UserId::new("bob").unwrap(), at(30_000));
        let live_due = run(engine.load(Some(&cookie), None, at(3 * MIN)), 3 * MIN)
            .into_session()
            .unwrap();
        assert!(live_due.rotation_due());
        let other = run(engine.load(Some(&cookie), None, at(3 * MIN)), 3 * MIN)
            .into_session()
            .unwrap();
        run(
            engine.regenerate(other, Entropy([2; 32]), at(3 * MIN)),
            3 * MIN,
        );
        let rotated = run(
            engine.load(Some(&cookie), None, at(3 * MIN + 1)),
            3 * MIN + 1,
        )
        .into_session()
        .unwrap();
        assert_eq!(rotated.status(), Status::Rotated);
        Fixture {
            engine,
            cookie,
            id,
            member,
            user,
            new_dirty,
            live,
            live_dirty,
            live_due,
            rotated,
        }
    })
}

const OPS: usize = 15;

fn build_op(fx: &Fixture, kind: usize, now: UnixMillis) -> Op {
    let e = Entropy([9; 32]);
    let en = &fx.engine;
    match kind {
        0 => en.load(Some(&fx.cookie), None, now),
        1 => en.load(Some(&fx.cookie), Some("agent"), now),
        2 => en.load_id(&fx.id, None, now),
        3 => en.save(fx.new_dirty.clone(), e, now),
        4 => en.save(fx.live_dirty.clone(), e, now),
        5 => en.save(fx.live_due.clone(), e, now),
        6 => en.regenerate(fx.live_dirty.clone(), e, now),
        7 => en.regenerate(fx.new_dirty.clone(), e, now),
        8 => en.destroy(fx.live.clone(), now),
        9 => en.touch(fx.live_dirty.clone(), now),
        10 => en.destroy_all_for_user(&fx.user, Some(&fx.live), now),
        11 => en.list_user_sessions(&fx.user, Some(&fx.live), now),
        12 => {
            let handle = {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                h.update(b"session-logic device\0");
                h.update(fx.member.as_bytes());
                URL_SAFE_NO_PAD.encode(h.finalize())[..22].to_owned()
            };
            en.destroy_user_session(&fx.user, &handle, now)
        }
        13 => en.save(fx.rotated.clone(), e, now),
        _ => en.regenerate(fx.live_due.clone(), e, now),
    }
}

fn bulk() -> impl Strategy<Value = Vec<u8>> {
    let fx = fixture();
    let words: Vec<String> = [
        "$v",
        "$created",
        "$deadline",
        "$touch",
        "$rev",
        "$user",
        "$auth_at",
        "$bind",
        "$rotated",
        "cart",
        "1",
        "0",
        "-1",
        "2",
        "1700000000000",
        "1700000300000",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "1e3",
        " 1",
        "",
        "null",
        "[1,2]",
        "{\"a\":",
        "\"x\"",
        "alice",
        "bob",
        "OK",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([fx.member.clone(), fx.id.clone()])
    .collect();
    prop_oneof![
        4 => prop::sample::select(words).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        1 => Just(Reply::Nil),
        2 => prop_oneof![Just(0i64), Just(1), Just(-1), Just(2), Just(i64::MIN), Just(i64::MAX), any::<i64>()]
            .prop_map(Reply::Int),
        4 => bulk().prop_map(Reply::Bulk),
        1 => "[ -~]{0,8}".prop_map(Reply::Simple),
        2 => (
            prop::sample::select(vec!["NOSCRIPT", "WRONGTYPE", "NOPERM", "ERR", "OOM", "MOVED 1 x:1", "READONLY", ""]),
            "[ -~]{0,12}",
        )
            .prop_map(|(p, r)| Reply::Error(format!("{p}{r}"))),
    ];
    // A plausible record: field/value pairs.
    let record = prop::collection::vec((bulk(), bulk()), 0..8).prop_map(|pairs| {
        Reply::Array(
            pairs
                .into_iter()
                .flat_map(|(f, v)| [Reply::Bulk(f), Reply::Bulk(v)])
                .collect(),
        )
    });
    let tree = leaf.prop_recursive(3, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Reply::Array)
    });
    prop_oneof![4 => tree, 1 => record]
}

const CODES: &[&str] = &[
    "config",
    "backend_timeout",
    "backend_unavailable",
    "backend_noperm",
    "backend_error",
    "backend_not_durable",
    "backend_collision",
    "decode",
    "too_large",
    "invalid_input",
    "usage",
];

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn no_panic_on_any_reply_shape(
        kind in 0usize..OPS,
        now in prop_oneof![
            4 => (0u64..10 * MIN).prop_map(|d| T0 + d),
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ],
        pool in prop::collection::vec(reply(), 1..16),
        shapes in prop::collection::vec(0u8..12, MAX_ROUNDS),
    ) {
        let fx = fixture();
        let mut op = build_op(fx, kind, UnixMillis(now));
        let mut next = pool.iter().cycle();
        let mut done = None;
        for shape in &shapes {
            let step = op.poll();
            prop_assert_eq!(&step, &op.poll(), "poll is not idempotent");
            match step {
                Step::Done(result) => {
                    done = Some(result);
                    break;
                }
                Step::Round(round) => match shape {
                    0 => op.handle_replies(next.by_ref().take(round.len() + 1).cloned().collect()),
                    1 => op.handle_failure(BackendFailure::Timeout),
                    2 => op.handle_failure(BackendFailure::Unavailable("down".into())),
                    _ => op.handle_replies(next.by_ref().take(round.len()).cloned().collect()),
                },
            }
        }
        let done = match done {
            Some(d) => d,
            None => match op.poll() {
                Step::Done(d) => d,
                Step::Round(r) => {
                    return Err(TestCaseError::fail(format!(
                        "op {kind} still wants round {r:?} after {MAX_ROUNDS} rounds"
                    )))
                }
            },
        };
        if let Err(e) = &done {
            prop_assert!(CODES.contains(&e.code()), "untyped error code {}", e.code());
        }
    }
}

// ---- minimal reproducers of what the properties found ------------------------------
//
// Each is a shrunk counterexample of `logout_everywhere_leaves_no_prior_session_of_that_user`,
// one per distinct cause, so a fix can be checked cause by cause. `Load`
// targets are multiples of 4: target 4·i loads the i-th ID handed out.

fn repro(setup: Setup, acts: &[Act]) {
    let checks = Checks {
        logout: true,
        ..Checks::default()
    };
    if let Err(e) = run_sequence(setup, checks, 1, acts) {
        panic!("{}", message(&e));
    }
}

const REPRO: Setup = Setup {
    cap: None,
    rotate: None,
    plain: false,
    durable: false,
    preload: true,
};

/// cap 1: request A holds session #1 (no user); a parallel request destroys
/// it; A signs in as alice and saves. save.lua answers 0 (gone), but the
/// index update in the same round already added #1 and evicted alice's
/// other session #0 from her index; the `Gone` path drops the eviction list,
/// so #0 is never deleted: live, bound to alice, invisible to logout-everywhere
/// (and the cap is exceeded).
#[test]
fn repro_eviction_is_dropped_when_a_save_finds_its_session_gone() {
    repro(
        Setup {
            cap: Some(1),
            ..REPRO
        },
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Create {
                user: None,
                key: 0,
                val: 2,
            },
            Act::Load {
                slot: 0,
                target: Some(4),
            },
            Act::Load {
                slot: 1,
                target: Some(4),
            },
            Act::Destroy { slot: 1 },
            Act::SetUser { slot: 0, user: 0 },
            Act::Save { slot: 0 },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// cap 1, the regenerate path: request B holds alice's session #0; a second
/// sign-in (#1) evicts and deletes #0; B then regenerates #0. Its round
/// [create new, retire #0, index(+new −#0)] evicts #1 from the index (the
/// new member is kept), retire answers 0, and the fail-closed cleanup
/// deletes the new record but never the evicted #1: live, unindexed.
#[test]
fn repro_eviction_is_dropped_when_a_regenerate_fails_closed() {
    repro(
        Setup {
            cap: Some(1),
            ..REPRO
        },
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Load {
                slot: 1,
                target: Some(0),
            },
            Act::Create {
                user: Some(0),
                key: 0,
                val: 2,
            },
            Act::Regenerate { slot: 1 },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// cap 1: the reply to a create's round [create, index] is lost after Redis
/// ran it (a timeout). index.lua already removed the evicted #0 from the
/// index; the `DEL` that should follow is never sent. No Cluster needed.
#[test]
fn repro_eviction_is_lost_when_the_index_round_reply_is_lost() {
    repro(
        Setup {
            cap: Some(1),
            ..REPRO
        },
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Fail {
                round: 0,
                mask: 2,
                prefix: true,
            },
            Act::Create {
                user: Some(0),
                key: 0,
                val: 2,
            },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// Standalone Redis with an empty script cache for retire.lua (after a
/// restart, failover or SCRIPT FLUSH): regenerate's round [create, retire,
/// index] runs create and index (which removes the old member from alice's
/// index) while retire gets NOSCRIPT; the EVAL resend then times out. The op
/// fails closed, but the old session stays live and unindexed.
#[test]
fn repro_regenerate_unindexes_the_old_session_before_it_is_retired() {
    repro(
        Setup {
            preload: false,
            ..REPRO
        },
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Load {
                slot: 0,
                target: Some(0),
            },
            Act::Fail {
                round: 1,
                mask: 0,
                prefix: true,
            },
            Act::Regenerate { slot: 0 },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// Cluster: logout-everywhere's second round [DEL #0, DEL #1, ZREM index]
/// goes to several nodes; the index node applies the ZREM, the session
/// nodes time out. The op reports a backend error, and every retry now finds
/// an empty index and reports success while both sessions live on.
#[test]
fn repro_logout_zrem_lands_while_the_dels_do_not() {
    repro(
        REPRO,
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Create {
                user: Some(0),
                key: 0,
                val: 2,
            },
            Act::Fail {
                round: 1,
                mask: 0b100,
                prefix: false,
            },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// Cluster: a save that moves session #0 from alice to bob sends [save,
/// index(alice −#0), index(bob +#0)]; only alice's index node applies. The
/// record still says alice, alice's index no longer lists it.
#[test]
fn repro_user_change_unindexes_before_the_record_changes() {
    repro(
        REPRO,
        &[
            Act::Create {
                user: Some(0),
                key: 0,
                val: 1,
            },
            Act::Load {
                slot: 0,
                target: Some(0),
            },
            Act::SetUser { slot: 0, user: 1 },
            Act::Fail {
                round: 0,
                mask: 0b010,
                prefix: false,
            },
            Act::Save { slot: 0 },
            Act::LogoutAll {
                user: 0,
                keep: None,
            },
        ],
    );
}

/// Root cause of `parallel_saves_of_different_keys_survive_rotate_every`,
/// shown with an explicit regenerate: requests A and B load the session; A
/// adds `b` and its save is acknowledged (`Saved`); B then regenerates. The
/// new record is B's snapshot, taken before A's write, and the old record
/// (which holds A's write) becomes a marker: A's acknowledged write is gone.
#[test]
fn repro_a_save_acknowledged_before_a_parallel_regenerate_is_lost() {
    let engine = Engine::new(config(REPRO)).unwrap();
    let mut mem = Memory::new();
    let at = UnixMillis(T0);
    let mut run = |op: Op| run_plain(&mut mem, op, at).unwrap().unwrap();
    let mut s = engine.new_session();
    s.insert("a", json!(1)).unwrap();
    let created = run(engine.save(s, Entropy([1; 32]), at));
    let cookie = cookie_value(created.cookie().unwrap());
    let mut a = run(engine.load(Some(&cookie), None, at))
        .into_session()
        .unwrap();
    let b = run(engine.load(Some(&cookie), None, at))
        .into_session()
        .unwrap();
    a.insert("b", json!(2)).unwrap();
    let saved = run(engine.save(a, Entropy([2; 32]), at));
    assert!(matches!(saved, Outcome::Saved { .. }), "{saved:?}");
    let renewed = run(engine.regenerate(b, Entropy([3; 32]), at));
    let cookie = cookie_value(renewed.cookie().unwrap());
    let after = run(engine.load(Some(&cookie), None, at));
    let data = after
        .session()
        .map(|s| s.data().clone())
        .unwrap_or_default();
    assert_eq!(
        data.get("b"),
        Some(&json!(2)),
        "request A's acknowledged save of b was lost by B's regenerate: {data:?}"
    );
}

/// A sign-in save (no regenerate) whose round landed only partly: the
/// record was bound to alice but her index entry was lost, so logout
/// everywhere missed a session the browser holds. First seen with the round
/// cut after its first command (the entry was second); then, once the entry
/// went first, with a Cluster-style partial round that applied only the
/// write (another node). The entry now has a round of its own before the
/// write, for saves and touches alike.
#[test]
fn repro_a_partly_applied_sign_in_never_leaves_a_bound_session_unindexed() {
    let cut = Act::Fail {
        round: 0,
        mask: 127,
        prefix: true,
    };
    let write_only = Act::Fail {
        round: 0,
        mask: 2,
        prefix: false,
    };
    for (fail, write) in [
        (cut, Act::Save { slot: 1 }),
        (write_only, Act::Save { slot: 1 }),
        (write_only, Act::Touch { slot: 1 }),
    ] {
        repro(
            REPRO,
            &[
                Act::Create {
                    user: None,
                    key: 0,
                    val: 0,
                },
                Act::Load {
                    slot: 1,
                    target: Some(0),
                },
                Act::SetUser { slot: 1, user: 0 },
                fail,
                write,
                Act::LogoutAll {
                    user: 0,
                    keep: None,
                },
            ],
        );
    }
}
