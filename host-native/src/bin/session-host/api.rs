//! The JSON API: every session operation over HTTP, for apps written in
//! languages without a session-logic host. The app keeps the `session`
//! object an outcome returns and hands it back to the next operation; the
//! service supplies time and entropy and talks to Redis. Errors are
//! `{code, message}` with the core's status (503 when Redis is down).
//!
//! The API trusts its caller (it hands out session IDs): bind it to
//! loopback or a private network.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use session_logic::conformance::VectorOp;
use session_logic::{Entropy, Error, Outcome, Session, UserId};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    /// The session ID, if the app carries it outside a cookie.
    id: Option<String>,
    /// The raw `Cookie` header, if the app forwards it.
    cookie: Option<String>,
    /// Client fingerprint for client binding (e.g. the User-Agent).
    client: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    session: Session,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    /// The caller's current session (kept by logout-everywhere, marked
    /// `current` in the device list).
    session: Option<Session>,
}

async fn load(State(app): State<App>, Json(req): Json<LoadRequest>) -> Response {
    let op = match req.id {
        Some(id) => VectorOp::LoadId {
            id,
            client: req.client,
        },
        None => VectorOp::Load {
            cookie: req.cookie,
            client: req.client,
        },
    };
    run(&app, op, NO_ENTROPY).await
}

async fn save(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    match clock::entropy() {
        Ok(entropy) => {
            let op = VectorOp::Save {
                session: req.session,
            };
            run(&app, op, entropy).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn regenerate(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    match clock::entropy() {
        Ok(entropy) => {
            let op = VectorOp::Regenerate {
                session: req.session,
            };
            run(&app, op, entropy).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn destroy(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    let op = VectorOp::Destroy {
        session: req.session,
    };
    run(&app, op, NO_ENTROPY).await
}

async fn touch(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    let op = VectorOp::Touch {
        session: req.session,
    };
    run(&app, op, NO_ENTROPY).await
}

async fn logout_everywhere(
    State(app): State<App>,
    Path(user): Path<String>,
    body: Option<Json<UserRequest>>,
) -> Response {
    let req = body.map(|Json(r)| r).unwrap_or_default();
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
    body: Option<Json<UserRequest>>,
) -> Response {
    let req = body.map(|Json(r)| r).unwrap_or_default();
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
