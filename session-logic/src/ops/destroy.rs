//! destroy: delete the session in one round, with a
//! removal cookie; `WAIT` joins the same round under durable revocation.
//!
//! ```text
//!   start ── new / rotated ──► Done(Destroyed, count 0)
//!     └─ live ──► AwaitDelete [DEL, WAIT?] ──► Done(Destroyed + removal cookie)
//! ```

use crate::engine::Ctx;
use crate::error::UsageError;
use crate::expiry::UnixMillis;
use crate::ops::{Machine, Next, int};
use crate::outcome::Outcome;
use crate::session::{Session, Status};
use crate::step::{Command, Reply};

#[derive(Debug)]
pub(crate) struct Destroy {
    session: Session,
    wait_at: Option<usize>,
}

impl Destroy {
    pub(crate) fn new(session: Session, now: UnixMillis) -> Destroy {
        let _ = now; // a DEL needs no clock
        Destroy {
            session,
            wait_at: None,
        }
    }
}

impl Machine for Destroy {
    fn start(&mut self, ctx: &Ctx) -> Next {
        let s = &self.session;
        let id = match (s.status, &s.id) {
            (Status::Live, Some(id)) => id,
            (Status::Rotated, _) => {
                return Next::Finish(Ok(Outcome::Destroyed {
                    cookie: None,
                    count: 0,
                }));
            }
            _ => {
                let cookie = s.stale_cookie.then(|| ctx.removal_cookie());
                return Next::Finish(Ok(Outcome::Destroyed { cookie, count: 0 }));
            }
        };
        let mut cmds = vec![Command::new([
            b"DEL".to_vec(),
            ctx.keys.session_key(id).into_bytes(),
        ])];
        // The user's index entry stays until pruned by deadline; an entry
        // may outlive its key, never the other way round.
        if let Some(w) = ctx.wait() {
            cmds.push(w);
            self.wait_at = Some(cmds.len() - 1);
        }
        Next::Send(cmds)
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        let count = match int("DEL", replies.first()) {
            Ok(n) => u64::try_from(n).unwrap_or(0),
            Err(e) => return Next::Finish(Err(e)),
        };
        if let Some(i) = self.wait_at
            && let Err(e) = ctx.check_wait(replies.get(i))
        {
            return Next::Finish(Err(e));
        }
        if replies.is_empty() {
            return Next::Finish(Err(UsageError("missing DEL reply".into()).into()));
        }
        Next::Finish(Ok(Outcome::Destroyed {
            cookie: Some(ctx.removal_cookie()),
            count,
        }))
    }
}
