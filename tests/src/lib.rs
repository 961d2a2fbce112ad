//! The test harness: real `redis-server` processes (standalone and Cluster) on
//! free loopback ports, and the one place that sends a [`Round`] to Redis and
//! turns what comes back into [`Reply`] values.
//!
//! It owns the "never mock Redis" rule: every integration test under
//! `tests/tests/` that needs a backend starts one here. A server is killed on
//! drop; when the dropping thread is panicking, its log is kept and its tail
//! printed, so a failure in CI can be read from the test output alone.
//!
//! Binaries: `$REDIS_SERVER` / `$REDIS_CLI`, else `redis-server` / `redis-cli`
//! from `PATH` (`scripts/steps/install` installs them when missing).

// This crate is a test harness, not product code: a server that does not start,
// a cluster that never converges or a fixture that cannot be read should abort
// the test loudly with its message and the server log, so the workspace's
// no-panic lints are relaxed here, and only here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use host_native::executor::reply_from_value;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterConnection};
use session_logic::step::{Command, Reply, Round};
use tempfile::TempDir;

/// How often a starting server is polled.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long one server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fresh cluster may take to reach `cluster_state:ok` everywhere.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// A free port can be taken by someone else between probing and binding.
const PORT_ATTEMPTS: usize = 5;
/// Client-side bound on any one reply, so a wedged server fails a test instead
/// of hanging the whole run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of server log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A standalone `redis-server` on a free loopback port, with persistence off
/// and its own temporary directory. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts a server with the harness defaults and waits until it answers.
    ///
    /// Panics (with the server log) when it cannot be started.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line configuration, e.g.
    /// `&["--user", "app", "on", ">secret", "~sess:*", "+@read", "+@write"]`.
    pub fn start_with(args: &[&str]) -> Self {
        RedisServer {
            node: Node::spawn(args, None),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Where the server writes its log (kept after a failing test).
    pub fn log_path(&self) -> &Path {
        &self.node.log
    }

    /// A fresh sync connection as the default user.
    pub fn client(&self) -> redis::Connection {
        let url = self.url();
        let client = redis::Client::open(url.as_str())
            .unwrap_or_else(|e| panic!("invalid redis url {url}: {e}"));
        let conn = client
            .get_connection_with_timeout(COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        conn.set_read_timeout(Some(COMMAND_TIMEOUT))
            .expect("a non-zero read timeout is valid");
        conn.set_write_timeout(Some(COMMAND_TIMEOUT))
            .expect("a non-zero write timeout is valid");
        conn
    }
}

/// A Redis Cluster of masters only (no replicas), each node a `redis-server`
/// on its own free loopback port and in its own directory. Killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts `masters` nodes, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok`.
    ///
    /// Panics (with every node's log) when the cluster does not form.
    /// `redis-cli` refuses fewer than 3 masters.
    pub fn start(masters: usize) -> Self {
        assert!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters, asked for {masters}"
        );
        let nodes = (0..masters)
            .map(|_| {
                Node::spawn(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    Some(ClusterBus),
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster.wait_until_ok();
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The client port of every node.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// A fresh sync cluster connection that knows every node.
    pub fn client(&self) -> ClusterConnection {
        ClusterClient::builder(self.urls())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .build()
            .and_then(|client| client.get_connection())
            .unwrap_or_else(|e| panic!("cannot connect to cluster {:?}: {e}", self.urls()))
    }

    fn create(&self) {
        let mut cli = process::Command::new(binary("REDIS_CLI", "redis-cli"));
        cli.arg("--cluster").arg("create");
        cli.args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        cli.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cli
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); is redis-cli installed?"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let mut pending: Vec<&Node> = self.nodes.iter().collect();
        let mut last = String::new();
        while !pending.is_empty() {
            pending.retain(|node| {
                let info = node.cluster_info().unwrap_or_else(|e| e);
                let ok = info.lines().any(|l| l.trim() == "cluster_state:ok")
                    && info.lines().any(|l| l.trim() == known);
                if !ok {
                    last = format!("node {}: {info}", node.port);
                }
                !ok
            });
            if pending.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not reach cluster_state:ok on every node within {CLUSTER_TIMEOUT:?}; \
                 last CLUSTER INFO seen:\n{last}"
            );
            thread::sleep(POLL_EVERY);
        }
    }
}

/// Marker: give this node a second free port for the cluster bus. The default
/// (client port + 10000) can overflow 65535 or collide, as free ports are
/// drawn from the ephemeral range.
#[derive(Clone, Copy, Debug)]
struct ClusterBus;

/// One `redis-server` process and the directory it owns.
#[derive(Debug)]
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
    /// `None` only after drop has kept it on a panic.
    dir: Option<TempDir>,
}

/// Why one start attempt failed.
enum StartFailure {
    /// Someone bound the port between our probe and the server's bind: retry.
    AddressInUse,
    /// Anything else: give up with this explanation.
    Fatal(String),
}

impl Node {
    fn spawn(extra: &[&str], bus: Option<ClusterBus>) -> Node {
        let mut collisions = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut node = Node::launch(extra, bus);
            match node.wait_ready() {
                Ok(()) => return node,
                Err(StartFailure::AddressInUse) => {
                    collisions.push(node.port);
                    // Dropping a node that failed to start removes its directory.
                    drop(node);
                }
                Err(StartFailure::Fatal(why)) => {
                    // Panicking while `node` is alive keeps its log and prints its tail.
                    panic!("redis-server on port {} did not start: {why}", node.port);
                }
            }
        }
        panic!(
            "redis-server could not bind a free port in {PORT_ATTEMPTS} attempts \
             (address in use on {collisions:?})"
        );
    }

    fn launch(extra: &[&str], bus: Option<ClusterBus>) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("redis-test-")
            .tempdir()
            .expect("cannot create a temporary directory for redis-server");
        let log = dir.path().join("redis.log");
        let stderr = File::create(dir.path().join("stderr.log"))
            .expect("cannot create the redis-server stderr file");
        let port = free_port();
        let mut cmd = process::Command::new(binary("REDIS_SERVER", "redis-server"));
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log);
        if bus.is_some() {
            cmd.arg("--cluster-port").arg(free_port().to_string());
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {:?} ({e}); install redis-server or set REDIS_SERVER",
                cmd.get_program()
            )
        });
        Node {
            child,
            port,
            log,
            dir: Some(dir),
        }
    }

    /// Ready means: still running, logged that it accepts connections (so
    /// it is *our* process that bound the port, not a neighbour's), and
    /// answers `PING` (any reply but `LOADING`, so ACL setups that refuse
    /// the default user still count as up).
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| {
                StartFailure::Fatal(format!("cannot poll the redis-server process: {e}"))
            })? {
                let output = format!("{}\n{}", self.log_tail(), self.stderr_text());
                if output.contains("Address already in use") {
                    return Err(StartFailure::AddressInUse);
                }
                return Err(StartFailure::Fatal(format!(
                    "it exited with {status}; log {}:\n{output}",
                    self.log.display()
                )));
            }
            if self.logged_ready() && ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Fatal(format!(
                    "no PING answer within {START_TIMEOUT:?}; log {}:\n{}\n{}",
                    self.log.display(),
                    self.log_tail(),
                    self.stderr_text()
                )));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    fn logged_ready(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .is_ok_and(|text| text.contains("Ready to accept connections"))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `CLUSTER INFO` as text, or why it could not be read.
    fn cluster_info(&self) -> Result<String, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut conn)
            .map_err(|e| e.to_string())
    }

    fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }

    fn stderr_text(&self) -> String {
        self.log
            .parent()
            .map(|dir| tail(&dir.join("stderr.log"), LOG_TAIL_LINES))
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Errors mean the process is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!(
                "--- redis-server on port {} (directory kept at {}), last {LOG_TAIL_LINES} lines of {}:\n{}{}",
                self.port,
                kept.as_deref().unwrap_or(Path::new("?")).display(),
                self.log.display(),
                self.log_tail(),
                self.stderr_text(),
            );
        }
    }
}

/// A port nothing listens on right now. Another process may take it before
/// the server binds it; [`Node::spawn`] retries when that happens.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("cannot bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

fn binary(var: &str, default: &str) -> OsString {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// An inline `PING` over a raw socket: no client handshake, so it works
/// whatever ACL the server was started with.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return false;
    }
    line.starts_with('+') || (line.starts_with('-') && !line.starts_with("-LOADING"))
}

/// The last `n` lines of a text file, or a note that it cannot be read.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| format!("{l}\n")).collect()
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// Sends `round` as one pipeline (no `MULTI`) and returns one [`Reply`] per
/// command, in order. Redis error replies are data
/// (`Reply::Error("NOSCRIPT No matching script. Please use EVAL.")`); only a
/// transport failure (connection lost, timeout) or a reply with no RESP2
/// shape is an `Err`.
pub fn execute_round(conn: &mut redis::Connection, round: &Round) -> Result<Vec<Reply>, String> {
    if round.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    // Without this, one error reply turns the whole pipeline into an Err and
    // the other replies are lost; with it, errors stay `Value::ServerError`.
    pipe.ignore_errors();
    for command in round.commands() {
        pipe.add_command(to_cmd(command)?);
    }
    let values: Vec<redis::Value> = pipe
        .query(conn)
        .map_err(|e| format!("pipeline of {} commands failed: {e}", round.len()))?;
    if values.len() != round.len() {
        return Err(format!(
            "sent {} commands, got {} replies",
            round.len(),
            values.len()
        ));
    }
    values.into_iter().map(reply_from_value).collect()
}

/// [`execute_round`] for a Cluster: each command is routed to the node that
/// owns its key (following `MOVED`/`ASK`), one after another in round order.
/// That costs one round trip per command, which is fine for a test client;
/// the replies are exactly what a concurrent host would feed back.
pub fn execute_round_cluster(
    conn: &mut ClusterConnection,
    round: &Round,
) -> Result<Vec<Reply>, String> {
    round
        .commands()
        .iter()
        .map(|command| match conn.req_command(&to_cmd(command)?) {
            Ok(value) => reply_from_value(value),
            // The sync cluster client surfaces error replies as `Err`; the
            // ones that carry a Redis error code came from the server.
            Err(err) => match err.code() {
                Some(code) => Ok(Reply::Error(error_text(code, err.detail()))),
                None => Err(format!("{} failed: {err}", describe(command))),
            },
        })
        .collect()
}

/// Redis's error line, rebuilt from the client's code/detail split.
fn error_text(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_owned(),
    }
}

fn to_cmd(command: &Command) -> Result<redis::Cmd, String> {
    if command.args().is_empty() {
        return Err("cannot send an empty command".to_owned());
    }
    let mut cmd = redis::Cmd::new();
    for arg in command.args() {
        cmd.arg(arg.as_slice());
    }
    Ok(cmd)
}

fn describe(command: &Command) -> String {
    String::from_utf8_lossy(command.name()).into_owned()
}
