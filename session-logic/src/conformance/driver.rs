//! Running operations across a boundary with the packed wire form: one
//! engine configured once, operations kept by number between rounds, a round
//! out and the replies in as one buffer each ([`crate::wire`]), the outcome
//! out once as JSON. This is what the wasm-abi module exports as `sl_start`
//! / `sl_step` (the JSON `sl_run` replays a whole vector per call and stays
//! for the conformance runners); it is plain safe Rust so native tests drive
//! it exactly as a wasm host does.
//!
//! ```text
//!  configure(config JSON) ─► {"ok":true} | {"error":…}
//!  start({now, entropy, op}) ─► u32 op ++ step
//!  step(op, packed replies) ─► step          fail(op, failure JSON) ─► step
//!  step := 0x00 ++ packed round   (send it, then call step)
//!        | 0x01 ++ {"ok": outcome} | {"error": {code, status, message, detail}}
//!                                   (the op is finished and forgotten)
//! ```

use serde::Deserialize;
use serde_json::json;

use super::{VectorOp, error_json, parse_entropy};
use crate::config::Config;
use crate::engine::{Engine, Op};
use crate::error::{ConfigError, Error, InputError, UsageError};
use crate::expiry::UnixMillis;
use crate::step::{BackendFailure, Step};
use crate::wire;

/// Step tag: a round follows.
pub const STEP_ROUND: u8 = 0;
/// Step tag: the outcome JSON follows.
pub const STEP_DONE: u8 = 1;

/// Most operations a driver keeps at once: a host that never finishes its
/// ops gets a typed error instead of unbounded memory.
const MAX_OPS: usize = 4096;

/// What `start` takes: the operation and its host inputs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartInput {
    now: UnixMillis,
    #[serde(default)]
    entropy: Option<String>,
    op: VectorOp,
}

/// One configured engine and the operations in flight on it.
#[derive(Debug, Default)]
pub struct Driver {
    engine: Option<Engine>,
    ops: Vec<Option<Op>>,
    free: Vec<u32>,
}

impl Driver {
    /// Configure (or reconfigure) the engine from config JSON. Answers
    /// `{"ok":true}` or `{"error": …}` (code `config` naming the field).
    pub fn configure(&mut self, config: &[u8]) -> Vec<u8> {
        let result = serde_json::from_slice::<Config>(config)
            .map_err(|e| {
                Error::Config(ConfigError {
                    field: "config".into(),
                    message: e.to_string(),
                })
            })
            .and_then(|c| Engine::new(c).map_err(Error::from));
        let out = match result {
            Ok(engine) => {
                self.engine = Some(engine);
                json!({ "ok": true })
            }
            Err(e) => json!({ "error": error_json(&e) }),
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Start an operation: `u32` op number (little-endian; 0 when the op
    /// finished at once) followed by its first step.
    pub fn start(&mut self, input: &[u8]) -> Vec<u8> {
        let started = self.begin(input);
        let mut out = Vec::new();
        match started {
            Ok(op) => {
                let mut op = op;
                let step = op.poll_owned();
                let slot = match step {
                    Step::Round(_) => self.keep(op),
                    Step::Done(_) => Ok(0),
                };
                match slot {
                    Ok(n) => {
                        out.extend_from_slice(&n.to_le_bytes());
                        put_step(step, &mut out);
                    }
                    Err(e) => {
                        out.extend_from_slice(&0u32.to_le_bytes());
                        put_done(Err(e), &mut out);
                    }
                }
            }
            Err(e) => {
                out.extend_from_slice(&0u32.to_le_bytes());
                put_done(Err(e), &mut out);
            }
        }
        out
    }

    /// Feed the packed replies of op `n`'s last round; its next step.
    pub fn step(&mut self, n: u32, replies: &[u8]) -> Vec<u8> {
        match wire::decode_replies(replies) {
            Ok(replies) => self.advance(n, |op| op.handle_replies(replies)),
            // A buffer that does not decode is the host's bug: the op ends
            // with the usage error rather than guessing at replies.
            Err(e) => {
                self.drop_op(n);
                let mut out = Vec::new();
                put_done(Err(e), &mut out);
                out
            }
        }
    }

    /// Op `n`'s round could not complete (`failure`: a [`BackendFailure`]
    /// as JSON); its next step (the typed backend error).
    pub fn fail(&mut self, n: u32, failure: &[u8]) -> Vec<u8> {
        let failure = serde_json::from_slice::<BackendFailure>(failure)
            .unwrap_or_else(|e| BackendFailure::Other(format!("unreadable failure: {e}")));
        self.advance(n, |op| op.handle_failure(failure))
    }

    /// Forget op `n` (a host that gives up on a request). Unknown numbers
    /// are ignored.
    pub fn drop_op(&mut self, n: u32) {
        if let Some(slot) = self.slot(n)
            && slot.take().is_some()
        {
            self.free.push(n);
        }
    }

    /// Operations in flight (tests check hosts leave none behind).
    pub fn in_flight(&self) -> usize {
        self.ops.iter().filter(|o| o.is_some()).count()
    }

    fn begin(&self, input: &[u8]) -> Result<Op, Error> {
        let engine = self.engine.as_ref().ok_or_else(|| {
            Error::Usage(UsageError(
                "configure the engine before starting an op".into(),
            ))
        })?;
        let input: StartInput = serde_json::from_slice(input)
            .map_err(|e| Error::Input(InputError::new("op", e.to_string())))?;
        let entropy = parse_entropy(input.entropy.as_deref())
            .map_err(|m| Error::Input(InputError::new("entropy", m)))?;
        super::start(engine, input.op, input.now, entropy)
    }

    fn advance(&mut self, n: u32, feed: impl FnOnce(&mut Op)) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(op) = self.slot(n).and_then(Option::as_mut) else {
            put_done(
                Err(Error::Usage(UsageError(format!(
                    "no operation {n} in flight (finished, dropped or never started)"
                )))),
                &mut out,
            );
            return out;
        };
        feed(op);
        let step = op.poll_owned();
        if matches!(step, Step::Done(_)) {
            self.drop_op(n);
        }
        put_step(step, &mut out);
        out
    }

    fn slot(&mut self, n: u32) -> Option<&mut Option<Op>> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.ops.get_mut(i)
    }

    /// Keep `op` under a number ≥ 1.
    fn keep(&mut self, op: Op) -> Result<u32, Error> {
        if let Some(n) = self.free.pop()
            && let Some(slot) = self.slot(n)
        {
            *slot = Some(op);
            return Ok(n);
        }
        if self.ops.len() >= MAX_OPS {
            return Err(Error::Usage(UsageError(format!(
                "{MAX_OPS} operations in flight: the host never finishes or drops them"
            ))));
        }
        self.ops.push(Some(op));
        u32::try_from(self.ops.len())
            .map_err(|_| Error::Usage(UsageError("too many operations".into())))
    }
}

fn put_step(step: Step, out: &mut Vec<u8>) {
    match step {
        Step::Round(round) => {
            out.push(STEP_ROUND);
            wire::encode_round(&round, out);
        }
        Step::Done(result) => put_done(result, out),
    }
}

fn put_done(result: Result<crate::Outcome, Error>, out: &mut Vec<u8>) {
    out.push(STEP_DONE);
    let value = match result {
        Ok(o) => json!({ "ok": o }),
        Err(e) => json!({ "error": error_json(&e) }),
    };
    // Serializing a `Value` cannot fail (no non-string map keys).
    if serde_json::to_writer(&mut *out, &value).is_err() {
        out.extend_from_slice(
            br#"{"error":{"code":"usage","status":500,"message":"unserializable outcome"}}"#,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::memory::Memory;
    use serde_json::Value;

    fn done(step: &[u8]) -> Value {
        assert_eq!(step[0], STEP_DONE, "{step:?}");
        serde_json::from_slice(&step[1..]).unwrap()
    }

    fn configured() -> Driver {
        let mut d = Driver::default();
        assert_eq!(d.configure(b"{}"), br#"{"ok":true}"#);
        d
    }

    #[test]
    fn a_bad_config_is_a_config_error() {
        let mut d = Driver::default();
        let out: Value =
            serde_json::from_slice(&d.configure(br#"{"idle_timeout_ms":"x"}"#)).unwrap();
        assert_eq!(out["error"]["code"], "config");
        let started = d.start(br#"{"now":1,"op":{"load":{"cookie":null}}}"#);
        assert_eq!(done(&started[4..])["error"]["code"], "usage");
    }

    /// Run an op to its end against `memory`, as a wasm host would.
    fn drive(d: &mut Driver, input: &Value, memory: &mut Memory, now: UnixMillis) -> Value {
        let mut out = d.start(&serde_json::to_vec(input).unwrap());
        let n = u32::from_le_bytes(out[..4].try_into().unwrap());
        out.drain(..4);
        while out[0] == STEP_ROUND {
            let round = wire::decode_round(&out[1..]).unwrap();
            let mut packed = Vec::new();
            wire::encode_replies(&memory.execute_round(&round, now), &mut packed);
            out = d.step(n, &packed);
        }
        done(&out)
    }

    /// A first write, then a load of it, through the packed form against
    /// the in-memory backend: the outcomes are the native ones.
    #[test]
    fn ops_run_to_the_native_outcome_through_packed_buffers() {
        let mut d = configured();
        let engine = Engine::new(Config::default()).unwrap();
        let mut memory = Memory::new();
        let now = UnixMillis(1_700_000_000_000);
        let mut session = engine.new_session();
        session.insert("n", json!(3)).unwrap();
        let input = json!({ "now": now, "entropy": "07".repeat(32), "op": { "save": { "session": session } } });
        let saved = drive(&mut d, &input, &mut memory, now);
        let cookie = saved["ok"]["saved"]["cookie"].as_str().unwrap();
        let header = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(d.in_flight(), 0);

        let input = json!({ "now": now, "op": { "load": { "cookie": header } } });
        let loaded = drive(&mut d, &input, &mut memory, now);
        assert_eq!(loaded["ok"]["loaded"]["data"]["n"], 3, "{loaded}");
        assert_eq!(d.in_flight(), 0);
        // A finished op's number is gone.
        assert_eq!(done(&d.step(1, &[0, 0, 0, 0]))["error"]["code"], "usage");
    }

    /// A load that needs a round: a well-formed cookie of the default name.
    fn load_input() -> Vec<u8> {
        let name = Config::default().cookie.name;
        let id = "A".repeat(43);
        serde_json::to_vec(
            &json!({ "now": 1, "op": { "load": { "cookie": format!("{name}={id}") } } }),
        )
        .unwrap()
    }

    #[test]
    fn a_failure_and_a_bad_buffer_end_in_typed_errors() {
        let mut d = configured();
        let load = &load_input();
        let out = d.start(load);
        let n = u32::from_le_bytes(out[..4].try_into().unwrap());
        assert_eq!(out[4], STEP_ROUND);
        let failed = done(&d.fail(n, br#"{"kind":"timeout"}"#));
        assert_eq!(failed["error"]["code"], "backend_timeout");

        let out = d.start(load);
        let n = u32::from_le_bytes(out[..4].try_into().unwrap());
        let bad = done(&d.step(n, b"\x01\x00\x00\x00\x09"));
        assert_eq!(bad["error"]["code"], "usage");
        assert!(
            bad["error"]["message"]
                .as_str()
                .unwrap()
                .contains("packed buffer")
        );
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn dropped_ops_free_their_number() {
        let mut d = configured();
        let load = &load_input();
        let a = u32::from_le_bytes(d.start(load)[..4].try_into().unwrap());
        d.drop_op(a);
        d.drop_op(a);
        d.drop_op(999);
        let b = u32::from_le_bytes(d.start(load)[..4].try_into().unwrap());
        assert_eq!(a, b);
        assert_eq!(d.in_flight(), 1);
    }
}
