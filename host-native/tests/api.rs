//! The `session-host` JSON API end to end: the real binary, started on a
//! free loopback port against a real `redis-server`, driven over HTTP the
//! way an app in another language would. Every operation, the change-set
//! body, typed 4xx answers for bad input that write nothing, and no issued
//! ID in any Redis key or log line.

// Helpers outside #[test] fns (where clippy.toml already relaxes the
// no-panic lints): a malformed answer should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{RedisServer, SessionHost, post_json, send};
use serde_json::{Value, json};

/// The outcome's variant name and body.
fn outcome(body: &Value) -> (&str, &Value) {
    let o = body["outcome"]
        .as_object()
        .unwrap_or_else(|| panic!("no outcome in {body}"));
    let (name, value) = o.iter().next().unwrap();
    (name.as_str(), value)
}

/// `name=value` from a Set-Cookie string.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn every_operation_over_the_json_api() {
    let redis = RedisServer::start();
    let host = SessionHost::start(&["--redis", &redis.url()]).await;
    let addr = host.addr;
    let mut issued: Vec<String> = Vec::new();

    // A visitor without a cookie gets a new, unstored session.
    let (r, body) = post_json(addr, "/api/v1/load", &json!({ "cookie": null })).await;
    assert_eq!(r.status, 200, "{body}");
    let (name, none) = outcome(&body);
    assert_eq!((name, none["reason"].as_str()), ("none", Some("no_cookie")));
    assert_eq!(redis.dbsize().await, 0);

    // First write: one key, a cookie.
    let (r, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": none["session"], "set": { "cart": [1, 2], "theme": "dark" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    let (name, saved) = outcome(&body);
    assert_eq!(name, "saved");
    let cookie = pair(saved["cookie"].as_str().unwrap());
    let id = saved["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(cookie, format!("sid={id}"));
    issued.push(id.clone());
    assert_eq!(redis.dbsize().await, 1);

    // Load by cookie header and by bare ID.
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "cookie": cookie })).await;
    let (name, loaded) = outcome(&body);
    assert_eq!(name, "loaded");
    assert_eq!(loaded["data"], json!({ "cart": [1, 2], "theme": "dark" }));
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id })).await;
    assert_eq!(outcome(&body).0, "loaded");

    // Change one key, remove another: no new cookie for a live session.
    let (r, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": loaded, "set": { "cart": [3] }, "remove": ["theme"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    let (name, saved) = outcome(&body);
    assert_eq!(name, "saved");
    assert!(saved["cookie"].is_null(), "{body}");
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id })).await;
    let (_, loaded) = outcome(&body);
    assert_eq!(loaded["data"], json!({ "cart": [3] }));

    // Touch.
    let (r, body) = post_json(addr, "/api/v1/touch", &json!({ "session": loaded })).await;
    assert_eq!((r.status, outcome(&body).0), (200, "saved"), "{body}");

    // Sign in: regenerate with a user; the old ID yields no data.
    let (r, body) = post_json(
        addr,
        "/api/v1/regenerate",
        &json!({ "session": loaded, "user": "alice@example.com" }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    let (name, signed_in) = outcome(&body);
    assert_eq!(name, "saved");
    let id2 = signed_in["session"]["id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    issued.push(id2.clone());
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id })).await;
    let (name, stale) = outcome(&body);
    assert!(name == "rotated" || name == "none", "{body}");
    assert!(stale.get("data").is_none_or(|d| d == &json!({})), "{body}");
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id2 })).await;
    let (name, current) = outcome(&body);
    assert_eq!(name, "loaded");
    assert_eq!(current["data"], json!({ "cart": [3] }));
    let current = current.clone();

    // A second device of the same user.
    let (_, body) = post_json(addr, "/api/v1/load", &json!({})).await;
    let fresh = outcome(&body).1["session"].clone();
    let (_, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": fresh, "user": "alice@example.com", "set": { "device": 2 } }),
    )
    .await;
    let (name, second) = outcome(&body);
    assert_eq!(name, "saved", "{body}");
    issued.push(second["session"]["id"].as_str().unwrap().to_owned());

    // Devices: two, the asking one marked current; handles are not IDs.
    let (r, body) = post_json(
        addr,
        "/api/v1/users/alice@example.com/devices",
        &json!({ "session": current }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    let (name, devices) = outcome(&body);
    assert_eq!(name, "devices");
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 2, "{body}");
    assert_eq!(devices.iter().filter(|d| d["current"] == true).count(), 1);
    let other = devices.iter().find(|d| d["current"] == false).unwrap();
    let handle = other["handle"].as_str().unwrap();
    assert!(issued.iter().all(|id| !handle.contains(id.as_str())));

    // Per-device sign-out.
    let (r, body) = post_json(
        addr,
        &format!("/api/v1/users/alice@example.com/devices/{handle}/sign-out"),
        &json!(null),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(outcome(&body).1["count"], 1, "{body}");
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": issued[2] })).await;
    assert_ne!(outcome(&body).0, "loaded");

    // A third device, then logout everywhere except the current session.
    let (_, body) = post_json(addr, "/api/v1/load", &json!({})).await;
    let fresh = outcome(&body).1["session"].clone();
    let (_, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": fresh, "user": "alice@example.com", "set": { "device": 3 } }),
    )
    .await;
    let third = outcome(&body).1["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    issued.push(third.clone());
    let (r, body) = post_json(
        addr,
        "/api/v1/users/alice@example.com/logout-everywhere",
        &json!({ "session": current }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(outcome(&body).1["count"], 1, "{body}");
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": third })).await;
    assert_ne!(outcome(&body).0, "loaded");
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id2 })).await;
    assert_eq!(outcome(&body).0, "loaded", "the current session was kept");

    // Destroy: a removal cookie, and nothing of the session left.
    let (r, body) = post_json(addr, "/api/v1/destroy", &json!({ "session": current })).await;
    assert_eq!(r.status, 200, "{body}");
    let (name, destroyed) = outcome(&body);
    assert_eq!(name, "destroyed");
    assert!(destroyed["cookie"].as_str().unwrap().contains("Max-Age=0"));
    let (_, body) = post_json(addr, "/api/v1/load", &json!({ "id": id2 })).await;
    assert_eq!(outcome(&body).1["reason"], "unknown", "{body}");
    // What may remain: the user index (its entries are pruned by deadline)
    // and the rotation marker of the regenerated ID (gone after the grace).
    let keys = redis.keys().await;
    for key in &keys {
        if key.starts_with("sess:user:") {
            continue;
        }
        // A marker is the old record with `$rotated` set (marked in place).
        let marker = redis.query(&["HEXISTS", key, "$rotated"]).await;
        assert_eq!(marker, redis::Value::Int(1), "{key} is left behind");
        let ttl = redis.query(&["PTTL", key]).await;
        assert!(
            matches!(ttl, redis::Value::Int(ms) if ms > 0 && ms <= 60_000),
            "{ttl:?}"
        );
    }

    // No issued ID in any Redis key or log line.
    let log = host.log();
    assert!(log.contains("sid_hash="), "the log carries sid_hash");
    for id in &issued {
        assert!(!log.contains(id.as_str()), "an issued ID is in the log");
        assert!(keys.iter().all(|k| !k.contains(id.as_str())));
    }
}

#[tokio::test]
async fn bad_requests_get_typed_4xx_and_write_nothing() {
    let redis = RedisServer::start();
    let host = SessionHost::start(&["--redis", &redis.url()]).await;
    let addr = host.addr;
    let (_, body) = post_json(addr, "/api/v1/load", &json!({})).await;
    let session = outcome(&body).1["session"].clone();

    let json_ct = [("Content-Type", "application/json")];
    // (path, headers, body, expected status, expected code prefix)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/save",
            json_ct.to_vec(),
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/api/v1/save",
            json_ct.to_vec(),
            b"[]".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/api/v1/load",
            json_ct.to_vec(),
            br#"{"cookies":"x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/api/v1/save",
            vec![],
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v1/save",
            json_ct.to_vec(),
            serde_json::to_vec(&json!({ "session": session, "set": { "$user": "root" } })).unwrap(),
            400,
            "invalid_input",
        ),
        (
            "/api/v1/save",
            json_ct.to_vec(),
            serde_json::to_vec(&json!({ "session": session, "set": { "": 1 } })).unwrap(),
            400,
            "invalid_input",
        ),
        (
            "/api/v1/save",
            json_ct.to_vec(),
            serde_json::to_vec(&json!({ "session": session, "user": "bad\nuser" })).unwrap(),
            400,
            "invalid_input",
        ),
        (
            // One value over max_field_bytes (64 KiB by default).
            "/api/v1/save",
            json_ct.to_vec(),
            serde_json::to_vec(
                &json!({ "session": session, "set": { "big": "x".repeat(70_000) } }),
            )
            .unwrap(),
            413,
            "too_large",
        ),
        (
            // Over the HTTP body limit (2 MiB).
            "/api/v1/save",
            json_ct.to_vec(),
            serde_json::to_vec(
                &json!({ "session": session, "set": { "big": "x".repeat(3 << 20) } }),
            )
            .unwrap(),
            413,
            "body_too_large",
        ),
    ];
    for (path, headers, body, status, code) in cases {
        let r = send(addr, "POST", path, &headers, &body).await;
        let answer: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|_| panic!("{path} {status}: not JSON: {:?}", r.body));
        assert_eq!(r.status, status, "{path}: {answer}");
        assert!(
            answer["code"].as_str().unwrap().starts_with(code),
            "{path}: expected {code}, got {answer}"
        );
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }

    // Malformed, oversized and duplicated cookies and wrong ID formats are
    // no session (not an error), and cost no write.
    for cookie in [
        "sid=short".to_owned(),
        format!("sid={}", "A".repeat(5000)),
        format!("sid={}; sid={}", "A".repeat(43), "B".repeat(43)),
        "sid=\"quoted\"".to_owned(),
        "sid=!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!".to_owned(),
    ] {
        let (r, body) = post_json(addr, "/api/v1/load", &json!({ "cookie": cookie })).await;
        assert_eq!(r.status, 200, "{body}");
        let (name, none) = outcome(&body);
        assert_eq!(name, "none", "{body}");
        assert!(
            ["malformed", "unknown"].contains(&none["reason"].as_str().unwrap()),
            "{body}"
        );
    }
    for id in ["", "short", "has space in it", &"A".repeat(200)] {
        let (r, body) = post_json(addr, "/api/v1/load", &json!({ "id": id })).await;
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(outcome(&body).1["reason"], "malformed", "{id:?}: {body}");
    }
    let (r, body) = post_json(addr, "/api/v1/users/a%0Ab/devices", &json!({})).await;
    assert_eq!(
        (r.status, body["code"].as_str()),
        (400, Some("invalid_input")),
        "{body}"
    );
    assert_eq!(redis.dbsize().await, 0, "bad input wrote to Redis");
}

#[tokio::test]
async fn openapi_document_and_graceful_shutdown() {
    let mut host = SessionHost::start(&[]).await;
    let r = common::request(host.addr, "GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/api/v1/save"]["post"]["requestBody"].is_object());
    let status = host.terminate().unwrap();
    assert!(status.success(), "{status}");
    assert!(host.log().contains("shut down cleanly"));
}
