//! Build-shape rules: the core stays pure because its dependency graph cannot
//! reach a crate that does I/O, spawns tasks or draws entropy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

/// Crates whose presence in the core's normal dependency tree would mean it
/// can reach a socket, a runtime, the OS RNG, the C library or a JS host.
/// The targets the tree is resolved for: the native CI target and the wasm
/// build. Pinned rather than the host's, so the verdict is the same on every
/// machine: on aarch64 hosts `sha2 -> cpufeatures` legitimately pulls `libc`
/// (CPU feature detection via `getauxval`/`sysctl`), which is not I/O.
const TARGETS: &[&str] = &["x86_64-unknown-linux-gnu", "wasm32-unknown-unknown"];

const FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "redis",
    "getrandom",
    "rand",
    "wasm-bindgen",
    "js-sys",
    "web-sys",
    "socket2",
    "libc",
    "async-std",
    "futures",
];

#[test]
fn core_depends_on_no_io_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "session-logic",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
            "--offline",
        ])
        .args(TARGETS.iter().flat_map(|t| ["--target", t]))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} tree: {e}"));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // With `--prefix none` every line is "<name> v<version>[ (<source>)][ (*)]",
    // one tree per target separated by a blank line.
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        crates.first() == Some(&"session-logic"),
        "unexpected cargo tree output:\n{tree}"
    );
    let found: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|name| crates.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "session-logic depends on I/O crates {found:?}; its dependency tree:\n{tree}"
    );
}
