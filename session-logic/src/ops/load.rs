//! load: find the request's session, with the throttled touch folded into
//! the same single command.
//!
//! A host may pass a *touch hint*: the `$touch` it last saw for this key
//! (after its own load). `$touch` only ever moves forward, so a hint is a
//! lower bound: when it is younger than the touch interval, no touch can be
//! due and the read is a plain `HGETALL` instead of the script (same reply,
//! a fraction of Redis's CPU). Should the record still say a touch is due
//! (a hint from a restored or failed-over Redis), the script runs in a
//! second round, so a hint can cost a round but never a touch.
//!
//! ```text
//!   start ── no / malformed cookie ─────────────────────► Done(None)
//!     │ well-formed ID
//!     ▼
//!   AwaitLoad ── [] ───────────────────────────────────► Done(None{Unknown})
//!     │        ── marker, inside grace ─────────────────► Done(Rotated)
//!     │        ── expired / past deadline ──────────────► Done(Expired)
//!     │        ── binding mismatch (reject) ────────────► Done(None{BindingMismatch})
//!     └─ record ───────────────────────────────────────► Done(Loaded)
//! ```

use crate::config::BindingPolicy;
use crate::cookie::{self, CookieHeaderError};
use crate::engine::Ctx;
use crate::error::Error;
use crate::expiry::{UnixMillis, is_expired};
use crate::id::SessionId;
use crate::ops::{Machine, Next, reply_error};
use crate::outcome::{Absent, Outcome};
use crate::record::{self, Stored};
use crate::scripts::Script;
use crate::session::{Session, Status};
use crate::step::{Command, Reply};

#[derive(Debug)]
enum Source {
    Header(Option<String>),
    Id(String),
}

#[derive(Debug)]
pub(crate) struct Load {
    source: Source,
    client: Option<String>,
    now: UnixMillis,
    id: Option<SessionId>,
    binding: Option<String>,
    touch_hint: Option<UnixMillis>,
    /// The key read, once the ID is known.
    key: Option<String>,
    /// The last round was a plain read (no touch).
    plain: bool,
}

impl Load {
    pub(crate) fn from_header(header: Option<&str>, client: Option<&str>, now: UnixMillis) -> Load {
        Load {
            source: Source::Header(header.map(str::to_owned)),
            client: client.map(str::to_owned),
            now,
            id: None,
            binding: None,
            touch_hint: None,
            key: None,
            plain: false,
        }
    }

    pub(crate) fn from_id(id: &str, client: Option<&str>, now: UnixMillis) -> Load {
        Load {
            source: Source::Id(id.to_owned()),
            client: client.map(str::to_owned),
            now,
            id: None,
            binding: None,
            touch_hint: None,
            key: None,
            plain: false,
        }
    }

    /// See the module doc: a lower bound on the record's `$touch`.
    pub(crate) fn with_touch_hint(mut self, hint: Option<UnixMillis>) -> Load {
        self.touch_hint = hint;
        self
    }

    /// The key this load reads, when the source holds a well-formed ID.
    pub(crate) fn key(&self, ctx: &Ctx) -> Option<String> {
        self.find_id(ctx).ok().map(|id| ctx.keys.session_key(&id))
    }

    /// Parse the ID and derive its key ahead of `start`, which then reuses
    /// both (a host that looks a touch hint up by key parses the cookie and
    /// hashes the ID once per request, not twice). The key, when the
    /// source holds a well-formed ID.
    pub(crate) fn resolve(&mut self, ctx: &Ctx) -> Option<&str> {
        if self.key.is_none()
            && let Ok(id) = self.find_id(ctx)
        {
            self.key = Some(ctx.keys.session_key(&id));
            self.id = Some(id);
        }
        self.key.as_deref()
    }

    /// The load script: read, and slide the idle deadline when due.
    fn script(&self, ctx: &Ctx, key: &str) -> Command {
        let c = &ctx.config;
        let args = vec![
            self.now.0.to_string(),
            c.idle_timeout_ms.to_string(),
            c.touch_interval_ms.to_string(),
            self.now.plus(c.idle_timeout_ms).0.to_string(),
        ];
        ctx.script(Script::Load, key, args)
    }

    fn none(&self, reason: Absent) -> Next {
        let stale = matches!(reason, Absent::Malformed | Absent::Unknown);
        Next::Finish(Ok(Outcome::None {
            reason,
            session: Session::fresh(stale, self.binding.clone()),
        }))
    }

    /// The first well-formed ID among the cookie's values, or why there is none.
    fn find_id(&self, ctx: &Ctx) -> Result<SessionId, Absent> {
        let format = ctx.config.id_format;
        match &self.source {
            Source::Id(text) => SessionId::parse(text, format).ok_or(Absent::Malformed),
            Source::Header(None) => Err(Absent::NoCookie),
            Source::Header(Some(h)) => {
                let c = &ctx.config.cookie;
                match cookie::find_values(h, &c.name, c.max_header_bytes) {
                    Err(CookieHeaderError::Oversized) => Err(Absent::Malformed),
                    Ok(values) if values.is_empty() => Err(Absent::NoCookie),
                    Ok(values) => values
                        .iter()
                        .find_map(|v| SessionId::parse(v, format))
                        .ok_or(Absent::Malformed),
                }
            }
        }
    }
}

impl Machine for Load {
    fn start(&mut self, ctx: &Ctx) -> Next {
        if ctx.config.client_binding != BindingPolicy::Off {
            self.binding = self.client.as_deref().map(|c| ctx.binding_hash(c));
        }
        let (id, key) = match (self.id.take(), self.key.take()) {
            (Some(id), Some(key)) => (id, key),
            _ => match self.find_id(ctx) {
                Ok(id) => {
                    let key = ctx.keys.session_key(&id);
                    (id, key)
                }
                Err(reason) => return self.none(reason),
            },
        };
        let fresh_hint = self
            .touch_hint
            .is_some_and(|t| self.now.since(t) < ctx.config.touch_interval_ms);
        let cmd = if fresh_hint {
            self.plain = true;
            Command::new([b"HGETALL".as_slice(), key.as_bytes()])
        } else {
            self.script(ctx, &key)
        };
        self.key = Some(key);
        self.id = Some(id);
        Next::Send(vec![cmd])
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        let Some(reply) = replies.into_iter().next() else {
            return Next::Finish(Err(
                crate::error::UsageError("missing load reply".into()).into()
            ));
        };
        if let Reply::Error(e) = &reply {
            return Next::Finish(Err(reply_error(e)));
        }
        let stored = match record::decode(&reply) {
            Ok(s) => s,
            Err(e) => return Next::Finish(Err(Error::Decode(e))),
        };
        let c = &ctx.config;
        let now = self.now;
        match stored {
            Stored::Absent => self.none(Absent::Unknown),
            Stored::Rotated(until) if now < until => {
                let mut s = Session::fresh(false, None);
                s.status = Status::Rotated;
                Next::Finish(Ok(Outcome::Rotated(s)))
            }
            Stored::Rotated(_) => self.none(Absent::Unknown),
            Stored::Live {
                mut meta,
                user,
                auth_at,
                data,
            } => {
                if is_expired(now, meta.touch, c.idle_timeout_ms, meta.deadline) {
                    return Next::Finish(Ok(Outcome::Expired(Session::fresh(
                        true,
                        self.binding.clone(),
                    ))));
                }
                let touch_due = now.since(meta.touch) >= c.touch_interval_ms && now > meta.touch;
                if touch_due
                    && self.plain
                    && let Some(key) = self.key.as_deref()
                {
                    // The hint was wrong: read again through the script.
                    self.plain = false;
                    return Next::Send(vec![self.script(ctx, key)]);
                }
                let mismatch = c.client_binding != BindingPolicy::Off
                    && match (&meta.binding, &self.binding) {
                        (Some(stored), Some(seen)) => stored != seen,
                        (Some(_), None) => true,
                        _ => false,
                    };
                if mismatch && c.client_binding == BindingPolicy::Reject {
                    // The session itself survives: the rightful client keeps it.
                    return Next::Finish(Ok(Outcome::None {
                        reason: Absent::BindingMismatch,
                        session: Session::fresh(false, None),
                    }));
                }
                // Mirror load.lua's throttled touch.
                if touch_due {
                    meta.touch = now;
                }
                let rotation_due = c
                    .rotate_every_ms
                    .is_some_and(|every| now.since(meta.created) >= every);
                let mut s = Session::fresh(false, None);
                s.id = self.id.take();
                s.status = Status::Live;
                s.indexed_user = user.clone();
                s.user = user;
                s.auth_at = auth_at;
                s.data = data;
                s.binding = meta.binding.clone();
                s.meta = Some(meta);
                s.binding_mismatch = mismatch;
                s.rotation_due = rotation_due;
                Next::Finish(Ok(Outcome::Loaded(s)))
            }
        }
    }
}
