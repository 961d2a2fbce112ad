//! `Engine` and `Op` for JS: one constructor per core operation, and the
//! running operation driven once per round with `next(replies)`.
//!
//! ```text
//!   engine.load(…) ─► op ─► op.next() ─► {round} ─► host pipelines it ─┐
//!                             ▲                                        │
//!                             └──── op.next(replies) / op.fail(…) ◄────┘
//!                     op.next(…) ─► {outcome} | {error}
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Object;
use session_logic::conformance::STEP_ROUND;
use session_logic::error::ConfigError;
use session_logic::outcome::{Absent, Device};
use session_logic::step::{BackendFailure, Step};
use session_logic::{Config, Outcome, TouchHints, UnixMillis, UserId, wire};
use wasm_bindgen::prelude::*;

use crate::convert::{
    entropy_from, js_error, js_to_json, json_to_js, now_from, replies_from_js, round_to_js, set,
    usage,
};
use crate::session::Session;

type JsResult<T> = Result<T, JsValue>;

fn err(e: impl Into<session_logic::Error>) -> JsValue {
    js_error(&e.into())
}

/// The rules of one deployment, built once from a validated config.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Engine {
    inner: session_logic::Engine,
    /// Touch hints (see `session_logic::Engine::load_hinted`): the `$touch`
    /// each key had at this engine's last load of it. Host state, not a
    /// rule: a missing hint only means the load script runs.
    hints: Hints,
}

/// The core's bounded hint map, shared with the load ops that fill it
/// (wasm is single-threaded, hence `Rc`).
type Hints = Rc<RefCell<TouchHints>>;

#[wasm_bindgen]
impl Engine {
    /// Build from a config object or JSON text. An invalid config throws a
    /// `SessionError` with code `config` naming the field and the fix.
    #[wasm_bindgen(constructor)]
    pub fn new(config: &JsValue) -> JsResult<Engine> {
        let value = match config.as_string() {
            Some(text) => serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| config_error(e.to_string()))?,
            None if config.is_undefined() || config.is_null() => serde_json::json!({}),
            None => js_to_json(config, "config").map_err(err)?,
        };
        // Through a JSON value, as the conformance runner parses it, so a
        // refusal reads the same on every host.
        let config: Config =
            serde_json::from_value(value).map_err(|e| config_error(e.to_string()))?;
        session_logic::Engine::new(config)
            .map(|inner| Engine {
                inner,
                hints: Hints::default(),
            })
            .map_err(err)
    }

    /// The validated config with every default filled in.
    #[wasm_bindgen(getter)]
    pub fn config(&self) -> JsValue {
        serde_json::to_value(self.inner.config())
            .map(|v| json_to_js(&v))
            .unwrap_or(JsValue::NULL)
    }

    /// The session cookie's name.
    #[wasm_bindgen(getter, js_name = cookieName)]
    pub fn cookie_name(&self) -> String {
        self.inner.config().cookie.name.clone()
    }

    /// A keyed hash of the session's ID: the only form of it that may be
    /// logged. `null` for a session not stored yet.
    #[wasm_bindgen(js_name = sidHash)]
    pub fn sid_hash(&self, session: &Session) -> Option<String> {
        session.inner.id().map(|id| self.inner.sid_hash(id))
    }

    /// The Set-Cookie that deletes the session cookie, for a session
    /// already deleted by another operation (logout everywhere).
    #[wasm_bindgen(js_name = removalCookie)]
    pub fn removal_cookie(&self) -> String {
        self.inner.removal_cookie()
    }

    /// When a stored session ends unless used again (unix ms): the idle
    /// deadline, capped by the absolute one. `null` before the first save.
    #[wasm_bindgen(js_name = expiresAt)]
    pub fn expires_at(&self, session: &Session) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        session
            .inner
            .meta()
            .map(|m| self.inner.expires_at(m).0 as f64)
    }

    /// A new, empty session (stored lazily by its first save with data).
    #[wasm_bindgen(js_name = newSession)]
    pub fn new_session(&self) -> Session {
        Session::from_core(self.inner.new_session())
    }

    /// Load the session named by a `Cookie` header (`client`: the binding
    /// fingerprint, e.g. the User-Agent). One round, or none without an ID.
    pub fn load(
        &self,
        cookie_header: Option<String>,
        client: Option<String>,
        now: f64,
    ) -> JsResult<Op> {
        let now = now_from(now).map_err(err)?;
        let (op, key) = self.inner.load_with_hints(
            cookie_header.as_deref(),
            client.as_deref(),
            now,
            &self.hints.borrow(),
        );
        Ok(Op {
            inner: op,
            observe: key.map_or(Observe::Nothing, |k| {
                Observe::Load(k, Rc::clone(&self.hints))
            }),
            sent: false,
            session: None,
        })
    }

    /// `load` with an explicit touch hint (unix ms; the conformance vectors
    /// use it), bypassing this engine's own hints.
    #[wasm_bindgen(js_name = loadHinted)]
    pub fn load_hinted(
        &self,
        cookie_header: Option<String>,
        client: Option<String>,
        now: f64,
        touch_hint: Option<f64>,
    ) -> JsResult<Op> {
        let now = now_from(now).map_err(err)?;
        let hint = touch_hint.map(now_from).transpose().map_err(err)?;
        Ok(Op::new(self.inner.load_hinted(
            cookie_header.as_deref(),
            client.as_deref(),
            now,
            hint,
        )))
    }

    /// Load by ID text (APIs that carry the ID outside a cookie).
    #[wasm_bindgen(js_name = loadId)]
    pub fn load_id(&self, id: &str, client: Option<String>, now: f64) -> JsResult<Op> {
        let now = now_from(now).map_err(err)?;
        Ok(Op::new(self.inner.load_id(id, client.as_deref(), now)))
    }

    /// Write what changed (nothing, a lazy create, or a delta). One round.
    pub fn save(&self, session: &Session, entropy: &[u8], now: f64) -> JsResult<Op> {
        let (entropy, now) = (
            entropy_from(entropy).map_err(err)?,
            now_from(now).map_err(err)?,
        );
        Ok(self.writing(self.inner.save(session.inner.clone(), entropy, now)))
    }

    /// New ID, same data; the old ID becomes a short-lived rotated marker.
    pub fn regenerate(&self, session: &Session, entropy: &[u8], now: f64) -> JsResult<Op> {
        let (entropy, now) = (
            entropy_from(entropy).map_err(err)?,
            now_from(now).map_err(err)?,
        );
        Ok(self.writing(self.inner.regenerate(session.inner.clone(), entropy, now)))
    }

    /// `op`, a save or regenerate, remembering in the hints a session it
    /// writes under a new ID.
    fn writing(&self, op: session_logic::Op) -> Op {
        let mut op = Op::new(op);
        op.observe = Observe::Write(self.inner.clone(), Rc::clone(&self.hints));
        op
    }

    /// Delete the session; the outcome carries a removal cookie.
    pub fn destroy(&self, session: &Session, now: f64) -> JsResult<Op> {
        let now = now_from(now).map_err(err)?;
        Ok(Op::new(self.inner.destroy(session.inner.clone(), now)))
    }

    /// Slide the idle deadline now.
    pub fn touch(&self, session: &Session, now: f64) -> JsResult<Op> {
        let now = now_from(now).map_err(err)?;
        Ok(Op::new(self.inner.touch(session.inner.clone(), now)))
    }

    /// Logout everywhere: delete every session of `user`. Two rounds for any
    /// number of sessions.
    #[wasm_bindgen(js_name = destroyAllForUser)]
    pub fn destroy_all_for_user(&self, user: &str, now: f64) -> JsResult<Op> {
        let (user, now) = (user_id(user)?, now_from(now).map_err(err)?);
        Ok(Op::new(self.inner.destroy_all_for_user(&user, None, now)))
    }

    /// Logout everywhere except `keep` (e.g. the current session after a
    /// password change). (wasm-bindgen cannot take an optional borrowed
    /// class, hence two methods rather than an optional argument.)
    #[wasm_bindgen(js_name = destroyAllForUserExcept)]
    pub fn destroy_all_for_user_except(
        &self,
        user: &str,
        keep: &Session,
        now: f64,
    ) -> JsResult<Op> {
        let (user, now) = (user_id(user)?, now_from(now).map_err(err)?);
        Ok(Op::new(self.inner.destroy_all_for_user(
            &user,
            Some(&keep.inner),
            now,
        )))
    }

    /// "My devices": the user's live sessions.
    #[wasm_bindgen(js_name = listUserSessions)]
    pub fn list_user_sessions(&self, user: &str, now: f64) -> JsResult<Op> {
        let (user, now) = (user_id(user)?, now_from(now).map_err(err)?);
        Ok(Op::new(self.inner.list_user_sessions(&user, None, now)))
    }

    /// "My devices", marking `current` (the asking session) with `current: true`.
    #[wasm_bindgen(js_name = listUserSessionsFrom)]
    pub fn list_user_sessions_from(&self, user: &str, current: &Session, now: f64) -> JsResult<Op> {
        let (user, now) = (user_id(user)?, now_from(now).map_err(err)?);
        Ok(Op::new(self.inner.list_user_sessions(
            &user,
            Some(&current.inner),
            now,
        )))
    }

    /// Sign out one device by the handle from `listUserSessions`.
    #[wasm_bindgen(js_name = destroyUserSession)]
    pub fn destroy_user_session(&self, user: &str, handle: &str, now: f64) -> JsResult<Op> {
        let (user, now) = (user_id(user)?, now_from(now).map_err(err)?);
        Ok(Op::new(self.inner.destroy_user_session(&user, handle, now)))
    }
}

fn config_error(message: String) -> JsValue {
    err(ConfigError {
        field: "config".into(),
        message,
    })
}

fn user_id(user: &str) -> JsResult<UserId> {
    UserId::new(user).map_err(err)
}

/// A running operation: call `next()` for its first round, then
/// `next(replies)` after each round (or `fail(…)` when the round could not
/// complete) until it answers `{outcome}` or `{error}`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Op {
    inner: session_logic::Op,
    /// The hints its outcome updates, if any.
    observe: Observe,
    /// `step` handed out a round whose replies are due.
    sent: bool,
    /// The finished outcome's session, until `takeSession` hands it over.
    session: Option<session_logic::Session>,
}

/// What an operation's outcome tells the engine's touch hints.
#[derive(Debug, Default)]
enum Observe {
    #[default]
    Nothing,
    /// A load of this key: its session's `$touch`, or forget the key.
    Load(String, Hints),
    /// A save or regenerate: a session written under a new ID.
    Write(session_logic::Engine, Hints),
}

impl Op {
    fn new(inner: session_logic::Op) -> Op {
        Op {
            inner,
            observe: Observe::Nothing,
            sent: false,
            session: None,
        }
    }

    /// Update the hints from the outcome (see [`Observe`]).
    fn observe(&mut self, outcome: &Outcome) {
        match std::mem::take(&mut self.observe) {
            Observe::Nothing => {}
            Observe::Load(key, hints) => hints.borrow_mut().observe(key, outcome),
            Observe::Write(engine, hints) => {
                if let Some(key) = engine.written_key(outcome) {
                    hints.borrow_mut().observe(key, outcome);
                }
            }
        }
    }
}

#[wasm_bindgen]
impl Op {
    /// Feed the replies of the last round (omit them for the first call) and
    /// get what comes next: `{round}`, `{outcome}` or `{error}`. Replies of a
    /// shape no Redis sends throw a `usage` error.
    pub fn next(&mut self, replies: &JsValue) -> JsResult<Object> {
        if !replies.is_undefined() {
            let replies = replies_from_js(replies).map_err(err)?;
            self.inner.handle_replies(replies);
        }
        let step = Object::new();
        match self.inner.poll() {
            Step::Round(round) => set(&step, "round", &round_to_js(&round)),
            Step::Done(Ok(outcome)) => {
                self.observe(&outcome);
                set(&step, "outcome", &outcome_to_js(outcome));
            }
            Step::Done(Err(e)) => set(&step, "error", &js_error(&e)),
        }
        Ok(step)
    }

    /// The session of the outcome `step` answered (`"session": true` in its
    /// JSON), handed over once; `undefined` otherwise.
    #[wasm_bindgen(js_name = takeSession)]
    pub fn take_session(&mut self) -> Option<Session> {
        self.session.take().map(Session::from_core)
    }

    /// The hot path, one buffer each way (`session_logic::wire`): feed the
    /// last round's replies packed (omit them for the first call) and get
    /// either the next round, packed, as a `Uint8Array` (`[0, …round]`), or,
    /// once the operation is done, its outcome as JSON text (`{kind, …}`,
    /// the shape `next` gives, with `"session": true` standing for the
    /// session `takeSession()` hands over). A failed operation throws its
    /// `SessionError`; a replies buffer that does not decode throws a
    /// `usage` error.
    pub fn step(&mut self, replies: Option<Vec<u8>>) -> JsResult<JsValue> {
        match replies {
            Some(bytes) => {
                let replies = wire::decode_replies(&bytes).map_err(err)?;
                self.inner.handle_replies(replies);
            }
            None if self.sent => {
                return Err(err(usage(
                    "step() without replies while a round is out: pass its replies, or call fail()"
                        .into(),
                )));
            }
            None => {}
        }
        match self.inner.poll_owned() {
            Step::Round(round) => {
                self.sent = true;
                let mut out = Vec::with_capacity(256);
                out.push(STEP_ROUND);
                wire::encode_round(&round, &mut out);
                Ok(js_sys::Uint8Array::from(out.as_slice()).into())
            }
            Step::Done(Ok(outcome)) => {
                self.sent = false;
                self.observe(&outcome);
                let text = outcome_json(&outcome);
                self.session = outcome.into_session();
                Ok(JsValue::from_str(&text))
            }
            Step::Done(Err(e)) => {
                self.sent = false;
                Err(js_error(&e))
            }
        }
    }

    /// The round could not complete: `kind` is `"timeout"`, `"unavailable"`
    /// or anything else (reported as `other`), `detail` what the client said.
    /// The next `next()` answers the typed backend error.
    pub fn fail(&mut self, kind: &str, detail: Option<String>) {
        self.sent = false;
        let detail = detail.unwrap_or_default();
        self.inner.handle_failure(match kind {
            "timeout" => BackendFailure::Timeout,
            "unavailable" => BackendFailure::Unavailable(detail),
            _ => BackendFailure::Other(detail),
        });
    }
}

/// `{kind, …}`: the outcome with its session as a `Session` object.
fn outcome_to_js(outcome: Outcome) -> JsValue {
    let obj = js_sys::JSON::parse(&outcome_json(&outcome)).unwrap_or_else(|_| Object::new().into());
    if let Some(session) = outcome.into_session() {
        set(
            obj.unchecked_ref(),
            "session",
            &Session::from_core(session).into(),
        );
    }
    obj
}

/// The outcome as JSON text, its session as `true` (hosts take the session
/// object separately): `kind`; `reason` for `none`; `cookie` (string or
/// null) for `saved`, `gone` and `destroyed`; `count` for `destroyed`;
/// `devices` (`handle`, `created`, `lastSeen`, `expiresAt`, `authAt`,
/// `current`) for `devices`.
fn outcome_json(outcome: &Outcome) -> String {
    use serde_json::{Value, json};
    // The hot outcomes are written directly: no `Value` tree per operation.
    let cookie = |c: &Option<String>| {
        c.as_deref()
            .map_or_else(|| "null".to_owned(), |c| Value::from(c).to_string())
    };
    let ms = |t: UnixMillis| Value::from(t.0);
    match outcome {
        Outcome::Loaded(_) => r#"{"kind":"loaded","session":true}"#.to_owned(),
        Outcome::Expired(_) => r#"{"kind":"expired","session":true}"#.to_owned(),
        Outcome::Rotated(_) => r#"{"kind":"rotated","session":true}"#.to_owned(),
        Outcome::None { reason, .. } => format!(
            r#"{{"kind":"none","reason":"{}","session":true}}"#,
            absent_name(*reason)
        ),
        Outcome::Saved { cookie: c, .. } => {
            format!(
                r#"{{"kind":"saved","session":true,"cookie":{}}}"#,
                cookie(c)
            )
        }
        Outcome::Gone { cookie: c } => format!(r#"{{"kind":"gone","cookie":{}}}"#, cookie(c)),
        Outcome::Destroyed { cookie: c, count } => format!(
            r#"{{"kind":"destroyed","cookie":{},"count":{count}}}"#,
            cookie(c)
        ),
        Outcome::Devices(devices) => {
            let list: Vec<Value> = devices
                .iter()
                .map(|d: &Device| {
                    json!({
                        "handle": d.handle,
                        "created": ms(d.created),
                        "lastSeen": ms(d.last_seen),
                        "expiresAt": ms(d.expires_at),
                        "authAt": d.auth_at.map_or(Value::Null, ms),
                        "current": d.current,
                    })
                })
                .collect();
            json!({ "kind": "devices", "devices": list }).to_string()
        }
    }
}

fn absent_name(reason: Absent) -> &'static str {
    match reason {
        Absent::NoCookie => "no_cookie",
        Absent::Malformed => "malformed",
        Absent::Unknown => "unknown",
        Absent::BindingMismatch => "binding_mismatch",
    }
}
