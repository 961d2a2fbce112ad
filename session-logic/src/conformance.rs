//! Conformance vectors: one operation's inputs (config, now, entropy, cookie
//! or session, scripted replies) in, its rounds and outcome out, as JSON. The
//! same function runs natively, inside the `wasm-abi` module under wasmtime,
//! and in Node, which is how we prove the rules are byte-identical on every
//! target. A vector file is `{"name", "input": VectorInput, "expect": output}`.

mod driver;

pub use driver::{Driver, STEP_DONE, STEP_ROUND};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::{Engine, Op};
use crate::error::Error;
use crate::expiry::UnixMillis;
use crate::id::Entropy;
use crate::keys::UserId;
use crate::session::Session;
use crate::step::{BackendFailure, Reply, Round, Step};

/// The operation a vector runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VectorOp {
    /// `Engine::load`.
    Load {
        /// The `Cookie` header.
        cookie: Option<String>,
        /// Client fingerprint.
        #[serde(default)]
        client: Option<String>,
        /// `Engine::load_hinted`'s touch hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        touch_hint: Option<UnixMillis>,
    },
    /// `Engine::load_id`.
    LoadId {
        /// ID text.
        id: String,
        /// Client fingerprint.
        #[serde(default)]
        client: Option<String>,
    },
    /// `Engine::save`.
    Save {
        /// The session.
        session: Session,
    },
    /// `Engine::regenerate`.
    Regenerate {
        /// The session.
        session: Session,
    },
    /// `Engine::destroy`.
    Destroy {
        /// The session.
        session: Session,
    },
    /// `Engine::touch`.
    Touch {
        /// The session.
        session: Session,
    },
    /// `Engine::destroy_all_for_user`.
    DestroyAllForUser {
        /// User id.
        user: String,
        /// Session to keep.
        #[serde(default)]
        keep: Option<Session>,
    },
    /// `Engine::list_user_sessions`.
    ListUserSessions {
        /// User id.
        user: String,
        /// The asking session.
        #[serde(default)]
        current: Option<Session>,
    },
    /// `Engine::destroy_user_session`.
    DestroyUserSession {
        /// User id.
        user: String,
        /// Device handle.
        handle: String,
    },
}

/// A transport failure injected instead of the replies of round `round`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFailure {
    /// Zero-based round index (u64, not usize: the same JSON must parse
    /// identically on wasm32 and 64-bit targets).
    pub round: u64,
    /// The failure.
    pub failure: BackendFailure,
}

/// A vector's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorInput {
    /// Config (validated; a refusal is the outcome).
    pub config: Value,
    /// The clock.
    pub now: UnixMillis,
    /// 64 hex digits (zeros when absent).
    #[serde(default)]
    pub entropy: Option<String>,
    /// The operation.
    pub op: VectorOp,
    /// Replies for each round, in order. Running out stops the run with a
    /// `null` outcome (the op is waiting).
    #[serde(default)]
    pub replies: Vec<Vec<Reply>>,
    /// A transport failure instead of one round's replies.
    #[serde(default)]
    pub failure: Option<VectorFailure>,
}

/// A vector's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorOutput {
    /// Every round the op yielded, in order.
    pub rounds: Vec<Round>,
    /// `{"ok": outcome}`, `{"error": {...}}`, or null if still waiting.
    pub outcome: Value,
}

/// JSON for an error, as every host exposes it: code, status, message.
pub fn error_json(e: &Error) -> Value {
    json!({
        "code": e.code(),
        "status": e.status_hint(),
        "message": e.to_string(),
        "detail": serde_json::to_value(e).unwrap_or(Value::Null),
    })
}

fn parse_entropy(hex: Option<&str>) -> Result<Entropy, String> {
    let Some(hex) = hex else {
        return Ok(Entropy([0; 32]));
    };
    if hex.len() != 64 {
        return Err("entropy must be 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        let pair = hex
            .get(2 * i..2 * i + 2)
            .ok_or("entropy must be ASCII hex")?;
        *slot = u8::from_str_radix(pair, 16).map_err(|_| "entropy must be hex")?;
    }
    Ok(Entropy(out))
}

fn user(u: &str) -> Result<UserId, Error> {
    UserId::new(u).map_err(Error::Input)
}

/// Start `op` on `engine`: the [`Op`] a host drives. This is how a native
/// host runs exactly the operation a vector (or the wasm-abi module) runs, so
/// both engines of `session-host` share one description of an operation.
/// `entropy` is only read by operations that mint IDs (save, regenerate);
/// the others ignore it. Fails only when a user id in `op` is invalid.
/// Takes `op` by value so a native host hands its session over uncopied.
pub fn start(
    engine: &Engine,
    op: VectorOp,
    now: UnixMillis,
    entropy: Entropy,
) -> Result<Op, Error> {
    Ok(match op {
        VectorOp::Load {
            cookie,
            client,
            touch_hint,
        } => engine.load_hinted(cookie.as_deref(), client.as_deref(), now, touch_hint),
        VectorOp::LoadId { id, client } => engine.load_id(&id, client.as_deref(), now),
        VectorOp::Save { session } => engine.save(session, entropy, now),
        VectorOp::Regenerate { session } => engine.regenerate(session, entropy, now),
        VectorOp::Destroy { session } => engine.destroy(session, now),
        VectorOp::Touch { session } => engine.touch(session, now),
        VectorOp::DestroyAllForUser { user: u, keep } => {
            engine.destroy_all_for_user(&user(&u)?, keep.as_ref(), now)
        }
        VectorOp::ListUserSessions { user: u, current } => {
            engine.list_user_sessions(&user(&u)?, current.as_ref(), now)
        }
        VectorOp::DestroyUserSession { user: u, handle } => {
            engine.destroy_user_session(&user(&u)?, &handle, now)
        }
    })
}

/// Entropy as a vector writes it (64 lowercase hex digits), for hosts that
/// build a [`VectorInput`] from a native [`Entropy`].
pub fn entropy_hex(entropy: &Entropy) -> String {
    use core::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for b in entropy.0 {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl VectorOp {
    /// A short stable name (`load`, `save`, …) for metrics and logs; `load`
    /// and `load_id` are both `load`.
    pub fn name(&self) -> &'static str {
        match self {
            VectorOp::Load { .. } | VectorOp::LoadId { .. } => "load",
            VectorOp::Save { .. } => "save",
            VectorOp::Regenerate { .. } => "regenerate",
            VectorOp::Destroy { .. } => "destroy",
            VectorOp::Touch { .. } => "touch",
            VectorOp::DestroyAllForUser { .. } => "destroy_all_for_user",
            VectorOp::ListUserSessions { .. } => "list_user_sessions",
            VectorOp::DestroyUserSession { .. } => "destroy_user_session",
        }
    }
}

/// Run a parsed vector input.
pub fn run(input: &VectorInput) -> VectorOutput {
    let mut rounds = Vec::new();
    let outcome = match run_inner(input, &mut rounds) {
        Ok(Some(Ok(o))) => json!({ "ok": o }),
        Ok(Some(Err(e))) | Err(e) => json!({ "error": error_json(&e) }),
        Ok(None) => Value::Null,
    };
    VectorOutput { rounds, outcome }
}

fn run_inner(
    input: &VectorInput,
    rounds: &mut Vec<Round>,
) -> Result<Option<Result<crate::Outcome, Error>>, Error> {
    let config: Config = serde_json::from_value(input.config.clone()).map_err(|e| {
        Error::Config(crate::error::ConfigError {
            field: "config".into(),
            message: e.to_string(),
        })
    })?;
    let engine = Engine::new(config)?;
    let entropy = parse_entropy(input.entropy.as_deref()).map_err(|m| {
        Error::Input(crate::error::InputError {
            what: "entropy".into(),
            detail: m,
        })
    })?;
    let mut op = start(&engine, input.op.clone(), input.now, entropy)?;
    // Bounded: every op finishes in a handful of rounds; a vector cannot loop us.
    for i in 0..64u64 {
        match op.poll() {
            Step::Done(result) => return Ok(Some(result)),
            Step::Round(round) => {
                rounds.push(round);
                if let Some(f) = input.failure.as_ref().filter(|f| f.round == i) {
                    op.handle_failure(f.failure.clone());
                    continue;
                }
                match usize::try_from(i).ok().and_then(|i| input.replies.get(i)) {
                    Some(replies) => op.handle_replies(replies.clone()),
                    None => return Ok(None),
                }
            }
        }
    }
    Ok(None)
}

/// Run one vector input given as JSON bytes; return the output as JSON bytes.
/// Never panics: malformed input yields an `invalid_input` error outcome.
pub fn run_json(input: &[u8]) -> Vec<u8> {
    let output = match serde_json::from_slice::<VectorInput>(input) {
        Ok(parsed) => run(&parsed),
        Err(e) => VectorOutput {
            rounds: Vec::new(),
            outcome: json!({ "error": error_json(&Error::Input(crate::error::InputError { what: "vector".into(), detail: e.to_string() })) }),
        },
    };
    serde_json::to_vec(&output).unwrap_or_else(|_| br#"{"rounds":[],"outcome":null}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_input_is_a_typed_error_not_a_panic() {
        for input in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"config\":{},\"now\":1,\"op\":{\"nope\":{}}}",
            &[0xff, 0xfe],
        ] {
            let out: Value = serde_json::from_slice(&run_json(input)).unwrap();
            assert_eq!(out["outcome"]["error"]["code"], "invalid_input", "{out}");
        }
    }

    #[test]
    fn entropy_hex_is_what_vectors_parse() {
        let e = Entropy(core::array::from_fn(|i| (i * 37) as u8));
        let hex = entropy_hex(&e);
        assert_eq!(hex.len(), 64);
        assert!(parse_entropy(Some(&hex)).unwrap() == e);
    }

    #[test]
    fn a_load_without_cookie_needs_no_round() {
        let out: Value = serde_json::from_slice(&run_json(
            br#"{"config":{},"now":5,"op":{"load":{"cookie":null}}}"#,
        ))
        .unwrap();
        assert_eq!(out["rounds"], json!([]));
        assert_eq!(out["outcome"]["ok"]["none"]["reason"], "no_cookie");
    }
}
