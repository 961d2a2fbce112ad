//! The host loop and the backends it sends rounds to. It owns one rule of the
//! sans-IO contract: a round goes out as one pipeline (in Cluster, one
//! pipeline per slot, all concurrently), one reply per command comes back in
//! order, and anything that is not a reply (timeout, lost connection) goes
//! *into* the machine as a [`BackendFailure`], so the core decides that an
//! outage is a 503. Nothing here panics or invents a reply.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::sentinel::SentinelClient;
use session_logic::memory::Memory;
use session_logic::step::BackendFailure;
use session_logic::{Command, Error, Op, Outcome, Reply, Round, Step};

use crate::clock;

/// A boxed, `Send` future: what [`Backend::execute`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can run a round of Redis commands.
pub trait Backend: Send + Sync {
    /// Send `round` as one pipeline; one reply per command, in order. Redis
    /// error replies are `Reply::Error` data; only a transport failure is `Err`.
    fn execute<'a>(&'a self, round: &'a Round)
    -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>>;

    /// A short name for logs and metrics (`memory`, `redis`, `cluster`).
    fn kind(&self) -> &'static str;
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.kind())
    }
}

/// Run an operation to its outcome: poll, send the round, feed back the
/// replies (or the failure), until done.
pub async fn drive(mut op: Op, backend: &dyn Backend) -> Result<Outcome, Error> {
    loop {
        match op.poll_owned() {
            Step::Done(result) => return result,
            Step::Round(round) => match backend.execute(&round).await {
                Ok(replies) => op.handle_replies(replies),
                Err(failure) => op.handle_failure(failure),
            },
        }
    }
}

/// The embedded in-memory backend (the core's [`Memory`]), with `now` from
/// the system clock. Cheap to clone; clones share one keyspace.
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    memory: Arc<Mutex<Memory>>,
}

impl MemoryBackend {
    /// An empty keyspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live keys now, sorted (for tests and admin views).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.lock().keys(clock::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // `Memory` never panics, so a poisoned lock only means a panic
        // elsewhere while it was held; its data is still consistent.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for MemoryBackend {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        let replies = self.lock().execute_round(round, clock::now());
        Box::pin(std::future::ready(Ok(replies)))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Standalone Redis (or a Sentinel-resolved master) over a
/// [`ConnectionManager`], which reconnects after a lost connection. Every
/// round is bounded by `timeout`.
#[derive(Clone)]
pub struct RedisBackend {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisBackend {
    /// Wrap a connected manager; `timeout` bounds each round.
    pub fn new(conn: ConnectionManager, timeout: Duration) -> Self {
        RedisBackend { conn, timeout }
    }
}

impl Backend for RedisBackend {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            send_round(&mut conn, round, self.timeout).await
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Redis behind Sentinel: the master is resolved through the sentinels
/// (which also checks that the node answers `ROLE` as a master) and then
/// used over one multiplexed connection. That connection is dropped when a
/// round fails in transport (lost connection, timeout) or a reply says the
/// node is no longer a writable master (`READONLY`, `MASTERDOWN`); the next
/// round asks Sentinel again. The failing round itself is not retried (it
/// may or may not have been applied): the machine turns it into a typed
/// backend error, i.e. a 503.
///
/// A watcher also asks Sentinel for the master's address every
/// `watch_interval` and drops the connection when it has moved: a forced
/// failover leaves the old master writable until Sentinel reconfigures it
/// (up to ~10 s later), and writes it takes meanwhile would be lost.
pub struct SentinelBackend {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The current master connection and its generation (so a failure on
    /// an old connection does not drop a newer one).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Where the current connection goes, `(host, port)`.
    address: Mutex<Option<(String, u16)>>,
    generations: std::sync::atomic::AtomicU64,
    master_name: String,
    config: redis::AsyncConnectionConfig,
    timeout: Duration,
    resolve_timeout: Duration,
}

impl SentinelBackend {
    /// Resolve the master now (so a bad address, name or password fails at
    /// start-up) and keep `client` to re-resolve after a failover.
    /// `timeout` bounds each round, `resolve_timeout` each resolution.
    pub async fn connect(
        client: SentinelClient,
        master_name: &str,
        timeout: Duration,
        resolve_timeout: Duration,
        watch_interval: Duration,
    ) -> Result<Arc<Self>, BackendFailure> {
        let backend = Arc::new(SentinelBackend {
            sentinel: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            address: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            master_name: master_name.to_owned(),
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(resolve_timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
            resolve_timeout,
        });
        backend.connection().await?;
        let watched = Arc::downgrade(&backend);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(watch_interval).await;
                // Stops once the backend is dropped.
                let Some(backend) = watched.upgrade() else {
                    return;
                };
                backend.check_master().await;
            }
        });
        Ok(backend)
    }

    /// Ask a sentinel where the master is; drop our connection if it has
    /// moved. Failures are ignored: the rounds themselves notice outages.
    async fn check_master(&self) {
        let asked = tokio::time::timeout(self.resolve_timeout, async {
            let client = self
                .sentinel
                .lock()
                .await
                .async_get_sentinel_client()
                .await?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master_name)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        })
        .await;
        let Ok(Ok(Some(named))) = asked else {
            return;
        };
        let generation = {
            let current = self.current();
            let address = self.address.lock().unwrap_or_else(PoisonError::into_inner);
            match (current.as_ref(), address.as_ref()) {
                (Some((generation, _)), Some(at)) if *at != named => Some(*generation),
                _ => None,
            }
        };
        if let Some(generation) = generation {
            self.forget(generation, "Sentinel names another master");
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        // Only plain assignments happen under this lock.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The master connection, resolving it through Sentinel when there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), BackendFailure> {
        if let Some(found) = self.current().clone() {
            return Ok(found);
        }
        // One resolution at a time; whoever waited reuses its result.
        let mut sentinel = self.sentinel.lock().await;
        if let Some(found) = self.current().clone() {
            return Ok(found);
        }
        let resolved = tokio::time::timeout(self.resolve_timeout, async {
            let client = sentinel.async_get_client().await?;
            let address = match client.get_connection_info().addr() {
                redis::ConnectionAddr::Tcp(host, port)
                | redis::ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
                _ => None,
            };
            let conn = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            Ok::<_, redis::RedisError>((conn, address))
        })
        .await
        .map_err(|_elapsed| {
            BackendFailure::Unavailable("timed out resolving the master through Sentinel".into())
        })?
        .map_err(|e| {
            BackendFailure::Unavailable(format!("cannot resolve the master through Sentinel: {e}"))
        })?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (conn, address) = resolved;
        *self.address.lock().unwrap_or_else(PoisonError::into_inner) = address;
        *self.current() = Some((generation, conn.clone()));
        tracing::info!(generation, "connected to the master Sentinel names");
        Ok((generation, conn))
    }

    /// Drop connection `generation` so that the next round re-resolves.
    fn forget(&self, generation: u64, why: &str) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(
                reason = why,
                "dropping the master connection; asking Sentinel again"
            );
            *current = None;
        }
    }
}

impl Backend for SentinelBackend {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        Box::pin(async move {
            if round.is_empty() {
                return Ok(Vec::new());
            }
            let (generation, mut conn) = self.connection().await?;
            let replies = match send_round(&mut conn, round, self.timeout).await {
                Ok(replies) => replies,
                Err(failure) => {
                    let why = match failure {
                        BackendFailure::Timeout => "round timed out",
                        _ => "transport error",
                    };
                    self.forget(generation, why);
                    return Err(failure);
                }
            };
            if replies.iter().any(|r| {
                matches!(r, Reply::Error(e) if e.starts_with("READONLY") || e.starts_with("MASTERDOWN"))
            }) {
                self.forget(generation, "the node is no longer a writable master");
            }
            Ok(replies)
        })
    }

    fn kind(&self) -> &'static str {
        "sentinel"
    }
}

/// Redis Cluster over `cluster-async`. The commands of a round are grouped
/// by hash slot; each group goes to its slot's master as one pipeline, all
/// groups concurrently, so a round still costs one round trip. A keyless
/// command (`WAIT`) rides with the command before it, i.e. to the node that
/// took the write it waits for.
#[derive(Clone)]
pub struct ClusterBackend {
    conn: ClusterConnection,
    timeout: Duration,
}

impl ClusterBackend {
    /// Wrap a connected cluster client; `timeout` bounds each round.
    pub fn new(conn: ClusterConnection, timeout: Duration) -> Self {
        ClusterBackend { conn, timeout }
    }
}

impl Backend for ClusterBackend {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        Box::pin(async move {
            let groups = slot_groups(round.commands());
            let sends = groups.into_iter().map(|(slot, members)| {
                let mut conn = self.conn.clone();
                async move {
                    let cmds: Vec<Command> = members
                        .iter()
                        .filter_map(|&i| round.commands().get(i).cloned())
                        .collect();
                    let pipe = pipeline(&cmds)?;
                    let route = match slot {
                        Some(slot) => SingleNodeRoutingInfo::SpecificNode(Route::with_slot(
                            slot,
                            SlotAddr::Master,
                        )),
                        None => SingleNodeRoutingInfo::RandomPrimary,
                    };
                    let values = conn
                        .route_pipeline(pipe, 0, cmds.len(), route)
                        .await
                        .map_err(|e| failure(&e))?;
                    Ok::<_, BackendFailure>((members, replies(values, cmds.len())?))
                }
            });
            let all = futures_util::future::join_all(sends);
            let done = tokio::time::timeout(self.timeout, all)
                .await
                .map_err(|_elapsed| BackendFailure::Timeout)?;
            let mut slots: Vec<Option<Reply>> = vec![None; round.len()];
            for group in done {
                let (members, replies) = group?;
                for (i, reply) in members.into_iter().zip(replies) {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(reply);
                    }
                }
            }
            slots
                .into_iter()
                .map(|r| r.ok_or_else(|| BackendFailure::Other("a command got no reply".into())))
                .collect()
        })
    }

    fn kind(&self) -> &'static str {
        "cluster"
    }
}

/// Commands grouped by hash slot, in first-seen order; each group keeps its
/// round indices in order. Keyless commands join the previous command's
/// group (or a keyless group when they come first).
fn slot_groups(commands: &[Command]) -> Vec<(Option<Slot>, Vec<usize>)> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    let mut last: Option<usize> = None;
    for (i, cmd) in commands.iter().enumerate() {
        let at = match cmd.key().map(Slot::for_key) {
            Some(slot) => groups.iter().position(|(s, _)| *s == Some(slot)),
            None => last,
        };
        let at = match at {
            Some(at) => at,
            None => {
                groups.push((cmd.key().map(Slot::for_key), Vec::new()));
                groups.len() - 1
            }
        };
        if let Some((_, members)) = groups.get_mut(at) {
            members.push(i);
        }
        last = Some(at);
    }
    groups
}

/// Send `round` on `conn` as one pipeline bounded by `timeout`: one reply
/// per command, Redis error replies as data; `Err` only for a transport
/// failure (or a reply count that does not match).
async fn send_round<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    round: &Round,
    timeout: Duration,
) -> Result<Vec<Reply>, BackendFailure> {
    if round.is_empty() {
        return Ok(Vec::new());
    }
    let pipe = pipeline(round.commands())?;
    let sent = pipe.query_async::<Vec<redis::Value>>(conn);
    let values = match tokio::time::timeout(timeout, sent).await {
        Err(_elapsed) => return Err(BackendFailure::Timeout),
        Ok(result) => result.map_err(|e| failure(&e))?,
    };
    replies(values, round.len())
}

/// A pipeline (no `MULTI`) whose error replies stay data.
fn pipeline(commands: &[Command]) -> Result<redis::Pipeline, BackendFailure> {
    let mut pipe = redis::pipe();
    // Without this, one error reply (e.g. NOSCRIPT) turns the whole pipeline
    // into an Err and the other replies are lost.
    pipe.ignore_errors();
    for command in commands {
        if command.args().is_empty() {
            return Err(BackendFailure::Other("cannot send an empty command".into()));
        }
        let mut cmd = redis::Cmd::new();
        for arg in command.args() {
            cmd.arg(arg.as_slice());
        }
        pipe.add_command(cmd);
    }
    Ok(pipe)
}

fn replies(values: Vec<redis::Value>, expected: usize) -> Result<Vec<Reply>, BackendFailure> {
    if values.len() != expected {
        return Err(BackendFailure::Other(format!(
            "sent {expected} commands, got {} replies",
            values.len()
        )));
    }
    values
        .into_iter()
        .map(reply_from_value)
        .collect::<Result<_, _>>()
        .map_err(BackendFailure::Other)
}

/// A transport error as the machine's failure kind. Messages from the
/// client describe connections, never command arguments, so no ID leaks.
pub(crate) fn failure(e: &redis::RedisError) -> BackendFailure {
    if e.is_timeout() {
        BackendFailure::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        BackendFailure::Unavailable(e.to_string())
    } else {
        BackendFailure::Other(e.to_string())
    }
}

/// One `redis` value as the RESP2-shaped [`Reply`]; RESP3-only shapes are
/// lowered the way Redis answers a RESP2 client (maps and sets become flat
/// arrays, doubles bulk text, booleans 1/0). The test harness in
/// `tests/src/lib.rs` uses it too, so tests and host see the same replies.
pub fn reply_from_value(value: redis::Value) -> Result<Reply, String> {
    use redis::Value;
    let replies = |items: Vec<Value>| -> Result<Vec<Reply>, String> {
        items.into_iter().map(reply_from_value).collect()
    };
    Ok(match value {
        Value::Nil => Reply::Nil,
        Value::Int(n) => Reply::Int(n),
        Value::BulkString(bytes) => Reply::Bulk(bytes),
        Value::SimpleString(text) => Reply::Simple(text),
        Value::Okay => Reply::Simple("OK".to_owned()),
        Value::Array(items) | Value::Set(items) => Reply::Array(replies(items)?),
        Value::Map(pairs) => Reply::Array(replies(
            pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        )?),
        Value::Attribute { data, .. } => reply_from_value(*data)?,
        Value::Double(d) if d.is_nan() => Reply::Bulk(b"nan".to_vec()),
        Value::Double(d) => Reply::Bulk(d.to_string().into_bytes()),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::VerbatimString { text, .. } => Reply::Bulk(text.into_bytes()),
        Value::ServerError(err) => Reply::Error(match err.details() {
            Some(detail) => format!("{} {detail}", err.code()),
            None => err.code().to_owned(),
        }),
        // We never open RESP3 connections, so pushes and big numbers cannot come.
        other => return Err(format!("reply has no RESP2 shape: {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        Command(args.iter().map(|a| a.as_bytes().to_vec()).collect())
    }

    #[test]
    fn keyless_commands_ride_with_the_previous_command() {
        let round = [
            cmd(&["EVALSHA", "x", "1", "sess:a", "1"]),
            cmd(&["ZADD", "user:{b}", "1", "m"]),
            cmd(&["WAIT", "1", "100"]),
            cmd(&["DEL", "sess:a"]),
        ];
        let groups = slot_groups(&round);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].1, vec![0, 3]);
        assert_eq!(groups[1].1, vec![1, 2]);
    }

    #[test]
    fn a_keyless_round_is_one_random_primary_group() {
        let groups = slot_groups(&[cmd(&["PING"])]);
        assert!(groups[0].0.is_none());
        assert_eq!(groups[0].1, vec![0]);
    }

    #[tokio::test]
    async fn drive_runs_a_load_against_memory() {
        let engine = session_logic::Engine::new(session_logic::Config::default()).unwrap();
        let backend = MemoryBackend::new();
        let mut s = drive(engine.load(None, None, clock::now()), &backend)
            .await
            .unwrap()
            .into_session()
            .unwrap();
        s.insert("k", serde_json::json!(1)).unwrap();
        let saved = drive(
            engine.save(s, clock::entropy().unwrap(), clock::now()),
            &backend,
        )
        .await
        .unwrap();
        assert!(saved.cookie().is_some());
        assert_eq!(backend.keys().len(), 1);
    }
}
