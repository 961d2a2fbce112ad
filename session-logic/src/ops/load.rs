//! load: find the request's session, with the throttled touch folded into
//! the same single command.
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
use crate::step::Reply;

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
}

impl Load {
    pub(crate) fn from_header(header: Option<&str>, client: Option<&str>, now: UnixMillis) -> Load {
        Load {
            source: Source::Header(header.map(str::to_owned)),
            client: client.map(str::to_owned),
            now,
            id: None,
            binding: None,
        }
    }

    pub(crate) fn from_id(id: &str, client: Option<&str>, now: UnixMillis) -> Load {
        Load {
            source: Source::Id(id.to_owned()),
            client: client.map(str::to_owned),
            now,
            id: None,
            binding: None,
        }
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
        let id = match self.find_id(ctx) {
            Ok(id) => id,
            Err(reason) => return self.none(reason),
        };
        let c = &ctx.config;
        let args = vec![
            self.now.0.to_string(),
            c.idle_timeout_ms.to_string(),
            c.touch_interval_ms.to_string(),
            self.now.plus(c.idle_timeout_ms).0.to_string(),
        ];
        let cmd = ctx.script(Script::Load, &ctx.keys.session_key(&id), args);
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
                if now.since(meta.touch) >= c.touch_interval_ms && now > meta.touch {
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
