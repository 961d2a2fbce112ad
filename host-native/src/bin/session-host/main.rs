//! `session-host`: the session service. `serve` runs an HTTP JSON API for
//! every session operation (for apps in other languages), `/healthz`,
//! `/metrics` and a small demo site, on Redis when given a URL and on the
//! embedded in-memory backend otherwise.

mod admin;
mod api;
mod demo;
mod openapi;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Parser, Subcommand, ValueEnum};
use host_native::connect::{self, ConnectOptions};
use host_native::{Backend, MemoryBackend, Metrics, Rules, SessionLayer};
use session_logic::{Command, Config, Engine, Reply, Round};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "session-host",
    version,
    about = "Web sessions in Redis, one set of rules"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the JSON API, /healthz, /metrics and the demo site.
    Serve(ServeArgs),
    /// Show one stored session (metadata and data sizes; values with
    /// --values). Prints JSON; never prints a session ID.
    Inspect {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        target: admin::Target,
        /// Include the data values (they may be personal data).
        #[arg(long)]
        values: bool,
    },
    /// Sign a user out everywhere: revoke every session of USER through the
    /// user's index, or with --scan by scanning the keyspace (when the index
    /// was lost, e.g. evicted or restored from an old backup).
    RevokeUser {
        #[command(flatten)]
        store: StoreArgs,
        /// The user id sessions are bound to.
        user: String,
        /// Find the sessions by SCAN instead of the index.
        #[arg(long)]
        scan: bool,
        #[command(flatten)]
        bounds: admin::ScanBounds,
    },
    /// Count sessions, users, markers and indexes by SCAN, at a bounded cost.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        bounds: admin::ScanBounds,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Which build of the rules runs: linked into this binary, or the
    /// wasm-abi module under wasmtime (needs feature `wasm-engine`).
    #[arg(long, value_enum, default_value_t = EngineKind::Native)]
    engine: EngineKind,
    /// The wasm-abi module for `--engine wasm` (built by `scripts/steps/wasm`).
    #[arg(
        long,
        env = "SESSION_HOST_WASM",
        default_value = "target/wasm-abi/session_logic.wasm"
    )]
    wasm_module: PathBuf,
}

/// Where sessions are stored and under which rules.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// Redis URL: redis://, rediss://, redis+cluster://h:p,h:p,
    /// redis+sentinel://h:p,h:p/MASTER[/db]. Without it, `serve`
    /// keeps sessions in this process's memory.
    #[arg(long, env = "SESSION_HOST_REDIS")]
    redis: Option<String>,
    /// Treat --redis redis://h:p[,h:p…] as Redis Cluster seed nodes.
    #[arg(long, requires = "redis")]
    cluster: bool,
    /// Session config (JSON); defaults otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client-side bound on each Redis round, milliseconds.
    #[arg(long, default_value_t = 2000)]
    command_timeout_ms: u64,
    /// Accept Redis TLS certificates that cannot be verified (dangerous).
    #[arg(long)]
    insecure_tls: bool,
    /// PEM CA bundle for rediss:// instead of the system roots.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EngineKind {
    /// The rules linked into this binary.
    Native,
    /// The same rules from the wasm-abi module, under wasmtime.
    Wasm,
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    rules: Rules,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    /// The demo's password store (user → password), in memory.
    passwords: Arc<Mutex<BTreeMap<String, String>>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr: stdout is for the admin commands' JSON.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve(args) => serve(args).await,
        Cmd::Inspect {
            store,
            target,
            values,
        } => {
            admin_run(&store, |engine, backend| async move {
                admin::inspect(&engine, backend.as_ref(), &target, values).await
            })
            .await
        }
        Cmd::RevokeUser {
            store,
            user,
            scan,
            bounds,
        } => {
            admin_run(&store, |engine, backend| async move {
                admin::revoke_user(&engine, backend.as_ref(), &user, scan, &bounds).await
            })
            .await
        }
        Cmd::Stats { store, bounds } => {
            admin_run(&store, |engine, backend| async move {
                admin::stats(&engine, backend.as_ref(), &bounds).await
            })
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("session-host: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Run an admin command against the Redis of `store` and print its JSON.
async fn admin_run<F, Fut>(store: &StoreArgs, command: F) -> Result<(), String>
where
    F: FnOnce(Engine, Arc<dyn Backend>) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let engine = engine(store)?;
    let Some(backend) = redis_backend(store).await? else {
        return Err("admin commands need --redis URL (or SESSION_HOST_REDIS)".into());
    };
    let report = command(engine, backend).await?;
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// The engine from `--config` (defaults otherwise), with a per-process log
/// key when the config has none.
fn engine(store: &StoreArgs) -> Result<Engine, String> {
    let mut config = match &store.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            Config::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if config.log_key.is_none() {
        // A per-process key: sid_hash values correlate within one run only.
        let key = host_native::clock::entropy()
            .map_err(|e| format!("the OS random number generator failed: {e}"))?;
        config.log_key = Some(key.0.iter().map(|b| format!("{b:02x}")).collect());
    }
    Engine::new(config).map_err(|e| e.to_string())
}

/// The Redis backend of `store`, or `None` without a URL.
async fn redis_backend(store: &StoreArgs) -> Result<Option<Arc<dyn Backend>>, String> {
    let Some(url) = &store.redis else {
        return Ok(None);
    };
    let tls_ca_pem = match &store.tls_ca {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
        }
        None => None,
    };
    let opts = ConnectOptions {
        command_timeout: Duration::from_millis(store.command_timeout_ms),
        insecure_tls: store.insecure_tls,
        tls_ca_pem,
        ..ConnectOptions::default()
    };
    let url = &if store.cluster {
        connect::cluster_url(url).map_err(|e| e.to_string())?
    } else {
        url.clone()
    };
    let backend = connect::connect(url, &opts)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(redis = %connect::redact(url), kind = backend.kind(), "connected to redis");
    connect::check_eviction_policy(backend.as_ref()).await;
    Ok(Some(backend))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let engine = engine(&args.store)?;
    let rules = match args.engine {
        EngineKind::Native => Rules::native(engine.clone()),
        EngineKind::Wasm => {
            Rules::wasm_from_file(engine.clone(), &args.wasm_module).map_err(|e| e.to_string())?
        }
    };
    match args.engine {
        EngineKind::Native => tracing::info!(engine = rules.kind(), "session rules engine"),
        EngineKind::Wasm => tracing::info!(
            engine = rules.kind(),
            module = %args.wasm_module.display(),
            "session rules engine"
        ),
    }
    let backend: Arc<dyn Backend> = match redis_backend(&args.store).await? {
        Some(backend) => backend,
        None => {
            tracing::warn!(
                "NO REDIS URL GIVEN (--redis or SESSION_HOST_REDIS): sessions are kept in this \
                 process's memory only and vanish when it stops; for demos and tests, not production"
            );
            Arc::new(MemoryBackend::new())
        }
    };
    let app = App {
        rules: rules.clone(),
        backend: Arc::clone(&backend),
        metrics: Arc::new(Metrics::new()),
        passwords: Arc::default(),
    };
    let sessions = SessionLayer::with_rules(rules, Arc::clone(&backend))
        .with_metrics(Arc::clone(&app.metrics));
    let router = Router::new()
        .merge(demo::routes().layer(sessions))
        .nest("/api/v1", api::routes())
        .route("/openapi.json", get(openapi_json))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // The bound address, so `--listen 127.0.0.1:0` reports the port it got.
    let bound = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(listen = %bound, "session-host serving (demo at /, API at /api/v1)");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// `PING` round: the backend answers.
async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let round = Round(vec![Command(vec![b"PING".to_vec()])]);
    let (status, detail) = match app.backend.execute(&round).await {
        Ok(replies) if matches!(replies.first(), Some(Reply::Simple(s)) if s == "PONG") => {
            (StatusCode::OK, "ok".to_owned())
        }
        Ok(replies) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unexpected PING reply {replies:?}"),
        ),
        Err(failure) => (StatusCode::SERVICE_UNAVAILABLE, format!("{failure:?}")),
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
        "backend": app.backend.kind(),
        "detail": detail,
    });
    (status, axum::Json(body))
}

async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi::document())
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
