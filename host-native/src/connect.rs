//! A [`Backend`] from a Redis URL. It owns the host's transport-safety
//! rules: every round has a client-side timeout, `rediss://` verifies
//! certificates (an unverified connection needs an explicit opt-in), and at
//! start-up an eviction policy other than `noeviction` is reported loudly,
//! because evicting a user index or a rotated marker silently weakens
//! logout-everywhere and regeneration.
//!
//! URLs:
//! - `redis://[user:password@]host[:port][/db]`: standalone, reconnecting.
//! - `rediss://…`: the same over TLS with verified certificates (system
//!   roots, or the CA in [`ConnectOptions::tls_ca_pem`]).
//! - `redis+cluster://[user:password@]host:port,host:port,…` (or
//!   `rediss+cluster://`): Redis Cluster, seeded from the listed nodes.
//!   [`cluster_url`] turns a plain `redis://h:p[,h:p…]` into one (the
//!   binary's `--cluster` flag).
//! - `redis+sentinel://[user:password@]host:port,host:port,…/<master-name>[/db]`
//!   (or `rediss+sentinel://`): the master that the listed sentinels name
//!   (port 26379 when omitted). The credentials and db are for the master;
//!   the sentinels are asked without credentials. With `rediss+sentinel`,
//!   both the sentinels and the master are reached over verified TLS.
//!
//! ## Sentinel failover
//!
//! At start-up the master is resolved through the sentinels and checked
//! with `ROLE`; a wrong name, address or password fails `connect`. The
//! [`SentinelBackend`] then keeps one connection to that master. When a
//! round fails in transport (connection lost or refused, timeout) or a reply
//! says the node is not a writable master (`READONLY`, `MASTERDOWN`), that
//! connection is dropped and the *next* round asks Sentinel again. The
//! failing round is not retried (it may have been applied): it becomes a
//! typed backend error, a 503 `backend_unavailable`/`backend_timeout` (or
//! `backend_error` for `READONLY`), never an empty session.
//!
//! So after the master dies, requests fail with 503s until Sentinel has
//! promoted a replica, i.e. for about `down-after-milliseconds` plus the
//! election and promotion (plus one round timeout for the request that was
//! in flight); then they succeed on the new master without a restart. A
//! `SENTINEL FAILOVER` of a live master is shorter: Sentinel demotes the old
//! master and kills its client connections, so the next round re-resolves.
//! Writes the old master acknowledged but had not replicated are lost by a
//! failover (asynchronous replication); `durable_revocation` (`WAIT`) bounds
//! that for revocations.
//!
//! `rediss://…#insecure` (no certificate verification) is refused unless
//! [`ConnectOptions::insecure_tls`] is set; setting it also makes plain
//! `rediss://` URLs unverified.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, TlsCertificates, TlsMode};
use session_logic::step::BackendFailure;
use session_logic::{Command, Reply, Round};

use crate::executor::{Backend, ClusterBackend, RedisBackend, SentinelBackend};

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bound on each round (all its commands), client side.
    pub command_timeout: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Accept TLS certificates that cannot be verified. Dangerous: anyone on
    /// the path can read every session.
    pub insecure_tls: bool,
    /// A PEM CA bundle to trust instead of the system roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            insecure_tls: false,
            tls_ca_pem: None,
        }
    }
}

/// Why no backend could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// An unverified TLS URL without the explicit opt-in.
    #[error(
        "refusing {url}: '#insecure' disables certificate verification; pass --insecure-tls if you really mean it"
    )]
    InsecureTlsRefused {
        /// The URL, password redacted.
        url: String,
    },
    /// The URL is not one we understand.
    #[error("invalid Redis URL {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or refused us.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's explanation.
        reason: String,
    },
}

/// Connect and return the backend.
pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Arc<dyn Backend>, ConnectError> {
    let shown = redact(url);
    let url_error = |reason: String| ConnectError::Url {
        url: shown.clone(),
        reason,
    };
    let connect_error = |e: String| ConnectError::Connect {
        url: shown.clone(),
        reason: e,
    };
    if let Some(parsed) = sentinel_url(url) {
        let parsed = parsed.map_err(url_error)?;
        return connect_sentinel(parsed, &shown, opts).await;
    }
    match cluster_nodes(url) {
        Some(nodes) => {
            if nodes.is_empty() {
                return Err(url_error("no cluster nodes listed".into()));
            }
            let nodes = nodes
                .iter()
                .map(|n| tls_checked(n, opts))
                .collect::<Result<Vec<_>, _>>()?;
            let tls = nodes.iter().any(|n| n.starts_with("rediss://"));
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.command_timeout)
                .retries(2);
            if let Some(pem) = opts.tls_ca_pem.clone().filter(|_| tls) {
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                });
            }
            let client = builder.build().map_err(|e| url_error(e.to_string()))?;
            let conn = tokio::time::timeout(opts.connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| connect_error("timed out".into()))?
                .map_err(|e| connect_error(e.to_string()))?;
            Ok(Arc::new(ClusterBackend::new(conn, opts.command_timeout)))
        }
        None => {
            let url = tls_checked(url, opts)?;
            let client = match opts.tls_ca_pem.clone() {
                Some(pem) if url.starts_with("rediss://") => Client::build_with_tls(
                    url.as_str(),
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                ),
                _ => Client::open(url.as_str()),
            }
            .map_err(|e| url_error(e.to_string()))?;
            // One plain attempt first: the manager retries a failed first
            // connection until our timeout, which would hide the reason
            // (a bad certificate, a wrong password) behind "timed out".
            let probe = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.command_timeout));
            tokio::time::timeout(
                opts.connect_timeout,
                client.get_multiplexed_async_connection_with_config(&probe),
            )
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.command_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = tokio::time::timeout(
                opts.connect_timeout,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
            Ok(Arc::new(RedisBackend::new(conn, opts.command_timeout)))
        }
    }
}

/// `url` as a Redis Cluster URL: `redis://h:p[,h:p…]` becomes
/// `redis+cluster://h:p[,h:p…]` (`rediss://` likewise); a cluster URL is
/// returned unchanged; a Sentinel URL is an error.
pub fn cluster_url(url: &str) -> Result<String, ConnectError> {
    let refuse = |reason: &str| ConnectError::Url {
        url: redact(url),
        reason: reason.into(),
    };
    match url.split_once("://") {
        Some(("redis" | "rediss", rest)) => {
            let scheme = url.split_once("://").map_or("redis", |(s, _)| s);
            Ok(format!("{scheme}+cluster://{rest}"))
        }
        Some(("redis+cluster" | "rediss+cluster", _)) => Ok(url.to_owned()),
        Some(("redis+sentinel" | "rediss+sentinel", _)) => {
            Err(refuse("a Sentinel URL cannot be used as cluster seeds"))
        }
        _ => Err(refuse("cluster seeds must be redis:// or rediss:// URLs")),
    }
}

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, PartialEq, Eq)]
struct SentinelUrl {
    tls: bool,
    insecure_fragment: bool,
    username: Option<String>,
    password: Option<String>,
    sentinels: Vec<(String, u16)>,
    master: String,
    db: i64,
}

/// `Some` for a `redis+sentinel://` / `rediss+sentinel://` URL (parsed, or
/// why not), `None` for any other scheme.
fn sentinel_url(url: &str) -> Option<Result<SentinelUrl, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "redis+sentinel" => false,
        "rediss+sentinel" => true,
        _ => return None,
    };
    Some(parse_sentinel(tls, rest))
}

fn parse_sentinel(tls: bool, rest: &str) -> Result<SentinelUrl, String> {
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let insecure_fragment = match fragment {
        None => false,
        Some("insecure") if tls => true,
        Some(other) => return Err(format!("unsupported fragment '#{other}'")),
    };
    if rest.contains('?') {
        return Err("query parameters are not supported in Sentinel URLs".into());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            let user = percent_decode(user).ok_or("the user name is not valid percent-encoding")?;
            let pass = pass
                .map(percent_decode)
                .map(|p| p.ok_or("the password is not valid percent-encoding"))
                .transpose()?;
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let sentinels = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(host_port)
        .collect::<Result<Vec<_>, _>>()?;
    if sentinels.is_empty() {
        return Err("no sentinel addresses listed".into());
    }
    let mut segments = path.trim_start_matches('/').split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() {
        return Err("the master name is missing: redis+sentinel://host:port/<master-name>".into());
    }
    let master = percent_decode(master).ok_or("the master name is not valid percent-encoding")?;
    let db = match segments.next().filter(|d| !d.is_empty()) {
        None => 0,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("db '{d}' is not a non-negative number"))?,
    };
    if segments.any(|s| !s.is_empty()) {
        return Err("expected /<master-name>[/db] after the sentinel addresses".into());
    }
    Ok(SentinelUrl {
        tls,
        insecure_fragment,
        username,
        password,
        sentinels,
        master,
        db,
    })
}

/// `host:port`, `host` (port 26379) or `[v6]:port`.
fn host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
            None => return Err(format!("unclosed '[' in '{text}'")),
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let port = match port {
        None => 26379,
        Some(p) => p
            .parse()
            .map_err(|_| format!("'{p}' in '{text}' is not a port number"))?,
    };
    if host.is_empty() {
        return Err(format!("no host in '{text}'"));
    }
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

async fn connect_sentinel(
    url: SentinelUrl,
    shown: &str,
    opts: &ConnectOptions,
) -> Result<Arc<dyn Backend>, ConnectError> {
    let insecure = if url.tls {
        // The redis crate needs a process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match (url.insecure_fragment, opts.insecure_tls) {
            (true, false) => {
                return Err(ConnectError::InsecureTlsRefused {
                    url: shown.to_owned(),
                });
            }
            (_, true) => {
                tracing::warn!(url = %shown, "TLS certificate verification is OFF (--insecure-tls)");
                true
            }
            (false, false) => false,
        }
    } else {
        false
    };
    let addrs = url.sentinels.into_iter().map(|(host, port)| {
        if url.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        }
    });
    let url_error = |e: redis::RedisError| ConnectError::Url {
        url: shown.to_owned(),
        reason: e.to_string(),
    };
    let mut builder = SentinelClientBuilder::new(addrs, &url.master, SentinelServerType::Master)
        .map_err(url_error)?
        .set_client_to_redis_db(url.db);
    if let Some(user) = &url.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &url.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if url.tls {
        let mode = if insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        };
        builder = builder
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_sentinel_tls_mode(mode);
        if let Some(pem) = opts.tls_ca_pem.clone() {
            let certs = || TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            };
            builder = builder
                .set_client_to_redis_certificates(certs())
                .set_client_to_sentinel_certificates(certs());
        }
    }
    let client = builder.build().map_err(url_error)?;
    let backend = SentinelBackend::connect(
        client,
        &url.master,
        opts.command_timeout,
        opts.connect_timeout,
        SENTINEL_WATCH_INTERVAL,
    )
    .await
    .map_err(|failure| ConnectError::Connect {
        url: shown.to_owned(),
        reason: match failure {
            BackendFailure::Unavailable(why) | BackendFailure::Other(why) => why,
            other => format!("{other:?}"),
        },
    })?;
    Ok(backend)
}

/// How often the Sentinel backend asks where the master is.
const SENTINEL_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What `CONFIG GET maxmemory-policy` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`: what we want.
    NoEviction,
    /// Another policy: keys (indexes, rotated markers) may be evicted.
    Evicting(String),
    /// Could not be read (ACL, managed service, transport); the reason.
    Unknown(String),
}

/// Read `maxmemory-policy` through the backend (one round) and log a
/// warning unless it is `noeviction`. In Cluster, one node answers.
pub async fn check_eviction_policy(backend: &dyn Backend) -> EvictionPolicy {
    let round = Round(vec![Command(vec![
        b"CONFIG".to_vec(),
        b"GET".to_vec(),
        b"maxmemory-policy".to_vec(),
    ])]);
    let policy = match backend.execute(&round).await {
        Ok(replies) => match replies.into_iter().next() {
            Some(Reply::Array(items)) => match items.get(1) {
                Some(Reply::Bulk(v)) if v.as_slice() == b"noeviction" => EvictionPolicy::NoEviction,
                Some(Reply::Bulk(v)) => {
                    EvictionPolicy::Evicting(String::from_utf8_lossy(v).into_owned())
                }
                _ => EvictionPolicy::Unknown("CONFIG GET returned no value".into()),
            },
            Some(Reply::Error(e)) => EvictionPolicy::Unknown(e),
            other => EvictionPolicy::Unknown(format!("unexpected reply {other:?}")),
        },
        Err(failure) => EvictionPolicy::Unknown(format!("{failure:?}")),
    };
    match &policy {
        EvictionPolicy::NoEviction => tracing::info!("redis maxmemory-policy is noeviction"),
        EvictionPolicy::Evicting(p) => tracing::warn!(
            policy = %p,
            "redis maxmemory-policy is {p}, not noeviction: under memory pressure Redis may evict \
             per-user indexes and rotated markers, silently weakening logout-everywhere and \
             regeneration; set maxmemory-policy noeviction"
        ),
        EvictionPolicy::Unknown(why) => tracing::warn!(
            reason = %why,
            "could not read redis maxmemory-policy (CONFIG not permitted?); make sure it is \
             noeviction, or eviction may silently weaken logout-everywhere and regeneration"
        ),
    }
    policy
}

/// Node URLs of a `redis+cluster://` / `rediss+cluster://` URL, or `None`
/// for any other scheme.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let base = scheme.strip_suffix("+cluster")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{base}://{userinfo}{h}{tail}"))
            .collect(),
    )
}

/// Apply the TLS policy to one URL: refuse `#insecure` without the opt-in;
/// with it, mark every `rediss://` URL insecure (loudly).
fn tls_checked(url: &str, opts: &ConnectOptions) -> Result<String, ConnectError> {
    if !url.starts_with("rediss://") {
        return Ok(url.to_owned());
    }
    // The redis crate needs a process-wide rustls provider; a second
    // install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fragment = url.split_once('#').map(|(_, f)| f);
    match (fragment, opts.insecure_tls) {
        (Some("insecure"), false) => Err(ConnectError::InsecureTlsRefused { url: redact(url) }),
        (None, true) => {
            tracing::warn!(url = %redact(url), "TLS certificate verification is OFF (--insecure-tls)");
            Ok(format!("{url}#insecure"))
        }
        (Some("insecure"), true) => {
            tracing::warn!(url = %redact(url), "TLS certificate verification is OFF (--insecure-tls)");
            Ok(url.to_owned())
        }
        _ => Ok(url.to_owned()),
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_tls_is_refused_without_the_flag() {
        let opts = ConnectOptions::default();
        let err = tls_checked("rediss://u:pw@h:6380/#insecure", &opts).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--insecure-tls") && !text.contains("pw"),
            "{text}"
        );
        assert_eq!(
            tls_checked("rediss://h:6380", &opts).unwrap(),
            "rediss://h:6380"
        );
    }

    #[test]
    fn the_flag_makes_rediss_unverified() {
        let opts = ConnectOptions {
            insecure_tls: true,
            ..ConnectOptions::default()
        };
        assert_eq!(
            tls_checked("rediss://h:6380", &opts).unwrap(),
            "rediss://h:6380#insecure"
        );
        assert_eq!(
            tls_checked("redis://h:6379", &opts).unwrap(),
            "redis://h:6379"
        );
    }

    #[test]
    fn cluster_urls_fan_out_with_credentials() {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@a:1,b:2/?x=1").unwrap(),
            vec!["redis://u:p@a:1/?x=1", "redis://u:p@b:2/?x=1"]
        );
        assert_eq!(cluster_nodes("redis://a:1"), None);
    }

    #[test]
    fn sentinel_urls_parse() {
        let u = sentinel_url("redis+sentinel://app:p%40ss@a:1,[::1]:2,b/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!(
            u,
            SentinelUrl {
                tls: false,
                insecure_fragment: false,
                username: Some("app".into()),
                password: Some("p@ss".into()),
                sentinels: vec![("a".into(), 1), ("::1".into(), 2), ("b".into(), 26379)],
                master: "mymaster".into(),
                db: 3,
            }
        );
        let u = sentinel_url("rediss+sentinel://:pw@a:1/m#insecure")
            .unwrap()
            .unwrap();
        assert!(u.tls && u.insecure_fragment && u.username.is_none() && u.db == 0);
        assert!(sentinel_url("redis://a:1").is_none());
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel:///m",
            "redis+sentinel://a:x/m",
            "redis+sentinel://a:1/m/-1",
            "redis+sentinel://a:1/m/0/x",
            "redis+sentinel://a:1/m?x=1",
            "redis+sentinel://a:1/m#insecure",
        ] {
            assert!(sentinel_url(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_flag_rewrites_plain_urls() {
        assert_eq!(
            cluster_url("redis://u:p@a:1,b:2").unwrap(),
            "redis+cluster://u:p@a:1,b:2"
        );
        assert_eq!(cluster_url("rediss://a:1").unwrap(), "rediss+cluster://a:1");
        assert_eq!(
            cluster_url("redis+cluster://a:1").unwrap(),
            "redis+cluster://a:1"
        );
        let err = cluster_url("redis+sentinel://u:secret@a:1/m").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
