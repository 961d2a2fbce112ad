//! Processes for the browser test: the real `session-host` binary and
//! `chromedriver` (which starts Chromium), each on a free loopback port, each
//! in its own process group that is killed on drop — so a failing or
//! timed-out test leaves no browser behind — with its log printed on failure.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The program named by `$env`, else the first of `names` on `PATH`. A
/// missing browser fails the test (never a silent pass) with the fix.
pub(crate) fn require_program(env: &str, names: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env} is set to {} which is not a file",
            path.display()
        );
        return path;
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&dirs) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found on PATH (or set ${env}): run scripts/steps/install \
         (it installs Debian's chromium and chromium-driver)",
        names.join(" / ")
    );
}

/// A child process in its own process group, killed with that group on drop.
pub(crate) struct Process {
    name: &'static str,
    child: Option<Child>,
    pub(crate) port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Process {
    /// `session-host serve` on a free port, on the given Redis.
    pub(crate) fn session_host(redis_url: &str) -> Self {
        let port = super::free_port();
        Process::spawn(
            "session-host",
            port,
            Command::new(env!("CARGO_BIN_EXE_session-host"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(super::engine_args())
                .args(["--redis", redis_url])
                .env("RUST_LOG", "info"),
        )
    }

    /// `chromedriver` on a free port, serving loopback clients only.
    pub(crate) fn chromedriver(program: &Path) -> Self {
        let port = super::free_port();
        Process::spawn(
            "chromedriver",
            port,
            Command::new(program)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1"),
        )
    }

    fn spawn(name: &'static str, port: u16, command: &mut Command) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("host-native-{name}-"))
            .tempdir()
            .unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: Chromium's processes join chromedriver's group,
            // so one kill of the group on drop takes them all.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let mut process = Process {
            name,
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        process.wait_listening(Duration::from_secs(20));
        process
    }

    fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !super::listening(self.port) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited before listening: {status}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {} within {limit:?}",
                self.name,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote so far (stdout and stderr).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The negative pid names the group this child leads.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
        }
    }
}
