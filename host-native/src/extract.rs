//! The axum extractor: a cheap handle onto this request's session state,
//! which [`SessionLayer`](crate::SessionLayer) put into the request
//! extensions. It owns laziness (nothing is loaded until a handler asks) and
//! fail-closed errors (a load that failed is never replaced by an empty
//! session; the layer answers that request with the error instead).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use session_logic::conformance::VectorOp;
use session_logic::outcome::Device;
use session_logic::{Outcome, UserId};
use tokio::sync::{Mutex, MutexGuard};

use crate::clock;
use crate::executor::Backend;
use crate::hints::TouchHints;
use crate::metrics::Metrics;
use crate::rules::{NO_ENTROPY, Rules, RulesError, WasmError};

/// Why a session operation failed. As a response it is a JSON body
/// `{"code": …, "message": …}` with the core's status hint (503 for backend
/// failures, 413 too large, 400 bad input).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The core reported an error (backend, decode, too large, input …).
    #[error(transparent)]
    Engine(#[from] session_logic::Error),
    /// The wasm engine could not run the rules (trap, broken module).
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// The OS CSPRNG failed; no ID is minted from anything weaker.
    #[error("the OS random number generator failed: {0}")]
    Entropy(getrandom::Error),
    /// A stored value is not the type the handler asked for, or a value
    /// could not be turned into JSON.
    #[error("session value {key:?}: {message}")]
    Value {
        /// The data key.
        key: String,
        /// serde_json's explanation.
        message: String,
    },
    /// The handler ran without [`SessionLayer`](crate::SessionLayer).
    #[error("no SessionLayer is installed for this route")]
    NotInstalled,
}

impl SessionError {
    /// A stable code (the core's codes for core errors).
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Engine(e) => e.code(),
            SessionError::Wasm(_) => "wasm_engine",
            SessionError::Entropy(_) => "entropy_unavailable",
            SessionError::Value { .. } => "invalid_value",
            SessionError::NotInstalled => "session_layer_missing",
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        let hint = match self {
            SessionError::Engine(e) => e.status_hint(),
            SessionError::Entropy(_) => 503,
            SessionError::Wasm(_) | SessionError::Value { .. } | SessionError::NotInstalled => 500,
        };
        StatusCode::from_u16(hint).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

impl From<RulesError> for SessionError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::Session(e) => SessionError::Engine(e),
            RulesError::Wasm(e) => SessionError::Wasm(e),
        }
    }
}

/// What the response should do once the handler is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finale {
    /// Save the delta (nothing to send when clean).
    Save,
    /// New ID, same data, in the one write of this request.
    Regenerate,
    /// Delete and send a removal cookie.
    Destroy,
    /// Already deleted (logout everywhere): only the removal cookie.
    Cleared,
}

/// Per-request state behind the handle.
#[derive(Debug)]
pub(crate) struct State {
    /// Loaded session; `None` until first access.
    pub(crate) data: Option<session_logic::Session>,
    /// The first failure; the response becomes this error.
    pub(crate) failure: Option<SessionError>,
    pub(crate) finale: Finale,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) rules: Rules,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) hints: Arc<TouchHints>,
    pub(crate) cookie: Option<String>,
    pub(crate) client: Option<String>,
    pub(crate) state: Mutex<State>,
}

/// This request's session. Extract it in any handler behind
/// [`SessionLayer`](crate::SessionLayer); clones share the same state.
///
/// Loading is lazy: a request whose handler never calls a method costs no
/// Redis call and gets no cookie. Changes are written once, when the
/// response is ready.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use axum::{Router, routing::get, http::Request, body::Body};
/// use host_native::{MemoryBackend, Session, SessionError, SessionLayer};
/// use session_logic::{Config, Engine};
/// use tower::ServiceExt;
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     let n: u64 = session.get("visits").await?.unwrap_or(0) + 1;
///     session.insert("visits", n).await?;
///     Ok(format!("visit {n}"))
/// }
///
/// let engine = Engine::new(Config::default())?;
/// let app = Router::new()
///     .route("/", get(visits))
///     .layer(SessionLayer::new(engine, Arc::new(MemoryBackend::new())));
///
/// let first = app.clone().oneshot(Request::get("/").body(Body::empty())?).await?;
/// let cookie = first.headers()["set-cookie"].to_str()?.split(';').next().unwrap_or("").to_owned();
/// assert_eq!(first.headers()["cache-control"], "no-store");
///
/// let second = app.oneshot(Request::get("/").header("cookie", cookie).body(Body::empty())?).await?;
/// let body = axum::body::to_bytes(second.into_body(), 1024).await?;
/// assert_eq!(&body[..], b"visit 2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) shared: Arc<Shared>,
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::NotInstalled)
    }
}

impl Session {
    /// A data value, decoded as `T`; `None` when absent.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut st = self.loaded().await?;
        let data = st.data_mut()?;
        data.get(key)
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| SessionError::Value {
                    key: key.to_owned(),
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// Set a data value (written when the response is ready). Returns
    /// whether a value was already there.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<bool, SessionError> {
        let value = serde_json::to_value(value).map_err(|e| SessionError::Value {
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let mut st = self.loaded().await?;
        let old = st
            .data_mut()?
            .insert(key, value)
            .map_err(|e| SessionError::Engine(e.into()))?;
        Ok(old.is_some())
    }

    /// Remove a data value; whether one was there.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        let mut st = self.loaded().await?;
        Ok(st.data_mut()?.remove(key).is_some())
    }

    /// Every data value, sorted by key.
    pub async fn data(
        &self,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, SessionError> {
        let mut st = self.loaded().await?;
        Ok(st.data_mut()?.data().clone())
    }

    /// Give the session a new ID (keeping its data) when the response is
    /// written: call it on sign-in and on every privilege change. The old ID
    /// stops yielding data. Costs no extra round trip.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        st.data_mut()?;
        if st.finale == Finale::Save {
            st.finale = Finale::Regenerate;
        }
        Ok(())
    }

    /// Delete the session when the response is written, and remove the cookie.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        st.data_mut()?;
        if st.finale != Finale::Cleared {
            st.finale = Finale::Destroy;
        }
        Ok(())
    }

    /// Bind a signed-in user (records `auth_at`). Also call
    /// [`regenerate`](Self::regenerate) in the same request.
    pub async fn bind_user(&self, user: UserId) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        st.data_mut()?.set_user(user, clock::now());
        Ok(())
    }

    /// Unbind the user but keep the session.
    pub async fn unbind_user(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        st.data_mut()?.clear_user();
        Ok(())
    }

    /// The bound user.
    pub async fn user(&self) -> Result<Option<UserId>, SessionError> {
        let mut st = self.loaded().await?;
        Ok(st.data_mut()?.user().cloned())
    }

    /// When the bound user signed in (ms since the epoch).
    pub async fn auth_at(&self) -> Result<Option<u64>, SessionError> {
        let mut st = self.loaded().await?;
        Ok(st.data_mut()?.auth_at().map(|t| t.0))
    }

    /// Sign the bound user out of every session; `keep_current` keeps this
    /// one (e.g. after a password change), otherwise this one is destroyed
    /// too. Returns how many sessions the user's index led to deleting:
    /// the other ones, plus this one when it is not kept (0 without a user).
    pub async fn logout_everywhere(&self, keep_current: bool) -> Result<u64, SessionError> {
        let mut st = self.loaded().await?;
        let data = st.data_mut()?;
        let Some(user) = data.user().cloned() else {
            return Ok(0);
        };
        let op = VectorOp::DestroyAllForUser {
            user: user.into(),
            keep: keep_current.then(|| data.clone()),
        };
        // Unsaved changes (a user bound in this request) may not be in the
        // index yet: then only a destroy is sure to remove this session.
        let stored_as_is = !data.is_dirty();
        let outcome = self.run(&mut st, op).await?;
        if !keep_current {
            // When stored as is, the user's index led to this session too.
            st.finale = if stored_as_is {
                Finale::Cleared
            } else {
                Finale::Destroy
            };
        }
        Ok(match outcome {
            Outcome::Destroyed { count, .. } => count,
            _ => 0,
        })
    }

    /// The bound user's live sessions ("my devices"); empty without a user.
    pub async fn list_devices(&self) -> Result<Vec<Device>, SessionError> {
        let mut st = self.loaded().await?;
        let data = st.data_mut()?;
        let Some(user) = data.user().cloned() else {
            return Ok(Vec::new());
        };
        let op = VectorOp::ListUserSessions {
            user: user.into(),
            current: Some(data.clone()),
        };
        match self.run(&mut st, op).await? {
            Outcome::Devices(devices) => Ok(devices),
            _ => Ok(Vec::new()),
        }
    }

    /// Sign out one of the bound user's devices by its handle from
    /// [`list_devices`](Self::list_devices). Returns whether one was deleted.
    pub async fn sign_out_device(&self, handle: &str) -> Result<bool, SessionError> {
        let mut st = self.loaded().await?;
        let Some(user) = st.data_mut()?.user().cloned() else {
            return Ok(false);
        };
        let op = VectorOp::DestroyUserSession {
            user: user.into(),
            handle: handle.to_owned(),
        };
        Ok(matches!(
            self.run(&mut st, op).await?,
            Outcome::Destroyed { count, .. } if count > 0
        ))
    }

    /// The keyed hash of this session's ID (the only form of an ID that may
    /// be logged); `None` while the session is not stored yet.
    pub async fn id_hash(&self) -> Result<Option<String>, SessionError> {
        let mut st = self.loaded().await?;
        let rules = &self.shared.rules;
        Ok(st.data_mut()?.id().map(|id| rules.sid_hash(id)))
    }

    /// Lock the state, loading the session on first access. A failure is
    /// remembered, so the layer answers the request with it even if the
    /// handler swallows the error (fail closed).
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let mut st = self.shared.state.lock().await;
        if let Some(failure) = &st.failure {
            return Err(failure.clone());
        }
        if st.data.is_none() {
            let shared = &self.shared;
            let load = shared.rules.load(
                shared.cookie.as_deref(),
                shared.client.as_deref(),
                &shared.hints,
                clock::now(),
                shared.backend.as_ref(),
            );
            let ran = shared.metrics.timed("load", load).await;
            let outcome = self.settle(&mut st, "load", ran)?;
            if let Outcome::Loaded(data) = &outcome
                && data.binding_mismatch()
            {
                tracing::warn!(
                    sid_hash = data
                        .id()
                        .map(|id| self.shared.rules.sid_hash(id))
                        .unwrap_or_default(),
                    "client fingerprint differs from the session's"
                );
            }
            st.data = outcome.into_session();
            if st.data.is_none() {
                let e = SessionError::Value {
                    key: String::new(),
                    message: "load finished without a session".into(),
                };
                st.failure = Some(e.clone());
                return Err(e);
            }
        }
        Ok(st)
    }

    /// Run one operation (none of them mints an ID: save and regenerate
    /// happen in the layer); a failure poisons the request.
    async fn run(&self, st: &mut State, op: VectorOp) -> Result<Outcome, SessionError> {
        let shared = &self.shared;
        let name = op.name();
        let backend = shared.backend.as_ref();
        let ran = shared
            .metrics
            .run(&shared.rules, op, clock::now(), NO_ENTROPY, backend);
        self.settle(st, name, ran.await)
    }

    /// An operation's result; a failure is logged and remembered (fail closed).
    fn settle(
        &self,
        st: &mut State,
        name: &'static str,
        ran: Result<Outcome, RulesError>,
    ) -> Result<Outcome, SessionError> {
        match ran {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                tracing::warn!(op = name, code = e.code(), error = %e, "session operation failed");
                let e = SessionError::from(e);
                st.failure = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl State {
    fn data_mut(&mut self) -> Result<&mut session_logic::Session, SessionError> {
        self.data.as_mut().ok_or(SessionError::NotInstalled)
    }
}
