//! The tower layer: gives each request a lazy [`Session`] handle and, when
//! the handler is done, writes what changed in one operation and applies the
//! core's cookie decision. It owns the HTTP caching rules: `Vary: Cookie` on
//! every response that read the session, `Cache-Control: no-store` on every
//! response that sets a cookie, and fail-closed errors (a backend failure
//! during the request replaces the response with a 503 JSON error).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE, USER_AGENT, VARY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use session_logic::Engine;
use session_logic::config::BindingPolicy;
use session_logic::conformance::VectorOp;
use tokio::sync::Mutex;
use tower::{Layer, Service};

use crate::clock;
use crate::executor::{Backend, BoxFuture};
use crate::extract::{Finale, Session, SessionError, Shared, State};
use crate::hints::TouchHints;
use crate::metrics::Metrics;
use crate::rules::{NO_ENTROPY, Rules};

/// Sessions for every route below it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionLayer {
    rules: Rules,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    hints: Arc<TouchHints>,
}

impl SessionLayer {
    /// Sessions with `engine`'s rules stored in `backend`.
    pub fn new(engine: Engine, backend: Arc<dyn Backend>) -> Self {
        Self::with_rules(Rules::native(engine), backend)
    }

    /// Sessions with `rules` (native or wasm engine) stored in `backend`.
    pub fn with_rules(rules: Rules, backend: Arc<dyn Backend>) -> Self {
        SessionLayer {
            rules,
            backend,
            metrics: Arc::new(Metrics::new()),
            hints: Arc::new(TouchHints::default()),
        }
    }

    /// Use `hints` (e.g. [`TouchHints::new(0)`](TouchHints::new) to always
    /// run the load script, or one map shared by several layers).
    pub fn with_touch_hints(mut self, hints: Arc<TouchHints>) -> Self {
        self.hints = hints;
        self
    }

    /// Count operations into shared metrics (e.g. the ones `/metrics` shows).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service [`SessionLayer`] wraps around a route.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    layer: SessionLayer,
    inner: S,
}

impl<S> Service<Request> for SessionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let layer = &self.layer;
        let client = match layer.rules.config().client_binding {
            BindingPolicy::Off => None,
            _ => req
                .headers()
                .get(USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        };
        let session = Session {
            shared: Arc::new(Shared {
                rules: layer.rules.clone(),
                backend: Arc::clone(&layer.backend),
                metrics: Arc::clone(&layer.metrics),
                hints: Arc::clone(&layer.hints),
                cookie: cookie_header(req.headers()),
                client,
                state: Mutex::new(State {
                    data: None,
                    failure: None,
                    finale: Finale::Save,
                }),
            }),
        };
        req.extensions_mut().insert(session.clone());
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            Ok(finish(&session, response).await)
        })
    }
}

/// All `Cookie` headers as one (HTTP/2 may split them); non-UTF-8 bytes are
/// kept lossily so the core's strict parser rejects them.
fn cookie_header(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Write what the request changed, once, and decorate the response.
async fn finish(session: &Session, mut response: Response) -> Response {
    let shared = &session.shared;
    let mut st = shared.state.lock().await;
    if let Some(failure) = st.failure.take() {
        return with_vary(failure.into_response());
    }
    let Some(data) = st.data.take() else {
        // Never touched: no Redis call, no headers.
        return response;
    };
    let (op, entropy) = match st.finale {
        Finale::Cleared => {
            let headers = response.headers_mut();
            headers.append(VARY, HeaderValue::from_static("Cookie"));
            if let Ok(value) = HeaderValue::from_str(&shared.rules.removal_cookie()) {
                headers.append(SET_COOKIE, value);
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            return response;
        }
        Finale::Destroy => (VectorOp::Destroy { session: data }, NO_ENTROPY),
        Finale::Save if !data.needs_save() => {
            // Read only: the save would write nothing and set no cookie, so
            // skip it (and the OS entropy it would draw) on the hot path.
            return with_vary(response);
        }
        finale => {
            let entropy = match clock::entropy() {
                Ok(e) => e,
                Err(e) => return SessionError::Entropy(e).into_response(),
            };
            if finale == Finale::Regenerate {
                (VectorOp::Regenerate { session: data }, entropy)
            } else {
                (VectorOp::Save { session: data }, entropy)
            }
        }
    };
    let name = op.name();
    let backend = shared.backend.as_ref();
    let ran = shared
        .metrics
        .run(&shared.rules, op, clock::now(), entropy, backend);
    let outcome = match ran.await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(op = name, code = e.code(), error = %e, "session write failed");
            return with_vary(SessionError::from(e).into_response());
        }
    };
    if let Some(key) = shared.rules.written_key(&outcome) {
        shared.hints.observe(key, &outcome);
    }
    if let Some(id) = outcome.session().and_then(|s| s.id()) {
        tracing::debug!(op = name, outcome = outcome.name(), sid_hash = %shared.rules.sid_hash(id), "session written");
    } else {
        tracing::debug!(op = name, outcome = outcome.name(), "session written");
    }
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Cookie"));
    if let Some(cookie) = outcome.cookie() {
        match HeaderValue::from_str(cookie) {
            Ok(value) => {
                headers.append(SET_COOKIE, value);
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Err(_) => {
                // The core renders cookies from validated config and base64
                // IDs, so this cannot happen; fail closed if it ever does.
                tracing::error!("the core rendered a Set-Cookie that is not a valid header");
                let e = SessionError::Value {
                    key: String::new(),
                    message: "invalid Set-Cookie".into(),
                };
                return e.into_response();
            }
        }
    }
    response
}

/// Error responses from a request that read the session vary by cookie too.
fn with_vary(mut response: Response) -> Response {
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("Cookie"));
    response
}
