//! A tiny harness for host-native's integration tests: a real `redis-server`
//! on a free loopback port (killed on drop, log printed on failure), the
//! app under test served over real HTTP on another free port, and a minimal
//! HTTP/1.1 client. A copy of the `tests/` crate's approach, kept local so
//! host-native does not depend on the test crate.

// Test support, not product code: a server that does not start or a reply
// that cannot be parsed should abort the test loudly, so the workspace's
// no-panic lints are relaxed here (clippy.toml only relaxes them inside
// #[test] functions). Not every test file uses every helper.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub(crate) mod browser;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use host_native::Rules;
use session_logic::Engine;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) mod topology;

pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("host-native-redis-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("redis.log");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            log,
            _dir: dir,
        };
        server.spawn();
        server
    }

    /// Start (again) on the same port, e.g. after [`RedisServer::kill`].
    /// The data is gone: persistence is off.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let _ = std::fs::remove_file(&self.log);
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // DEBUG SLEEP makes a slow Redis for the timeout tests.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self._dir.path())
            .arg("--logfile")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server; install it or set REDIS_SERVER");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&self.log)
            .is_ok_and(|t| t.contains("Ready to accept connections"))
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One command on a fresh connection.
    pub(crate) async fn query(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// Every key name, via SCAN.
    pub(crate) async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut iter: redis::AsyncIter<String> =
            redis::AsyncCommands::scan(&mut conn).await.unwrap();
        let mut keys = Vec::new();
        while let Some(k) = iter.next_item().await {
            keys.push(k.unwrap());
        }
        keys.sort();
        keys
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server now (an outage).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Number of keys, from a fresh connection.
    pub(crate) async fn dbsize(&self) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log ({}):\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serve `app` on a free loopback port; returns its address.
pub(crate) async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A response as the client saw it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `name=value` of the Set-Cookie, for the next request's Cookie header.
    pub(crate) fn cookie(&self) -> Option<String> {
        self.header("set-cookie")
            .map(|c| c.split(';').next().unwrap().to_owned())
    }
}

/// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`).
pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    send(addr, method, path, &headers, b"").await
}

/// A JSON POST; the reply body parsed as JSON (`Null` if it is not JSON).
pub(crate) async fn post_json(
    addr: std::net::SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (Reply, serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let r = send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &bytes,
    )
    .await;
    let json = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    (r, json)
}

/// One HTTP/1.1 request with any headers and body.
pub(crate) async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// True when something listens on the port (used to wait for a dead server).
pub(crate) fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(100),
    )
    .is_ok()
}

/// The real `session-host serve` binary on a free loopback port, its
/// stdout and stderr in a log file (debug level) that tests can search.
pub(crate) struct SessionHost {
    child: Option<Child>,
    pub(crate) addr: std::net::SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl SessionHost {
    /// Start with `args` after `serve --listen 127.0.0.1:0`; wait until it
    /// logs the address it bound. Letting the service pick its own port
    /// avoids the race of a pre-chosen "free" port being taken (or probed
    /// into a self-connection) before the service binds it.
    pub(crate) async fn start(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("session-host-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("session-host.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_session-host"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(engine_args())
            .args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("SESSION_HOST_REDIS")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut host = SessionHost {
            child: Some(child),
            addr: (Ipv4Addr::LOCALHOST, 0).into(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = host.log();
            let bound = log
                .lines()
                .find(|l| l.contains("session-host serving"))
                .and_then(|l| l.split("listen=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok());
            if let Some(addr) = bound {
                host.addr = addr;
                return host;
            }
            if let Some(status) = host.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("session-host exited with {status}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "session-host did not start:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; its exit status.
    pub(crate) fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SessionHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- session-host log:\n{}", self.log());
        }
    }
}

/// `session-host serve` flags for the engine under test
/// (`HOST_NATIVE_ENGINE=wasm` → `--engine wasm --wasm-module …`).
pub(crate) fn engine_args() -> Vec<String> {
    match std::env::var("HOST_NATIVE_ENGINE").as_deref() {
        Ok("wasm") => vec![
            "--engine".into(),
            "wasm".into(),
            "--wasm-module".into(),
            wasm_path().display().to_string(),
        ],
        _ => Vec::new(),
    }
}

/// The rules under test: native, or with `HOST_NATIVE_ENGINE=wasm` the
/// wasm-abi module at [`wasm_path`] under wasmtime (needs the `wasm-engine`
/// feature; `scripts/steps/host` runs the tests both ways).
pub(crate) fn rules(engine: Engine) -> Rules {
    match std::env::var("HOST_NATIVE_ENGINE").as_deref() {
        Ok("wasm") => wasm_rules(engine),
        Ok("native" | "") | Err(_) => Rules::native(engine),
        Ok(other) => panic!("HOST_NATIVE_ENGINE={other}: expected `native` or `wasm`"),
    }
}

/// `target/wasm-abi/session_logic.wasm` of this workspace (built by
/// `scripts/steps/wasm`).
pub(crate) fn wasm_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-abi/session_logic.wasm")
}

/// The module, compiled once per test binary (cranelift is the slow part).
#[cfg(feature = "wasm-engine")]
pub(crate) fn wasm_module() -> host_native::rules::WasmModule {
    use std::sync::OnceLock;
    static MODULE: OnceLock<host_native::rules::WasmModule> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            host_native::rules::WasmModule::load(&wasm_path()).unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

#[cfg(feature = "wasm-engine")]
fn wasm_rules(engine: Engine) -> Rules {
    let rules = Rules::wasm(engine, &wasm_module()).unwrap();
    assert_eq!(rules.kind(), "wasm");
    rules
}

#[cfg(not(feature = "wasm-engine"))]
fn wasm_rules(_engine: Engine) -> Rules {
    panic!("HOST_NATIVE_ENGINE=wasm needs `cargo test -p host-native --features wasm-engine`")
}
