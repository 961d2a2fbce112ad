//! Redis cost per HTTP request through the tower layer, as Redis itself
//! counts it (`INFO commandstats` deltas) and as round trips (a counting
//! `Backend` wrapper): the budgets DESIGN.md sets, checked end to end.
//! Run with `--nocapture` to see the table.

// Helpers outside #[test] fns (where clippy.toml already relaxes the
// no-panic lints): a broken setup should abort the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::{get, post};
use common::{RedisServer, request, serve};
use host_native::connect::{self, ConnectOptions};
use host_native::executor::BoxFuture;
use host_native::{Backend, Session, SessionError, SessionLayer};
use session_logic::step::BackendFailure;
use session_logic::{Config, Engine, Reply, Round, UserId};

/// Counts rounds (round trips) and the commands in them on the way to Redis.
struct Counting {
    inner: Arc<dyn Backend>,
    rounds: AtomicU64,
    sent: AtomicU64,
}

impl Backend for Counting {
    fn execute<'a>(
        &'a self,
        round: &'a Round,
    ) -> BoxFuture<'a, Result<Vec<Reply>, BackendFailure>> {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        self.sent.fetch_add(round.len() as u64, Ordering::SeqCst);
        self.inner.execute(round)
    }

    fn kind(&self) -> &'static str {
        "counting"
    }
}

/// `cmdstat_<name>` → calls.
async fn commandstats(redis: &RedisServer) -> BTreeMap<String, u64> {
    let text = match redis.query(&["INFO", "commandstats"]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').next()?.strip_prefix("calls=")?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| name != "info")
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[tokio::test]
async fn redis_cost_per_request_matches_the_budgets() {
    let redis = RedisServer::start();
    let inner = connect::connect(&redis.url(), &ConnectOptions::default())
        .await
        .unwrap();
    let counting = Arc::new(Counting {
        inner,
        rounds: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let backend: Arc<dyn Backend> = counting.clone();
    let engine = Engine::new(Config::default()).unwrap();
    let routes = Router::new()
        .route("/untouched", get(|| async { "hi" }))
        .route(
            "/read",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.get::<u64>("n").await?.unwrap_or(0).to_string())
            }),
        )
        .route(
            "/write",
            post(|s: Session| async move {
                let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/sign-in",
            post(|s: Session| async move {
                s.bind_user(UserId::new("ann").unwrap()).await?;
                s.regenerate().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/logout-everywhere",
            post(|s: Session| async move {
                s.logout_everywhere(false).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/destroy",
            post(|s: Session| async move {
                s.destroy().await?;
                Ok::<_, SessionError>("ok")
            }),
        );
    let addr = serve(routes.clone().layer(SessionLayer::with_rules(
        common::rules(engine.clone()),
        backend.clone(),
    )))
    .await;
    // Another instance of the app on the same Redis, with touch hints of its own.
    let elsewhere =
        serve(routes.layer(SessionLayer::with_rules(common::rules(engine), backend))).await;

    // Warm the script cache so EVALSHA hits (a cold cache costs one EVAL
    // once per script, which the property and fault tests cover).
    let c = request(addr, "POST", "/write", None)
        .await
        .cookie()
        .unwrap();
    request(addr, "POST", "/write", Some(&c)).await;
    // The writer's next read is hinted; another instance runs the load script.
    request(elsewhere, "GET", "/read", Some(&c)).await;
    let c = request(addr, "POST", "/sign-in", Some(&c))
        .await
        .cookie()
        .unwrap();
    request(addr, "POST", "/logout-everywhere", Some(&c)).await;

    let mut rows = Vec::new();
    // (response, round trips, commands sent, INFO commandstats delta, which
    // also counts the commands scripts run inside Redis)
    let mut measure = async |at, name: &str, method: &str, path: &str, cookie: Option<&str>| {
        let before = commandstats(&redis).await;
        let rounds = counting.rounds.load(Ordering::SeqCst);
        let sent = counting.sent.load(Ordering::SeqCst);
        let r = request(at, method, path, cookie).await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let d = delta(&before, &commandstats(&redis).await);
        let rounds = counting.rounds.load(Ordering::SeqCst) - rounds;
        let sent = counting.sent.load(Ordering::SeqCst) - sent;
        rows.push((name.to_owned(), rounds, sent, d.clone()));
        (r, rounds, sent, d)
    };

    let (_, rounds, sent, d) =
        measure(addr, "untouched route", "GET", "/untouched", Some(&c)).await;
    assert_eq!((rounds, sent, d.len()), (0, 0, 0), "{d:?}");
    let (_, rounds, sent, d) = measure(addr, "visitor, no cookie", "GET", "/read", None).await;
    assert_eq!((rounds, sent, d.len()), (0, 0, 0), "{d:?}");
    let (r, rounds, sent, d) = measure(addr, "first write", "POST", "/write", None).await;
    assert_eq!(
        (rounds, sent, d.get("evalsha").copied()),
        (1, 1, Some(1)),
        "{d:?}"
    );
    let cookie = r.cookie().unwrap();
    // An instance that never saw this session reads it through the load script.
    let (_, rounds, sent, d) = measure(elsewhere, "read-only", "GET", "/read", Some(&cookie)).await;
    assert_eq!(
        (rounds, sent, d.get("evalsha").copied()),
        (1, 1, Some(1)),
        "{d:?}"
    );
    // The instance that wrote it holds a touch hint for its key (from the
    // write, then from each load): inside the touch interval, a read is a
    // plain HGETALL (no script).
    let (_, rounds, sent, d) = measure(
        addr,
        "read-only, touch hinted",
        "GET",
        "/read",
        Some(&cookie),
    )
    .await;
    assert_eq!(
        (
            rounds,
            sent,
            d.get("evalsha").copied(),
            d.get("hgetall").copied()
        ),
        (1, 1, None, Some(1)),
        "{d:?}"
    );
    let (_, rounds, sent, d) =
        measure(addr, "change one key", "POST", "/write", Some(&cookie)).await;
    assert_eq!(
        (rounds, sent, d.get("evalsha").copied()),
        (2, 2, Some(1)),
        "{d:?}"
    );
    let (r, rounds, sent, d) = measure(
        addr,
        "sign-in (bind + regenerate)",
        "POST",
        "/sign-in",
        Some(&cookie),
    )
    .await;
    // load (hinted: HGETALL), then create + retire + index in one round.
    assert_eq!(
        (rounds, sent, d.get("evalsha").copied()),
        (2, 4, Some(3)),
        "{d:?}"
    );
    let signed_in = r.cookie().unwrap();
    let (_, rounds, sent, d) = measure(addr, "destroy", "POST", "/destroy", Some(&signed_in)).await;
    assert_eq!(
        (rounds, sent, d.get("del").copied()),
        (2, 2, Some(1)),
        "{d:?}"
    );
    // Logout everywhere for a user with 10 sessions: 2 rounds of its own.
    let mut last = String::new();
    for _ in 0..10 {
        let c = request(addr, "POST", "/write", None)
            .await
            .cookie()
            .unwrap();
        last = request(addr, "POST", "/sign-in", Some(&c))
            .await
            .cookie()
            .unwrap();
    }
    // Index entries outlive deleted sessions until their deadline, and
    // each entry costs one revoke.
    let entries = match redis.query(&["ZCARD", "sess:user:ann"]).await {
        redis::Value::Int(n) => u64::try_from(n).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(entries >= 10);
    let (_, rounds, sent, d) = measure(
        addr,
        "logout everywhere (10 sessions)",
        "POST",
        "/logout-everywhere",
        Some(&last),
    )
    .await;
    assert_eq!(d.get("zrange").copied(), Some(1), "{d:?}");
    // load, then ZRANGE and one revoke per entry (this session among them);
    // the removal cookie costs no round.
    assert_eq!((rounds, sent), (3, 2 + entries), "{d:?}");

    eprintln!(
        "| request | round trips | commands sent | INFO commandstats delta (incl. inside scripts) |"
    );
    eprintln!("|---|---|---|---|");
    for (name, rounds, sent, d) in rows {
        let cmds: Vec<String> = d.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let cmds = if cmds.is_empty() {
            "none".into()
        } else {
            cmds.join(", ")
        };
        eprintln!("| {name} | {rounds} | {sent} | {cmds} |");
    }
}
