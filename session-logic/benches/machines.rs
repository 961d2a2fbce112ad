//! # machines: nanoseconds per operation, rules and in-memory backend
//!
//! ```sh
//! cargo bench -p session-logic --bench machines                 # all, ~1 minute
//! cargo bench -p session-logic --bench machines -- load_        # a subset, by name
//! cargo bench -p session-logic --bench machines -- --measurement-time 10   # tighter
//! ```
//!
//! Each benchmark drives one operation to completion with the host loop
//! (`poll` / `execute_round` / `handle_replies`) against [`Memory`], the
//! in-memory backend, with the default config and its scripts loaded. State
//! an operation changes (the keyspace, the session it consumes) is cloned in
//! `iter_batched` setup and dropped after the timed part: criterion times
//! neither.
//!
//! The `rules_only_*` benchmarks feed the op a reply vector recorded once
//! from the backend instead of executing it: the cost of the rules alone
//! (parsing the cookie, building argv, decoding replies, the outcome). The
//! gap to the matching full benchmark is the in-memory backend's share.
//!
//! Warm-up 1 s and measurement 2 s per benchmark are set in code to keep a
//! run short; the usual criterion flags override them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use session_logic::memory::Memory;
use session_logic::scripts::Script;
use session_logic::{
    Command, Config, Engine, Entropy, Op, Outcome, Reply, Session, Step, UnixMillis, UserId,
};

const T0: UnixMillis = UnixMillis(1_700_000_000_000);
/// 10 s after creation: live, touch (every 60 s) not due.
const SOON: UnixMillis = UnixMillis(T0.0 + 10_000);
/// 2 min after creation: the load folds a touch into its command.
const TOUCH_DUE: UnixMillis = UnixMillis(T0.0 + 120_000);

/// The host loop.
fn drive(mut op: Op, redis: &mut Memory, now: UnixMillis) -> Outcome {
    loop {
        match op.poll() {
            Step::Round(round) => op.handle_replies(redis.execute_round(&round, now)),
            Step::Done(result) => return result.expect("operation failed"),
        }
    }
}

/// Drive `op` against the backend and keep every round's replies.
fn record(mut op: Op, redis: &mut Memory, now: UnixMillis) -> Vec<Vec<Reply>> {
    let mut rounds = Vec::new();
    loop {
        match op.poll() {
            Step::Round(round) => {
                let replies = redis.execute_round(&round, now);
                rounds.push(replies.clone());
                op.handle_replies(replies);
            }
            Step::Done(result) => {
                result.expect("operation failed");
                return rounds;
            }
        }
    }
}

/// The host loop with recorded replies instead of a backend.
fn replay(mut op: Op, recorded: Vec<Vec<Reply>>) -> Outcome {
    for replies in recorded {
        match op.poll() {
            Step::Round(_) => op.handle_replies(replies),
            Step::Done(_) => panic!("the op finished early"),
        }
    }
    match op.poll() {
        Step::Done(result) => result.expect("operation failed"),
        Step::Round(_) => panic!("the op wants more rounds than were recorded"),
    }
}

struct Fixture {
    engine: Engine,
    /// Scripts loaded; one live guest session; `bob` with 10 sessions.
    redis: Memory,
    /// The guest's `Cookie` header.
    cookie: String,
    /// The guest's session as loaded at `SOON`.
    session: Session,
    bob: UserId,
}

fn fixture() -> Fixture {
    let engine = Engine::new(Config::default()).unwrap();
    let mut redis = Memory::new();
    for script in Script::ALL {
        let load = ["SCRIPT", "LOAD", script.source()].map(Vec::from);
        redis.execute(&Command(load.to_vec()), T0);
    }
    let new = |redis: &mut Memory| {
        let op = engine.load(None, None, T0);
        drive(op, redis, T0).into_session().unwrap()
    };
    let mut guest = new(&mut redis);
    guest.insert("cart", json!(["apple"])).unwrap();
    let saved = drive(engine.save(guest, Entropy([1; 32]), T0), &mut redis, T0);
    let cookie = saved
        .cookie()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let bob = UserId::new("bob").unwrap();
    for n in 0..10u8 {
        let mut s = new(&mut redis);
        s.set_user(bob.clone(), T0);
        drive(engine.save(s, Entropy([100 + n; 32]), T0), &mut redis, T0);
    }
    let session = match drive(engine.load(Some(&cookie), None, SOON), &mut redis, SOON) {
        Outcome::Loaded(s) => s,
        other => panic!("fixture: {other:?}"),
    };
    Fixture {
        engine,
        redis,
        cookie,
        session,
        bob,
    }
}

fn machines(c: &mut Criterion) {
    let f = fixture();
    let e = &f.engine;
    let cookie = Some(f.cookie.as_str());
    let small = BatchSize::SmallInput;
    let with_change = || {
        let mut s = f.session.clone();
        s.insert("cart", json!(["apple", "pear"])).unwrap();
        s
    };

    c.bench_function("load_read_only", |b| {
        let mut redis = f.redis.clone();
        b.iter(|| drive(e.load(black_box(cookie), None, SOON), &mut redis, SOON));
    });
    c.bench_function("load_touch_due", |b| {
        b.iter_batched_ref(
            || f.redis.clone(),
            |redis| drive(e.load(black_box(cookie), None, TOUCH_DUE), redis, TOUCH_DUE),
            small,
        );
    });
    c.bench_function("load_no_cookie", |b| {
        let mut redis = f.redis.clone();
        b.iter(|| drive(e.load(black_box(None), None, SOON), &mut redis, SOON));
    });
    c.bench_function("load_malformed", |b| {
        let mut redis = f.redis.clone();
        let bad = Some("sid=../../admin; theme=dark");
        b.iter(|| drive(e.load(black_box(bad), None, SOON), &mut redis, SOON));
    });
    c.bench_function("save_one_changed_key", |b| {
        b.iter_batched(
            || (f.redis.clone(), with_change()),
            |(mut redis, s)| {
                (
                    drive(e.save(s, Entropy([2; 32]), SOON), &mut redis, SOON),
                    redis,
                )
            },
            small,
        );
    });
    c.bench_function("first_write_create", |b| {
        let mut fresh = e.new_session();
        fresh.insert("cart", json!(["apple"])).unwrap();
        b.iter_batched(
            || (f.redis.clone(), fresh.clone()),
            |(mut redis, s)| {
                (
                    drive(e.save(s, Entropy([3; 32]), SOON), &mut redis, SOON),
                    redis,
                )
            },
            small,
        );
    });
    c.bench_function("regenerate", |b| {
        b.iter_batched(
            || (f.redis.clone(), f.session.clone()),
            |(mut redis, s)| {
                let op = e.regenerate(s, Entropy([4; 32]), SOON);
                (drive(op, &mut redis, SOON), redis)
            },
            small,
        );
    });
    c.bench_function("destroy", |b| {
        b.iter_batched(
            || (f.redis.clone(), f.session.clone()),
            |(mut redis, s)| (drive(e.destroy(s, SOON), &mut redis, SOON), redis),
            small,
        );
    });
    c.bench_function("logout_everywhere_10", |b| {
        b.iter_batched(
            || f.redis.clone(),
            |mut redis| {
                let op = e.destroy_all_for_user(&f.bob, None, SOON);
                match drive(op, &mut redis, SOON) {
                    Outcome::Destroyed { count: 10, .. } => redis,
                    other => panic!("{other:?}"),
                }
            },
            small,
        );
    });

    let load_replies = record(e.load(cookie, None, SOON), &mut f.redis.clone(), SOON);
    c.bench_function("rules_only_load", |b| {
        b.iter_batched(
            || load_replies.clone(),
            |replies| replay(e.load(black_box(cookie), None, SOON), replies),
            small,
        );
    });
    let save = |s| e.save(s, Entropy([2; 32]), SOON);
    let save_replies = record(save(with_change()), &mut f.redis.clone(), SOON);
    c.bench_function("rules_only_save", |b| {
        b.iter_batched(
            || (save_replies.clone(), with_change()),
            |(replies, s)| replay(save(s), replies),
            small,
        );
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = machines
}
criterion_main!(benches);
