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
//!
//! `rediss://…#insecure` (no certificate verification) is refused unless
//! [`ConnectOptions::insecure_tls`] is set; setting it also makes plain
//! `rediss://` URLs unverified.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{Client, TlsCertificates};
use session_logic::{Command, Reply, Round};

use crate::executor::{Backend, ClusterBackend, RedisBackend};

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
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
