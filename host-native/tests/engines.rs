//! The two engines of [`Rules`] are one set of rules: every operation kind,
//! run natively and from the wasm-abi module against copies of the same
//! in-memory keyspace at the same instant, sends identical rounds, ends in
//! identical outcomes (or errors) and leaves identical keyspaces. Includes a
//! transport failure mid-operation and a `NOSCRIPT` fallback round.
//!
//! Needs `--features wasm-engine` and the module from `scripts/steps/wasm`.
#![cfg(feature = "wasm-engine")]
// The fixture and the recording backend live outside #[test] fns (where
// clippy.toml already allows these): a broken setup should abort the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Mutex;

use host_native::executor::BoxFuture;
use host_native::rules::NO_ENTROPY;
use host_native::{Backend, Rules, RulesError};
use serde_json::json;
use session_logic::conformance::VectorOp;
use session_logic::memory::Memory;
use session_logic::step::BackendFailure;
use session_logic::{Config, Engine, Entropy, Outcome, Reply, Round, Session, UnixMillis, UserId};

const T0: UnixMillis = UnixMillis(1_700_000_000_000);
const T1: UnixMillis = UnixMillis(1_700_000_060_000);

/// An in-memory backend at a fixed instant that records every round and
/// can fail one round instead of answering it.
struct Recorder {
    memory: Mutex<Memory>,
    now: UnixMillis,
    rounds: Mutex<Vec<Round>>,
    fail_round: Option<usize>,
}

impl Recorder {
    fn new(memory: Memory, now: UnixMillis, fail_round: Option<usize>) -> Self {
        Recorder {
            memory: Mutex::new(memory),
            now,
            rounds: Mutex::new(Vec::new()),
            fail_round,
        }
    }
}

impl Backend for Recorder {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        let mut rounds = self.rounds.lock().unwrap();
        let index = rounds.len();
        rounds.push(round.clone());
        let result = if self.fail_round == Some(index) {
            Err(BackendFailure::Unavailable(
                "connection refused (test)".into(),
            ))
        } else {
            Ok(self.memory.lock().unwrap().execute_round(round, self.now))
        };
        Box::pin(std::future::ready(result))
    }

    fn kind(&self) -> &'static str {
        "recorder"
    }
}

fn cookie_of(outcome: &Outcome) -> String {
    outcome
        .cookie()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A keyspace with two sessions of `alice` and one anonymous one; returns
/// it with alice's first session as loaded and its cookie.
async fn fixture(rules: &Rules) -> (Memory, Session, String) {
    let backend = Recorder::new(Memory::new(), T0, None);
    let engine = Engine::new(Config::default()).unwrap();
    let mut cookies = Vec::new();
    for (i, user) in [Some("alice"), Some("alice"), None].into_iter().enumerate() {
        let mut s = engine.new_session();
        s.insert("n", json!(i)).unwrap();
        s.insert("f", json!(0.1 + i as f64)).unwrap();
        if let Some(user) = user {
            s.set_user(UserId::new(user).unwrap(), T0);
        }
        let entropy = Entropy([u8::try_from(i).unwrap() + 1; 32]);
        let saved = rules
            .run(VectorOp::Save { session: s }, T0, entropy, &backend)
            .await
            .unwrap();
        cookies.push(cookie_of(&saved));
    }
    let loaded = rules
        .run(
            VectorOp::Load {
                touch_hint: None,
                cookie: Some(cookies[0].clone()),
                client: None,
            },
            T0,
            NO_ENTROPY,
            &backend,
        )
        .await
        .unwrap();
    let Outcome::Loaded(session) = loaded else {
        panic!("fixture session did not load: {loaded:?}");
    };
    let memory = backend.memory.into_inner().unwrap();
    (memory, session, cookies[0].clone())
}

struct Case {
    name: &'static str,
    op: VectorOp,
    entropy: Entropy,
    fail_round: Option<usize>,
    flush_scripts: bool,
}

fn case(name: &'static str, op: VectorOp) -> Case {
    Case {
        name,
        op,
        entropy: Entropy([42; 32]),
        fail_round: None,
        flush_scripts: false,
    }
}

type Ran = (Result<Outcome, RulesError>, Vec<Round>, Memory);

async fn run(rules: &Rules, case: &Case, memory: &Memory) -> Ran {
    let mut memory = memory.clone();
    if case.flush_scripts {
        memory.flush_scripts();
    }
    let backend = Recorder::new(memory, T1, case.fail_round);
    let result = rules.run(case.op.clone(), T1, case.entropy, &backend).await;
    let rounds = backend.rounds.into_inner().unwrap();
    (result, rounds, backend.memory.into_inner().unwrap())
}

#[tokio::test]
async fn every_op_kind_sends_the_same_rounds_and_ends_the_same_on_both_engines() {
    let engine = Engine::new(Config::default()).unwrap();
    let native = Rules::native(engine.clone());
    let wasm = Rules::wasm(engine.clone(), &common::wasm_module()).unwrap();
    let (memory, alice, cookie) = fixture(&native).await;

    let mut changed = alice.clone();
    changed.insert("n", json!("changed")).unwrap();
    let mut fresh = engine.new_session();
    fresh.insert("new", json!({"a": [1, 2.5, null]})).unwrap();
    let handle = match native
        .run(
            VectorOp::ListUserSessions {
                user: "alice".into(),
                current: Some(alice.clone()),
            },
            T1,
            NO_ENTROPY,
            &Recorder::new(memory.clone(), T1, None),
        )
        .await
        .unwrap()
    {
        Outcome::Devices(devices) => devices.into_iter().find(|d| !d.current).unwrap().handle,
        other => panic!("{other:?}"),
    };

    let cases = vec![
        case(
            "load",
            VectorOp::Load {
                touch_hint: None,
                cookie: Some(cookie.clone()),
                client: None,
            },
        ),
        case(
            "load without cookie",
            VectorOp::Load {
                touch_hint: None,
                cookie: None,
                client: None,
            },
        ),
        case(
            "load garbage",
            VectorOp::Load {
                touch_hint: None,
                cookie: Some("sid=%00junk".into()),
                client: Some("UA".into()),
            },
        ),
        case(
            "load_id",
            VectorOp::LoadId {
                id: cookie.trim_start_matches("sid=").to_owned(),
                client: None,
            },
        ),
        case(
            "save one key",
            VectorOp::Save {
                session: changed.clone(),
            },
        ),
        case(
            "save clean",
            VectorOp::Save {
                session: alice.clone(),
            },
        ),
        case("first write", VectorOp::Save { session: fresh }),
        case(
            "regenerate",
            VectorOp::Regenerate {
                session: alice.clone(),
            },
        ),
        case(
            "destroy",
            VectorOp::Destroy {
                session: alice.clone(),
            },
        ),
        case(
            "touch",
            VectorOp::Touch {
                session: alice.clone(),
            },
        ),
        case(
            "destroy_all_for_user keep",
            VectorOp::DestroyAllForUser {
                user: "alice".into(),
                keep: Some(alice.clone()),
            },
        ),
        case(
            "destroy_all_for_user",
            VectorOp::DestroyAllForUser {
                user: "alice".into(),
                keep: None,
            },
        ),
        case(
            "list_user_sessions",
            VectorOp::ListUserSessions {
                user: "alice".into(),
                current: Some(alice.clone()),
            },
        ),
        case(
            "destroy_user_session",
            VectorOp::DestroyUserSession {
                user: "alice".into(),
                handle,
            },
        ),
        case(
            "destroy_user_session bad user",
            VectorOp::DestroyUserSession {
                user: String::new(),
                handle: "x".into(),
            },
        ),
        Case {
            fail_round: Some(0),
            ..case(
                "save, backend down",
                VectorOp::Save {
                    session: changed.clone(),
                },
            )
        },
        Case {
            fail_round: Some(1),
            ..case(
                "destroy_all_for_user, down in round 2",
                VectorOp::DestroyAllForUser {
                    user: "alice".into(),
                    keep: None,
                },
            )
        },
        Case {
            flush_scripts: true,
            ..case(
                "save after SCRIPT FLUSH",
                VectorOp::Save { session: changed },
            )
        },
    ];

    let mut kinds = std::collections::BTreeSet::new();
    for case in &cases {
        kinds.insert(case.op.name());
        let (n_result, n_rounds, n_memory) = run(&native, case, &memory).await;
        let (w_result, w_rounds, w_memory) = run(&wasm, case, &memory).await;
        assert_eq!(n_result, w_result, "{}: outcomes differ", case.name);
        assert_eq!(n_rounds, w_rounds, "{}: rounds differ", case.name);
        assert_eq!(
            n_memory.snapshot(T1),
            w_memory.snapshot(T1),
            "{}: keyspaces differ",
            case.name
        );
        if case.fail_round.is_some() {
            assert_eq!(
                n_result.unwrap_err().code(),
                "backend_unavailable",
                "{}",
                case.name
            );
        }
        if case.flush_scripts {
            assert!(n_rounds.len() >= 2, "{}: no EVAL fallback round", case.name);
        }
    }
    assert_eq!(kinds.len(), 8, "every op kind is covered: {kinds:?}");
}

/// Session data crosses into the module and back as JSON text. Floats must
/// survive that trip bit for bit, or the wasm engine would store (and hand
/// back) a neighbouring number where the native one keeps the original.
#[tokio::test]
async fn floats_survive_the_trip_through_the_module_bit_for_bit() {
    let engine = Engine::new(Config::default()).unwrap();
    let native = Rules::native(engine.clone());
    let wasm = Rules::wasm(engine.clone(), &common::wasm_module()).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut floats = Vec::new();
    while floats.len() < 2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            floats.push(f);
        }
    }
    floats.extend([0.1, 1e-300, 5e-324, f64::MAX, 2.2250738585072014e-308]);
    let mut session = engine.new_session();
    session.insert("floats", json!(floats)).unwrap();
    let case = case("save floats", VectorOp::Save { session });
    let (n_result, n_rounds, _) = run(&native, &case, &Memory::new()).await;
    let (w_result, w_rounds, _) = run(&wasm, &case, &Memory::new()).await;
    assert_eq!(n_rounds, w_rounds, "the stored record differs");
    let saved = |r: Result<Outcome, RulesError>| match r.unwrap() {
        Outcome::Saved { session, .. } => session.get("floats").unwrap().clone(),
        other => panic!("{other:?}"),
    };
    let (n, w) = (saved(n_result), saved(w_result));
    let bits = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap().to_bits())
            .collect()
    };
    let expected: Vec<u64> = floats.iter().map(|f| f.to_bits()).collect();
    assert_eq!(bits(&n), expected, "native changed a float");
    assert_eq!(bits(&w), expected, "the wasm engine changed a float");
}
