//! `Engine` (built once from a validated config, cheap to share) and `Op`,
//! the running operation every host drives the same way:
//!
//! ```text
//!   poll ──► Round ──► host sends one pipeline ──► handle_replies ─┐
//!     ▲                                  (or handle_failure)      │
//!     └────────────────────────────────────────────────────────────┘
//!   poll ──► Done(outcome | error)
//! ```
//!
//! The driver owns the parts every operation shares: a `NOSCRIPT` reply is
//! resent as `EVAL` (the host never special-cases scripts), a transport
//! failure becomes a typed backend error, and a host that breaks the loop
//! contract poisons the op with a usage error instead of a panic.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::cookie::{self, CookieAttrs};
use crate::error::{BackendError, ConfigError, Error, UsageError};
use crate::expiry::UnixMillis;
use crate::hints::TouchHints;
use crate::id::{Entropy, SessionId};
use crate::keys::{Keyspace, UserId};
use crate::ops;
use crate::outcome::Outcome;
use crate::scripts::Script;
use crate::session::Session;
use crate::step::{BackendFailure, Command, Reply, Round, Step};

/// What the operations share: the validated config and derived names.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) keys: Keyspace,
    log_key: Vec<u8>,
}

impl Ctx {
    /// `EVALSHA sha 1 key args…`.
    pub(crate) fn script(&self, script: Script, key: &str, args: Vec<String>) -> Command {
        let mut argv: Vec<Vec<u8>> = Vec::with_capacity(4 + args.len());
        argv.push(b"EVALSHA".to_vec());
        argv.push(script.sha1().as_bytes().to_vec());
        argv.push(b"1".to_vec());
        argv.push(key.as_bytes().to_vec());
        argv.extend(args.into_iter().map(String::into_bytes));
        Command(argv)
    }

    /// `WAIT n ms` when durable revocation is on.
    pub(crate) fn wait(&self) -> Option<Command> {
        self.config.durable_revocation.map(|d| {
            Command::new([
                b"WAIT".to_vec(),
                d.replicas.to_string().into_bytes(),
                d.timeout_ms.to_string().into_bytes(),
            ])
        })
    }

    /// Check a `WAIT` reply against the configured replica count.
    pub(crate) fn check_wait(&self, reply: Option<&Reply>) -> Result<(), Error> {
        let Some(d) = self.config.durable_revocation else {
            return Ok(());
        };
        match reply {
            Some(Reply::Int(n)) if *n >= i64::from(d.replicas) => Ok(()),
            Some(Reply::Int(n)) => Err(BackendError::NotDurable {
                acked: *n,
                wanted: d.replicas,
            }
            .into()),
            Some(other) => Err(ops::unexpected("WAIT", other)),
            None => Err(UsageError("missing WAIT reply".into()).into()),
        }
    }

    fn attrs(&self) -> CookieAttrs<'_> {
        let c = &self.config.cookie;
        CookieAttrs {
            name: &c.name,
            path: &c.path,
            domain: c.domain.as_deref(),
            secure: c.secure,
            http_only: c.http_only,
            same_site: c.same_site,
        }
    }

    /// The Set-Cookie for a session ID, in step with its absolute deadline.
    pub(crate) fn set_cookie(
        &self,
        id: &SessionId,
        deadline: UnixMillis,
        now: UnixMillis,
    ) -> String {
        let lifetime = self
            .config
            .cookie
            .persistent
            .then(|| (deadline.since(now) / 1000, deadline));
        cookie::render(&self.attrs(), id.expose(), lifetime)
    }

    /// The removal cookie.
    pub(crate) fn removal_cookie(&self) -> String {
        cookie::render_removal(&self.attrs())
    }

    /// The stored client-binding hash of a fingerprint.
    pub(crate) fn binding_hash(&self, client: &str) -> String {
        crate::keys::tagged_hash("session-logic client binding", client)
    }
}

/// The rules of one deployment. Cheap to clone and share across threads.
#[derive(Clone)]
pub struct Engine {
    ctx: Arc<Ctx>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("prefix", &self.ctx.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Validate the config and build the engine.
    pub fn new(config: Config) -> Result<Engine, ConfigError> {
        config.validate()?;
        let keys = Keyspace::new(&config);
        let log_key = config.log_key.clone().unwrap_or_default().into_bytes();
        Ok(Engine {
            ctx: Arc::new(Ctx {
                config,
                keys,
                log_key,
            }),
        })
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Key naming of this deployment.
    pub fn keyspace(&self) -> &Keyspace {
        &self.ctx.keys
    }

    /// The Set-Cookie that deletes the session cookie in the browser. For
    /// hosts whose session was already deleted by another operation (logout
    /// everywhere), so no extra round is needed to get it.
    pub fn removal_cookie(&self) -> String {
        self.ctx.removal_cookie()
    }

    /// A keyed hash of an ID (16 base64url chars): the only form of an ID
    /// that may appear in logs, metrics or error messages.
    pub fn sid_hash(&self, id: &SessionId) -> String {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.ctx.log_key) else {
            return String::new();
        };
        mac.update(id.expose().as_bytes());
        let full = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        full.get(..16).unwrap_or(&full).to_owned()
    }

    /// A new, empty session (stored lazily by its first save with data).
    pub fn new_session(&self) -> Session {
        Session::fresh(false, None)
    }

    /// Load the session named by a `Cookie` header. `client` is the
    /// fingerprint for client binding (e.g. the User-Agent), if used.
    /// Costs one round, or none when there is no well-formed ID.
    pub fn load(&self, cookie_header: Option<&str>, client: Option<&str>, now: UnixMillis) -> Op {
        self.op(ops::load::Load::from_header(cookie_header, client, now))
    }

    /// [`Engine::load`] with a touch hint: the `$touch` this host last saw
    /// for the session's key ([`Engine::session_key_for`]; after a load,
    /// `session.meta().touch`). While the hint is younger than the touch
    /// interval the read is a plain `HGETALL` instead of the load script;
    /// the outcome is the same (see `ops::load`).
    pub fn load_hinted(
        &self,
        cookie_header: Option<&str>,
        client: Option<&str>,
        now: UnixMillis,
        touch_hint: Option<UnixMillis>,
    ) -> Op {
        self.op(ops::load::Load::from_header(cookie_header, client, now).with_touch_hint(touch_hint))
    }

    /// [`Engine::load`] with its touch hint looked up in `hints`, parsing
    /// the cookie and hashing the ID once. Also answers the key the load
    /// reads: observe the outcome into `hints` under it
    /// ([`TouchHints::observe`]).
    pub fn load_with_hints(
        &self,
        cookie_header: Option<&str>,
        client: Option<&str>,
        now: UnixMillis,
        hints: &TouchHints,
    ) -> (Op, Option<String>) {
        let mut load = ops::load::Load::from_header(cookie_header, client, now);
        let key = load.resolve(&self.ctx).map(str::to_owned);
        let hint = key.as_deref().and_then(|k| hints.get(k));
        (self.op(load.with_touch_hint(hint)), key)
    }

    /// The key of a session this outcome wrote under a new ID (a first
    /// write or a regenerate), for [`TouchHints::observe`]: the record's
    /// `$touch` is the write's instant, so the next load of the new ID can
    /// skip the load script. `None` for every other outcome (no hashing).
    pub fn written_key(&self, outcome: &Outcome) -> Option<String> {
        match outcome {
            Outcome::Saved {
                session,
                cookie: Some(_),
            } => session.id().map(|id| self.ctx.keys.session_key(id)),
            _ => None,
        }
    }

    /// The Redis key [`Engine::load`] would read for this `Cookie` header,
    /// or `None` when it holds no well-formed ID (then a load sends
    /// nothing). Hosts key their touch hints by it.
    pub fn session_key_for(&self, cookie_header: Option<&str>) -> Option<String> {
        ops::load::Load::from_header(cookie_header, None, UnixMillis(0)).key(&self.ctx)
    }

    /// Load a session by its ID text (for APIs that carry the ID outside a
    /// cookie). Parsed as strictly as a cookie.
    pub fn load_id(&self, id: &str, client: Option<&str>, now: UnixMillis) -> Op {
        self.op(ops::load::Load::from_id(id, client, now))
    }

    /// Write what the request changed: nothing, a create (lazy, one round),
    /// or a delta (one round). Renews the ID instead when `rotate_every` is due.
    pub fn save(&self, session: Session, entropy: Entropy, now: UnixMillis) -> Op {
        self.op(ops::save::Save::new(session, entropy, now))
    }

    /// New ID, same data (including unsaved changes), new absolute lifetime;
    /// the old ID becomes a short-lived rotated marker. One round.
    pub fn regenerate(&self, session: Session, entropy: Entropy, now: UnixMillis) -> Op {
        self.op(ops::regenerate::Regenerate::new(
            session, entropy, now, false,
        ))
    }

    /// Delete the session and send a removal cookie. One round.
    pub fn destroy(&self, session: Session, now: UnixMillis) -> Op {
        self.op(ops::destroy::Destroy::new(session, now))
    }

    /// Slide the idle deadline now (ignores the touch interval). One round.
    pub fn touch(&self, session: Session, now: UnixMillis) -> Op {
        self.op(ops::save::Save::touch(session, now))
    }

    /// Logout everywhere: delete every session of `user`, except `keep`
    /// (e.g. the current one after a password change). Two rounds for any
    /// number of sessions.
    pub fn destroy_all_for_user(
        &self,
        user: &UserId,
        keep: Option<&Session>,
        now: UnixMillis,
    ) -> Op {
        let keep = keep
            .and_then(|s| s.id.as_ref())
            .map(|id| self.ctx.keys.member(id));
        self.op(ops::user::DestroyAll::new(user.clone(), keep, now))
    }

    /// "My devices": the user's live sessions. Two rounds.
    pub fn list_user_sessions(
        &self,
        user: &UserId,
        current: Option<&Session>,
        now: UnixMillis,
    ) -> Op {
        let current = current
            .and_then(|s| s.id.as_ref())
            .map(|id| self.ctx.keys.member(id));
        self.op(ops::user::List::new(user.clone(), current, now))
    }

    /// Sign out one device of `user` by the handle from `list_user_sessions`.
    pub fn destroy_user_session(&self, user: &UserId, handle: &str, now: UnixMillis) -> Op {
        self.op(ops::user::DestroyOne::new(
            user.clone(),
            handle.to_owned(),
            now,
        ))
    }

    pub(crate) fn op(&self, machine: impl ops::Machine + 'static) -> Op {
        Op {
            ctx: Arc::clone(&self.ctx),
            machine: Box::new(machine),
            state: State::Start,
        }
    }
}

/// A running operation. Drive it with `poll`, `handle_replies` and
/// `handle_failure` until `poll` returns `Step::Done`.
pub struct Op {
    ctx: Arc<Ctx>,
    machine: Box<dyn ops::Machine>,
    state: State,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum State {
    Start,
    /// A round is out; replies pending.
    AwaitReplies(Round),
    /// Some EVALSHAs came back NOSCRIPT; their EVAL resend is out.
    AwaitFallback {
        replies: Vec<Reply>,
        resend: Vec<usize>,
        round: Round,
    },
    Done(Result<Outcome, Error>),
}

impl Op {
    /// What the host should do next. Idempotent until the next input.
    pub fn poll(&mut self) -> Step {
        if matches!(self.state, State::Start) {
            let next = self.machine.start(&self.ctx);
            self.advance(next);
        }
        match &self.state {
            State::Start => Step::Done(Err(UsageError("operation did not start".into()).into())),
            State::AwaitReplies(round) | State::AwaitFallback { round, .. } => {
                Step::Round(round.clone())
            }
            State::Done(result) => Step::Done(result.clone()),
        }
    }

    /// [`Op::poll`] for hosts that are done with the op once it finishes:
    /// the outcome is handed over, not copied (a session's data can be
    /// large). Polling a finished op again afterwards answers a usage error.
    pub fn poll_owned(&mut self) -> Step {
        if matches!(self.state, State::Start) {
            let next = self.machine.start(&self.ctx);
            self.advance(next);
        }
        if matches!(self.state, State::Done(_)) {
            let taken = UsageError("the outcome was already handed over".into());
            if let State::Done(result) =
                std::mem::replace(&mut self.state, State::Done(Err(taken.into())))
            {
                return Step::Done(result);
            }
        }
        self.poll()
    }

    /// Feed back one reply per command of the last round, in order.
    pub fn handle_replies(&mut self, given: Vec<Reply>) {
        let state = std::mem::replace(&mut self.state, State::Start);
        match state {
            State::AwaitReplies(round) => {
                if given.len() != round.len() {
                    return self.poison(format!(
                        "round had {} commands but {} replies were given",
                        round.len(),
                        given.len()
                    ));
                }
                let resend: Vec<usize> = round
                    .commands()
                    .iter()
                    .zip(&given)
                    .enumerate()
                    .filter(|(_, (c, r))| is_noscript(c, r))
                    .map(|(i, _)| i)
                    .collect();
                if resend.is_empty() {
                    let next = self.machine.on_replies(&self.ctx, given);
                    return self.advance(next);
                }
                let evals = resend
                    .iter()
                    .filter_map(|&i| round.commands().get(i))
                    .map(as_eval)
                    .collect();
                self.state = State::AwaitFallback {
                    replies: given,
                    resend,
                    round: Round(evals),
                };
            }
            State::AwaitFallback {
                mut replies,
                resend,
                round,
            } => {
                if given.len() != round.len() {
                    return self.poison(format!(
                        "round had {} commands but {} replies were given",
                        round.len(),
                        given.len()
                    ));
                }
                for (&i, reply) in resend.iter().zip(given) {
                    if let Some(slot) = replies.get_mut(i) {
                        *slot = reply;
                    }
                }
                let next = self.machine.on_replies(&self.ctx, replies);
                self.advance(next);
            }
            State::Start | State::Done(_) => {
                self.poison("replies given with no round outstanding".into())
            }
        }
    }

    /// The host could not complete the round (timeout, connection lost).
    pub fn handle_failure(&mut self, failure: BackendFailure) {
        match self.state {
            State::AwaitReplies(_) | State::AwaitFallback { .. } => {
                self.state = State::Done(Err(BackendError::Failure { failure }.into()));
            }
            State::Start | State::Done(_) => {
                self.poison("failure reported with no round outstanding".into())
            }
        }
    }

    fn advance(&mut self, next: ops::Next) {
        self.state = match next {
            ops::Next::Send(cmds) if cmds.is_empty() => {
                State::Done(Err(UsageError("internal: empty round".into()).into()))
            }
            ops::Next::Send(cmds) => State::AwaitReplies(Round(cmds)),
            ops::Next::Finish(result) => State::Done(result),
        };
    }

    fn poison(&mut self, why: String) {
        self.state = State::Done(Err(UsageError(why).into()));
    }
}

/// A NOSCRIPT reply to one of our EVALSHAs.
fn is_noscript(cmd: &Command, reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) && cmd.name() == b"EVALSHA"
}

/// The same command as `EVAL <source> …`.
fn as_eval(cmd: &Command) -> Command {
    let args = cmd.args();
    let sha = args.get(1).map(Vec::as_slice).unwrap_or_default();
    let source = Script::from_sha1(sha)
        .map(Script::source)
        .unwrap_or_default();
    let mut argv = vec![b"EVAL".to_vec(), source.as_bytes().to_vec()];
    argv.extend(args.iter().skip(2).cloned());
    Command(argv)
}
