//! The JSON API: every session operation over HTTP, for apps written in
//! languages without a session-logic host. The app keeps the `session`
//! object an outcome returns and hands it back to the next operation; the
//! service supplies time and entropy and talks to Redis. Errors are
//! `{code, message}` with the core's status (503 when Redis is down).
//!
//! Changes travel as a change set next to the session (`set`, `remove`,
//! `user`), so callers never edit the session object itself and every key
//! goes through the core's checks. Request bodies that are not the JSON an
//! endpoint expects get a `{code, message}` 4xx like every other error.
//!
//! The API trusts its caller (it hands out session IDs): bind it to
//! loopback or a private network.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use session_logic::conformance::VectorOp;
use session_logic::{Entropy, Error, Outcome, Session, UserId};
use utoipa::ToSchema;

use crate::App;
use host_native::clock;
use host_native::rules::{NO_ENTROPY, RulesError};

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/load", post(load))
        .route("/save", post(save))
        .route("/regenerate", post(regenerate))
        .route("/destroy", post(destroy))
        .route("/touch", post(touch))
        .route("/users/{user}/logout-everywhere", post(logout_everywhere))
        .route("/users/{user}/devices", post(devices))
        .route(
            "/users/{user}/devices/{handle}/sign-out",
            post(sign_out_device),
        )
}

/// Load by cookie header or bare ID (neither: a visitor without a session).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadRequest {
    /// The session ID, if the app carries it outside a cookie.
    id: Option<String>,
    /// The raw `Cookie` header, if the app forwards it.
    cookie: Option<String>,
    /// Client fingerprint for client binding (e.g. the User-Agent).
    client: Option<String>,
}

/// The session as the last operation returned it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionRequest {
    #[schema(value_type = crate::openapi::SessionObject)]
    session: Session,
}

/// `save` and `regenerate`: the session as the last operation returned it,
/// plus what this request changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeRequest {
    #[schema(value_type = crate::openapi::SessionObject)]
    session: Session,
    #[serde(flatten)]
    changes: Changes,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct Changes {
    /// Data keys to set.
    #[serde(default)]
    set: BTreeMap<String, Value>,
    /// Data keys to remove (applied before `set`).
    #[serde(default)]
    remove: Vec<String>,
    /// Bind the session to this user (a string) or unbind it (`null`);
    /// absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    user: Option<Option<String>>,
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl Changes {
    fn apply(self, session: &mut Session) -> Result<(), Error> {
        for key in &self.remove {
            session.remove(key);
        }
        for (key, value) in self.set {
            session.insert(key, value).map_err(Error::Input)?;
        }
        match self.user {
            Some(Some(user)) => session.set_user(UserId::new(user)?, clock::now()),
            Some(None) => session.clear_user(),
            None => {}
        }
        Ok(())
    }
}

/// `axum::Json` whose rejections answer like every other API error:
/// `{code, message}` with 400 (not JSON, wrong shape), 413 (too large) or
/// 415 (no JSON content type).
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(body_error(&rejection)),
        }
    }
}

/// An optional body: none without a JSON content type.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match <Json<T> as OptionalFromRequest<S>>::from_request(req, state).await {
            Ok(value) => Ok(value.map(|Json(v)| Body(v))),
            Err(rejection) => Err(body_error(&rejection)),
        }
    }
}

fn body_error(rejection: &JsonRejection) -> Response {
    let (status, code) = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
        JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        }
        _ => (StatusCode::BAD_REQUEST, "invalid_request"),
    };
    let body = serde_json::json!({ "code": code, "message": rejection.body_text() });
    (status, Json(body)).into_response()
}

/// Optional body of the per-user operations.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserRequest {
    /// The caller's current session (kept by logout-everywhere, marked
    /// `current` in the device list).
    #[schema(value_type = Option<crate::openapi::SessionObject>)]
    session: Option<Session>,
}

async fn load(State(app): State<App>, Body(req): Body<LoadRequest>) -> Response {
    let op = match req.id {
        Some(id) => VectorOp::LoadId {
            id,
            client: req.client,
        },
        None => VectorOp::Load {
            touch_hint: None,
            cookie: req.cookie,
            client: req.client,
        },
    };
    run(&app, op, NO_ENTROPY).await
}

async fn save(State(app): State<App>, Body(req): Body<ChangeRequest>) -> Response {
    let mut session = req.session;
    if let Err(e) = req.changes.apply(&mut session) {
        return error(&e);
    }
    match clock::entropy() {
        Ok(entropy) => {
            let op = VectorOp::Save { session };
            run(&app, op, entropy).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn regenerate(State(app): State<App>, Body(req): Body<ChangeRequest>) -> Response {
    let mut session = req.session;
    if let Err(e) = req.changes.apply(&mut session) {
        return error(&e);
    }
    match clock::entropy() {
        Ok(entropy) => {
            let op = VectorOp::Regenerate { session };
            run(&app, op, entropy).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn destroy(State(app): State<App>, Body(req): Body<SessionRequest>) -> Response {
    let op = VectorOp::Destroy {
        session: req.session,
    };
    run(&app, op, NO_ENTROPY).await
}

async fn touch(State(app): State<App>, Body(req): Body<SessionRequest>) -> Response {
    let op = VectorOp::Touch {
        session: req.session,
    };
    run(&app, op, NO_ENTROPY).await
}

async fn logout_everywhere(
    State(app): State<App>,
    Path(user): Path<String>,
    body: Option<Body<UserRequest>>,
) -> Response {
    let req = body.map(|Body(r)| r).unwrap_or_default();
    match UserId::new(user) {
        Ok(user) => {
            let op = VectorOp::DestroyAllForUser {
                user: user.into(),
                keep: req.session,
            };
            run(&app, op, NO_ENTROPY).await
        }
        Err(e) => error(&Error::Input(e)),
    }
}

async fn devices(
    State(app): State<App>,
    Path(user): Path<String>,
    body: Option<Body<UserRequest>>,
) -> Response {
    let req = body.map(|Body(r)| r).unwrap_or_default();
    match UserId::new(user) {
        Ok(user) => {
            let op = VectorOp::ListUserSessions {
                user: user.into(),
                current: req.session,
            };
            run(&app, op, NO_ENTROPY).await
        }
        Err(e) => error(&Error::Input(e)),
    }
}

async fn sign_out_device(
    State(app): State<App>,
    Path((user, handle)): Path<(String, String)>,
) -> Response {
    match UserId::new(user) {
        Ok(user) => {
            let op = VectorOp::DestroyUserSession {
                user: user.into(),
                handle,
            };
            run(&app, op, NO_ENTROPY).await
        }
        Err(e) => error(&Error::Input(e)),
    }
}

async fn run(app: &App, op: VectorOp, entropy: Entropy) -> Response {
    let name = op.name();
    let backend = app.backend.as_ref();
    let ran = app
        .metrics
        .run(&app.rules, op, clock::now(), entropy, backend);
    match ran.await {
        Ok(outcome) => {
            log(app, name, &outcome);
            Json(serde_json::json!({ "outcome": outcome })).into_response()
        }
        Err(e) => {
            tracing::warn!(op = name, code = e.code(), error = %e, "api operation failed");
            rules_error(&e)
        }
    }
}

fn log(app: &App, name: &'static str, outcome: &Outcome) {
    let sid_hash = outcome
        .session()
        .and_then(Session::id)
        .map(|id| app.rules.sid_hash(id));
    tracing::info!(
        op = name,
        outcome = outcome.name(),
        sid_hash = sid_hash.as_deref().unwrap_or("-"),
        "api"
    );
}

fn error(e: &Error) -> Response {
    rules_error(&RulesError::Session(e.clone()))
}

fn rules_error(e: &RulesError) -> Response {
    let status = StatusCode::from_u16(e.status_hint()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "code": e.code(), "message": e.to_string() });
    (status, Json(body)).into_response()
}

fn entropy_failed(e: getrandom::Error) -> Response {
    let body = serde_json::json!({
        "code": "entropy_unavailable",
        "message": format!("the OS random number generator failed: {e}"),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
