//! The demo site: server-rendered HTML, no build step, no external assets.
//! It shows the rules at work: sign-in regenerates the ID, a password change
//! regenerates and signs out the other devices, devices can be signed out
//! one by one or all at once. Passwords live in this process's memory: any
//! non-empty password signs a user in until one is set with "change
//! password". Forms rely on the SameSite=Lax cookie against cross-site posts.

use std::fmt::Write as _;
use std::sync::PoisonError;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use session_logic::UserId;

use crate::App;
use host_native::{Session, SessionError};

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
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
struct PasswordForm {
    password: String,
}

#[derive(Deserialize)]
struct DeviceForm {
    handle: String,
}

async fn index(session: Session) -> Result<Html<String>, SessionError> {
    let mut body = String::new();
    match session.user().await? {
        None => body.push_str(
            r#"<h2>Sign in</h2>
<form method="post" action="/login">
<label>User <input name="username" required></label>
<label>Password <input name="password" type="password" required></label>
<button>Sign in</button></form>"#,
        ),
        Some(user) => {
            let counter: u64 = session.get("counter").await?.unwrap_or(0);
            let data = serde_json::to_string_pretty(&session.data().await?).unwrap_or_default();
            let _ = write!(
                body,
                r#"<p>Signed in as <b>{user}</b>. <form class="inline" method="post" action="/logout"><button>Sign out</button></form></p>
<h2>Counter: {counter}</h2>
<form method="post" action="/increment"><button>Increment</button></form>
<h2>Session data</h2><pre>{data}</pre>
<h2>Change password</h2>
<p>Regenerates this session's ID and signs out your other devices.</p>
<form method="post" action="/password"><input name="password" type="password" required> <button>Change password</button></form>
<h2>Devices</h2><table><tr><th>signed in</th><th>last seen</th><th>expires</th><th></th></tr>"#,
                user = escape(user.as_str()),
                data = escape(&data),
            );
            for d in session.list_devices().await? {
                let action = if d.current {
                    "this device".to_owned()
                } else {
                    format!(
                        r#"<form method="post" action="/devices/sign-out"><input type="hidden" name="handle" value="{}"><button>Sign out</button></form>"#,
                        escape(&d.handle)
                    )
                };
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                    d.auth_at.map_or_else(|| "-".into(), |t| when(t.0)),
                    when(d.last_seen.0),
                    when(d.expires_at.0),
                );
            }
            body.push_str(
                r#"</table>
<form method="post" action="/logout-everywhere"><button>Sign out everywhere</button></form>"#,
            );
        }
    }
    Ok(Html(page(&body)))
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
            return Ok(Html(page(
                r#"<p class="error">Wrong user or password.</p><p><a href="/">Back</a></p>"#,
            ))
            .into_response());
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
    Ok(Redirect::to("/").into_response())
}

async fn increment(session: Session) -> Result<Redirect, SessionError> {
    if session.user().await?.is_some() {
        let n: u64 = session.get("counter").await?.unwrap_or(0);
        session.insert("counter", n.saturating_add(1)).await?;
    }
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
    if !form.password.is_empty() {
        app.passwords
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.as_str().to_owned(), form.password);
        let others = session.logout_everywhere(true).await?;
        session.regenerate().await?;
        tracing::info!(signed_out = others, "password changed (ID regenerated)");
    }
    Ok(Redirect::to("/"))
}

async fn sign_out_device(
    session: Session,
    Form(form): Form<DeviceForm>,
) -> Result<Redirect, SessionError> {
    session.sign_out_device(&form.handle).await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    session.logout_everywhere(false).await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

fn page(body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>session-host demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}
pre{{background:#f4f4f4;padding:.5rem}}td,th{{padding:.2rem .6rem;text-align:left}}
form.inline{{display:inline}}.error{{color:#b00}}</style></head>
<body><h1>session-host demo</h1>{body}</body></html>"#
    )
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
    }
}
