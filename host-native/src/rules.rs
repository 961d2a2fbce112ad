//! Which build of the rules runs an operation: the core linked into this
//! binary (`native`) or the core's wasm-abi module under wasmtime (`wasm`,
//! feature `wasm-engine`, `session-host serve --engine wasm`). It owns one
//! promise: both engines take the same operation ([`VectorOp`]), send the same
//! rounds to the same [`Backend`] and return the same [`Outcome`], so a
//! deployment can run the very `.wasm` file that Node and edge hosts run and
//! still be served by this host.
//!
//! The wasm engine drives the module's packed, stateful exports (`sl_configure`,
//! `sl_start`, `sl_step`, `sl_fail`, `sl_drop`; see `session_logic::abi`),
//! which wrap the core's `conformance::Driver`. Each pooled instance is
//! configured once with the deployment's config when it is created. An
//! operation takes one instance for its whole life (the op lives inside it
//! between rounds): `sl_start` with `{now, entropy, op}` answers an op
//! number and the first step; while the step is a round (the packed form of
//! `session_logic::wire`), the loop sends it through the backend and feeds
//! the replies back, packed, to `sl_step` (a transport failure goes to
//! `sl_fail` as the `BackendFailure`), until the step is the outcome JSON,
//! `{ok: outcome}` or `{error: …}`. One module call per round plus the start,
//! and one buffer each way per call. An op cut short (the request's future
//! dropped) is forgotten with `sl_drop` before its instance is reused.
//!
//! Nothing here compares the wasm engine's rounds with native ones at run
//! time (the old replay loop re-checked determinism on every call). Instead
//! `tests/tests/wasm_conformance.rs` and `js/test-abi` replay every
//! conformance vector through these same exports, under wasmtime and in
//! Node, and check the rounds and outcome against the vector;
//! `host-native/tests/engines.rs` runs every operation kind through both
//! engines against the same keyspace and checks they agree.
//!
//! Helpers that decide no rule about Redis stay native in both engines:
//! [`Rules::config`] and [`Rules::sid_hash`] (log redaction) read the native
//! [`Engine`] built from the same config.

use std::path::Path;
#[cfg(feature = "wasm-engine")]
use std::sync::Arc;

use session_logic::conformance::{self, VectorOp};
use session_logic::{Config, Engine, Entropy, Outcome, SessionId, UnixMillis};

use crate::executor::{Backend, drive};
use crate::hints::TouchHints;

#[cfg(feature = "wasm-engine")]
mod wasm;

#[cfg(feature = "wasm-engine")]
pub use wasm::WasmModule;

/// The rules of one deployment, from one of two engines. Cheap to clone and
/// share across tasks.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The native engine: the `native` engine itself, and for both engines
    /// the config and the log-redaction key.
    engine: Engine,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Native,
    #[cfg(feature = "wasm-engine")]
    Wasm(Arc<wasm::Pool>),
}

impl Rules {
    /// The rules linked into this binary.
    pub fn native(engine: Engine) -> Self {
        Rules {
            engine,
            kind: Kind::Native,
        }
    }

    /// The rules of `module` (compiled once, shared), configured like
    /// `engine`: each instance of the module is configured with
    /// `engine.config()` once, when it is created (one is created now, so a
    /// module that refuses the config fails here).
    #[cfg(feature = "wasm-engine")]
    pub fn wasm(engine: Engine, module: &WasmModule) -> Result<Self, WasmError> {
        let pool = wasm::Pool::new(module.clone(), engine.config())?;
        Ok(Rules {
            engine,
            kind: Kind::Wasm(Arc::new(pool)),
        })
    }

    /// The rules of the wasm-abi module at `path` (see `WasmModule::load`,
    /// feature `wasm-engine`). Without the `wasm-engine` feature this always
    /// fails with [`WasmError::NotBuilt`], so callers need no `cfg`.
    pub fn wasm_from_file(engine: Engine, path: &Path) -> Result<Self, WasmError> {
        #[cfg(feature = "wasm-engine")]
        {
            Rules::wasm(engine, &WasmModule::load(path)?)
        }
        #[cfg(not(feature = "wasm-engine"))]
        {
            let _ = (engine, path);
            Err(WasmError::NotBuilt)
        }
    }

    /// `native` or `wasm`, for logs.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Native => "native",
            #[cfg(feature = "wasm-engine")]
            Kind::Wasm(_) => "wasm",
        }
    }

    /// The validated config (decides nothing about Redis; native in both
    /// engines).
    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    /// The Set-Cookie that deletes the session cookie (native in both
    /// engines: it is rendered from config alone).
    pub fn removal_cookie(&self) -> String {
        self.engine.removal_cookie()
    }

    /// The Redis key a load of this `Cookie` header reads (key touch hints
    /// by it); native in both engines, like [`Rules::sid_hash`].
    pub fn session_key_for(&self, cookie_header: Option<&str>) -> Option<String> {
        self.engine.session_key_for(cookie_header)
    }

    /// The key of a session `outcome` wrote under a new ID, for the touch
    /// hints (native in both engines, like [`Rules::session_key_for`]).
    pub fn written_key(&self, outcome: &Outcome) -> Option<String> {
        self.engine.written_key(outcome)
    }

    /// The keyed hash of an ID for logs (native in both engines).
    pub fn sid_hash(&self, id: &SessionId) -> String {
        self.engine.sid_hash(id)
    }

    /// Load the session a `Cookie` header names, its touch hint looked up in
    /// `hints` and the outcome remembered there. The native engine parses
    /// the cookie and hashes the ID once for all of it
    /// ([`Engine::load_with_hints`]); the wasm engine computes the key
    /// natively, as [`Rules::session_key_for`] does, and hands the module
    /// the hint.
    pub async fn load(
        &self,
        cookie_header: Option<&str>,
        client: Option<&str>,
        hints: &TouchHints,
        now: UnixMillis,
        backend: &dyn Backend,
    ) -> Result<Outcome, RulesError> {
        let (result, key) = match &self.kind {
            Kind::Native => {
                let (op, key) =
                    hints.with(|h| self.engine.load_with_hints(cookie_header, client, now, h));
                (drive(op, backend).await.map_err(RulesError::from), key)
            }
            #[cfg(feature = "wasm-engine")]
            Kind::Wasm(pool) => {
                let key = self.engine.session_key_for(cookie_header);
                let op = VectorOp::Load {
                    touch_hint: key.as_deref().and_then(|k| hints.get(k)),
                    cookie: cookie_header.map(str::to_owned),
                    client: client.map(str::to_owned),
                };
                (wasm::run(pool, &op, now, &NO_ENTROPY, backend).await, key)
            }
        };
        if let (Some(key), Ok(outcome)) = (key, &result) {
            hints.observe(key, outcome);
        }
        result
    }

    /// Run `op` to its outcome against `backend`. `entropy` is read only by
    /// operations that mint IDs (save, regenerate): give those fresh OS
    /// randomness ([`crate::clock::entropy`]).
    pub async fn run(
        &self,
        op: VectorOp,
        now: UnixMillis,
        entropy: Entropy,
        backend: &dyn Backend,
    ) -> Result<Outcome, RulesError> {
        match &self.kind {
            Kind::Native => {
                let op = conformance::start(&self.engine, op, now, entropy)?;
                Ok(drive(op, backend).await?)
            }
            #[cfg(feature = "wasm-engine")]
            Kind::Wasm(pool) => wasm::run(pool, &op, now, &entropy, backend).await,
        }
    }
}

/// Entropy for operations that mint no ID (load, destroy, touch and the user
/// operations): they never read it. Never pass it to save or regenerate.
pub const NO_ENTROPY: Entropy = Entropy([0; 32]);

/// Why [`Rules::run`] failed: the rules' own error, or the wasm engine could
/// not run them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The rules decided the operation failed (backend down, decode, too
    /// large, bad input …); identical for both engines.
    #[error(transparent)]
    Session(#[from] session_logic::Error),
    /// The wasm engine itself failed (trap, unreadable output).
    #[error(transparent)]
    Wasm(#[from] WasmError),
}

impl RulesError {
    /// A stable code: the core's codes, or `wasm_engine`.
    pub fn code(&self) -> &'static str {
        match self {
            RulesError::Session(e) => e.code(),
            RulesError::Wasm(_) => "wasm_engine",
        }
    }

    /// The HTTP status to answer with: the core's hint, 500 for the engine.
    pub fn status_hint(&self) -> u16 {
        match self {
            RulesError::Session(e) => e.status_hint(),
            RulesError::Wasm(_) => 500,
        }
    }
}

/// The wasm engine could not be set up or could not run an operation.
/// Messages name the file and the command that fixes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// This binary has no wasm engine.
    #[error(
        "this build has no wasm engine: rebuild with `--features wasm-engine` \
         (e.g. `cargo build -p host-native --features wasm-engine`; \
         `scripts/run --engine wasm` does this for you)"
    )]
    NotBuilt,
    /// No file at the module path.
    #[error(
        "wasm-abi module not found at {path}: run `scripts/steps/wasm` to build it \
         (or point --wasm-module / SESSION_HOST_WASM at one)"
    )]
    Missing {
        /// The path tried.
        path: String,
    },
    /// The file exists but cannot be read.
    #[error("cannot read wasm-abi module {path}: {message}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The file is not a usable session-logic wasm-abi module (does not
    /// compile, has imports, lacks `memory` or one of the exports the engine
    /// calls — an older module without `sl_configure`…`sl_drop` —, or
    /// refuses the deployment's config).
    #[error(
        "{path} is not a usable session-logic wasm-abi module ({message}); \
         rebuild it with `scripts/steps/wasm`"
    )]
    Invalid {
        /// The path (or `<bytes>`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The module trapped or ran out of its memory limit in an export.
    #[error("the wasm engine trapped in {call}: {message}")]
    Trap {
        /// The export that trapped.
        call: &'static str,
        /// wasmtime's description.
        message: String,
    },
    /// The module answered, but not with what the ABI promises (bad JSON,
    /// an unreadable packed round or step, no outcome after 64 rounds).
    #[error("the wasm engine broke the wasm-abi contract: {0}")]
    Contract(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[tokio::test]
    async fn native_rules_run_a_vector_op() {
        let rules = Rules::native(Engine::new(Config::default()).unwrap());
        let op = VectorOp::Load {
            touch_hint: None,
            cookie: None,
            client: None,
        };
        let outcome = rules
            .run(op, UnixMillis(1), NO_ENTROPY, &MemoryBackend::new())
            .await
            .unwrap();
        assert_eq!(outcome.name(), "none");
        assert_eq!(rules.kind(), "native");
    }

    #[tokio::test]
    async fn a_bad_user_id_is_the_cores_input_error() {
        let rules = Rules::native(Engine::new(Config::default()).unwrap());
        let op = VectorOp::DestroyUserSession {
            user: String::new(),
            handle: "x".into(),
        };
        let err = rules
            .run(op, UnixMillis(1), NO_ENTROPY, &MemoryBackend::new())
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.status_hint()), ("invalid_input", 400));
    }

    #[cfg(not(feature = "wasm-engine"))]
    #[test]
    fn without_the_feature_wasm_names_the_feature() {
        let engine = Engine::new(Config::default()).unwrap();
        let err = Rules::wasm_from_file(engine, Path::new("x.wasm")).unwrap_err();
        assert!(err.to_string().contains("--features wasm-engine"), "{err}");
    }
}
