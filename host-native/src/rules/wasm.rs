//! The wasm engine: the core's wasm-abi module (`scripts/steps/wasm`) under
//! wasmtime, compiled once, instantiated into a small pool of stores, and
//! driven by the replay loop described in the parent module.
//!
//! A wasmtime `Store` is `Send` but not `Sync`, and a call needs `&mut`: so
//! idle instances wait in a `Mutex<Vec<_>>`; a call takes one out (or
//! instantiates a new one, ~microseconds once the module is compiled), runs
//! without holding the lock, and puts it back. An instance that trapped, or
//! whose memory grew past [`KEEP_MEMORY`] (memory never shrinks), is
//! dropped instead, so one odd request cannot poison or bloat the pool.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use session_logic::conformance::{VectorFailure, VectorOp, VectorOutput, entropy_hex};
use session_logic::{Config, Entropy, Outcome, Reply, Round, UnixMillis};
use wasmtime::{Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};

use super::{RulesError, WasmError};
use crate::executor::Backend;

/// Most rounds an operation may take (the core's own vector runner stops at
/// the same bound; every real operation needs at most three).
const MAX_ROUNDS: usize = 64;
/// Hard cap on one instance's linear memory: a runaway input fails with a
/// trap instead of taking the host's memory.
const MEMORY_LIMIT: usize = 256 << 20;
/// Instances whose memory grew beyond this are not reused.
const KEEP_MEMORY: usize = 16 << 20;
/// Idle instances kept for reuse (more are created under load and dropped).
const MAX_IDLE: usize = 32;

/// A compiled wasm-abi module. Cheap to clone (wasmtime shares the code).
#[derive(Clone)]
pub struct WasmModule {
    engine: wasmtime::Engine,
    module: Module,
    path: String,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WasmModule {
    /// Read and compile the module at `path` (cranelift: a second or so;
    /// do it once at start-up), and check it has the wasm-abi shape by
    /// instantiating it once with no imports.
    pub fn load(path: &Path) -> Result<Self, WasmError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(WasmError::Missing { path: shown });
        }
        let bytes = std::fs::read(path).map_err(|e| WasmError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Self::compile(&bytes, shown)
    }

    /// Compile a module from its bytes (e.g. embedded), checked like
    /// [`load`](Self::load).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WasmError> {
        Self::compile(bytes, "<bytes>".to_owned())
    }

    fn compile(bytes: &[u8], path: String) -> Result<Self, WasmError> {
        let engine = wasmtime::Engine::default();
        let module = Module::new(&engine, bytes).map_err(|e| WasmError::Invalid {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        let compiled = WasmModule {
            engine,
            module,
            path,
        };
        Abi::new(&compiled)?;
        Ok(compiled)
    }

    /// Where the module came from (for logs).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One instance of the module and its three exports.
struct Abi {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    dealloc: TypedFunc<(u32, u32), ()>,
    run: TypedFunc<(u32, u32), u64>,
}

impl Abi {
    fn new(module: &WasmModule) -> Result<Self, WasmError> {
        let invalid = |message: String| WasmError::Invalid {
            path: module.path.clone(),
            message,
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(1)
            .build();
        let mut store = Store::new(&module.engine, limits);
        store.limiter(|limits| limits);
        // No imports: a module that needs any (e.g. a wasm-bindgen build)
        // fails here, which is the check that it is the wasm-abi build.
        let instance = Instance::new(&mut store, &module.module, &[])
            .map_err(|e| invalid(format!("cannot instantiate with no imports: {e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| invalid("no exported `memory`".into()))?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "sl_alloc")
            .map_err(|e| invalid(format!("sl_alloc: {e:#}")))?;
        let dealloc = instance
            .get_typed_func::<(u32, u32), ()>(&mut store, "sl_dealloc")
            .map_err(|e| invalid(format!("sl_dealloc: {e:#}")))?;
        let run = instance
            .get_typed_func::<(u32, u32), u64>(&mut store, "sl_run")
            .map_err(|e| invalid(format!("sl_run: {e:#}")))?;
        Ok(Abi {
            store,
            memory,
            alloc,
            dealloc,
            run,
        })
    }

    /// The host call sequence of the ABI: alloc, copy in, run, free the
    /// input, copy the output out, free it.
    fn call(&mut self, input: &[u8]) -> Result<Vec<u8>, WasmError> {
        let trap = |call: &'static str| {
            move |e: wasmtime::Error| WasmError::Trap {
                call,
                message: format!("{e:#}"),
            }
        };
        let contract = |m: &str| WasmError::Contract(m.to_owned());
        let len = u32::try_from(input.len()).map_err(|_| contract("input longer than 4 GiB"))?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(trap("sl_alloc"))?;
        if ptr == 0 {
            return Err(WasmError::Trap {
                call: "sl_alloc",
                message: format!("out of memory for {len} input bytes"),
            });
        }
        let at = usize::try_from(ptr).map_err(|_| contract("pointer does not fit usize"))?;
        self.memory
            .write(&mut self.store, at, input)
            .map_err(|_| contract("sl_alloc returned a buffer outside memory"))?;
        let packed = self
            .run
            .call(&mut self.store, (ptr, len))
            .map_err(trap("sl_run"))?;
        self.dealloc
            .call(&mut self.store, (ptr, len))
            .map_err(trap("sl_dealloc"))?;
        let (out_ptr, out_len) = unpack(packed);
        if out_ptr == 0 {
            return Err(contract("sl_run returned a null output buffer"));
        }
        let at = usize::try_from(out_ptr).map_err(|_| contract("pointer does not fit usize"))?;
        let n = usize::try_from(out_len).map_err(|_| contract("length does not fit usize"))?;
        let out = self
            .memory
            .data(&self.store)
            .get(at..at.saturating_add(n))
            .ok_or_else(|| contract("sl_run returned a buffer outside memory"))?
            .to_vec();
        self.dealloc
            .call(&mut self.store, (out_ptr, out_len))
            .map_err(trap("sl_dealloc"))?;
        Ok(out)
    }
}

/// `(out_ptr << 32) | out_len`, both unsigned 32-bit.
fn unpack(packed: u64) -> (u32, u32) {
    let [p0, p1, p2, p3, l0, l1, l2, l3] = packed.to_be_bytes();
    (
        u32::from_be_bytes([p0, p1, p2, p3]),
        u32::from_be_bytes([l0, l1, l2, l3]),
    )
}

/// The compiled module, this deployment's config, and idle instances.
pub(crate) struct Pool {
    module: WasmModule,
    /// `Config` as the JSON every call carries (serialized once).
    config: Value,
    idle: Mutex<Vec<Abi>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(module: WasmModule, config: &Config) -> Result<Self, WasmError> {
        let config = serde_json::to_value(config)
            .map_err(|e| WasmError::Contract(format!("config does not serialize: {e}")))?;
        Ok(Pool {
            module,
            config,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// One `sl_run` call on an idle (or new) instance.
    fn call(&self, input: &[u8]) -> Result<Vec<u8>, WasmError> {
        let reused = self.lock().pop();
        let mut abi = match reused {
            Some(abi) => abi,
            None => Abi::new(&self.module)?,
        };
        let result = abi.call(input);
        // A trapped instance may hold half-updated allocator state: drop it.
        if result.is_ok() && abi.memory.data_size(&abi.store) <= KEEP_MEMORY {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(abi);
            }
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Abi>> {
        // Nothing panics while holding the lock (push/pop only); a poisoned
        // pool still holds whole instances.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A `VectorInput`, borrowed: the same JSON without copying the config, the
/// op's session or the replies on every replay.
#[derive(Serialize)]
struct Input<'a> {
    config: &'a Value,
    now: UnixMillis,
    entropy: &'a str,
    op: &'a VectorOp,
    replies: &'a [Vec<Reply>],
    failure: Option<&'a VectorFailure>,
}

/// The replay loop (see the parent module).
pub(crate) async fn run(
    pool: &Arc<Pool>,
    op: &VectorOp,
    now: UnixMillis,
    entropy: &Entropy,
    backend: &dyn Backend,
) -> Result<Outcome, RulesError> {
    let entropy = entropy_hex(entropy);
    let mut sent: Vec<Round> = Vec::new();
    let mut replies: Vec<Vec<Reply>> = Vec::new();
    let mut failure: Option<VectorFailure> = None;
    // One call per round plus the one that returns the outcome.
    for _ in 0..=MAX_ROUNDS {
        let input = Input {
            config: &pool.config,
            now,
            entropy: &entropy,
            op,
            replies: &replies,
            failure: failure.as_ref(),
        };
        let bytes = serde_json::to_vec(&input)
            .map_err(|e| WasmError::Contract(format!("input does not serialize: {e}")))?;
        // One call is ~0.1-0.3 ms of CPU (benches/engines.rs), above the
        // ~0.1 ms a task should run between awaits, so it goes to tokio's
        // blocking pool; the hand-off costs a few microseconds.
        let shared = Arc::clone(pool);
        let out = tokio::task::spawn_blocking(move || shared.call(&bytes))
            .await
            .map_err(|e| WasmError::Trap {
                call: "sl_run",
                message: format!("the blocking task did not finish: {e}"),
            })??;
        let output: VectorOutput = serde_json::from_slice(&out)
            .map_err(|e| WasmError::Contract(format!("output is not a vector output: {e}")))?;
        if let Some(result) = decode_outcome(output.outcome)? {
            return result.map_err(RulesError::from);
        }
        let Some((round, earlier)) = output.rounds.split_last() else {
            return Err(WasmError::Contract("waiting, but yielded no round".into()).into());
        };
        if earlier != sent.as_slice() {
            return Err(WasmError::Contract(format!(
                "replaying {} rounds gave different rounds (the module is not deterministic)",
                sent.len()
            ))
            .into());
        }
        if failure.is_some() {
            return Err(
                WasmError::Contract("still waiting after a transport failure".into()).into(),
            );
        }
        match backend.execute(round).await {
            Ok(got) => replies.push(got),
            Err(f) => {
                failure = Some(VectorFailure {
                    round: u64::try_from(sent.len()).unwrap_or(u64::MAX),
                    failure: f,
                });
            }
        }
        sent.push(round.clone());
    }
    Err(WasmError::Contract(format!("no outcome after {MAX_ROUNDS} rounds")).into())
}

/// `null` (waiting), `{"ok": outcome}` or `{"error": {…, "detail": error}}`.
fn decode_outcome(
    outcome: Value,
) -> Result<Option<Result<Outcome, session_logic::Error>>, WasmError> {
    let mut map = match outcome {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        other => {
            return Err(WasmError::Contract(format!(
                "outcome is neither null nor an object: {other}"
            )));
        }
    };
    if let Some(ok) = map.remove("ok") {
        return Ok(Some(Ok(from_value::<Outcome>(ok, "ok outcome")?)));
    }
    if let Some(Value::Object(mut error)) = map.remove("error") {
        let detail = error.remove("detail").unwrap_or(Value::Null);
        return Ok(Some(Err(from_value::<session_logic::Error>(
            detail,
            "error detail",
        )?)));
    }
    Err(WasmError::Contract(
        "outcome has neither `ok` nor an `error` object".into(),
    ))
}

fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, WasmError> {
    serde_json::from_value(value).map_err(|e| WasmError::Contract(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_logic::conformance::VectorInput;
    use session_logic::error::{BackendError, DecodeError};
    use session_logic::step::BackendFailure;
    use session_logic::{Engine, Error};

    #[test]
    fn the_borrowed_input_is_a_vector_input() {
        let config = serde_json::to_value(Config::default()).unwrap();
        let op = VectorOp::Load {
            touch_hint: None,
            cookie: Some("sid=x".into()),
            client: None,
        };
        let replies = vec![vec![Reply::Nil, Reply::Int(3)]];
        let failure = VectorFailure {
            round: 1,
            failure: BackendFailure::Timeout,
        };
        let entropy = entropy_hex(&Entropy([7; 32]));
        let input = Input {
            config: &config,
            now: UnixMillis(9),
            entropy: &entropy,
            op: &op,
            replies: &replies,
            failure: Some(&failure),
        };
        let parsed: VectorInput = serde_json::from_slice(&serde_json::to_vec(&input).unwrap())
            .expect("the module's input type accepts what we send");
        assert_eq!(
            parsed,
            VectorInput {
                config,
                now: UnixMillis(9),
                entropy: Some(entropy),
                op,
                replies,
                failure: Some(failure),
            }
        );
    }

    /// What the module sends back is what `conformance::run` renders; both
    /// the ok and the error shapes decode to the native values.
    #[test]
    fn outcomes_and_errors_round_trip_through_the_output_json() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut session = engine.new_session();
        session
            .insert("k", serde_json::json!([1, "two", 3.5]))
            .unwrap();
        let outcomes = [
            Outcome::Loaded(session.clone()),
            Outcome::Saved {
                session,
                cookie: Some("sid=abc; Path=/".into()),
            },
            Outcome::Destroyed {
                cookie: None,
                count: 4,
            },
            Outcome::Devices(Vec::new()),
        ];
        for o in outcomes {
            let json = serde_json::json!({ "ok": o });
            assert_eq!(decode_outcome(json).unwrap(), Some(Ok(o)));
        }
        let errors = [
            Error::Backend(BackendError::Failure {
                failure: BackendFailure::Unavailable("refused".into()),
            }),
            Error::Decode(DecodeError {
                what: "record".into(),
                detail: "bad".into(),
            }),
        ];
        for e in errors {
            let json = serde_json::json!({ "error": session_logic::conformance::error_json(&e) });
            assert_eq!(decode_outcome(json).unwrap(), Some(Err(e)));
        }
        assert_eq!(decode_outcome(Value::Null).unwrap(), None);
    }

    #[test]
    fn malformed_output_is_a_contract_error() {
        for bad in [
            serde_json::json!(3),
            serde_json::json!({}),
            serde_json::json!({"ok": {"nope": 1}}),
            serde_json::json!({"error": {"detail": null}}),
        ] {
            assert!(matches!(decode_outcome(bad), Err(WasmError::Contract(_))));
        }
    }

    #[test]
    fn garbage_bytes_are_an_invalid_module() {
        let err = WasmModule::from_bytes(b"not wasm").unwrap_err();
        assert!(matches!(err, WasmError::Invalid { .. }), "{err}");
        let err = WasmModule::load(Path::new("/nonexistent/x.wasm")).unwrap_err();
        assert!(err.to_string().contains("scripts/steps/wasm"), "{err}");
    }

    #[test]
    fn unpack_splits_pointer_and_length() {
        assert_eq!(unpack((5u64 << 32) | 7), (5, 7));
        assert_eq!(unpack(u64::MAX), (u32::MAX, u32::MAX));
    }
}
