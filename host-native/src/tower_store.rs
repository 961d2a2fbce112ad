//! A [`tower_sessions_core::SessionStore`] over session-logic (feature
//! `tower-sessions`): apps already on tower-sessions switch their store to
//! Redis with our rules without rewriting a handler.
//!
//! ```
//! # fn main() -> Result<(), session_logic::Error> {
//! # let backend = std::sync::Arc::new(host_native::MemoryBackend::new());
//! // `backend` from `host_native::connect::connect(url, &opts)` in production.
//! let store = host_native::TowerStore::new(backend)?;
//! let layer = tower_sessions::SessionManagerLayer::new(store);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! What carries over: records in the shared format (one hash per session,
//! readable by `session-host`, the Node host and the admin commands), keys
//! that hide the ID (`prefix + SHA-256(id)`), the core's idle and absolute
//! expiry, IDs minted by the core from the OS CSPRNG, no resurrection of a
//! session deleted while a request was in flight, and typed errors.
//!
//! What the trait cannot offer (use [`SessionLayer`](crate::SessionLayer)
//! for these):
//! - **IDs are 128 bits**, the size tower-sessions' `Id` holds (config
//!   `id_format: "base64url128"`), not our default 256.
//! - **Round trips**: a request that changes data costs 3 (load by the
//!   middleware, then load + save here, because `save` receives the whole
//!   record, not the change); ours costs 2. A read costs 1 either way.
//! - **Regeneration is not fixation-safe under races**: `cycle_id` is a
//!   delete then a create, with no rotation marker, so a parallel request
//!   with the old cookie just finds no session.
//! - **Expiry** is ours: the idle timeout slides on loads and saves alike
//!   (at most once per touch interval) and the absolute lifetime caps it;
//!   tower-sessions' `Expiry` only shapes the cookie, and the `expiry_date`
//!   a record is saved with is ignored.
//! - No user binding, logout-everywhere or device list (the trait has no
//!   notion of a user); no `Vary`/`Cache-Control` handling.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use session_logic::config::IdFormat;
use session_logic::{Config, Engine, Error, Op, Outcome, Session};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

use crate::clock;
use crate::executor::{Backend, drive};

/// Sessions for tower-sessions, stored by session-logic's rules.
#[derive(Clone)]
pub struct TowerStore {
    engine: Engine,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for TowerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerStore")
            .field("backend", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

impl TowerStore {
    /// A store with the default config (and 128-bit IDs).
    pub fn new(backend: Arc<dyn Backend>) -> Result<TowerStore, Error> {
        let config = Config {
            id_format: IdFormat::Base64url128,
            ..Config::default()
        };
        TowerStore::with_engine(Engine::new(config)?, backend)
    }

    /// A store with an engine whose config sets `id_format: base64url128`
    /// (tower-sessions IDs are 128 bits); any other format is refused.
    pub fn with_engine(engine: Engine, backend: Arc<dyn Backend>) -> Result<TowerStore, Error> {
        if engine.config().id_format != IdFormat::Base64url128 {
            return Err(Error::Config(session_logic::error::ConfigError {
                field: "id_format".into(),
                message: "must be \"base64url128\" for tower-sessions, whose IDs are 128 bits"
                    .into(),
            }));
        }
        Ok(TowerStore { engine, backend })
    }

    async fn run(&self, op: Op) -> session_store::Result<Outcome> {
        drive(op, self.backend.as_ref()).await.map_err(store_error)
    }

    /// The live session behind `id`, if any (one round).
    async fn live(&self, id: &Id) -> session_store::Result<Option<Session>> {
        let op = self.engine.load_id(&id.to_string(), None, clock::now());
        Ok(match self.run(op).await? {
            Outcome::Loaded(s) => Some(s),
            _ => None,
        })
    }

    async fn write(&self, session: Session) -> session_store::Result<Outcome> {
        let entropy = clock::entropy()
            .map_err(|e| session_store::Error::Backend(format!("OS random generator: {e}")))?;
        self.run(self.engine.save(session, entropy, clock::now()))
            .await
    }
}

/// Our typed error as the trait's: decoding problems stay `Decode`,
/// everything else is `Backend` with the code first.
fn store_error(e: Error) -> session_store::Error {
    match e {
        Error::Decode(d) => session_store::Error::Decode(d.to_string()),
        other => session_store::Error::Backend(format!("{}: {other}", other.code())),
    }
}

/// A stored session's ID as tower-sessions' `Id` (the little-endian i128
/// its `Display` encodes).
fn tower_id(session: &Session) -> Option<Id> {
    let text = session.id()?.expose();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(Id(i128::from_le_bytes(bytes)))
}

/// Make `session`'s data equal `data`: removals and changed values only.
fn apply(session: &mut Session, data: &HashMap<String, serde_json::Value>) -> Result<(), Error> {
    let gone: Vec<String> = session
        .data()
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        session.remove(&key);
    }
    for (key, value) in data {
        session.insert(key.clone(), value.clone())?;
    }
    Ok(())
}

fn expiry(at: session_logic::UnixMillis) -> time::OffsetDateTime {
    let nanos = i128::from(at.0).saturating_mul(1_000_000);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[async_trait]
impl SessionStore for TowerStore {
    /// Mint the ID in the core (OS entropy, collision-checked by the create
    /// script) and store the record; the record gets the minted ID.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut session = self.engine.new_session();
        apply(&mut session, &record.data).map_err(store_error)?;
        if session.data().is_empty() {
            // Nothing to store (we never write empty sessions): hand out an
            // ID that loads as nothing, as for any unknown ID.
            let entropy = clock::entropy()
                .map_err(|e| session_store::Error::Backend(format!("OS random generator: {e}")))?;
            let head: [u8; 16] = entropy
                .0
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 16]);
            record.id = Id(i128::from_le_bytes(head));
            return Ok(());
        }
        match self.write(session).await? {
            Outcome::Saved { session, .. } => {
                record.id = tower_id(&session).ok_or_else(|| {
                    session_store::Error::Backend("the created session has no 128-bit ID".into())
                })?;
                Ok(())
            }
            other => Err(session_store::Error::Backend(format!(
                "unexpected outcome {} for a new session",
                other.name()
            ))),
        }
    }

    /// Write the record's changes to the live session. A session deleted or
    /// expired meanwhile stays deleted (nothing is resurrected).
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let Some(mut session) = self.live(&record.id).await? else {
            tracing::debug!("tower-sessions save of a session that is gone: nothing written");
            return Ok(());
        };
        apply(&mut session, &record.data).map_err(store_error)?;
        // The core writes only what changed, and slides the idle deadline
        // when a touch is due, as a load does.
        self.write(session).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(session) = self.live(id).await? else {
            return Ok(None);
        };
        let expires = session
            .meta()
            .map_or(session_logic::UnixMillis(0), |m| self.engine.expires_at(m));
        Ok(Some(Record {
            id: *id,
            data: session
                .data()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            expiry_date: expiry(expires),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        if let Some(session) = self.live(id).await? {
            self.run(self.engine.destroy(session, clock::now())).await?;
        }
        Ok(())
    }
}
