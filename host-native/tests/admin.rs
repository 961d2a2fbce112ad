//! The admin subcommands of the real binary against a real `redis-server`:
//! `stats` by SCAN (and its bound), `inspect` without and with values,
//! `revoke-user` through the index and, when the index is gone, by scan.
//! No output contains a session ID.

// Helpers outside #[test] fns (where clippy.toml already relaxes the
// no-panic lints): a malformed answer should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::process::Command;

use common::{RedisServer, SessionHost, post_json};
use serde_json::{Value, json};

/// Run `session-host <args>`; its stdout as JSON (and the raw text).
fn admin(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_session-host"))
        .args(args)
        .env_remove("SESSION_HOST_REDIS")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stderr}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (json, format!("{stdout}{stderr}"))
}

/// A stored session bound to `user` with one value; its ID.
async fn session_of(addr: std::net::SocketAddr, user: &str) -> String {
    let (_, body) = post_json(addr, "/api/v1/load", &json!({})).await;
    let session = body["outcome"]["none"]["session"].clone();
    let (r, body) = post_json(
        addr,
        "/api/v1/save",
        &json!({ "session": session, "user": user, "set": { "secret": "s3cret" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    body["outcome"]["saved"]["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn stats_inspect_and_revoke_user() {
    let redis = RedisServer::start();
    let url = redis.url();
    let host = SessionHost::start(&["--redis", &url]).await;
    let mut ids = Vec::new();
    for user in ["alice", "alice", "alice", "bob"] {
        ids.push(session_of(host.addr, user).await);
    }
    let mut output = String::new();

    let (stats, text) = admin(&["stats", "--redis", &url, "--count", "2"]);
    output.push_str(&text);
    assert_eq!(stats["complete"], true, "{stats}");
    assert_eq!(stats["sessions"], 4, "{stats}");
    assert_eq!(stats["distinct_users"], 2, "{stats}");
    assert_eq!(stats["user_indexes"], 2, "{stats}");
    assert_eq!(stats["user_index_entries"], 4, "{stats}");
    assert_eq!(stats["scanned_keys"], 6, "{stats}");
    let (bounded, text) = admin(&["stats", "--redis", &url, "--count", "1", "--max-keys", "1"]);
    output.push_str(&text);
    assert_eq!(bounded["complete"], false, "{bounded}");
    assert!(bounded["scanned_keys"].as_u64().unwrap() < 6, "{bounded}");

    let (view, text) = admin(&["inspect", "--redis", &url, "--id", &ids[3]]);
    output.push_str(&text);
    assert_eq!(view["record"]["state"], "live", "{view}");
    assert_eq!(view["record"]["user"], "bob", "{view}");
    assert_eq!(view["record"]["sizes"]["secret"], 8, "{view}");
    assert!(
        view["record"].get("data").is_none(),
        "values only on request: {view}"
    );
    assert!(view["ttl_ms"].as_i64().unwrap() > 0);
    let key = view["key"].as_str().unwrap().to_owned();
    let (view, text) = admin(&["inspect", "--redis", &url, "--key", &key, "--values"]);
    output.push_str(&text);
    assert_eq!(view["record"]["data"]["secret"], "s3cret", "{view}");

    // Through the index.
    let (revoked, text) = admin(&["revoke-user", "--redis", &url, "alice"]);
    output.push_str(&text);
    assert_eq!(
        (revoked["via"].as_str(), revoked["revoked"].as_u64()),
        (Some("index"), Some(3))
    );
    for id in &ids[..3] {
        let (_, body) = post_json(host.addr, "/api/v1/load", &json!({ "id": id })).await;
        assert_ne!(
            body["outcome"].as_object().unwrap().keys().next().unwrap(),
            "loaded"
        );
    }

    // The index is lost: the index path finds nothing, --scan finds them.
    let more = [
        session_of(host.addr, "alice").await,
        session_of(host.addr, "alice").await,
    ];
    redis.query(&["DEL", "sess:user:alice"]).await;
    let (revoked, text) = admin(&["revoke-user", "--redis", &url, "alice"]);
    output.push_str(&text);
    assert_eq!(revoked["revoked"], 0, "{revoked}");
    let (revoked, text) = admin(&[
        "revoke-user",
        "--redis",
        &url,
        "alice",
        "--scan",
        "--count",
        "3",
    ]);
    output.push_str(&text);
    assert_eq!(revoked["revoked"], 2, "{revoked}");
    assert_eq!(revoked["complete"], true, "{revoked}");
    for id in &more {
        let (_, body) = post_json(host.addr, "/api/v1/load", &json!({ "id": id })).await;
        assert_eq!(body["outcome"]["none"]["reason"], "unknown", "{body}");
    }
    let (_, body) = post_json(host.addr, "/api/v1/load", &json!({ "id": ids[3] })).await;
    assert_eq!(
        body["outcome"]["loaded"]["user"], "bob",
        "bob untouched: {body}"
    );

    for id in ids.iter().chain(&more) {
        assert!(!output.contains(id.as_str()), "an ID in admin output");
    }
}

#[test]
fn ids_starting_with_a_dash_are_values_not_flags() {
    // base64url IDs start with '-' one time in 64.
    let out = Command::new(env!("CARGO_BIN_EXE_session-host"))
        .args(["inspect", "--redis", "redis://127.0.0.1:1", "--id", "-abc"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
}

#[test]
fn admin_commands_explain_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_session-host"))
        .args(["stats"])
        .env_remove("SESSION_HOST_REDIS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--redis"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_session-host"))
        .args(["inspect", "--redis", "redis://127.0.0.1:1", "--id", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot connect") || stderr.contains("well-formed"),
        "{stderr}"
    );
}
