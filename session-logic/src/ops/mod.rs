//! One operation per file, each a small state object with its diagram. They
//! share this contract: `start` yields the first round (or finishes without
//! Redis), `on_replies` takes exactly one reply per command of the last round.

use std::fmt;

use crate::engine::Ctx;
use crate::error::{BackendError, DecodeError, Error};
use crate::expiry::UnixMillis;
use crate::keys::UserId;
use crate::outcome::Outcome;
use crate::record::shape;
use crate::scripts::Script;
use crate::step::{Command, Reply};

pub(crate) mod destroy;
pub(crate) mod load;
pub(crate) mod regenerate;
pub(crate) mod save;
pub(crate) mod user;
pub(crate) mod write;

/// What a machine wants next.
// One value per step, moved a handful of times: boxing the outcome would only
// add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    Send(Vec<Command>),
    Finish(Result<Outcome, Error>),
}

/// An operation's state machine; `Op` drives it.
pub(crate) trait Machine: Send + fmt::Debug {
    fn start(&mut self, ctx: &Ctx) -> Next;
    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next;
}

/// An error reply becomes a backend error, except WRONGTYPE: a key of ours
/// that is not a hash is a corrupt record.
pub(crate) fn reply_error(text: &str) -> Error {
    if text.starts_with("WRONGTYPE") {
        return DecodeError::new("session record", "key holds a value that is not a hash").into();
    }
    BackendError::reply(text).into()
}

/// A reply of a shape we never expect from this command.
pub(crate) fn unexpected(what: &str, reply: &Reply) -> Error {
    match reply {
        Reply::Error(e) => reply_error(e),
        other => DecodeError::new(
            &format!("{what} reply"),
            format!("unexpected {}", shape(other)),
        )
        .into(),
    }
}

/// An integer reply, or the error it stands for.
pub(crate) fn int(what: &str, reply: Option<&Reply>) -> Result<i64, Error> {
    match reply {
        Some(Reply::Int(n)) => Ok(*n),
        Some(other) => Err(unexpected(what, other)),
        None => Err(DecodeError::new(&format!("{what} reply"), "missing").into()),
    }
}

/// The bulk strings of an array reply (index members).
pub(crate) fn members(what: &str, reply: Option<&Reply>) -> Result<Vec<String>, Error> {
    let Some(Reply::Array(items)) = reply else {
        return Err(match reply {
            Some(r) => unexpected(what, r),
            None => DecodeError::new(&format!("{what} reply"), "missing").into(),
        });
    };
    items
        .iter()
        .map(|r| match r {
            Reply::Bulk(b) => String::from_utf8(b.clone()).map_err(|_| {
                DecodeError::new(&format!("{what} reply"), "member is not UTF-8").into()
            }),
            other => Err(unexpected(what, other)),
        })
        .collect()
}

/// `EVALSHA index`: prune the user's index, add one member scored by its
/// deadline, and learn which entries exceed the per-user cap. Entries are
/// never removed by member: an index entry may outlive its session (pruned by
/// deadline later) but a live session never loses its entry, whatever part
/// of a round is lost.
pub(crate) fn index_command(
    ctx: &Ctx,
    user: &UserId,
    deadline: UnixMillis,
    member: String,
    now: UnixMillis,
) -> Command {
    let cap = ctx.config.max_sessions_per_user.unwrap_or(0);
    let args = vec![
        now.0.to_string(),
        cap.to_string(),
        deadline.0.to_string(),
        member,
    ];
    ctx.script(Script::Index, &ctx.keys.user_key(user), args)
}

/// `EVALSHA revoke` for each well-formed member: delete the session only
/// while it still belongs to `user`.
pub(crate) fn revocations(ctx: &Ctx, user: &UserId, members: &[String]) -> Vec<Command> {
    members
        .iter()
        .filter(|m| ctx.keys.is_member(m))
        .map(|m| {
            ctx.script(
                Script::Revoke,
                &ctx.keys.member_key(m),
                vec![user.as_str().to_owned()],
            )
        })
        .collect()
}
