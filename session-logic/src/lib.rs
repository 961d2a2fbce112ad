//! # session-logic
//!
//! Web-session rules for Redis, written once as a pure state machine: ID
//! minting and strict parsing, key naming, idle and absolute expiry,
//! fixation-safe regeneration, logout everywhere. No I/O, no clock, no RNG,
//! no async: time and entropy are inputs, Redis commands are outputs. The same
//! code runs natively (host-native), as WebAssembly in Node and edge runtimes
//! (js), and under wasmtime, and conformance vectors prove they agree byte for
//! byte.
//!
//! ## The host loop
//!
//! A host is one loop: ask the running operation for the next round, send it
//! as one pipeline, feed back one reply per command, until it says done.
//!
//! ```
//! use session_logic::memory::Memory;
//! use session_logic::{Config, Engine, Entropy, Outcome, Step, UnixMillis};
//!
//! let engine = Engine::new(Config::default()).unwrap();
//! let mut redis = Memory::new(); // or a real Redis connection
//! let now = UnixMillis(1_700_000_000_000);
//!
//! // The whole host: poll, send the round, feed back the replies.
//! let mut run = |mut op: session_logic::Op| loop {
//!     match op.poll() {
//!         Step::Round(round) => op.handle_replies(redis.execute_round(&round, now)),
//!         Step::Done(result) => break result,
//!     }
//! };
//!
//! // A visitor with no cookie: no Redis call, a new lazy session.
//! let mut session = run(engine.load(None, None, now)).unwrap().into_session().unwrap();
//! session.insert("cart", serde_json::json!(["apple"])).unwrap();
//!
//! // The first write creates the record and yields the Set-Cookie.
//! let saved = run(engine.save(session, Entropy([7; 32]), now)).unwrap();
//! let set_cookie = saved.cookie().unwrap().to_owned();
//! assert!(set_cookie.starts_with("sid=") && set_cookie.contains("HttpOnly"));
//!
//! // The next request presents the cookie and gets the data back.
//! let cookie = set_cookie.split(';').next().unwrap();
//! match run(engine.load(Some(cookie), None, now)).unwrap() {
//!     Outcome::Loaded(s) => assert_eq!(s.get("cart"), Some(&serde_json::json!(["apple"]))),
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! ## Determinism
//!
//! The same config, `now`, entropy and replies give the same rounds and the
//! same outcome on every target. Nothing that reaches output iterates a hash
//! map; values are JSON through serde_json with sorted maps; no floats are
//! formatted into argv. A retry that needs a new ID derives it from the
//! entropy (SHA-256 of entropy and attempt), so vectors are fully determined.
//!
//! ## Outcomes, errors and bugs
//!
//! "No cookie", "malformed cookie", "unknown ID", "expired" and "rotated" are
//! [`Outcome`]s: the request continues with a new, lazily stored session.
//! [`Error`]s are what failed (backend, decode, too large, config, input,
//! usage), each with a stable `code()` and an HTTP `status_hint()`; a host
//! answers a backend error with 503 and never silently continues with an
//! empty session. A host that breaks the loop contract gets a usage error,
//! never a panic.
//!
//! ## Round-trip budget
//!
//! | operation | rounds |
//! |---|---|
//! | request that only reads (incl. throttled touch) | 1 |
//! | request that changes data | 2 (load, save) |
//! | first write of a new session | 1 |
//! | regenerate (after load) | 1 |
//! | destroy | 1 |
//! | logout everywhere, any number of sessions | 2 |
//!
//! ## Out of scope
//!
//! Sockets, clocks, randomness, retries and connection management belong to
//! hosts. Concurrent writes to the *same* key are last-writer-wins.
#![cfg_attr(not(test), warn(missing_docs))]

#[cfg(feature = "wasm-abi")]
mod abi;
pub mod admin;
pub mod config;
pub mod conformance;
pub mod cookie;
pub mod engine;
pub mod error;
pub mod expiry;
pub mod hints;
pub mod id;
pub mod keys;
pub mod memory;
mod ops;
pub mod outcome;
pub mod record;
pub mod scripts;
pub mod session;
pub mod step;
pub mod wire;

pub use config::Config;
pub use engine::{Engine, Op};
pub use error::Error;
pub use expiry::UnixMillis;
pub use hints::TouchHints;
pub use id::{Entropy, SessionId};
pub use keys::UserId;
pub use outcome::Outcome;
pub use session::Session;
pub use step::{Command, Reply, Round, Step};
