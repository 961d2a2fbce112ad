//! The transports end to end: the real `SessionLayer` over real HTTP against
//! a real Redis Cluster, a Sentinel-managed master that fails over, a
//! restricted ACL user, and a TLS-only server. Every server is a real
//! process on a free loopback port, killed on drop.

// Setup outside #[test] fns may unwrap: a topology or app that cannot come
// up should abort the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use common::topology::{self, Cluster, Pki, Sentinels};
use common::{RedisServer, Reply, request, serve};
use host_native::connect::{self, ConnectError, ConnectOptions};
use host_native::{Session, SessionError, SessionLayer};
use session_logic::{Config, Engine, UserId};

/// Upper bound on any one test.
const LIMIT: Duration = Duration::from_secs(45);

fn opts() -> ConnectOptions {
    ConnectOptions {
        command_timeout: Duration::from_millis(1000),
        connect_timeout: Duration::from_millis(1000),
        ..ConnectOptions::default()
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {LIMIT:?}"));
}

/// The app: every session operation behind its own route.
async fn app(url: &str, opts: &ConnectOptions) -> SocketAddr {
    let backend = connect::connect(url, opts)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let engine = Engine::new(Config::default()).unwrap();
    let router =
        Router::new()
            .route(
                "/read",
                get(|s: Session| async move {
                    let v: Option<String> = s.get("v").await?;
                    Ok::<_, SessionError>(v.unwrap_or_else(|| "none".into()))
                }),
            )
            .route(
                "/write/{v}",
                post(|s: Session, Path(v): Path<String>| async move {
                    s.insert("v", v).await?;
                    Ok::<_, SessionError>("ok")
                }),
            )
            .route(
                "/regenerate",
                post(|s: Session| async move {
                    s.regenerate().await?;
                    Ok::<_, SessionError>("ok")
                }),
            )
            .route(
                "/destroy",
                post(|s: Session| async move {
                    s.destroy().await?;
                    Ok::<_, SessionError>("ok")
                }),
            )
            .route(
                "/login/{user}",
                post(|s: Session, Path(user): Path<String>| async move {
                    s.bind_user(UserId::new(user).unwrap()).await?;
                    s.regenerate().await?;
                    Ok::<_, SessionError>("ok")
                }),
            )
            .route(
                "/devices",
                get(|s: Session| async move {
                    Ok::<_, SessionError>(axum::Json(s.list_devices().await?))
                }),
            )
            .route(
                "/sign-out/{handle}",
                post(|s: Session, Path(handle): Path<String>| async move {
                    Ok::<_, SessionError>(s.sign_out_device(&handle).await?.to_string())
                }),
            )
            .route(
                "/logout-everywhere",
                post(|s: Session| async move {
                    Ok::<_, SessionError>(s.logout_everywhere(false).await?.to_string())
                }),
            )
            .layer(SessionLayer::with_rules(common::rules(engine), backend));
    serve(router).await
}

fn ok(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
}

async fn read(addr: SocketAddr, cookie: &str) -> String {
    let r = request(addr, "GET", "/read", Some(cookie)).await;
    ok(&r, "read");
    r.body
}

/// Create, load, regenerate, destroy.
async fn lifecycle(addr: SocketAddr) {
    let r = request(addr, "POST", "/write/apple", None).await;
    ok(&r, "write");
    let old = r.cookie().unwrap();
    assert_eq!(read(addr, &old).await, "apple");
    let r = request(addr, "POST", "/regenerate", Some(&old)).await;
    ok(&r, "regenerate");
    let new = r.cookie().unwrap();
    assert_ne!(new, old);
    assert_eq!(read(addr, &new).await, "apple");
    assert_eq!(read(addr, &old).await, "none", "the old ID yields no data");
    ok(
        &request(addr, "POST", "/destroy", Some(&new)).await,
        "destroy",
    );
    assert_eq!(read(addr, &new).await, "none");
}

/// One signed-in session of `user`; returns its cookie.
async fn signed_in(addr: SocketAddr, user: &str, n: usize) -> String {
    let r = request(addr, "POST", &format!("/write/device{n}"), None).await;
    ok(&r, "write");
    let anon = r.cookie().unwrap();
    let r = request(addr, "POST", &format!("/login/{user}"), Some(&anon)).await;
    ok(&r, "login");
    r.cookie().unwrap()
}

fn devices(r: &Reply) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(&r.body)
        .unwrap_or_else(|e| panic!("devices body {:?}: {e}", r.body))
}

/// List devices, sign one out, log out everywhere: every session of the
/// user (given by its cookies) is gone afterwards.
async fn users(addr: SocketAddr, cookies: &[String]) {
    let n = cookies.len();
    assert!(n >= 3);
    for (i, c) in cookies.iter().enumerate() {
        assert_eq!(read(addr, c).await, format!("device{i}"));
    }
    let r = request(addr, "GET", "/devices", Some(&cookies[0])).await;
    ok(&r, "devices");
    let list = devices(&r);
    assert_eq!(list.len(), n, "{list:?}");
    assert_eq!(list.iter().filter(|d| d["current"] == true).count(), 1);
    let other = list.iter().find(|d| d["current"] == false).unwrap();
    let handle = other["handle"].as_str().unwrap();
    let r = request(
        addr,
        "POST",
        &format!("/sign-out/{handle}"),
        Some(&cookies[0]),
    )
    .await;
    ok(&r, "sign out a device");
    assert_eq!(r.body, "true");
    let r = request(addr, "GET", "/devices", Some(&cookies[0])).await;
    assert_eq!(devices(&r).len(), n - 1);
    let r = request(addr, "POST", "/logout-everywhere", Some(&cookies[0])).await;
    ok(&r, "logout everywhere");
    // Every remaining session, this one included (keep_current = false).
    assert_eq!(r.body, (n - 1).to_string(), "sessions deleted");
    for c in cookies {
        assert_eq!(read(addr, c).await, "none", "signed out everywhere");
    }
}

#[tokio::test]
async fn cluster_sessions_span_nodes_without_crossslot_or_moved() {
    bounded(async {
        let started = Instant::now();
        let cluster = Cluster::start().await;
        eprintln!("cluster up in {:?}", started.elapsed());
        let addr = app(&cluster.url(), &opts()).await;
        lifecycle(addr).await;
        // Sessions of one user until every node holds some of them (their
        // keys hash to random slots; the user index sits on one node).
        let mut cookies = Vec::new();
        loop {
            cookies.push(signed_in(addr, "alice", cookies.len()).await);
            let mut holding = 0;
            for node in &cluster.nodes {
                if topology::query::<i64>(node.port, &["DBSIZE"]).await > 0 {
                    holding += 1;
                }
            }
            if holding == cluster.nodes.len() && cookies.len() >= 3 {
                break;
            }
            assert!(cookies.len() < 40, "keys never spread over the nodes");
        }
        eprintln!("{} sessions of one user over 3 nodes", cookies.len());
        users(addr, &cookies).await;
        eprintln!("cluster test took {:?}", started.elapsed());
    })
    .await;
}

/// Whether some session hash on the server at `port` holds the JSON string
/// `value`.
async fn holds(port: u16, value: &str) -> bool {
    let keys: Vec<String> = topology::query(port, &["KEYS", "*"]).await;
    let json = format!("\"{value}\"");
    for key in keys {
        let fields: Vec<String> = topology::try_query(port, &["HVALS", &key])
            .await
            .unwrap_or_default();
        if fields.contains(&json) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn sentinel_failover_is_followed_without_a_restart() {
    bounded(async {
        let started = Instant::now();
        let topo = Sentinels::start().await;
        eprintln!("sentinel topology up in {:?}", started.elapsed());
        let old_master = topo.master.port;
        assert_eq!(topo.master_port().await, Some(old_master));
        let addr = app(&topo.url(), &opts()).await;
        let r = request(addr, "POST", "/write/apple", None).await;
        ok(&r, "write");
        let cookie = r.cookie().unwrap();
        // The session has reached the replica before the switch.
        let acked: i64 = topology::query(old_master, &["WAIT", "1", "2000"]).await;
        assert_eq!(acked, 1);

        let switch = Instant::now();
        let reply: String = topology::query(
            topo.sentinels[0].port,
            &["SENTINEL", "FAILOVER", topology::MASTER_NAME],
        )
        .await;
        assert_eq!(reply, "OK");
        let new_master = topo.replica.port;
        // Requests during the switch either succeed with the data or fail
        // with a typed 503; never an empty session.
        let mut failures = 0;
        let mut served = None;
        while switch.elapsed() < Duration::from_secs(20) {
            let r = request(addr, "GET", "/read", Some(&cookie)).await;
            match r.status {
                // "banana" once a write during the switch got through.
                200 => assert!(
                    r.body == "apple" || r.body == "banana",
                    "no empty session during failover: {r:?}"
                ),
                503 => {
                    failures += 1;
                    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                    assert!(
                        body["code"].as_str().unwrap().starts_with("backend_"),
                        "{body}"
                    );
                }
                _ => panic!("unexpected reply during failover: {r:?}"),
            }
            // Done once a write through the service lands on the new master
            // (the old one stays writable until Sentinel demotes it, so a
            // 200 alone proves nothing).
            if topo.master_port().await == Some(new_master) {
                let w = request(addr, "POST", "/write/banana", Some(&cookie)).await;
                match w.status {
                    200 if holds(new_master, "banana").await => {
                        served = Some(switch.elapsed());
                        break;
                    }
                    200 => {}
                    _ => {
                        assert_eq!(w.status, 503, "{w:?}");
                        failures += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let served = served.expect("the service never wrote to the new master");
        eprintln!(
            "sentinel switch-over: first successful write on the new master {served:?} after \
             SENTINEL FAILOVER ({failures} typed 503s meanwhile)"
        );
        assert_eq!(read(addr, &cookie).await, "banana");
        let role: Vec<redis::Value> = topology::query(new_master, &["ROLE"]).await;
        assert!(matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master"));
        eprintln!("sentinel test took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_restricted_acl_user_can_do_everything_and_noperm_is_typed() {
    bounded(async {
        let redis = RedisServer::start();
        let port = redis.port;
        let _: String = topology::query(
            port,
            &[
                "ACL",
                "SETUSER",
                "app",
                "on",
                ">app-secret-pw",
                "resetkeys",
                "~sess:*",
                "resetchannels",
                "-@all",
                "+@read",
                "+@write",
                "+@scripting",
                "-@dangerous",
                "+ping",
            ],
        )
        .await;
        let _: String = topology::query(
            port,
            &[
                "ACL",
                "SETUSER",
                "stranger",
                "on",
                ">stranger-pw",
                "resetkeys",
                "~other:*",
                "-@all",
                "+@read",
                "+@write",
                "+@scripting",
                "-@dangerous",
                "+ping",
            ],
        )
        .await;
        let url = format!("redis://app:app-secret-pw@127.0.0.1:{port}");
        let addr = app(&url, &opts()).await;
        lifecycle(addr).await;
        let mut cookies = Vec::new();
        for n in 0..3 {
            cookies.push(signed_in(addr, "bob", n).await);
        }
        users(addr, &cookies).await;

        // A session the stranger cannot read: a typed JSON error, no cookie.
        let cookie = request(addr, "POST", "/write/pear", None)
            .await
            .cookie()
            .unwrap();
        let stranger = app(
            &format!("redis://stranger:stranger-pw@127.0.0.1:{port}"),
            &opts(),
        )
        .await;
        for (method, path, cookie) in [
            ("GET", "/read", Some(cookie.as_str())),
            ("POST", "/write/plum", None),
        ] {
            let r = request(stranger, method, path, cookie).await;
            let body: serde_json::Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {r:?}"));
            assert_eq!(body["code"], "backend_noperm", "{path}: {r:?}");
            assert_eq!(r.status, 500, "{path}: {r:?}");
            assert!(r.header("set-cookie").is_none(), "{path}: {r:?}");
        }

        // A wrong password fails at connect, and the error does not echo it.
        let err = connect::connect(
            &format!("redis://app:wrong-pw-31337@127.0.0.1:{port}"),
            &opts(),
        )
        .await
        .unwrap_err();
        let text = format!("{err} / {err:?}");
        eprintln!("wrong password: {err}");
        assert!(matches!(err, ConnectError::Connect { .. }), "{text}");
        assert!(!text.contains("wrong-pw-31337"), "{text}");
        assert!(text.contains("app:***@"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("wrongpass")
                || text.to_ascii_lowercase().contains("auth"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn tls_only_server_verifies_against_the_given_ca() {
    bounded(async {
        let pki = Pki::new("session-logic test CA");
        let server = topology::tls_server(&pki);
        assert!(!common::listening(6379) || server.port != 6379);
        let url = format!("rediss://127.0.0.1:{}", server.port);
        let trusted = ConnectOptions {
            tls_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            ..opts()
        };
        let addr = app(&url, &trusted).await;
        lifecycle(addr).await;

        // A different CA: fails closed at connect.
        let other = Pki::new("some other CA");
        let untrusted = ConnectOptions {
            tls_ca_pem: Some(other.ca_pem.into_bytes()),
            ..opts()
        };
        let err = connect::connect(&url, &untrusted).await.unwrap_err();
        eprintln!("untrusted CA: {err}");
        assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("certificate"), "{err}");
        // The system roots do not know our CA either.
        let err = connect::connect(&url, &opts()).await.unwrap_err();
        assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");
        // Plain TCP to the TLS port gets nowhere (no plaintext fallback).
        let plain = format!("redis://127.0.0.1:{}", server.port);
        assert!(connect::connect(&plain, &opts()).await.is_err());

        // '#insecure' without the opt-in is refused before any connection.
        let err = connect::connect(&format!("{url}/#insecure"), &trusted)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::InsecureTlsRefused { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("--insecure-tls"), "{err}");
    })
    .await;
}
