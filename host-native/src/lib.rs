//! # host-native
//!
//! The Rust host for [`session_logic`]: it owns the sockets, the clock and
//! the randomness the pure core refuses to own.
//!
//! - [`executor`]: the [`Backend`] trait (send one round, get one reply per
//!   command), the in-memory, standalone-Redis and Cluster backends, and
//!   [`drive`], the host loop.
//! - [`clock`]: wall-clock `now` and OS-CSPRNG entropy.
//! - [`connect`]: a backend from a Redis URL, with TLS verification, timeouts
//!   and the start-up eviction-policy check.
//! - [`SessionLayer`] and the [`Session`] extractor: sessions for axum apps,
//!   loaded lazily, saved once per request, fail-closed on backend errors.
//! - [`Rules`]: which build of the rules runs an operation, the linked core
//!   or its wasm-abi module under wasmtime (feature `wasm-engine`).
//! - [`Metrics`]: counters the layer and the `session-host` binary share.
//! - [`TouchHints`]: what lets most read-only loads skip the load script.
//! - `TowerStore` (feature `tower-sessions`): a `tower_sessions::SessionStore`
//!   for apps already on tower-sessions, with what that trait cannot offer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use host_native::{MemoryBackend, drive};
//! use session_logic::{Config, Engine};
//!
//! let engine = Engine::new(Config::default())?;
//! let backend = MemoryBackend::new();
//! let outcome = drive(engine.load(None, None, host_native::clock::now()), &backend).await?;
//! assert_eq!(outcome.name(), "none");
//! # Ok(())
//! # }
//! ```
//!
//! Nothing here decides a rule: cookies, expiry and error statuses all come
//! from the core's outcomes and errors.

pub mod clock;
pub mod connect;
pub mod executor;
mod extract;
pub mod hints;
mod layer;
pub mod metrics;
pub mod rules;
#[cfg(feature = "tower-sessions")]
pub mod tower_store;

pub use executor::{Backend, ClusterBackend, MemoryBackend, RedisBackend, drive};
pub use extract::{Session, SessionError};
pub use hints::TouchHints;
pub use layer::{SessionLayer, SessionService};
pub use metrics::Metrics;
pub use rules::{Rules, RulesError};
#[cfg(feature = "tower-sessions")]
pub use tower_store::TowerStore;
