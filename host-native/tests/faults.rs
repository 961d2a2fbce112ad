//! Faults, with the real `session-host` binary and a real `redis-server`:
//! Redis killed mid-run (typed 503s within the command timeout, never a
//! hang or an empty session), service resuming after Redis restarts without
//! restarting `session-host`, a slow Redis hitting the timeout (and the
//! connection staying in step afterwards), and `SCRIPT FLUSH` during load.

// Helpers outside #[test] fns (where clippy.toml already relaxes the
// no-panic lints): a malformed answer should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{RedisServer, SessionHost, post_json, request};
use serde_json::{Value, json};

const TIMEOUT_MS: u64 = 300;

async fn host(redis: &RedisServer) -> SessionHost {
    SessionHost::start(&[
        "--redis",
        &redis.url(),
        "--command-timeout-ms",
        &TIMEOUT_MS.to_string(),
    ])
    .await
}

/// A stored session with `n` in it; returns the session object.
async fn stored(addr: std::net::SocketAddr, n: u64) -> Value {
    let (_, body) = post_json(addr, "/api/v1/load", &json!({})).await;
    let session = body["outcome"]["none"]["session"].clone();
    let (r, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": session, "set": { "n": n } }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    body["outcome"]["saved"]["session"].clone()
}

fn id(session: &Value) -> &str {
    session["id"].as_str().unwrap()
}

#[tokio::test]
async fn redis_killed_gives_fast_503s_and_service_resumes_after_restart() {
    let mut redis = RedisServer::start();
    let sh = host(&redis).await;
    let addr = sh.addr;
    let session = stored(addr, 1).await;

    redis.kill();
    while common::listening(redis.port) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bound = Duration::from_millis(TIMEOUT_MS * 4);
    for _ in 0..3 {
        for (path, body) in [
            ("/api/v1/load", json!({ "id": id(&session) })),
            (
                "/api/v1/save",
                json!({ "session": session, "set": { "n": 2 } }),
            ),
        ] {
            let started = Instant::now();
            let (r, answer) = post_json(addr, path, &body).await;
            let took = started.elapsed();
            assert_eq!(r.status, 503, "{path}: {answer}");
            assert!(
                answer["code"].as_str().unwrap().starts_with("backend_"),
                "{path}: {answer}"
            );
            assert!(took < bound, "{path} took {took:?} (bound {bound:?})");
        }
        let r = request(addr, "GET", "/healthz", None).await;
        assert_eq!(r.status, 503, "{r:?}");
        // The demo site fails closed too.
        let r = request(addr, "GET", "/", Some(&format!("sid={}", id(&session)))).await;
        assert_eq!(r.status, 503, "{r:?}");
    }

    // Redis comes back (empty: persistence is off); session-host is the same
    // process and must reconnect on its own.
    redis.restart();
    let started = Instant::now();
    loop {
        let (r, _) = post_json(addr, "/api/v1/load", &json!({ "id": id(&session) })).await;
        if r.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery after restart: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after the restart", started.elapsed());
    let again = stored(addr, 7).await;
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id(&again) })).await;
    assert_eq!(body["outcome"]["loaded"]["data"]["n"], 7, "{body}");
    assert_eq!(request(addr, "GET", "/healthz", None).await.status, 200);
}

#[tokio::test]
async fn a_slow_redis_hits_the_timeout_and_replies_stay_in_step() {
    let redis = RedisServer::start();
    let sh = host(&redis).await;
    let addr = sh.addr;
    let a = stored(addr, 1).await;
    let b = stored(addr, 2).await;

    // Block Redis for 1.5 s from another connection.
    let port = redis.port.to_string();
    let sleeper = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "1.5"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (r, body) = post_json(addr, "/api/v1/load", &json!({ "id": id(&a) })).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, body["code"].as_str()),
        (503, Some("backend_timeout")),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 3),
        "took {took:?}"
    );
    sleeper.await.unwrap();

    // The late reply to the timed-out load must not be taken for the answer
    // to the next request: each session still reads its own data.
    for _ in 0..20 {
        for (s, n) in [(&a, 1), (&b, 2)] {
            let (r, body) = post_json(addr, "/api/v1/load", &json!({ "id": id(s) })).await;
            assert_eq!(r.status, 200, "{body}");
            assert_eq!(body["outcome"]["loaded"]["data"]["n"], n, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_during_load_is_invisible_to_users() {
    let redis = RedisServer::start();
    let sh = host(&redis).await;
    let addr = sh.addr;
    let session = stored(addr, 5).await;
    let url = redis.url();
    let flusher = tokio::spawn(async move {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for _ in 0..100 {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let (r, body) =
                    post_json(addr, "/api/v1/load", &json!({ "id": id(&session) })).await;
                assert_eq!(r.status, 200, "{body}");
                let loaded = body["outcome"]["loaded"].clone();
                assert_eq!(loaded["data"]["n"], 5, "{body}");
                let (r, body) = post_json(
                    addr,
                    "/api/v1/save",
                    &json!({ "session": loaded, "set": { format!("w{worker}"): i } }),
                )
                .await;
                assert_eq!(r.status, 200, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    flusher.await.unwrap();
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id(&session) })).await;
    let data = &body["outcome"]["loaded"]["data"];
    for worker in 0..4 {
        assert_eq!(data[format!("w{worker}")], 59, "{body}");
    }
    // The flushes really hit requests: some scripts went out again as EVAL.
    let stats = redis.query(&["INFO", "commandstats"]).await;
    let stats = match stats {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    };
    assert!(
        stats.contains("cmdstat_eval:"),
        "no NOSCRIPT fallback seen:\n{stats}"
    );
}
