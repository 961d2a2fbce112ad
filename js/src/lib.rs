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
//! A running operation ([`engine::Op`]) is driven with one call per round:
//!
//! ```text
//!   op.next()                → { round: Uint8Array[][] }   send it as one pipeline
//!   op.next(replies)         → { round } | { outcome } | { error }
//!   op.fail(kind, detail)    the pipeline could not complete (timeout, down)
//! ```
//!
//! A round leaves as an array of argv arrays, the replies come back as one
//! array (`null`, integers, strings or bytes, arrays, `Error`s); the per-
//! command work happens in Rust, not in chatty calls.
//!
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
