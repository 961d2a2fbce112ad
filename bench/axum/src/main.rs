//! `bench-axum`: one tiny axum app whose session logic is written four
//! times, once per session library, so a load benchmark (wrk) can compare
//! the libraries on the same app and the same Redis.
//!
//! The session holds a JSON integer `n` and, after sign-in, a user id:
//!
//! - `GET /read`: `n` (absent: 0). Writes nothing; without a cookie it
//!   creates nothing and sends no `Set-Cookie`.
//! - `POST /write`: `n += 1`; the new `n`.
//! - `POST /login`: fixation-safe sign-in: a new session ID, then a user
//!   `u<counter>` bound to it; `ok`.
//! - `POST /seed`: `n = 0`, then the same sign-in, so the benchmark can
//!   create sessions over HTTP (the answer carries a `Set-Cookie`).
//!   `ours` only: `POST /seed?user=U` binds user `U` instead, so one user
//!   can hold many sessions.
//! - `POST /logout-all` (`ours` only): logout everywhere for the session's
//!   user, this session included; the number of sessions revoked.
//! - `GET /rounds` (`ours` only): how many rounds (pipelines, i.e. round
//!   trips) the layer has sent to Redis so far. Redis's own read counter
//!   cannot tell round trips apart when a long pipeline arrives in several
//!   TCP reads.
//!
//! Modes (`--mode`):
//!
//! - `ours`: [`host_native::SessionLayer`] with the default
//!   [`session_logic::Config`] except `cookie.secure = false` (plain HTTP).
//! - `tower`: tower-sessions 0.14 with tower-sessions-redis-store 0.16 (fred),
//!   its defaults except `secure = false` and a 30-minute idle expiry.
//! - `tower-always`: the same with `always_save`, so every request that
//!   carries a session rewrites it and its idle timeout slides like ours.
//! - `floor`: no session library: exactly one raw Redis round trip per
//!   request with the `redis` crate (no TTL, no ID hashing, no regeneration
//!   of the old key). No session library can beat it; it is the baseline.
//!
//! The runtime is single-threaded so the process uses one core (the
//! benchmark pins it with `taskset`). Redis errors answer 503; no request
//! can panic.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(about = "A tiny axum app for comparing session libraries under wrk")]
struct Args {
    /// Which session implementation serves the routes.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Port of the Redis server on 127.0.0.1.
    #[arg(long)]
    redis_port: u16,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Connections in the fred pool (tower modes). One multiplexed,
    /// auto-pipelining connection, like `ours` and `floor` use.
    #[arg(long, default_value_t = 1)]
    fred_pool: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Ours,
    Tower,
    TowerAlways,
    Floor,
}

/// Numbers the users signed in by `/login` and `/seed`.
static USERS: AtomicU64 = AtomicU64::new(0);

fn next_user() -> String {
    format!("u{}", USERS.fetch_add(1, Ordering::Relaxed))
}

/// A Redis (or session store) failure as the response.
fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {e}")).into_response()
}

type Result<T> = std::result::Result<T, Response>;

/// The bound on each Redis call and connection attempt, host-native's
/// default (`ConnectOptions::default()`), given to every mode so that a Redis
/// outage is a prompt 503 everywhere instead of a hung request.
const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = format!("redis://127.0.0.1:{}", args.redis_port);
    let app = match args.mode {
        Mode::Ours => ours::app(&url).await?,
        Mode::Tower => tower_mode::app(&url, args.fred_pool, false).await?,
        Mode::TowerAlways => tower_mode::app(&url, args.fred_pool, true).await?,
        Mode::Floor => floor::app(&url).await?,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", listener.local_addr()?)?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The same four routes over each mode's handlers.
fn routes<St, R, W, L, S, T1, T2, T3, T4>(read: R, write: W, login: L, seed: S) -> Router<St>
where
    St: Clone + Send + Sync + 'static,
    R: axum::handler::Handler<T1, St>,
    W: axum::handler::Handler<T2, St>,
    L: axum::handler::Handler<T3, St>,
    S: axum::handler::Handler<T4, St>,
    T1: 'static,
    T2: 'static,
    T3: 'static,
    T4: 'static,
{
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .route("/login", post(login))
        .route("/seed", post(seed))
}

/// session-logic through host-native's tower layer. A [`SessionError`]
/// answers with the core's status: 503 for a Redis failure.
///
/// [`SessionError`]: host_native::SessionError
mod ours {
    use std::sync::Arc;

    use axum::extract::Query;
    use host_native::connect::{ConnectOptions, connect};
    use host_native::executor::BoxFuture;
    use host_native::{Backend, Session, SessionLayer};
    use session_logic::step::BackendFailure;
    use session_logic::{Config, Engine, Reply, Round, UserId};

    use super::*;

    /// Rounds sent through [`Counted`].
    static ROUNDS: AtomicU64 = AtomicU64::new(0);

    /// The real backend, counting the rounds it is given.
    struct Counted(Arc<dyn Backend>);

    impl Backend for Counted {
        fn execute<'a>(
            &'a self,
            round: &'a Round,
        ) -> BoxFuture<'a, std::result::Result<Vec<Reply>, BackendFailure>> {
            ROUNDS.fetch_add(1, Ordering::Relaxed);
            self.0.execute(round)
        }

        fn kind(&self) -> &'static str {
            self.0.kind()
        }
    }

    #[derive(serde::Deserialize)]
    pub(super) struct SeedQuery {
        user: Option<String>,
    }

    pub(super) async fn app(url: &str) -> std::result::Result<Router, Box<dyn std::error::Error>> {
        let mut config = Config::default();
        config.cookie.secure = false;
        let engine = Engine::new(config)?;
        let backend = Arc::new(Counted(connect(url, &ConnectOptions::default()).await?));
        let app = routes(read, write, login, seed)
            .route("/logout-all", post(logout_all))
            .layer(SessionLayer::new(engine, backend))
            .route("/rounds", get(rounds));
        Ok(app)
    }

    async fn n(session: &Session) -> Result<i64> {
        let n = session
            .get::<i64>("n")
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(n.unwrap_or(0))
    }

    async fn read(session: Session) -> Result<String> {
        Ok(n(&session).await?.to_string())
    }

    async fn write(session: Session) -> Result<String> {
        let n = n(&session).await? + 1;
        session
            .insert("n", n)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(n.to_string())
    }

    async fn sign_in(session: &Session, user: Option<String>) -> Result<&'static str> {
        let user = UserId::new(user.unwrap_or_else(next_user))
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
        session
            .regenerate()
            .await
            .map_err(IntoResponse::into_response)?;
        session
            .bind_user(user)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok("ok")
    }

    async fn login(session: Session) -> Result<&'static str> {
        sign_in(&session, None).await
    }

    async fn seed(session: Session, Query(query): Query<SeedQuery>) -> Result<&'static str> {
        session
            .insert("n", 0)
            .await
            .map_err(IntoResponse::into_response)?;
        sign_in(&session, query.user).await
    }

    async fn rounds() -> String {
        ROUNDS.load(Ordering::Relaxed).to_string()
    }

    async fn logout_all(session: Session) -> Result<String> {
        let revoked = session
            .logout_everywhere(false)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(revoked.to_string())
    }
}

/// tower-sessions 0.14 over tower-sessions-redis-store 0.16 (fred). Handler
/// errors answer 503; a failed save after the handler is tower-sessions' own
/// empty 500.
mod tower_mode {
    use tower_sessions::{Expiry, Session, SessionManagerLayer};
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{
        ClientLike, Config, ConnectionConfig, PerformanceConfig, Pool, ReconnectPolicy,
    };

    use super::*;

    pub(super) async fn app(
        url: &str,
        pool_size: usize,
        always_save: bool,
    ) -> std::result::Result<Router, Box<dyn std::error::Error>> {
        // fred's defaults have no command timeout and no reconnection: with
        // Redis gone, requests would hang forever. Mirror the other modes:
        // TIMEOUT per command, reconnect with backoff up to 500 ms.
        let perf = PerformanceConfig {
            default_command_timeout: TIMEOUT,
            ..PerformanceConfig::default()
        };
        let conn = ConnectionConfig {
            connection_timeout: TIMEOUT,
            ..ConnectionConfig::default()
        };
        let reconnect = ReconnectPolicy::new_exponential(0, 100, 500, 2);
        let config = Config::from_url(url)?;
        let pool = Pool::new(config, Some(perf), Some(conn), Some(reconnect), pool_size)?;
        // The connection tasks run on this runtime until the process exits.
        let _tasks = pool.connect();
        pool.wait_for_connect().await?;
        let layer = SessionManagerLayer::new(RedisStore::new(pool))
            .with_secure(false)
            // tower-sessions' default expiry is the browser session, with the
            // record kept for two weeks; ours is a 30-minute sliding idle
            // timeout, so both sides get the same one here.
            .with_expiry(Expiry::OnInactivity(
                tower_sessions::cookie::time::Duration::minutes(30),
            ))
            .with_always_save(always_save);
        Ok(routes(read, write, login, seed).layer(layer))
    }

    async fn n(session: &Session) -> Result<i64> {
        Ok(session
            .get::<i64>("n")
            .await
            .map_err(unavailable)?
            .unwrap_or(0))
    }

    async fn read(session: Session) -> Result<String> {
        Ok(n(&session).await?.to_string())
    }

    async fn write(session: Session) -> Result<String> {
        let n = n(&session).await? + 1;
        session.insert("n", n).await.map_err(unavailable)?;
        Ok(n.to_string())
    }

    async fn sign_in(session: &Session) -> Result<&'static str> {
        session.cycle_id().await.map_err(unavailable)?;
        session
            .insert("user", next_user())
            .await
            .map_err(unavailable)?;
        Ok("ok")
    }

    async fn login(session: Session) -> Result<&'static str> {
        sign_in(&session).await
    }

    async fn seed(session: Session) -> Result<&'static str> {
        session.insert("n", 0).await.map_err(unavailable)?;
        sign_in(&session).await
    }
}

/// One raw Redis round trip per request: the floor. `/login` writes a new
/// key holding only the user (carrying `n` over would cost a read) and
/// leaves the old key in place.
mod floor {
    use std::collections::HashMap;

    use axum::extract::State;
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    use super::*;

    const COOKIE_NAME: &str = "fid";

    pub(super) async fn app(url: &str) -> std::result::Result<Router, Box<dyn std::error::Error>> {
        // The reconnecting connection host-native's `connect` builds.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(routes(read, write, login, seed).with_state(conn))
    }

    /// `floor:<cookie value>`, or `floor:none` without a cookie.
    fn key(headers: &HeaderMap) -> String {
        let id = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            .unwrap_or("none");
        format!("floor:{id}")
    }

    async fn read(State(mut conn): State<ConnectionManager>, headers: HeaderMap) -> Result<String> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key(&headers))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(fields.get("n").map_or("0", String::as_str).to_owned())
    }

    async fn write(
        State(mut conn): State<ConnectionManager>,
        headers: HeaderMap,
    ) -> Result<String> {
        let n: i64 = redis::cmd("HINCRBY")
            .arg(key(&headers))
            .arg("n")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(n.to_string())
    }

    /// One `HSET` of a new random key; the answer sets its cookie.
    async fn create(mut conn: ConnectionManager, fields: &[(&str, String)]) -> Result<Response> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(unavailable)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let _added: i64 = redis::cmd("HSET")
            .arg(format!("floor:{id}"))
            .arg(fields)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let cookie = format!("{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Lax");
        Ok(([(SET_COOKIE, cookie)], "ok").into_response())
    }

    async fn login(State(conn): State<ConnectionManager>) -> Result<Response> {
        create(conn, &[("user", next_user())]).await
    }

    async fn seed(State(conn): State<ConnectionManager>) -> Result<Response> {
        create(conn, &[("n", "0".to_owned()), ("user", next_user())]).await
    }
}
