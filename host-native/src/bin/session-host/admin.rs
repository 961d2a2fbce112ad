//! Admin subcommands for operators: `inspect` one session, `revoke-user`
//! (through the user's index, or by scanning when the index is gone) and
//! `stats` by `SCAN`. What a key is, what a record says and how a session
//! is revoked come from the core (`session_logic::admin`), so these agree
//! with the rules; this module only scans, in bounded batches, and prints
//! JSON. Scans are cursor-based (`SCAN … COUNT n`), never `KEYS`, and stop
//! at `--max-keys`, saying whether they covered the whole keyspace.
//!
//! Output never contains a session ID: a session is shown by its key (a
//! hash of the ID under the default scheme) and its `sid_hash`.

use std::collections::BTreeSet;
use std::time::Instant;

use host_native::{Backend, clock, drive};
use serde_json::{Value, json};
use session_logic::admin::{KeyKind, RecordView};
use session_logic::{Command, Engine, Outcome, Reply, Round, SessionId, UserId};

/// How far a scan may go.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ScanBounds {
    /// Keys asked of Redis per SCAN call.
    #[arg(long, default_value_t = 500)]
    pub(crate) count: u32,
    /// Stop after this many keys (the report says whether it was complete).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) max_keys: u64,
}

/// Which session to inspect.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct Target {
    /// The session ID (e.g. the value of the cookie). IDs may start with
    /// '-', so the value is taken as given.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) id: Option<String>,
    /// The Redis key, as `stats` or SCAN shows it.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) key: Option<String>,
}

/// One round through the backend; a transport failure or a Redis error
/// reply becomes a message.
async fn round(backend: &dyn Backend, commands: Vec<Command>) -> Result<Vec<Reply>, String> {
    let replies = backend
        .execute(&Round(commands))
        .await
        .map_err(|f| format!("redis failed: {f:?}"))?;
    for r in &replies {
        if let Reply::Error(e) = r {
            return Err(format!("redis answered an error: {e}"));
        }
    }
    Ok(replies)
}

/// `inspect`: the record behind one session, without its data values
/// unless `values`.
pub(crate) async fn inspect(
    engine: &Engine,
    backend: &dyn Backend,
    target: &Target,
    values: bool,
) -> Result<Value, String> {
    let (key, sid_hash) = match (&target.id, &target.key) {
        (Some(id), _) => {
            let id = SessionId::parse(id, engine.config().id_format)
                .ok_or("that is not a well-formed session ID for this config")?;
            (
                engine.keyspace().session_key(&id),
                Some(engine.sid_hash(&id)),
            )
        }
        (None, Some(key)) => (key.clone(), None),
        (None, None) => return Err("give --id or --key".into()),
    };
    if !matches!(engine.keyspace().classify(&key), KeyKind::Session { .. }) {
        return Err(format!(
            "{key} is not a session key of prefix {:?}",
            engine.keyspace().prefix()
        ));
    }
    let replies = round(
        backend,
        vec![
            Command::new([b"HGETALL", key.as_bytes()]),
            Command::new([b"PTTL", key.as_bytes()]),
        ],
    )
    .await?;
    let [record, ttl] = replies.as_slice() else {
        return Err("wrong number of replies".into());
    };
    let view = engine
        .inspect_record(record, values)
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(json!({
        "key": key,
        "sid_hash": sid_hash,
        "ttl_ms": match ttl { Reply::Int(n) if *n >= 0 => Some(*n), _ => None },
        "record": view,
    }))
}

/// One SCAN step: the next cursor and the keys of this batch.
async fn scan(
    engine: &Engine,
    backend: &dyn Backend,
    cursor: &[u8],
    count: u32,
) -> Result<(Vec<u8>, Vec<String>), String> {
    let pattern = engine.keyspace().scan_pattern();
    let count = count.to_string();
    let replies = round(
        backend,
        vec![Command::new([
            b"SCAN",
            cursor,
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ])],
    )
    .await?;
    let Some(Reply::Array(parts)) = replies.first() else {
        return Err("SCAN did not answer an array".into());
    };
    let (Some(Reply::Bulk(next)), Some(Reply::Array(keys))) = (parts.first(), parts.get(1)) else {
        return Err("SCAN answered an unexpected shape".into());
    };
    let keys = keys
        .iter()
        .filter_map(|k| match k {
            Reply::Bulk(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .collect();
    Ok((next.clone(), keys))
}

/// Refuse a keyspace scan on Cluster, where one SCAN sees one node.
fn scannable(backend: &dyn Backend) -> Result<(), String> {
    if backend.kind() == "cluster" {
        return Err(
            "scanning needs a single keyspace: on Redis Cluster, run it once per master with \
             that master's redis:// URL"
                .into(),
        );
    }
    Ok(())
}

/// `revoke-user`: every session of `user`, through the index or by scan.
pub(crate) async fn revoke_user(
    engine: &Engine,
    backend: &dyn Backend,
    user: &str,
    by_scan: bool,
    bounds: &ScanBounds,
) -> Result<Value, String> {
    let user = UserId::new(user).map_err(|e| e.to_string())?;
    if !by_scan {
        let outcome = drive(
            engine.destroy_all_for_user(&user, None, clock::now()),
            backend,
        )
        .await
        .map_err(|e| e.to_string())?;
        let Outcome::Destroyed { count, .. } = outcome else {
            return Err(format!("unexpected outcome {}", outcome.name()));
        };
        return Ok(json!({ "user": user.as_str(), "via": "index", "revoked": count }));
    }
    scannable(backend)?;
    let started = Instant::now();
    let (mut cursor, mut scanned, mut revoked, mut rounds) = (b"0".to_vec(), 0u64, 0u64, 0u64);
    loop {
        let (next, keys) = scan(engine, backend, &cursor, bounds.count).await?;
        rounds += 1;
        scanned += keys.len() as u64;
        let members: Vec<(String, String)> = keys
            .into_iter()
            .filter_map(|k| match engine.keyspace().classify(&k) {
                KeyKind::Session { member } => Some((k, member)),
                _ => None,
            })
            .collect();
        if !members.is_empty() {
            let owners = round(
                backend,
                members
                    .iter()
                    .map(|(k, _)| Command::new([b"HGET", k.as_bytes(), b"$user"]))
                    .collect(),
            )
            .await?;
            rounds += 1;
            let mine: Vec<String> = members
                .into_iter()
                .zip(owners)
                .filter(|(_, owner)| matches!(owner, Reply::Bulk(b) if b.as_slice() == user.as_str().as_bytes()))
                .map(|((_, member), _)| member)
                .collect();
            if !mine.is_empty() {
                // The revoke script re-checks the owner: a session that
                // changed hands since the HGET is left alone.
                let outcome = drive(engine.revoke_members(&user, mine), backend)
                    .await
                    .map_err(|e| e.to_string())?;
                rounds += 1;
                if let Outcome::Destroyed { count, .. } = outcome {
                    revoked += count;
                }
            }
        }
        cursor = next;
        if cursor == b"0" || scanned >= bounds.max_keys {
            break;
        }
    }
    Ok(json!({
        "user": user.as_str(),
        "via": "scan",
        "revoked": revoked,
        "scanned_keys": scanned,
        "complete": cursor == b"0",
        "rounds": rounds,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    }))
}

/// `stats`: what the keyspace holds, by SCAN, in bounded batches.
pub(crate) async fn stats(
    engine: &Engine,
    backend: &dyn Backend,
    bounds: &ScanBounds,
) -> Result<Value, String> {
    scannable(backend)?;
    let started = Instant::now();
    let now = clock::now();
    let hour_ms = 3_600_000u64;
    let mut users: BTreeSet<String> = BTreeSet::new();
    let (mut cursor, mut scanned, mut rounds) = (b"0".to_vec(), 0u64, 0u64);
    let (mut live, mut rotated, mut indexes, mut index_entries) = (0u64, 0u64, 0u64, 0u64);
    let (mut bound, mut foreign, mut undecodable, mut expiring_1h) = (0u64, 0u64, 0u64, 0u64);
    let mut oldest_created: Option<u64> = None;
    loop {
        let (next, keys) = scan(engine, backend, &cursor, bounds.count).await?;
        rounds += 1;
        scanned += keys.len() as u64;
        let mut commands = Vec::new();
        let mut kinds = Vec::new();
        for key in &keys {
            match engine.keyspace().classify(key) {
                KeyKind::Session { .. } => {
                    commands.push(Command::new([b"HGETALL", key.as_bytes()]));
                    kinds.push(true);
                }
                KeyKind::UserIndex => {
                    commands.push(Command::new([b"ZCARD", key.as_bytes()]));
                    kinds.push(false);
                }
                KeyKind::Foreign => foreign += 1,
            }
        }
        if !commands.is_empty() {
            let replies = backend
                .execute(&Round(commands))
                .await
                .map_err(|f| format!("redis failed: {f:?}"))?;
            rounds += 1;
            for (is_session, reply) in kinds.into_iter().zip(replies) {
                if !is_session {
                    indexes += 1;
                    if let Reply::Int(n) = reply {
                        index_entries += u64::try_from(n).unwrap_or(0);
                    }
                    continue;
                }
                match engine.inspect_record(&reply, false) {
                    Ok(RecordView::Live {
                        created,
                        expires_at,
                        user,
                        ..
                    }) => {
                        live += 1;
                        oldest_created =
                            Some(oldest_created.map_or(created.0, |o| o.min(created.0)));
                        if expires_at.0 <= now.0.saturating_add(hour_ms) {
                            expiring_1h += 1;
                        }
                        if let Some(u) = user {
                            bound += 1;
                            users.insert(u);
                        }
                    }
                    Ok(RecordView::Rotated { .. }) => rotated += 1,
                    Ok(RecordView::Absent) => {} // expired between SCAN and read
                    Err(_) => undecodable += 1,
                }
            }
        }
        cursor = next;
        if cursor == b"0" || scanned >= bounds.max_keys {
            break;
        }
    }
    Ok(json!({
        "prefix": engine.keyspace().prefix(),
        "complete": cursor == b"0",
        "scanned_keys": scanned,
        "sessions": live,
        "sessions_bound_to_a_user": bound,
        "distinct_users": users.len(),
        "sessions_expiring_within_1h": expiring_1h,
        "oldest_session_created_ms": oldest_created,
        "rotation_markers": rotated,
        "user_indexes": indexes,
        "user_index_entries": index_entries,
        "undecodable_records": undecodable,
        "foreign_keys_under_prefix": foreign,
        "rounds": rounds,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    }))
}
