//! What save and regenerate share: size limits, the create command for a
//! brand-new record, and ID collision retry with derived IDs.

use crate::engine::Ctx;
use crate::error::{BackendError, Error, TooLarge};
use crate::expiry::UnixMillis;
use crate::id::{Entropy, SessionId};
use crate::record::{self, Meta};
use crate::scripts::Script;
use crate::session::{Change, Session};
use crate::step::Command;

/// Fresh IDs tried before concluding the entropy source is broken.
const MAX_ATTEMPTS: u32 = 3;

/// Roughly what the metadata fields weigh; counted against the record limit.
const META_BYTES: usize = 160;

/// Refuse a write that would exceed a limit; nothing is sent then. With
/// `all_fields`, every data field counts as written (a create).
pub(crate) fn check_sizes(ctx: &Ctx, session: &Session, all_fields: bool) -> Result<(), Error> {
    let c = &ctx.config;
    if session.data.len() > c.max_fields {
        return Err(TooLarge {
            what: "session".into(),
            field: "max_fields".into(),
            size: session.data.len(),
            limit: c.max_fields,
        }
        .into());
    }
    let mut total = META_BYTES;
    for (k, v) in &session.data {
        let size = k.len() + record::encode_value(v).len();
        total += size;
        let written = all_fields || session.changes.get(k) == Some(&Change::Set);
        if written && size > c.max_field_bytes {
            return Err(TooLarge {
                what: format!("field {k:?}"),
                field: "max_field_bytes".into(),
                size,
                limit: c.max_field_bytes,
            }
            .into());
        }
    }
    if total > c.max_record_bytes {
        return Err(TooLarge {
            what: "record".into(),
            field: "max_record_bytes".into(),
            size: total,
            limit: c.max_record_bytes,
        }
        .into());
    }
    Ok(())
}

/// A record being created under a fresh ID.
#[derive(Debug)]
pub(crate) struct NewRecord {
    entropy: Entropy,
    attempt: u32,
    pub(crate) id: SessionId,
    pub(crate) meta: Meta,
}

impl NewRecord {
    pub(crate) fn new(ctx: &Ctx, entropy: Entropy, meta: Meta) -> NewRecord {
        let id = SessionId::mint(&entropy.attempt(0), ctx.config.id_format);
        NewRecord {
            entropy,
            attempt: 0,
            id,
            meta,
        }
    }

    pub(crate) fn member(&self, ctx: &Ctx) -> String {
        ctx.keys.member(&self.id)
    }

    /// Move to the next derived ID after a collision.
    pub(crate) fn retry(&mut self, ctx: &Ctx) -> Result<(), Error> {
        self.attempt += 1;
        if self.attempt >= MAX_ATTEMPTS {
            return Err(BackendError::Collision {
                attempts: self.attempt,
            }
            .into());
        }
        self.id = SessionId::mint(&self.entropy.attempt(self.attempt), ctx.config.id_format);
        Ok(())
    }

    /// `EVALSHA create` with every metadata and data field of `session`.
    pub(crate) fn command(&self, ctx: &Ctx, session: &Session, now: UnixMillis) -> Command {
        let expire = crate::expiry::expires_at(now, ctx.config.idle_timeout_ms, self.meta.deadline);
        let mut args = vec![expire.0.to_string()];
        for (f, v) in record::encode_meta(&self.meta, session.user.as_ref(), session.auth_at) {
            args.push(f);
            args.push(v);
        }
        for (k, v) in &session.data {
            args.push(k.clone());
            args.push(record::encode_value(v));
        }
        ctx.script(Script::Create, &ctx.keys.session_key(&self.id), args)
    }

    /// The session as stored after a successful create.
    pub(crate) fn into_session(self, mut session: Session) -> Session {
        session.id = Some(self.id);
        session.status = crate::session::Status::Live;
        session.binding = self.meta.binding.clone();
        session.meta = Some(self.meta);
        session.mark_saved();
        session
    }
}

/// How a save treats the idle deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Slide it at most once per `touch_interval_ms`, as a load does.
    Throttled,
    /// Slide it now (an explicit touch).
    Now,
}

/// `EVALSHA save` applying `sets` and `deletes` to the record at `key`.
pub(crate) fn save_command(
    ctx: &Ctx,
    key: &str,
    sets: Vec<(String, String)>,
    deletes: Vec<String>,
    now: UnixMillis,
    touch: Touch,
) -> Command {
    let idle = ctx.config.idle_timeout_ms;
    let interval = match touch {
        Touch::Throttled => ctx.config.touch_interval_ms,
        Touch::Now => 0,
    };
    let mut args = vec![
        now.0.to_string(),
        idle.to_string(),
        now.plus(idle).0.to_string(),
        interval.to_string(),
        sets.len().to_string(),
    ];
    for (f, v) in sets {
        args.push(f);
        args.push(v);
    }
    args.extend(deletes);
    ctx.script(Script::Save, key, args)
}
