//! Races over real HTTP against a real `redis-server`, through the tower
//! layer: parallel requests on one session writing different keys, a
//! regenerate racing requests that still carry the old cookie, and a
//! destroy racing a save that is slow to reach Redis.

// Helpers outside #[test] fns (where clippy.toml already relaxes the
// no-panic lints): a broken setup should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{RedisServer, request, serve};
use host_native::connect::{self, ConnectOptions};
use host_native::executor::BoxFuture;
use host_native::{Backend, Session, SessionError, SessionLayer};
use session_logic::step::BackendFailure;
use session_logic::{Config, Engine, Reply, Round};

/// Delays every round that carries the argument `trigger` (e.g. a JSON
/// value being written) before sending it to Redis: a slow request.
struct Slow {
    inner: Arc<dyn Backend>,
    trigger: Vec<u8>,
    delay: Duration,
}

impl Backend for Slow {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        Box::pin(async move {
            let slow = round
                .commands()
                .iter()
                .any(|c| c.args().contains(&self.trigger));
            if slow {
                tokio::time::sleep(self.delay).await;
            }
            self.inner.execute(round).await
        })
    }

    fn kind(&self) -> &'static str {
        "slow"
    }
}

async fn app(redis: &RedisServer) -> std::net::SocketAddr {
    let backend = connect::connect(&redis.url(), &ConnectOptions::default())
        .await
        .unwrap();
    let slow: Arc<dyn Backend> = Arc::new(Slow {
        inner: backend,
        trigger: br#""slow""#.to_vec(),
        delay: Duration::from_millis(400),
    });
    let engine = Engine::new(Config::default()).unwrap();
    let router = Router::new()
        .route(
            "/set/{k}/{v}",
            post(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, v).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/get/{k}",
            get(|s: Session, Path(k): Path<String>| async move {
                Ok::<_, SessionError>(s.get::<String>(&k).await?.unwrap_or_default())
            }),
        )
        .route(
            "/all",
            get(|s: Session| async move {
                Ok::<_, SessionError>(serde_json::to_string(&s.data().await?).unwrap())
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
        .layer(SessionLayer::with_rules(common::rules(engine), slow));
    serve(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_writes_of_different_keys_lose_nothing() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let cookie = request(addr, "POST", "/set/seed/1", None)
        .await
        .cookie()
        .unwrap();
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let r = request(addr, "POST", &format!("/set/k{i}/v{i}"), Some(&cookie)).await;
                assert_eq!(r.status, 200, "{r:?}");
                assert!(r.header("set-cookie").is_none(), "{r:?}");
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let all: serde_json::Value =
        serde_json::from_str(&request(addr, "GET", "/all", Some(&cookie)).await.body).unwrap();
    for i in 0..64 {
        assert_eq!(all[format!("k{i}")], format!("v{i}"), "k{i} lost: {all}");
    }
    assert_eq!(all["seed"], "1");
    assert_eq!(redis.dbsize().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_racing_old_cookie_requests_leaves_one_session() {
    for _ in 0..5 {
        let redis = RedisServer::start();
        let addr = app(&redis).await;
        let old = request(addr, "POST", "/set/profile/alice", None)
            .await
            .cookie()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..24 {
            let old = old.clone();
            tasks.push(tokio::spawn(async move {
                match i {
                    12 => request(addr, "POST", "/regenerate", Some(&old)).await,
                    i if i % 2 == 0 => request(addr, "GET", "/get/profile", Some(&old)).await,
                    i => request(addr, "POST", &format!("/set/k{i}/x"), Some(&old)).await,
                }
            }));
        }
        let mut cookies = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            cookies.extend(r.all("set-cookie").into_iter().map(str::to_owned));
        }
        // Exactly one Set-Cookie: the regenerate's new ID. A request that
        // arrived with the old ID after the rotation gets no cookie (it would
        // knock the browser off the new ID) and no empty session.
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let new = cookies[0].split(';').next().unwrap().to_owned();
        assert_ne!(new, old);
        let r = request(addr, "GET", "/get/profile", Some(&new)).await;
        assert_eq!(r.body, "alice");
        // Redis: the new session, and the old ID's rotation marker.
        let keys = redis.keys().await;
        assert_eq!(keys.len(), 2, "{keys:?}");
        let mut live = 0;
        for key in &keys {
            if redis.query(&["HEXISTS", key, "$rotated"]).await != redis::Value::Int(1) {
                live += 1;
            }
        }
        assert_eq!(live, 1, "a stray session: {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_racing_a_slow_save_leaves_nothing() {
    let redis = RedisServer::start();
    let addr = app(&redis).await;
    let cookie = request(addr, "POST", "/set/a/1", None)
        .await
        .cookie()
        .unwrap();
    // The save of "slow" is held back 400 ms after its load; the destroy
    // lands in between.
    let slow = {
        let cookie = cookie.clone();
        tokio::spawn(async move { request(addr, "POST", "/set/b/slow", Some(&cookie)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = request(addr, "POST", "/destroy", Some(&cookie)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(redis.dbsize().await, 0, "destroyed");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("set-cookie").is_none(),
        "the late save must not hand out a new session: {r:?}"
    );
    assert_eq!(
        redis.dbsize().await,
        0,
        "the slow save resurrected the session: {:?}",
        redis.keys().await
    );
    assert_eq!(request(addr, "GET", "/get/a", Some(&cookie)).await.body, "");
}
