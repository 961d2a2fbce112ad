//! # session-logic-js
//!
//! The wasm-bindgen face of `session-logic` for the npm package: bindings
//! only, no rules. Everything a session does is decided in the core; this
//! crate moves values across the JS boundary and nothing else, so the Node
//! and edge hosts cannot drift from the native one (the conformance vectors
//! replayed in `js/test/` prove it).
//!
//! ## The boundary, once per round
//!
//! A running operation ([`engine::Op`]) is driven with one call per round.
//! The hot path (what `runOp` in `lib/host.js` uses) moves one byte buffer
//! each way, in the packed form of `session_logic::wire`:
//!
//! ```text
//!   op.step()                → Uint8Array [0, …round]   unpackRound, send it as one pipeline
//!   op.step(packedReplies)   → the next round | outcome JSON text
//!   op.takeSession()         the outcome's session (its JSON says "session": true)
//!   op.fail(kind, detail)    the pipeline could not complete (timeout, down)
//! ```
//!
//! `op.next()` / `op.next(replies)` is the same loop with JS values each way
//! (`{round: Uint8Array[][]}`, replies as `null`, integers, strings or
//! bytes, arrays, `Error`s; `{outcome}` / `{error}` back). It costs a call
//! per argument and per reply element, and stays for tests and the
//! conformance runner; `js/test/vectors.test.mjs` replays every vector
//! through both.

//! ## Inputs the host supplies
//!
//! Time (`now`, unix milliseconds as a number) and entropy (32 bytes from
//! `crypto.getRandomValues`) are arguments, exactly as in the core: the module
//! keeps no clock and draws no randomness, so the same inputs give the same
//! rounds in Node as natively.
//!
//! ## Errors
//!
//! Failures cross as `Error` objects named `SessionError` with the core's
//! stable `code`, its HTTP `status` hint, a `message` and a `detail` object,
//! never as bare strings ([`convert::js_error`]).
//!
//! The crate also builds natively (it is a workspace member, so clippy and
//! unit tests cover it); calling the JS-facing functions natively is not
//! supported, only the pure conversions are tested there.

// The `#[wasm_bindgen]` expansion writes `unsafe` glue for every export; this
// crate's own code has none.
#![allow(unsafe_code)]

pub mod convert;
pub mod engine;
pub mod memory;
pub mod session;
