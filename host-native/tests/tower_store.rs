//! `TowerStore` under the real tower-sessions middleware, over HTTP, against
//! a real `redis-server`: handlers written for tower-sessions work
//! unchanged, records are in our format under hashed keys, `cycle_id`
//! changes the ID and the old one yields nothing, `flush` deletes, and a
//! save cannot resurrect a session deleted meanwhile.

// Setup outside #[test] fns (where clippy.toml already relaxes the no-panic
// lints): a broken setup should abort the test loudly.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::routing::{get, post};
use common::{RedisServer, request, serve};
use host_native::TowerStore;
use host_native::connect::{self, ConnectOptions};
use tower_sessions::{Session, SessionManagerLayer};

async fn app(redis: &RedisServer) -> std::net::SocketAddr {
    let backend = connect::connect(&redis.url(), &ConnectOptions::default())
        .await
        .unwrap();
    let store = TowerStore::new(backend).unwrap();
    // Plain http on loopback in this test; production keeps Secure.
    let layer = SessionManagerLayer::new(store).with_secure(false);
    let router = Router::new()
        .route(
            "/count",
            post(|s: Session| async move {
                let n: u64 = s.get("n").await.unwrap().unwrap_or(0) + 1;
                s.insert("n", n).await.unwrap();
                n.to_string()
            }),
        )
        .route(
            "/count",
            get(|s: Session| async move {
                let n: u64 = s.get("n").await.unwrap().unwrap_or(0);
                n.to_string()
            }),
        )
        .route(
            "/cycle",
            post(|s: Session| async move {
                s.cycle_id().await.unwrap();
                "ok"
            }),
        )
        .route(
            "/flush",
            post(|s: Session| async move {
                s.flush().await.unwrap();
                "ok"
            }),
        )
        .layer(layer);
    serve(router).await
}

#[tokio::test]
async fn tower_sessions_handlers_run_unchanged_on_our_store() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;

    let r = request(addr, "POST", "/count", None).await;
    assert_eq!(r.body, "1");
    let cookie = r.cookie().unwrap();
    let id = cookie.strip_prefix("id=").unwrap().to_owned();
    assert_eq!(id.len(), 22, "{cookie}");
    let r = request(addr, "POST", "/count", Some(&cookie)).await;
    assert_eq!(r.body, "2");
    assert_eq!(
        request(addr, "GET", "/count", Some(&cookie)).await.body,
        "2"
    );

    // Our record format under a key that hides the ID.
    let keys = redis.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("sess:") && !keys[0].contains(&id),
        "{keys:?}"
    );
    let n = redis.query(&["HGET", &keys[0], "n"]).await;
    assert_eq!(n, redis::Value::BulkString(b"2".to_vec()));
    let v = redis.query(&["HGET", &keys[0], "$v"]).await;
    assert_eq!(v, redis::Value::BulkString(b"1".to_vec()));

    // cycle_id: a new ID with the data; the old one yields nothing.
    let r = request(addr, "POST", "/cycle", Some(&cookie)).await;
    let new = r.cookie().unwrap();
    assert_ne!(new, cookie);
    assert_eq!(request(addr, "GET", "/count", Some(&new)).await.body, "2");
    assert_eq!(
        request(addr, "GET", "/count", Some(&cookie)).await.body,
        "0"
    );

    // flush deletes the record.
    request(addr, "POST", "/flush", Some(&new)).await;
    assert_eq!(request(addr, "GET", "/count", Some(&new)).await.body, "0");
    assert_eq!(redis.dbsize().await, 0);

    // A planted, well-formed ID is never adopted: the write gets a new ID.
    let planted = format!("id={}", "A".repeat(21) + "A");
    let r = request(addr, "POST", "/count", Some(&planted)).await;
    assert_eq!(r.body, "1");
    let issued = r.cookie().unwrap();
    assert_ne!(issued, planted);
}

#[tokio::test]
async fn the_store_refuses_a_256_bit_id_config() {
    let backend = std::sync::Arc::new(host_native::MemoryBackend::new());
    let engine = session_logic::Engine::new(session_logic::Config::default()).unwrap();
    let err = TowerStore::with_engine(engine, backend).unwrap_err();
    assert!(err.to_string().contains("base64url128"), "{err}");
}
