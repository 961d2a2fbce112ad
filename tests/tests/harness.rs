//! The harness itself: real servers start, stop, and hand back every reply of
//! a round in order, with Redis errors as data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpStream;

use session_logic::step::{Command, Reply, Round};
use session_tests::{RedisCluster, RedisServer, execute_round, execute_round_cluster};

fn round(commands: &[&[&str]]) -> Round {
    Round(
        commands
            .iter()
            .map(|argv| Command(argv.iter().map(|a| a.as_bytes().to_vec()).collect()))
            .collect(),
    )
}

#[test]
fn error_replies_are_data_and_keep_their_place_in_the_round() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let replies = execute_round(
        &mut conn,
        &round(&[
            &["SET", "a", "1"],
            &["GET", "a"],
            &["HGETALL", "a"],
            &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
        ]),
    )
    .unwrap();
    assert_eq!(
        replies,
        vec![
            Reply::Simple("OK".into()),
            Reply::bulk("1"),
            Reply::Error(
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            ),
            Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
        ]
    );
}

#[test]
fn nil_int_and_nested_arrays_keep_their_shape() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let replies = execute_round(
        &mut conn,
        &round(&[
            &["GET", "missing"],
            &["HSET", "h", "f", "v"],
            &["HGETALL", "h"],
            &["EVAL", "return {1, 'x', {2}}", "0"],
            &["NOSUCHCOMMAND"],
        ]),
    )
    .unwrap();
    assert_eq!(replies[0], Reply::Nil);
    assert_eq!(replies[1], Reply::Int(1));
    assert_eq!(
        replies[2],
        Reply::Array(vec![Reply::bulk("f"), Reply::bulk("v")])
    );
    assert_eq!(
        replies[3],
        Reply::Array(vec![
            Reply::Int(1),
            Reply::bulk("x"),
            Reply::Array(vec![Reply::Int(2)])
        ])
    );
    match &replies[4] {
        Reply::Error(text) => assert!(text.starts_with("ERR unknown command"), "{text}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn extra_arguments_reach_the_server() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut conn = server.client();
    let replies =
        execute_round(&mut conn, &round(&[&["CONFIG", "GET", "maxmemory-policy"]])).unwrap();
    assert_eq!(
        replies,
        vec![Reply::Array(vec![
            Reply::bulk("maxmemory-policy"),
            Reply::bulk("noeviction")
        ])]
    );
}

#[test]
fn server_is_gone_after_drop() {
    let server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn cluster_round_spans_slots_on_different_masters() {
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.urls().len(), 3);
    let mut conn = cluster.client();
    // "a", "b" and "c" hash to slots 15495, 3300 and 7365: one per third of
    // the slot space, which is how `redis-cli --cluster create` splits it.
    let slots = execute_round_cluster(
        &mut conn,
        &round(&[
            &["CLUSTER", "KEYSLOT", "a"],
            &["CLUSTER", "KEYSLOT", "b"],
            &["CLUSTER", "KEYSLOT", "c"],
        ]),
    )
    .unwrap();
    assert_eq!(
        slots,
        vec![Reply::Int(15495), Reply::Int(3300), Reply::Int(7365)]
    );
    let replies = execute_round_cluster(
        &mut conn,
        &round(&[
            &["SET", "a", "1"],
            &["SET", "b", "2"],
            &["SET", "c", "3"],
            &["GET", "a"],
            &["GET", "b"],
            &["GET", "c"],
            &["HGETALL", "a"],
            &[
                "EVALSHA",
                "0000000000000000000000000000000000000000",
                "1",
                "b",
            ],
        ]),
    )
    .unwrap();
    assert_eq!(
        replies,
        vec![
            Reply::Simple("OK".into()),
            Reply::Simple("OK".into()),
            Reply::Simple("OK".into()),
            Reply::bulk("1"),
            Reply::bulk("2"),
            Reply::bulk("3"),
            Reply::Error(
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            ),
            Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
        ]
    );
    // Each key really lives on a different node.
    let owners: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|key| {
            cluster
                .urls()
                .iter()
                .position(|url| {
                    let mut node = redis::Client::open(url.as_str())
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    redis::cmd("EXISTS")
                        .arg(*key)
                        .query::<i64>(&mut node)
                        .unwrap_or(0)
                        == 1
                })
                .expect("every key is on some node")
        })
        .collect();
    assert_ne!(owners[0], owners[1]);
    assert_ne!(owners[1], owners[2]);
    assert_ne!(owners[0], owners[2]);
}
