//! What `--engine wasm` costs per operation compared with the linked core:
//! a read-only load, a save of one changed key, and the first write of a new
//! session, each on a fresh copy of an in-memory keyspace (so the backend is
//! near free and the numbers are the engines'). Run after `scripts/steps/wasm`:
//!
//! ```text
//! cargo bench -p host-native --features wasm-engine --bench engines
//! ```

// A bench is a test: setup failures should abort loudly.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use host_native::executor::BoxFuture;
use host_native::rules::{NO_ENTROPY, WasmModule};
use host_native::{Backend, Rules};
use serde_json::json;
use session_logic::conformance::VectorOp;
use session_logic::memory::Memory;
use session_logic::step::BackendFailure;
use session_logic::{Config, Engine, Entropy, Outcome, Reply, Round, Session, UnixMillis};

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// The core's in-memory keyspace at a fixed instant.
struct Fixed(Mutex<Memory>);

impl Backend for Fixed {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        let replies = self.0.lock().unwrap().execute_round(round, NOW);
        Box::pin(std::future::ready(Ok(replies)))
    }

    fn kind(&self) -> &'static str {
        "fixed-memory"
    }
}

/// `target/wasm-abi/session_logic.wasm`, or `SESSION_LOGIC_WASM` (as in the
/// tests crate: measure a module built from a changed core side by side).
fn wasm_module() -> WasmModule {
    let path = std::env::var_os("SESSION_LOGIC_WASM").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-abi/session_logic.wasm"),
        std::path::PathBuf::from,
    );
    WasmModule::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A keyspace holding one session with a few keys; that session, loaded.
fn stored(rt: &tokio::runtime::Runtime, rules: &Rules, engine: &Engine) -> (Memory, Session) {
    let backend = Fixed(Mutex::new(Memory::new()));
    let mut s = engine.new_session();
    for (k, v) in [
        ("user", json!("alice")),
        ("cart", json!([1, 2, 3])),
        ("n", json!(7)),
    ] {
        s.insert(k, v).unwrap();
    }
    let saved = rt
        .block_on(rules.run(
            VectorOp::Save { session: s },
            NOW,
            Entropy([1; 32]),
            &backend,
        ))
        .unwrap();
    let cookie = saved
        .cookie()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let loaded = rt
        .block_on(rules.run(
            VectorOp::Load {
                touch_hint: None,
                cookie: Some(cookie),
                client: None,
            },
            NOW,
            NO_ENTROPY,
            &backend,
        ))
        .unwrap();
    let Outcome::Loaded(session) = loaded else {
        panic!("{loaded:?}")
    };
    (backend.0.into_inner().unwrap(), session)
}

fn engines(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let engine = Engine::new(Config::default()).unwrap();
    let native = Rules::native(engine.clone());
    let wasm = Rules::wasm(engine.clone(), &wasm_module()).unwrap();
    let (memory, session) = stored(&rt, &native, &engine);
    let cookie = {
        // The same session's cookie, as a browser would send it.
        let id = session.id().unwrap().expose().to_owned();
        format!("sid={id}")
    };
    let mut changed = session.clone();
    changed.insert("n", json!(8)).unwrap();
    let mut fresh = engine.new_session();
    fresh.insert("user", json!("bob")).unwrap();

    let ops: [(&str, VectorOp, Memory); 3] = [
        (
            "load_read_only",
            VectorOp::Load {
                touch_hint: None,
                cookie: Some(cookie),
                client: None,
            },
            memory.clone(),
        ),
        (
            "save_one_key",
            VectorOp::Save { session: changed },
            memory.clone(),
        ),
        (
            "first_write_create",
            VectorOp::Save { session: fresh },
            Memory::new(),
        ),
    ];
    for (name, op, memory) in ops {
        let mut group = c.benchmark_group(name);
        for rules in [&native, &wasm] {
            // Check the op does what its name says before timing it.
            let check = Fixed(Mutex::new(memory.clone()));
            let outcome = rt
                .block_on(rules.run(op.clone(), NOW, Entropy([9; 32]), &check))
                .unwrap();
            assert!(
                matches!(
                    (name, &outcome),
                    ("load_read_only", Outcome::Loaded(_)) | (_, Outcome::Saved { .. })
                ),
                "{name}: {outcome:?}"
            );
            group.bench_function(rules.kind(), |b| {
                b.iter_batched(
                    || (Fixed(Mutex::new(memory.clone())), op.clone()),
                    |(backend, op)| {
                        black_box(
                            rt.block_on(rules.run(op, NOW, Entropy([9; 32]), &backend))
                                .unwrap(),
                        )
                    },
                    BatchSize::SmallInput,
                );
            });
        }
        group.finish();
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
