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
use session_logic::{Error, Op, Outcome, Session, UserId};

use crate::App;
use host_native::clock;

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
    let now = clock::now();
    let op = match &req.id {
        Some(id) => app.engine.load_id(id, req.client.as_deref(), now),
        None => app
            .engine
            .load(req.cookie.as_deref(), req.client.as_deref(), now),
    };
    run(&app, "load", op).await
}

async fn save(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    match clock::entropy() {
        Ok(entropy) => {
            let op = app.engine.save(req.session, entropy, clock::now());
            run(&app, "save", op).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn regenerate(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    match clock::entropy() {
        Ok(entropy) => {
            let op = app.engine.regenerate(req.session, entropy, clock::now());
            run(&app, "regenerate", op).await
        }
        Err(e) => entropy_failed(e),
    }
}

async fn destroy(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    let op = app.engine.destroy(req.session, clock::now());
    run(&app, "destroy", op).await
}

async fn touch(State(app): State<App>, Json(req): Json<SessionRequest>) -> Response {
    let op = app.engine.touch(req.session, clock::now());
    run(&app, "touch", op).await
}

async fn logout_everywhere(
    State(app): State<App>,
    Path(user): Path<String>,
    body: Option<Json<UserRequest>>,
) -> Response {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    match UserId::new(user) {
        Ok(user) => {
            let op = app
                .engine
                .destroy_all_for_user(&user, req.session.as_ref(), clock::now());
            run(&app, "destroy_all_for_user", op).await
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
            let op = app
                .engine
                .list_user_sessions(&user, req.session.as_ref(), clock::now());
            run(&app, "list_user_sessions", op).await
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
            let op = app
                .engine
                .destroy_user_session(&user, &handle, clock::now());
            run(&app, "destroy_user_session", op).await
        }
        Err(e) => error(&Error::Input(e)),
    }
}

async fn run(app: &App, name: &'static str, op: Op) -> Response {
    match app.metrics.drive(name, op, app.backend.as_ref()).await {
        Ok(outcome) => {
            log(app, name, &outcome);
            Json(serde_json::json!({ "outcome": outcome })).into_response()
        }
        Err(e) => {
            tracing::warn!(op = name, code = e.code(), error = %e, "api operation failed");
            error(&e)
        }
    }
}

fn log(app: &App, name: &'static str, outcome: &Outcome) {
    let sid_hash = outcome
        .session()
        .and_then(Session::id)
        .map(|id| app.engine.sid_hash(id));
    tracing::info!(
        op = name,
        outcome = outcome.name(),
        sid_hash = sid_hash.as_deref().unwrap_or("-"),
        "api"
    );
}

fn error(e: &Error) -> Response {
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
