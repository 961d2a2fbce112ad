//! The wasm engine: the core's wasm-abi module (`scripts/steps/wasm`) under
//! wasmtime, compiled once, instantiated into a small pool of configured
//! instances, and driven by the packed loop described in the parent module.
//!
//! An instance is configured once (`sl_configure` with the deployment's
//! config) when it is created. An operation takes one instance out of the
//! pool for its whole life, because the op lives inside that instance between
//! rounds: a [`Lease`] holds it across the backend's awaits and puts it back
//! when the op ends. If the future is dropped mid-op (the request was
//! cancelled), the lease's `Drop` calls `sl_drop` first, so an instance never
//! carries a forgotten op into its next use (the module refuses more than
//! 4096 ops in flight per instance).
//!
//! A wasmtime `Store` is `Send` but not `Sync`, and a call needs `&mut`: so
//! idle instances wait in a `Mutex<Vec<_>>` and are taken out whole. An
//! instance that trapped or answered outside the contract, or whose memory
//! grew past [`KEEP_MEMORY`] (memory never shrinks), is dropped instead, so
//! one odd request cannot poison or bloat the pool.
//!
//! Each export call is a few microseconds (one op is two or three of them:
//! `benches/engines.rs`), so calls run inline on the async task; there is no
//! hand-off to a blocking pool.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use session_logic::conformance::{STEP_DONE, STEP_ROUND, VectorOp};
use session_logic::error::UsageError;
use session_logic::{Config, Entropy, Outcome, Round, UnixMillis, wire};
use wasmtime::{
    Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, WasmParams,
    WasmResults,
};

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
    /// instantiating it once with no imports and finding every export the
    /// engine calls.
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

    fn invalid(&self, message: String) -> WasmError {
        WasmError::Invalid {
            path: self.path.clone(),
            message,
        }
    }
}

/// The export a call goes to (names the export in trap messages).
#[derive(Clone, Copy, Debug)]
enum Call {
    Configure,
    Start,
    Step(u32),
    Fail(u32),
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Configure => "sl_configure",
            Call::Start => "sl_start",
            Call::Step(_) => "sl_step",
            Call::Fail(_) => "sl_fail",
        }
    }
}

/// One instance of the module and the exports the engine calls.
struct Abi {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    dealloc: TypedFunc<(u32, u32), ()>,
    configure: TypedFunc<(u32, u32), u64>,
    start: TypedFunc<(u32, u32), u64>,
    step: TypedFunc<(u32, u32, u32), u64>,
    fail: TypedFunc<(u32, u32, u32), u64>,
    drop_op: TypedFunc<u32, ()>,
}

/// A typed export, or why not: a module built before the packed path
/// (`sl_configure` … `sl_drop`) lacks those exports.
fn export<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<StoreLimits>,
    name: &str,
    signature: &str,
) -> Result<TypedFunc<P, R>, String> {
    let func = instance.get_func(&mut *store, name).ok_or_else(|| {
        format!(
            "no export `{name}` {signature}: built from an older core, before the packed \
             sl_configure/sl_start/sl_step/sl_fail/sl_drop exports?"
        )
    })?;
    func.typed::<P, R>(&*store)
        .map_err(|e| format!("export `{name}` is not {signature}: {e:#}"))
}

impl Abi {
    fn new(module: &WasmModule) -> Result<Self, WasmError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(1)
            .build();
        let mut store = Store::new(&module.engine, limits);
        store.limiter(|limits| limits);
        // No imports: a module that needs any (e.g. a wasm-bindgen build)
        // fails here, which is the check that it is the wasm-abi build.
        let instance = Instance::new(&mut store, &module.module, &[])
            .map_err(|e| module.invalid(format!("cannot instantiate with no imports: {e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| module.invalid("no exported `memory`".into()))?;
        let s = &mut store;
        let found = (|| {
            Ok::<_, String>((
                export(&instance, s, "sl_alloc", "(i32) -> i32")?,
                export(&instance, s, "sl_dealloc", "(i32, i32) -> ()")?,
                export(&instance, s, "sl_configure", "(i32, i32) -> i64")?,
                export(&instance, s, "sl_start", "(i32, i32) -> i64")?,
                export(&instance, s, "sl_step", "(i32, i32, i32) -> i64")?,
                export(&instance, s, "sl_fail", "(i32, i32, i32) -> i64")?,
                export(&instance, s, "sl_drop", "(i32) -> ()")?,
            ))
        })();
        let (alloc, dealloc, configure, start, step, fail, drop_op) =
            found.map_err(|m| module.invalid(m))?;
        Ok(Abi {
            store,
            memory,
            alloc,
            dealloc,
            configure,
            start,
            step,
            fail,
            drop_op,
        })
    }

    /// The host call sequence of the ABI: alloc, copy in, call, free the
    /// input, `read` the output where it lies in memory, free it.
    fn call<R>(
        &mut self,
        call: Call,
        input: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, WasmError> {
        let trap = |name: &'static str| {
            move |e: wasmtime::Error| WasmError::Trap {
                call: name,
                message: format!("{e:#}"),
            }
        };
        let contract = |m: &str| WasmError::Contract(format!("{}: {m}", call.name()));
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
        let packed = match call {
            Call::Configure => self.configure.call(&mut self.store, (ptr, len)),
            Call::Start => self.start.call(&mut self.store, (ptr, len)),
            Call::Step(op) => self.step.call(&mut self.store, (op, ptr, len)),
            Call::Fail(op) => self.fail.call(&mut self.store, (op, ptr, len)),
        }
        .map_err(trap(call.name()))?;
        self.dealloc
            .call(&mut self.store, (ptr, len))
            .map_err(trap("sl_dealloc"))?;
        let (out_ptr, out_len) = unpack(packed);
        if out_ptr == 0 {
            return Err(contract("null output buffer"));
        }
        let at = usize::try_from(out_ptr).map_err(|_| contract("pointer does not fit usize"))?;
        let n = usize::try_from(out_len).map_err(|_| contract("length does not fit usize"))?;
        let out = self
            .memory
            .data(&self.store)
            .get(at..at.saturating_add(n))
            .ok_or_else(|| contract("output buffer outside memory"))?;
        let result = read(out);
        self.dealloc
            .call(&mut self.store, (out_ptr, out_len))
            .map_err(trap("sl_dealloc"))?;
        Ok(result)
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

/// The compiled module, this deployment's config, and idle configured
/// instances.
pub(crate) struct Pool {
    module: WasmModule,
    /// `Config` as JSON, serialized once, sent once per new instance.
    config: Vec<u8>,
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
    /// A pool for `config`, with one instance configured now: a module that
    /// refuses the config (built from an older core, say) fails at start-up
    /// rather than on the first request.
    pub(crate) fn new(module: WasmModule, config: &Config) -> Result<Self, WasmError> {
        let config = serde_json::to_vec(config)
            .map_err(|e| WasmError::Contract(format!("config does not serialize: {e}")))?;
        let pool = Pool {
            module,
            config,
            idle: Mutex::new(Vec::new()),
        };
        let first = pool.instance()?;
        pool.lock().push(first);
        Ok(pool)
    }

    /// A new instance, configured.
    fn instance(&self) -> Result<Abi, WasmError> {
        let mut abi = Abi::new(&self.module)?;
        let refused = abi.call(
            Call::Configure,
            &self.config,
            |out| match serde_json::from_slice::<Value>(out) {
                Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => None,
                _ => Some(String::from_utf8_lossy(out).into_owned()),
            },
        )?;
        match refused {
            None => Ok(abi),
            Some(answer) => Err(self.module.invalid(format!(
                "sl_configure refused this deployment's config: {answer}"
            ))),
        }
    }

    /// An idle instance, or a new one.
    fn take(&self) -> Result<Abi, WasmError> {
        let reused = self.lock().pop();
        match reused {
            Some(abi) => Ok(abi),
            None => self.instance(),
        }
    }

    /// Back to the idle list, unless it grew too big or the list is full.
    fn give_back(&self, abi: Abi) {
        if abi.memory.data_size(&abi.store) <= KEEP_MEMORY {
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(abi);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Abi>> {
        // Nothing panics while holding the lock (push/pop only); a poisoned
        // pool still holds whole instances.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Idle instances now (tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().len()
    }
}

/// One instance, out of the pool for one operation.
struct Lease<'p> {
    pool: &'p Pool,
    /// `None` once discarded (trapped or broke the contract).
    abi: Option<Abi>,
    /// The op in flight inside `abi`; 0 when none (never started, or
    /// finished: the module forgets a finished op by itself).
    op: u32,
}

impl Lease<'_> {
    /// One export call whose output is a step (after `sl_start`'s op
    /// number when `call` is [`Call::Start`]).
    fn call(&mut self, call: Call, input: &[u8]) -> Result<(u32, Next), WasmError> {
        let abi = self
            .abi
            .as_mut()
            .ok_or_else(|| WasmError::Contract("the instance was already discarded".into()))?;
        let result = abi
            .call(call, input, |out| match call {
                Call::Start => {
                    let (n, step) = out.split_first_chunk::<4>().ok_or_else(|| {
                        WasmError::Contract("sl_start answered without an op number".into())
                    })?;
                    Ok((u32::from_le_bytes(*n), next(step)?))
                }
                _ => Ok((0, next(out)?)),
            })
            .and_then(|r| r);
        if result.is_err() {
            // A trapped instance may hold half-updated allocator state.
            self.abi = None;
        }
        result
    }
}

impl Drop for Lease<'_> {
    /// The op ended, failed or was cancelled: forget any op still in flight
    /// and return the instance, or drop it if even that traps.
    fn drop(&mut self) {
        let Some(mut abi) = self.abi.take() else {
            return;
        };
        if self.op != 0 && abi.drop_op.call(&mut abi.store, self.op).is_err() {
            return;
        }
        self.pool.give_back(abi);
    }
}

/// What `sl_start` takes: `{now, entropy, op}`, borrowed. Entropy is left
/// out when it is all zeros (what the module assumes without it), which is
/// every op but save and regenerate ([`super::NO_ENTROPY`]).
#[derive(Serialize)]
struct Start<'a> {
    now: UnixMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    entropy: Option<&'a str>,
    op: &'a VectorOp,
}

/// 64 lowercase hex digits (`conformance::entropy_hex` formats digit by
/// digit, which showed in profiles); `None` for all zeros.
fn entropy_hex<'b>(entropy: &Entropy, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if entropy.0 == [0; 32] {
        return None;
    }
    for (pair, byte) in buf.chunks_exact_mut(2).zip(entropy.0) {
        if let [hi, lo] = pair {
            *hi = DIGITS.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
            *lo = DIGITS.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
        }
    }
    std::str::from_utf8(buf).ok()
}

/// A step read out of the module's memory.
// One per round, moved once (as the core's `Step`): boxing the outcome would
// add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// Send this round, then call `sl_step` (or `sl_fail`).
    Round(Round),
    /// The op is finished (and forgotten by the module).
    Done(Result<Outcome, session_logic::Error>),
}

/// `0x00 ++ packed round` or `0x01 ++ outcome JSON`.
fn next(step: &[u8]) -> Result<Next, WasmError> {
    match step.split_first() {
        Some((&STEP_ROUND, packed)) => wire::decode_round(packed)
            .map(Next::Round)
            .map_err(|e| WasmError::Contract(format!("unreadable round: {e}"))),
        Some((&STEP_DONE, json)) => decode_outcome(json).map(Next::Done),
        other => Err(WasmError::Contract(format!(
            "a step starts with 0 (round) or 1 (done), not {:?}",
            other.map(|(tag, _)| tag)
        ))),
    }
}

/// The packed loop (see the parent module).
pub(crate) async fn run(
    pool: &Pool,
    op: &VectorOp,
    now: UnixMillis,
    entropy: &Entropy,
    backend: &dyn Backend,
) -> Result<Outcome, RulesError> {
    let mut lease = Lease {
        pool,
        abi: Some(pool.take()?),
        op: 0,
    };
    let result = drive(&mut lease, op, now, entropy, backend).await;
    if matches!(result, Err(RulesError::Wasm(_))) {
        // The module broke the contract (or trapped): do not reuse it.
        lease.abi = None;
    }
    result
}

async fn drive(
    lease: &mut Lease<'_>,
    op: &VectorOp,
    now: UnixMillis,
    entropy: &Entropy,
    backend: &dyn Backend,
) -> Result<Outcome, RulesError> {
    let contract = |m: String| RulesError::Wasm(WasmError::Contract(m));
    let mut hex = [0u8; 64];
    let start = serde_json::to_vec(&Start {
        now,
        entropy: entropy_hex(entropy, &mut hex),
        op,
    })
    .map_err(|e| contract(format!("op does not serialize: {e}")))?;
    let (n, mut step) = lease.call(Call::Start, &start)?;
    lease.op = n;
    let mut replies = Vec::new();
    // One step per round plus the one that carries the outcome.
    for _ in 0..=MAX_ROUNDS {
        let round = match step {
            Next::Done(result) => {
                lease.op = 0;
                return result.map_err(RulesError::from);
            }
            Next::Round(round) => round,
        };
        if n == 0 {
            return Err(contract("a round for an op without a number".into()));
        }
        (_, step) = match backend.execute(&round).await {
            Ok(got) => {
                replies.clear();
                wire::encode_replies(&got, &mut replies);
                lease.call(Call::Step(n), &replies)?
            }
            Err(failure) => {
                let failure = serde_json::to_vec(&failure)
                    .map_err(|e| contract(format!("failure does not serialize: {e}")))?;
                lease.call(Call::Fail(n), &failure)?
            }
        };
    }
    Err(contract(format!("no outcome after {MAX_ROUNDS} rounds")))
}

/// The outcome JSON of a finished op, as the core renders it (`{"ok":
/// outcome}` or `{"error": {code, status, message, detail}}`), parsed in one
/// pass into the native values.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Done {
    Ok(Outcome),
    Error(ErrorJson),
}

#[derive(Deserialize)]
struct ErrorJson {
    code: String,
    message: String,
    /// The error itself; `null` for a usage error (its message is all).
    detail: Option<session_logic::Error>,
}

/// `{"ok": outcome}` or `{"error": {…, "detail": error}}`.
fn decode_outcome(json: &[u8]) -> Result<Result<Outcome, session_logic::Error>, WasmError> {
    let done: Done = serde_json::from_slice(json).map_err(|e| {
        WasmError::Contract(format!(
            "outcome is neither `{{\"ok\": outcome}}` nor `{{\"error\": …}}`: {e}"
        ))
    })?;
    match done {
        Done::Ok(outcome) => Ok(Ok(outcome)),
        Done::Error(ErrorJson {
            detail: Some(e), ..
        }) => Ok(Err(e)),
        // The core renders a usage error (the loop contract broken, e.g. a
        // backend answering the wrong number of replies) without detail:
        // rebuild it from its message, so both engines return the same error.
        Done::Error(ErrorJson { code, message, .. }) if code == "usage" => {
            let inner = message
                .strip_prefix("host loop misuse: ")
                .unwrap_or(&message);
            Ok(Err(session_logic::Error::Usage(UsageError(
                inner.to_owned(),
            ))))
        }
        Done::Error(ErrorJson { code, message, .. }) => Err(WasmError::Contract(format!(
            "error {code} without detail: {message}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_logic::error::{BackendError, DecodeError};
    use session_logic::step::BackendFailure;
    use session_logic::{Engine, Error, Reply, Round};

    use crate::executor::BoxFuture;

    #[test]
    fn the_start_input_is_what_sl_start_reads() {
        let op = VectorOp::Load {
            touch_hint: None,
            cookie: Some("sid=x".into()),
            client: None,
        };
        let mut hex = [0; 64];
        let entropy = Entropy(core::array::from_fn(|i| (i * 37) as u8));
        let start = Start {
            now: UnixMillis(9),
            entropy: entropy_hex(&entropy, &mut hex),
            op: &op,
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({
                "now": 9,
                "entropy": session_logic::conformance::entropy_hex(&entropy),
                "op": {"load": {"cookie": "sid=x", "client": null}},
            })
        );
        // All zeros (every op but save and regenerate): left out, which the
        // module reads as zeros.
        let mut hex = [0; 64];
        assert_eq!(entropy_hex(&super::super::NO_ENTROPY, &mut hex), None);
        let start = Start {
            now: UnixMillis(9),
            entropy: None,
            op: &op,
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({ "now": 9, "op": {"load": {"cookie": "sid=x", "client": null}} })
        );
    }

    /// What the module sends back is what the core renders; both the ok and
    /// the error shapes decode to the native values.
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
            let json = serde_json::to_vec(&serde_json::json!({ "ok": o })).unwrap();
            assert_eq!(decode_outcome(&json).unwrap(), Ok(o));
        }
        let errors = [
            Error::Backend(BackendError::Failure {
                failure: BackendFailure::Unavailable("refused".into()),
            }),
            Error::Decode(DecodeError {
                what: "record".into(),
                detail: "bad".into(),
            }),
            // Rendered with `"detail": null`, rebuilt from its message.
            Error::Usage(UsageError(
                "round had 1 commands but 2 replies were given".into(),
            )),
        ];
        for e in errors {
            let json = serde_json::json!({ "error": session_logic::conformance::error_json(&e) });
            let json = serde_json::to_vec(&json).unwrap();
            assert_eq!(decode_outcome(&json).unwrap(), Err(e));
        }
    }

    #[test]
    fn malformed_output_is_a_contract_error() {
        for bad in [
            &b"3"[..],
            b"null",
            b"{}",
            br#"{"ok": {"nope": 1}}"#,
            br#"{"error": {"code": "decode", "message": "m", "detail": null}}"#,
            br#"{"error": {"detail": null}}"#,
            br#"{"ok": {"none": {"reason": "no_cookie"}}, "error": {}}"#,
            b"\xff",
        ] {
            assert!(
                matches!(decode_outcome(bad), Err(WasmError::Contract(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [&b""[..], b"\x02", b"\x00\x01\x00\x00\x00"] {
            assert!(matches!(next(bad), Err(WasmError::Contract(_))), "{bad:?}");
        }
    }

    #[test]
    fn garbage_bytes_are_an_invalid_module() {
        let err = WasmModule::from_bytes(b"not wasm").unwrap_err();
        assert!(matches!(err, WasmError::Invalid { .. }), "{err}");
        let err = WasmModule::load(Path::new("/nonexistent/x.wasm")).unwrap_err();
        assert!(err.to_string().contains("scripts/steps/wasm"), "{err}");
    }

    /// A module with only the exports of the replay-era ABI (`memory`,
    /// `sl_alloc`, `sl_dealloc`, `sl_run`), hand-assembled: refused at load
    /// with a message naming the missing export and the fix.
    #[test]
    fn a_module_without_the_packed_exports_is_refused_by_name() {
        fn section(id: u8, body: &[u8]) -> Vec<u8> {
            let len = u8::try_from(body.len()).unwrap();
            assert!(len < 0x80, "one-byte LEB128 only");
            [&[id, len][..], body].concat()
        }
        fn name(n: &str) -> Vec<u8> {
            [&[u8::try_from(n.len()).unwrap()][..], n.as_bytes()].concat()
        }
        let types = [
            &[3u8][..],
            &[0x60, 1, 0x7f, 1, 0x7f],       // (i32) -> i32
            &[0x60, 2, 0x7f, 0x7f, 0],       // (i32, i32) -> ()
            &[0x60, 2, 0x7f, 0x7f, 1, 0x7e], // (i32, i32) -> i64
        ]
        .concat();
        let exports = [
            vec![4],
            [name("memory"), vec![2, 0]].concat(),
            [name("sl_alloc"), vec![0, 0]].concat(),
            [name("sl_dealloc"), vec![0, 1]].concat(),
            [name("sl_run"), vec![0, 2]].concat(),
        ]
        .concat();
        let code = [
            &[3u8][..],
            &[4, 0, 0x41, 0, 0x0b], // i32.const 0
            &[2, 0, 0x0b],          // nothing
            &[4, 0, 0x42, 0, 0x0b], // i64.const 0
        ]
        .concat();
        let module = [
            &b"\0asm\x01\0\0\0"[..],
            &section(1, &types),
            &section(3, &[3, 0, 1, 2]),
            &section(5, &[1, 0, 1]),
            &section(7, &exports),
            &section(10, &code),
        ]
        .concat();
        let err = WasmModule::from_bytes(&module).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, WasmError::Invalid { .. }), "{shown}");
        assert!(shown.contains("`sl_configure`"), "{shown}");
        assert!(shown.contains("scripts/steps/wasm"), "{shown}");
    }

    #[test]
    fn unpack_splits_pointer_and_length() {
        assert_eq!(unpack((5u64 << 32) | 7), (5, 7));
        assert_eq!(unpack(u64::MAX), (u32::MAX, u32::MAX));
    }

    /// The module from `scripts/steps/wasm` (the host step builds it before
    /// running these tests with `--features wasm-engine`).
    fn built_module() -> WasmModule {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-abi/session_logic.wasm");
        WasmModule::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A backend whose rounds never answer: the request is cancelled while
    /// an op waits inside its instance.
    struct Hang;

    impl Backend for Hang {
        fn execute<'a>(
            &'a self,
            _round: &'a Round,
        ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
            Box::pin(std::future::pending())
        }

        fn kind(&self) -> &'static str {
            "hang"
        }
    }

    /// Poll `fut` once (it must be waiting on the backend), then drop it.
    fn poll_once_and_cancel<F: std::future::Future>(fut: F) {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }

    /// More cancelled ops than an instance can hold in flight (4096): each
    /// cancellation drops its op and returns the one instance, so the next
    /// op still starts; then a real op runs on that same instance.
    #[tokio::test]
    async fn cancelled_ops_are_dropped_and_their_instance_reused() {
        let pool = Pool::new(built_module(), &Config::default()).unwrap();
        assert_eq!(pool.idle(), 1);
        let cookie = format!("{}={}", Config::default().cookie.name, "A".repeat(43));
        let load = VectorOp::Load {
            touch_hint: None,
            cookie: Some(cookie),
            client: None,
        };
        for _ in 0..4200 {
            poll_once_and_cancel(run(&pool, &load, UnixMillis(1), &Entropy([0; 32]), &Hang));
            assert_eq!(pool.idle(), 1);
        }
        let memory = crate::MemoryBackend::new();
        let outcome = run(&pool, &load, UnixMillis(1), &Entropy([0; 32]), &memory)
            .await
            .unwrap();
        assert_eq!(outcome.name(), "none", "{outcome:?}");
        assert_eq!(pool.idle(), 1);
    }

    /// A transport failure goes in through `sl_fail` and comes out as the
    /// core's typed backend error; the instance goes back to the pool.
    #[tokio::test]
    async fn a_transport_failure_is_the_cores_backend_error() {
        struct Down;
        impl Backend for Down {
            fn execute<'a>(
                &'a self,
                _round: &'a Round,
            ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
                Box::pin(std::future::ready(Err(BackendFailure::Timeout)))
            }
            fn kind(&self) -> &'static str {
                "down"
            }
        }
        let pool = Pool::new(built_module(), &Config::default()).unwrap();
        let cookie = format!("{}={}", Config::default().cookie.name, "A".repeat(43));
        let load = VectorOp::Load {
            touch_hint: None,
            cookie: Some(cookie),
            client: None,
        };
        let err = run(&pool, &load, UnixMillis(1), &Entropy([0; 32]), &Down)
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.status_hint()), ("backend_timeout", 503));
        assert_eq!(pool.idle(), 1);
    }
}
