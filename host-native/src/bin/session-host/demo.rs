//! The demo site: server-rendered HTML, no build step, no external assets.
//! It shows the rules at work: data is stored only once there is some, sign-in
//! regenerates the ID (and keeps the data), a password change regenerates and
//! signs out the other devices, devices can be signed out one by one or all
//! at once. Passwords live in this process's memory: any non-empty password
//! signs a user in until one is set with "change password". Forms rely on the
//! SameSite=Lax cookie against cross-site posts. Every value from a user or
//! the store is HTML-escaped; the session ID never appears in a page.

use std::fmt::Write as _;
use std::sync::PoisonError;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use session_logic::UserId;

use crate::App;
use host_native::{Session, SessionError};

/// The longest note the demo keeps (characters).
const NOTE_MAX: usize = 200;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/note", post(save_note))
        .route("/increment", post(increment))
        .route("/password", post(change_password))
        .route("/devices/sign-out", post(sign_out_device))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct NoteForm {
    note: String,
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

#[derive(Deserialize)]
struct DeviceForm {
    handle: String,
}

/// `?done=…` after a redirect: which action just happened. Only fixed texts
/// are shown, so nothing from the URL is reflected into the page.
#[derive(Deserialize)]
struct Notice {
    done: Option<String>,
}

impl Notice {
    fn text(&self) -> Option<&'static str> {
        Some(match self.done.as_deref()? {
            "signed-in" => "Signed in. The session got a new ID; its data came along.",
            "note" => "Note saved in the session.",
            "password" => {
                "Password changed. This session got a new ID and your other devices were signed out."
            }
            "device" => "That device was signed out.",
            "signed-out" => "Signed out. This session was deleted from Redis.",
            "everywhere" => "Signed out everywhere: every session of that user was deleted.",
            _ => return None,
        })
    }
}

async fn index(
    session: Session,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, SessionError> {
    let mut body = String::new();
    if let Some(text) = notice.text() {
        let _ = write!(body, r#"<p class="notice">{}</p>"#, escape(text));
    }
    let user = session.user().await?;
    match &user {
        None => body.push_str(&sign_in_form(None)),
        Some(user) => {
            let since = session
                .auth_at()
                .await?
                .map_or_else(String::new, |t| format!(" since {}", when(t)));
            let _ = write!(
                body,
                r#"<section class="who"><span>Signed in as <b id="user">{user}</b>{since}</span>
<form method="post" action="/logout"><button>Sign out</button></form></section>"#,
                user = escape(user.as_str()),
                since = escape(&since),
            );
        }
    }

    let data = session.data().await?;
    let note: String = session.get("note").await?.unwrap_or_default();
    let counter: u64 = session.get("counter").await?.unwrap_or(0);
    let shown = if data.is_empty() {
        r#"<p id="data" class="empty">Nothing stored yet: no Redis key and no cookie exist until a value is saved.</p>"#.to_owned()
    } else {
        let json = serde_json::to_string_pretty(&data).unwrap_or_default();
        format!(r#"<pre id="data">{}</pre>"#, escape(&json))
    };
    let _ = write!(
        body,
        r#"<section><h2>Session data</h2>
<p class="hint">One Redis hash per session, one JSON value per key. Works before signing in too: signing in keeps the data under a new session ID.</p>
<form method="post" action="/note" class="row">
<label>Note <input name="note" value="{note}" maxlength="{NOTE_MAX}" placeholder="anything you like"></label>
<button>Save note</button></form>
<form method="post" action="/increment" class="row"><span>Counter: <b id="counter">{counter}</b></span> <button>Add one</button></form>
{shown}</section>"#,
        note = escape(&note),
    );

    if user.is_some() {
        body.push_str(
            r#"<section><h2>Change password</h2>
<p class="hint">A privilege change: this session gets a new ID and your other devices are signed out.</p>
<form method="post" action="/password" class="row">
<label>New password <input name="password" type="password" autocomplete="new-password" required></label>
<button>Change password</button></form></section>
<section><h2>Your devices</h2>
<p class="hint">Every live session of this user (a per-user index in Redis). Open this page in another browser to add one. Times in UTC.</p>
<div class="scroll"><table><thead><tr><th>device</th><th>signed in</th><th>last seen</th><th>expires</th><th></th></tr></thead><tbody>"#,
        );
        for d in session.list_devices().await? {
            let action = if d.current {
                r#"<span class="badge">this device</span>"#.to_owned()
            } else {
                format!(
                    r#"<form method="post" action="/devices/sign-out"><input type="hidden" name="handle" value="{}"><button>Sign out</button></form>"#,
                    escape(&d.handle)
                )
            };
            let _ = write!(
                body,
                r#"<tr{class}><td><code>{tag}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>"#,
                d.auth_at.map_or_else(|| "-".into(), |t| table_time(t.0)),
                table_time(d.last_seen.0),
                table_time(d.expires_at.0),
                class = if d.current { r#" class="current""# } else { "" },
                // A short label to tell rows apart: the handle is a hash of
                // the Redis key, never the session ID.
                tag = escape(d.handle.get(..8).unwrap_or(&d.handle)),
            );
        }
        body.push_str(
            r#"</tbody></table></div>
<form method="post" action="/logout-everywhere" class="row"><button class="danger">Sign out everywhere</button>
<span class="hint">Deletes every session of this user, this one included.</span></form></section>"#,
        );
    }
    Ok(Html(page(&body)))
}

/// The sign-in card, with an error line after a refused attempt.
fn sign_in_form(error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(r#"<p class="error">{}</p>"#, escape(e))
    });
    format!(
        r#"<section><h2>Sign in</h2>{error}
<p class="hint">Any user name works. Any non-empty password signs in until one is set with "Change password".</p>
<form method="post" action="/login" class="row">
<label>User <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button>Sign in</button></form></section>"#
    )
}

async fn login(
    State(app): State<App>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Result<Response, SessionError> {
    let name = form.username.trim();
    let accepted = !form.password.is_empty()
        && app
            .passwords
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_none_or(|stored| *stored == form.password);
    let user = match UserId::new(name) {
        Ok(user) if accepted => user,
        _ => {
            return Ok(Html(page(&sign_in_form(Some("Wrong user or password.")))).into_response());
        }
    };
    session.bind_user(user).await?;
    session.regenerate().await?;
    // The old ID's hash: the new ID is minted when the response is written.
    let sid_hash = session.id_hash().await?;
    tracing::info!(
        sid_hash = sid_hash.as_deref().unwrap_or("-"),
        "signed in (ID regenerated at response)"
    );
    Ok(Redirect::to("/?done=signed-in").into_response())
}

async fn save_note(session: Session, Form(form): Form<NoteForm>) -> Result<Redirect, SessionError> {
    let note: String = form.note.trim().chars().take(NOTE_MAX).collect();
    if note.is_empty() {
        session.remove("note").await?;
    } else {
        session.insert("note", note).await?;
    }
    Ok(Redirect::to("/?done=note"))
}

async fn increment(session: Session) -> Result<Redirect, SessionError> {
    let n: u64 = session.get("counter").await?.unwrap_or(0);
    session.insert("counter", n.saturating_add(1)).await?;
    Ok(Redirect::to("/"))
}

async fn change_password(
    State(app): State<App>,
    session: Session,
    Form(form): Form<PasswordForm>,
) -> Result<Redirect, SessionError> {
    let Some(user) = session.user().await? else {
        return Ok(Redirect::to("/"));
    };
    if form.password.is_empty() {
        return Ok(Redirect::to("/"));
    }
    app.passwords
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(user.as_str().to_owned(), form.password);
    let others = session.logout_everywhere(true).await?;
    session.regenerate().await?;
    tracing::info!(signed_out = others, "password changed (ID regenerated)");
    Ok(Redirect::to("/?done=password"))
}

async fn sign_out_device(
    session: Session,
    Form(form): Form<DeviceForm>,
) -> Result<Redirect, SessionError> {
    let done = session.sign_out_device(&form.handle).await?;
    Ok(Redirect::to(if done { "/?done=device" } else { "/" }))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    session.logout_everywhere(false).await?;
    Ok(Redirect::to("/?done=everywhere"))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.destroy().await?;
    Ok(Redirect::to("/?done=signed-out"))
}

fn page(body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>session-host demo</title>
<style>
body{{font:16px/1.45 system-ui,sans-serif;color:#1d2330;background:#f3f5f8;max-width:50rem;margin:0 auto;padding:1.5rem 1rem}}
h1{{font-size:1.5rem;margin:0}} h2{{font-size:1.1rem;margin:0 0 .4rem}}
header p{{margin:.2rem 0 1rem;color:#555}}
section{{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:1rem 1.2rem;margin:0 0 1rem}}
.hint{{color:#5b6472;font-size:.9rem;margin:.2rem 0 .6rem}}
form.row{{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:.5rem 0}}
label{{display:flex;gap:.4rem;align-items:center}}
input{{font:inherit;padding:.3rem .5rem;border:1px solid #b9c1cd;border-radius:5px}}
button{{font:inherit;padding:.3rem .8rem;border:1px solid #2f5fd0;border-radius:5px;background:#3b6fe0;color:#fff;cursor:pointer}}
button.danger{{background:#c23b3b;border-color:#a32f2f}}
td button{{background:#fff;color:#a32f2f;border-color:#c9a0a0;padding:.1rem .6rem}}
.who{{display:flex;justify-content:space-between;align-items:center}}
.who form{{margin:0}}
pre{{background:#f4f6f9;border:1px solid #e3e7ee;border-radius:5px;padding:.6rem;margin:.6rem 0 0;white-space:pre-wrap;overflow-wrap:anywhere}}
table{{border-collapse:collapse;width:100%;font-size:.9rem;margin-bottom:.6rem}}
th,td{{padding:.35rem .5rem;text-align:left;border-bottom:1px solid #e7eaf0;white-space:nowrap}} td form{{margin:0}}
.scroll{{overflow-x:auto}}
tr.current{{background:#eef4ff}}
.badge{{background:#dce8ff;color:#234a9c;border-radius:999px;padding:.1rem .6rem;font-size:.8rem;white-space:nowrap}}
.notice{{background:#e7f6ea;border:1px solid #b8e0c0;border-radius:6px;padding:.5rem .8rem}}
.empty{{color:#5b6472;font-style:italic;margin:.6rem 0 0}}
.error{{background:#fdecec;border:1px solid #f0c2c2;border-radius:6px;padding:.5rem .8rem;color:#8f1d1d}}
</style></head>
<body><header><h1>session-host demo</h1>
<p>Web sessions in Redis, one set of rules. Open it in a second browser to see a second device.</p></header>
{body}</body></html>"#
    )
}

/// [`when`] without the zone, for the devices table (its hint says UTC).
fn table_time(ms: u64) -> String {
    let mut text = when(ms);
    text.truncate(text.len().saturating_sub(" UTC".len()));
    text
}

/// Seconds since the epoch, UTC, as `YYYY-MM-DD HH:MM:SS`.
fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for any u64 day count we produce.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn when_renders_utc() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(table_time(1_700_000_000_000), "2023-11-14 22:13:20");
    }
}
