//! The demo site in a real browser: the `session-host` binary on a real
//! `redis-server`, driven in headless Chromium through chromedriver
//! (WebDriver), two independent browser sessions standing for two devices of
//! one user. It holds the rules a browser can see: no cookie before there is
//! data, sign-in and password change regenerate the ID, the cookie is
//! HttpOnly + Secure + SameSite=Lax and accepted on http://127.0.0.1 and
//! http://localhost, per-device sign-out, password change and logout
//! everywhere end the other device's session, no page or log shows an ID,
//! and no session of the user is left in Redis. A PNG screenshot of every step
//! goes to `target/screenshots/browser/`.
//!
//! Needs `chromium` and `chromedriver` (`scripts/steps/install`); without
//! them the test fails and says so.

// Test support, not product code: a failed WebDriver command or an
// unexpected page should abort the test loudly, so the workspace's no-panic
// lints are relaxed in this file's helpers too (clippy.toml only relaxes them
// inside #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::RedisServer;
use common::browser::{Process, require_program};
use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// The whole journey, browsers included, must finish within this.
const WHOLE_TEST: Duration = Duration::from_secs(60);
/// Any one WebDriver command or wait.
const STEP: Duration = Duration::from_secs(15);
/// The demo's cookie name (the default config).
const COOKIE: &str = "sid";
/// The demo user.
const USER: &str = "alice";
/// The key prefix (the default config).
const PREFIX: &str = "sess:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_journey_in_headless_chromium() {
    let started = Instant::now();
    let chromium = require_program("CHROMIUM", &["chromium", "chromium-browser"]);
    let chromedriver = require_program("CHROMEDRIVER", &["chromedriver"]);
    let redis = RedisServer::start();
    let host = Process::session_host(&redis.url());
    let driver = Process::chromedriver(&chromedriver);
    let shots = Screenshots::new();
    eprintln!("screenshots: {}", shots.dir.display());

    let mut journey = Journey {
        shots,
        ids: BTreeSet::new(),
        pages: Vec::new(),
    };
    let run = journey.run(&redis, &host, &driver, &chromium);
    if tokio::time::timeout(WHOLE_TEST, run).await.is_err() {
        panic!("the browser journey took longer than {WHOLE_TEST:?}");
    }

    // No page the browsers rendered, and no line session-host logged,
    // contains any session ID the browsers held.
    assert!(journey.ids.len() >= 4, "IDs seen: {}", journey.ids.len());
    for (step, html) in &journey.pages {
        for id in &journey.ids {
            assert!(
                !html.contains(id.as_str()),
                "page {step} shows a session ID"
            );
        }
    }
    let log = host.log();
    assert!(log.contains("signed in"), "session-host log:\n{log}");
    for id in &journey.ids {
        assert!(
            !log.contains(id.as_str()),
            "session-host logged a session ID"
        );
    }

    println!(
        "browser journey passed in {:.1?}; {} screenshots in {}:",
        started.elapsed(),
        journey.shots.taken.len(),
        journey.shots.dir.display()
    );
    for shot in &journey.shots.taken {
        println!("  {}", shot.display());
    }
}

struct Journey {
    shots: Screenshots,
    /// Every session ID a browser held.
    ids: BTreeSet<String>,
    /// (step, page source) of every screenshot.
    pages: Vec<(String, String)>,
}

/// One browser: its own WebDriver session, so its own Chromium profile and
/// cookie jar.
struct Device {
    name: &'static str,
    client: Client,
    /// The site's origin as this device reaches it.
    origin: String,
}

impl Journey {
    async fn run(
        &mut self,
        redis: &RedisServer,
        host: &Process,
        driver: &Process,
        chromium: &Path,
    ) {
        let webdriver = format!("http://127.0.0.1:{}", driver.port);
        // Device 1 reaches the site as 127.0.0.1, device 2 as localhost: both
        // are secure contexts in Chromium, so both must keep the Secure cookie.
        let d1 = Device::open(
            "d1",
            &webdriver,
            chromium,
            format!("http://127.0.0.1:{}", host.port),
        )
        .await;
        let d2 = Device::open(
            "d2",
            &webdriver,
            chromium,
            format!("http://localhost:{}", host.port),
        )
        .await;

        // A first visit: signed out, and lazy creation sets no cookie.
        d1.goto("/").await;
        d1.expect_signed_out().await;
        assert_eq!(
            d1.session_cookie().await.map(|c| c.value().to_owned()),
            None
        );
        assert!(d1.text("#data").await.contains("Nothing stored yet"));
        self.shot(&d1, "first-visit-no-cookie").await;

        // Data before signing in: the first write creates the session.
        d1.fill("note", "milk & <b>eggs</b>").await;
        d1.click("form[action='/note'] button").await;
        let anonymous = self.cookie(&d1).await;
        assert!(d1.text("#data").await.contains("milk & <b>eggs</b>"));
        assert!(
            d1.find_all("#data b").await.is_empty(),
            "the note's markup was not escaped"
        );
        self.shot(&d1, "note-before-sign-in").await;

        // Sign-in regenerates the ID and keeps the data.
        d1.sign_in("pw-one").await;
        let signed_in = self.cookie(&d1).await;
        assert_ne!(
            anonymous, signed_in,
            "sign-in must give the session a new ID"
        );
        assert!(d1.text("#data").await.contains("milk & <b>eggs</b>"));
        self.shot(&d1, "signed-in-new-id").await;
        // The pre-login ID yields no data any more (seen by a plain client).
        let old = common::request(
            host_addr(host),
            "GET",
            "/",
            Some(&format!("{COOKIE}={anonymous}")),
        )
        .await;
        assert_eq!(old.status, 200);
        assert!(old.body.contains(r#"action="/login""#) && !old.body.contains("eggs"));
        assert_eq!(old.header("set-cookie"), None);

        // More session data, rendered.
        d1.click("form[action='/increment'] button").await;
        d1.click("form[action='/increment'] button").await;
        assert_eq!(d1.text("#counter").await, "2");
        assert!(d1.text("#data").await.contains(r#""counter": 2"#));
        self.shot(&d1, "session-data").await;

        // A second device signs in as the same user.
        d2.goto("/").await;
        d2.expect_signed_out().await;
        d2.sign_in("pw-one").await;
        let d2_first = self.cookie(&d2).await;
        assert!(
            !d2.text("#data").await.contains("eggs"),
            "device 2 has its own session"
        );
        self.shot(&d2, "second-device-signed-in").await;

        // Device 1 lists both, itself marked.
        d1.goto("/").await;
        self.expect_devices(&d1, 2).await;
        self.shot(&d1, "two-devices").await;

        // Per-device sign-out of device 2, from device 1.
        d1.click("tr:not(.current) form[action='/devices/sign-out'] button")
            .await;
        assert!(d1.text(".notice").await.contains("device was signed out"));
        self.expect_devices(&d1, 1).await;
        self.shot(&d1, "device-2-signed-out").await;
        d2.refresh().await;
        d2.expect_signed_out().await;
        self.shot(&d2, "signed-out-by-device-1").await;

        // Device 2 comes back; device 1 changes the password: device 1 gets a
        // new ID and stays signed in, device 2 is signed out.
        d2.sign_in("pw-one").await;
        let d2_second = self.cookie(&d2).await;
        assert_ne!(d2_first, d2_second);
        self.shot(&d2, "signed-in-again").await;
        d1.goto("/").await;
        self.expect_devices(&d1, 2).await;
        d1.fill("password", "pw-two").await;
        d1.click("form[action='/password'] button").await;
        let after_password = self.cookie(&d1).await;
        assert_ne!(
            signed_in, after_password,
            "a password change must regenerate the ID"
        );
        assert_eq!(d1.text("#user").await, USER);
        self.expect_devices(&d1, 1).await;
        self.shot(&d1, "password-changed").await;
        d2.refresh().await;
        d2.expect_signed_out().await;
        self.shot(&d2, "signed-out-by-password-change").await;
        d2.sign_in_with("pw-one").await;
        assert!(d2.text(".error").await.contains("Wrong user or password"));
        d2.expect_signed_out().await;
        self.shot(&d2, "old-password-refused").await;
        d2.goto("/").await;
        d2.sign_in("pw-two").await;
        self.cookie(&d2).await;
        self.shot(&d2, "new-password-accepted").await;

        // Logout everywhere from device 1: both signed out, cookie removed,
        // no session of the user left in Redis.
        d1.goto("/").await;
        self.expect_devices(&d1, 2).await;
        d1.click("form[action='/logout-everywhere'] button").await;
        d1.expect_signed_out().await;
        assert!(d1.text(".notice").await.contains("Signed out everywhere"));
        assert_eq!(
            d1.session_cookie().await.map(|c| c.value().to_owned()),
            None,
            "the removal cookie was not applied"
        );
        self.shot(&d1, "signed-out-everywhere").await;
        d2.refresh().await;
        d2.expect_signed_out().await;
        self.shot(&d2, "signed-out-everywhere").await;
        assert_no_session_of_user(redis).await;

        d1.close().await;
        d2.close().await;
    }

    /// The device's session cookie, which must exist and carry the secure
    /// attributes; remembered so that no page may show it.
    async fn cookie(&mut self, device: &Device) -> String {
        let cookie = device
            .session_cookie()
            .await
            .unwrap_or_else(|| panic!("{}: no {COOKIE} cookie", device.name));
        assert_eq!(
            cookie.http_only(),
            Some(true),
            "{}: cookie not HttpOnly",
            device.name
        );
        assert_eq!(
            cookie.secure(),
            Some(true),
            "{}: cookie not Secure",
            device.name
        );
        assert_eq!(
            cookie.same_site().map(|s| s.to_string()).as_deref(),
            Some("Lax"),
            "{}: cookie not SameSite=Lax",
            device.name
        );
        assert_eq!(cookie.path(), Some("/"));
        // HttpOnly in effect: page scripts cannot read it.
        let visible = within(
            "document.cookie",
            device.client.execute("return document.cookie", vec![]),
        )
        .await;
        assert!(
            !visible.as_str().unwrap_or_default().contains(COOKIE),
            "{}: document.cookie shows the session cookie",
            device.name
        );
        let id = cookie.value().to_owned();
        assert_eq!(
            id.len(),
            43,
            "{}: the ID is not 32 bytes of base64url",
            device.name
        );
        self.ids.insert(id.clone());
        id
    }

    /// The devices table lists `n` sessions, exactly one marked current.
    async fn expect_devices(&self, device: &Device, n: usize) {
        let rows = device.find_all("table tbody tr").await;
        assert_eq!(rows.len(), n, "{}: devices listed", device.name);
        let current = device.find_all("table tbody tr.current").await;
        assert_eq!(current.len(), 1, "{}: rows marked current", device.name);
        let marked = within("current row", current.first().unwrap().text()).await;
        assert!(
            marked.contains("this device"),
            "{}: current row reads {marked:?}",
            device.name
        );
    }

    /// A screenshot of the device's page, and its source for the ID check.
    async fn shot(&mut self, device: &Device, step: &str) {
        let png = within("screenshot", device.client.screenshot()).await;
        let name = format!(
            "{:02}-{}-{step}.png",
            self.shots.taken.len() + 1,
            device.name
        );
        let path = self.shots.dir.join(name);
        std::fs::write(&path, png).unwrap();
        self.shots.taken.push(path);
        let html = within("page source", device.client.source()).await;
        self.pages.push((format!("{}/{step}", device.name), html));
    }
}

impl Device {
    async fn open(name: &'static str, webdriver: &str, chromium: &Path, origin: String) -> Self {
        let mut options = serde_json::Map::new();
        options.insert("binary".into(), chromium.to_string_lossy().into());
        options.insert(
            "args".into(),
            serde_json::json!([
                "--headless=new",
                // Root in containers cannot use Chromium's sandbox; this
                // browser only ever opens the test's own loopback site.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1000,1300",
            ]),
        );
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), options.into());
        let client = within(
            "a Chromium session from chromedriver",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(webdriver),
        )
        .await;
        Device {
            name,
            client,
            origin,
        }
    }

    async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.origin);
        within(&url, self.client.goto(&url)).await;
    }

    async fn refresh(&self) {
        within("reload", self.client.refresh()).await;
    }

    async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        within(css, self.client.find_all(Locator::Css(css))).await
    }

    async fn text(&self, css: &str) -> String {
        let element = within(
            css,
            self.client
                .wait()
                .at_most(STEP)
                .for_element(Locator::Css(css)),
        )
        .await;
        within(css, element.text()).await
    }

    /// Type into the input named `name` (replacing its value).
    async fn fill(&self, name: &str, value: &str) {
        let css = format!("input[name='{name}']");
        let input = within(&css, self.client.find(Locator::Css(&css))).await;
        within(&css, input.clear()).await;
        within(&css, input.send_keys(value)).await;
    }

    /// Click and wait for the page the click leads to: the old page's root
    /// element goes stale, then the new page has its heading.
    async fn click(&self, css: &str) {
        let old_page = within("html", self.client.find(Locator::Css("html"))).await;
        let button = within(css, self.client.find(Locator::Css(css))).await;
        within(css, button.click()).await;
        let deadline = Instant::now() + STEP;
        loop {
            match old_page.tag_name().await {
                Err(e) if e.is_stale_element_reference() || e.is_no_such_element() => break,
                // Chromium sometimes reports the old page's node as "does not
                // belong to the document" (an unknown error) instead of stale:
                // the same fact, the page was replaced.
                Err(e) if format!("{e:?}").contains("does not belong to the document") => break,
                Err(e) => panic!("{}: after clicking {css}: {e:?}", self.name),
                Ok(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{}: clicking {css} led nowhere within {STEP:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        within(
            "the next page",
            self.client
                .wait()
                .at_most(STEP)
                .for_element(Locator::Css("h1")),
        )
        .await;
    }

    /// Fill and submit the sign-in form, as USER.
    async fn sign_in_with(&self, password: &str) {
        self.fill("username", USER).await;
        self.fill("password", password).await;
        self.click("form[action='/login'] button").await;
    }

    /// Sign in as USER and check the page says so.
    async fn sign_in(&self, password: &str) {
        self.sign_in_with(password).await;
        assert_eq!(
            self.text("#user").await,
            USER,
            "{}: not signed in",
            self.name
        );
        assert!(self.text(".notice").await.contains("Signed in"));
    }

    async fn expect_signed_out(&self) {
        assert_eq!(
            self.find_all("form[action='/login']").await.len(),
            1,
            "{}: no sign-in form",
            self.name
        );
        assert!(
            self.find_all("#user").await.is_empty(),
            "{}: still signed in",
            self.name
        );
    }

    async fn session_cookie(&self) -> Option<Cookie<'static>> {
        within("cookies", self.client.get_all_cookies())
            .await
            .into_iter()
            .find(|c| c.name() == COOKIE)
    }

    async fn close(self) {
        within("closing the browser", self.client.close()).await;
    }
}

/// No session record bound to USER is left in Redis. The user's index may
/// remain (by design its entries leave only by deadline pruning, so a login
/// racing the logout cannot lose its entry), but every entry in it must name
/// a deleted session or a rotated marker (an old ID in its grace seconds:
/// the old record marked in place, which no reader serves and which expires
/// within the grace).
async fn assert_no_session_of_user(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sessions = 0;
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        match kind.as_str() {
            "hash" => {
                let marker: bool = redis::cmd("HEXISTS")
                    .arg(key)
                    .arg("$rotated")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if marker {
                    let ttl: i64 = redis::cmd("PTTL")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert!(
                        (1..=5_000).contains(&ttl),
                        "{key}: a marker with PTTL {ttl}"
                    );
                    continue;
                }
                sessions += 1;
                let user: Option<String> = redis::cmd("HGET")
                    .arg(key)
                    .arg("$user")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_ne!(
                    user.as_deref(),
                    Some(USER),
                    "{key} still holds a session of {USER}"
                );
            }
            "zset" => {
                assert_eq!(key, &format!("{PREFIX}user:{USER}"), "an unexpected index");
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                for member in members {
                    let marker: bool = redis::cmd("HEXISTS")
                        .arg(format!("{PREFIX}{member}"))
                        .arg("$rotated")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let live: bool = redis::cmd("EXISTS")
                        .arg(format!("{PREFIX}{member}"))
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert!(!live || marker, "{key} names a live session");
                }
            }
            other => panic!("unexpected {other} key {key}"),
        }
    }
    // Rotated markers (old IDs in their grace seconds) are not counted.
    eprintln!(
        "redis after logout everywhere: {} keys ({sessions} hashes), no session of {USER}",
        keys.len()
    );
}

/// Screenshots go to `<target>/screenshots/browser/`, emptied first.
struct Screenshots {
    dir: PathBuf,
    taken: Vec<PathBuf>,
}

impl Screenshots {
    fn new() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace.join(dir),
            None => workspace.join("target"),
        };
        let dir = target.join("screenshots").join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "png") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let dir = dir.canonicalize().unwrap();
        Screenshots {
            dir,
            taken: Vec::new(),
        }
    }
}

fn host_addr(host: &Process) -> std::net::SocketAddr {
    (std::net::Ipv4Addr::LOCALHOST, host.port).into()
}

/// Await one browser command, bounded by STEP; its error fails the test.
async fn within<T, E: Debug>(what: &str, command: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP, command).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}
