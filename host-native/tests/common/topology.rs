//! Real Redis topologies for the transport tests: a 3-master Cluster, a
//! master + replica + 3 sentinels, and a TLS-only server. Every process runs
//! on a free loopback port in its own temp dir, is killed on drop, and has
//! its log printed when the test fails. Every wait is bounded.

// Test support (see mod.rs): a topology that does not come up aborts the
// test loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One redis-server or redis-sentinel process.
pub(crate) struct Proc {
    name: String,
    child: Option<Child>,
    pub(crate) port: u16,
    log: PathBuf,
    pub(crate) dir: TempDir,
}

impl Proc {
    /// Start `bin` with `args` (plus `--dir` and `--logfile`, or a config
    /// file for sentinels) and wait for `ready` in its log.
    fn spawn(name: &str, bin: &str, port: u16, args: &[String], ready: &str) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("host-native-topology-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        if bin == "redis-sentinel" {
            // Sentinel insists on a writable config file.
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(&conf, args.join("\n") + "\n").unwrap();
            cmd.arg(&conf);
            cmd.args(["--logfile", log.to_str().unwrap()]);
            cmd.args(["--dir", dir.path().to_str().unwrap()]);
        } else {
            cmd.args(args);
            cmd.args(["--dir", dir.path().to_str().unwrap()]);
            cmd.args(["--logfile", log.to_str().unwrap()]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}; install the redis packages"));
        let proc = Proc {
            name: name.to_owned(),
            child: Some(child),
            port,
            log,
            dir,
        };
        proc.wait_log(ready, Duration::from_secs(10));
        proc
    }

    /// Wait until the log contains `text`.
    pub(crate) fn wait_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "{}: no '{text}' in its log within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

/// A plain redis-server with extra arguments.
pub(crate) fn server(name: &str, extra: &[&str]) -> Proc {
    let port = free_port();
    let mut args = server_args(port);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Proc::spawn(
        name,
        "redis-server",
        port,
        &args,
        "Ready to accept connections",
    )
}

/// One command over a fresh plain connection to `port`.
pub(crate) async fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    try_query(port, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?} on port {port}: {e}"))
}

pub(crate) async fn try_query<T: redis::FromRedisValue>(
    port: u16,
    args: &[&str],
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

/// Poll `check` every 50 ms until it is true or `limit` passes.
pub(crate) async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 3-master Redis Cluster with no replicas.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Proc>,
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        let nodes: Vec<Proc> = (0..3)
            .map(|i| {
                server(
                    &format!("cluster node {i}"),
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &nodes {
            let port = node.port;
            wait_until("cluster_state:ok", Duration::from_secs(10), || async move {
                try_query::<String>(port, &["CLUSTER", "INFO"])
                    .await
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        Cluster { nodes }
    }

    pub(crate) fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

/// One master, one replica and three sentinels (quorum 2).
pub(crate) struct Sentinels {
    pub(crate) master: Proc,
    pub(crate) replica: Proc,
    pub(crate) sentinels: Vec<Proc>,
}

pub(crate) const MASTER_NAME: &str = "sessions";

impl Sentinels {
    pub(crate) async fn start() -> Sentinels {
        let master = server("master", &[]);
        let replica = server(
            "replica",
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        );
        let mport = master.port;
        let rport = replica.port;
        wait_until("replica in sync", Duration::from_secs(10), || async move {
            try_query::<String>(rport, &["INFO", "replication"])
                .await
                .is_ok_and(|i| i.contains("master_link_status:up"))
        })
        .await;
        let sentinels: Vec<Proc> = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = [
                    format!("port {port}"),
                    "bind 127.0.0.1".into(),
                    format!("sentinel monitor {MASTER_NAME} 127.0.0.1 {mport} 2"),
                    format!("sentinel down-after-milliseconds {MASTER_NAME} 1000"),
                    format!("sentinel failover-timeout {MASTER_NAME} 5000"),
                    format!("sentinel parallel-syncs {MASTER_NAME} 1"),
                ];
                Proc::spawn(
                    &format!("sentinel {i}"),
                    "redis-sentinel",
                    port,
                    &conf,
                    "+monitor master",
                )
            })
            .collect();
        // Each sentinel must know the replica (to promote it) and the other
        // two sentinels (for the quorum on a crashed master).
        for s in &sentinels {
            let port = s.port;
            wait_until(
                "sentinels know the replica and each other",
                Duration::from_secs(15),
                || async move {
                    let replicas =
                        try_query::<Vec<Vec<String>>>(port, &["SENTINEL", "REPLICAS", MASTER_NAME])
                            .await
                            .unwrap_or_default();
                    let known = replicas.iter().any(|r| {
                        r.windows(2)
                            .any(|w| w[0] == "port" && w[1] == rport.to_string())
                            && r.windows(2).any(|w| w[0] == "flags" && w[1] == "slave")
                    });
                    let peers = try_query::<Vec<redis::Value>>(
                        port,
                        &["SENTINEL", "SENTINELS", MASTER_NAME],
                    )
                    .await
                    .map_or(0, |p| p.len());
                    known && peers == 2
                },
            )
            .await;
        }
        Sentinels {
            master,
            replica,
            sentinels,
        }
    }

    pub(crate) fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port as the first live sentinel reports it.
    pub(crate) async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            if let Ok((_, port)) = try_query::<(String, u16)>(
                s.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )
            .await
            {
                return Some(port);
            }
        }
        None
    }
}

/// A certificate authority and a server certificate for 127.0.0.1, as PEM.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Pki {
    pub(crate) fn new(ca_name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, ca_name.to_owned());
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "127.0.0.1".to_owned());
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A redis-server that speaks TLS only (`--port 0`), not asking clients
/// for certificates.
pub(crate) fn tls_server(pki: &Pki) -> Proc {
    let files = tempfile::Builder::new()
        .prefix("host-native-pki-")
        .tempdir()
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        write("server.crt", &pki.cert_pem),
        write("server.key", &pki.key_pem),
        write("ca.crt", &pki.ca_pem),
    );
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]
    .map(String::from)
    .to_vec();
    let proc = Proc::spawn(
        "tls redis-server",
        "redis-server",
        port,
        &args,
        "Ready to accept connections",
    );
    // redis-server has read its files at start-up.
    drop(files);
    proc
}
