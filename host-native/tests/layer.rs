//! The layer end to end over real HTTP against a real `redis-server`: the
//! caching headers, lazy loading, regeneration, destroy, fail-closed 503s and
//! strict cookie parsing, as a browser and Redis see them. With
//! `HOST_NATIVE_ENGINE=wasm` (and `--features wasm-engine`) every test runs
//! the rules from the wasm-abi module instead of the linked core.

// `app` is setup outside a #[test] fn (where clippy.toml already allows
// unwrap): a server that cannot be reached should abort the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{RedisServer, request, serve};
use host_native::connect::{self, ConnectOptions};
use host_native::{Session, SessionError, SessionLayer};
use session_logic::{Config, Engine};

const TIMEOUT: Duration = Duration::from_millis(500);

async fn app(redis: &RedisServer) -> std::net::SocketAddr {
    let opts = ConnectOptions {
        command_timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        ..ConnectOptions::default()
    };
    let backend = connect::connect(&redis.url(), &opts).await.unwrap();
    let engine = Engine::new(Config::default()).unwrap();
    let router = Router::new()
        .route("/untouched", get(|| async { "hello" }))
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
            "/big/{n}",
            post(|s: Session, Path(n): Path<usize>| async move {
                s.insert("big", "x".repeat(n)).await?;
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
        .layer(SessionLayer::with_rules(common::rules(engine), backend));
    serve(router).await
}

#[tokio::test]
async fn first_write_sets_the_cookie_with_no_store() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let r = request(addr, "POST", "/write/apple", None).await;
    assert_eq!(r.status, 200);
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("sid=") && set.contains("HttpOnly") && set.contains("Secure"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("vary"), Some("Cookie"));
    assert_eq!(redis.dbsize().await, 1);
}

#[tokio::test]
async fn read_only_request_varies_by_cookie_and_sets_nothing() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let cookie = request(addr, "POST", "/write/apple", None)
        .await
        .cookie()
        .unwrap();
    let r = request(addr, "GET", "/read", Some(&cookie)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "apple"));
    assert_eq!(r.header("vary"), Some("Cookie"));
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    assert!(r.header("cache-control").is_none(), "{r:?}");
}

#[tokio::test]
async fn untouched_session_costs_nothing_and_sends_nothing() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let r = request(addr, "GET", "/untouched", Some("sid=whatever")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_none() && r.header("vary").is_none());
    let r = request(addr, "GET", "/read", None).await;
    assert_eq!(r.body, "none");
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    assert_eq!(redis.dbsize().await, 0, "no empty bot sessions");
}

#[tokio::test]
async fn regenerate_changes_the_cookie_and_the_old_one_yields_no_data() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let old = request(addr, "POST", "/write/apple", None)
        .await
        .cookie()
        .unwrap();
    let r = request(addr, "POST", "/regenerate", Some(&old)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let new = r.cookie().unwrap();
    assert_ne!(new, old);
    assert_eq!(
        request(addr, "GET", "/read", Some(&new)).await.body,
        "apple"
    );
    let stale = request(addr, "GET", "/read", Some(&old)).await;
    assert_eq!(stale.body, "none");
    assert!(
        stale.header("set-cookie").is_none(),
        "a rotated ID gets no new cookie"
    );
}

#[tokio::test]
async fn destroy_deletes_the_record_and_removes_the_cookie() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let cookie = request(addr, "POST", "/write/apple", None)
        .await
        .cookie()
        .unwrap();
    let r = request(addr, "POST", "/destroy", Some(&cookie)).await;
    assert_eq!(r.status, 200);
    let removal = r.header("set-cookie").unwrap();
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(redis.dbsize().await, 0);
    assert_eq!(
        request(addr, "GET", "/read", Some(&cookie)).await.body,
        "none"
    );
}

#[tokio::test]
async fn redis_outage_is_a_fast_503_never_an_empty_session() {
    let mut redis = RedisServer::start();
    let addr = app(&redis).await;
    let cookie = request(addr, "POST", "/write/apple", None)
        .await
        .cookie()
        .unwrap();
    let port = redis.port;
    redis.kill();
    while common::listening(port) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (method, path) in [("GET", "/read"), ("POST", "/write/pear")] {
        let started = Instant::now();
        let r = request(addr, method, path, Some(&cookie)).await;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(took < TIMEOUT * 4, "{path} took {took:?}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            body["code"].as_str().unwrap().starts_with("backend_"),
            "{body}"
        );
        assert!(r.header("set-cookie").is_none(), "{r:?}");
        assert!(!r.body.contains(cookie.trim_start_matches("sid=")));
    }
}

#[tokio::test]
async fn garbage_cookies_create_no_key() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    for junk in [
        "sid=short",
        "sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",
        "sid=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "sid=%00%ff; sid=; =",
    ] {
        let r = request(addr, "GET", "/read", Some(junk)).await;
        assert_eq!((r.status, r.body.as_str()), (200, "none"), "{junk}");
        // Forged or junk IDs cost no write and produce no cookie at all.
        assert!(r.all("set-cookie").is_empty(), "{junk}");
    }
    assert_eq!(redis.dbsize().await, 0);
}

/// 10^4 requests with garbage or well-formed unknown IDs (the cost of a
/// flood of forged cookies): no key is created and no Set-Cookie is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_or_unknown_ids_create_no_key_and_no_cookie() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let mut tasks = Vec::new();
    for worker in 0u64..8 {
        tasks.push(tokio::spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (worker + 1);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for i in 0..1250u32 {
                let cookie = if i % 2 == 0 {
                    // Well-formed: 42 random base64url characters and a
                    // canonical last one, so each costs one Redis read.
                    let mut id: String = (0..42)
                        .map(|_| char::from(ALPHABET[(next() % 64) as usize]))
                        .collect();
                    id.push('A');
                    format!("sid={id}")
                } else {
                    let len = (next() % 60) as usize;
                    let junk: String = (0..len)
                        .map(|_| char::from(b'!' + (next() % 90) as u8))
                        .filter(|c| *c != ';')
                        .collect();
                    format!("sid={junk}")
                };
                let r = request(addr, "GET", "/read", Some(&cookie)).await;
                assert_eq!((r.status, r.body.as_str()), (200, "none"), "{cookie}");
                assert!(r.all("set-cookie").is_empty(), "{cookie}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(redis.dbsize().await, 0);
}

#[tokio::test]
async fn handler_errors_never_reach_redis_as_an_empty_session() {
    // A handler that swallows the load error still gets a 503 response.
    let mut redis = RedisServer::start();
    let opts = ConnectOptions {
        command_timeout: TIMEOUT,
        connect_timeout: TIMEOUT,
        ..ConnectOptions::default()
    };
    let backend = connect::connect(&redis.url(), &opts).await.unwrap();
    let engine = Engine::new(Config::default()).unwrap();
    let router = Router::new()
        .route(
            "/swallow",
            get(|s: Session| async move {
                let _ = s.get::<String>("v").await;
                "looks fine"
            }),
        )
        .layer(SessionLayer::with_rules(
            common::rules(engine),
            Arc::clone(&backend),
        ));
    let addr = serve(router).await;
    redis.kill();
    let r = request(
        addr,
        "GET",
        "/swallow",
        Some(&format!("sid={}", "A".repeat(43))),
    )
    .await;
    assert_eq!(r.status, 503, "{r:?}");
}

#[tokio::test]
async fn oversized_data_is_a_413_and_writes_nothing() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    // New session: nothing stored, no cookie handed out.
    let r = request(addr, "POST", "/big/70000", None).await;
    assert_eq!(r.status, 413, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["code"], "too_large", "{body}");
    assert!(r.header("set-cookie").is_none(), "{r:?}");
    assert_eq!(redis.dbsize().await, 0);
    // Existing session: the record keeps its old data.
    let cookie = request(addr, "POST", "/write/apple", None)
        .await
        .cookie()
        .unwrap();
    let r = request(addr, "POST", "/big/70000", Some(&cookie)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(
        request(addr, "GET", "/read", Some(&cookie)).await.body,
        "apple"
    );
    assert_eq!(redis.dbsize().await, 1);
}
