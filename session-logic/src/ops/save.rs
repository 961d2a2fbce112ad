//! save (and touch): write exactly what the request changed.
//!
//! ```text
//!   start ── rotated ─────────────────────────────────► Done(Rotated)
//!     │   ── new, empty ──────────────────────────────► Done(Saved), no cookie
//!     │   ── live, clean ─────────────────────────────► Done(Saved)
//!     │   ── live, rotate_every due ──► (regenerate, keeping the deadline)
//!     │   ── too large ───────────────────────────────► Done(TooLarge), nothing sent
//!     ├─ new with data ──► AwaitCreate ── 1 ──► [AwaitEvict] ──► Done(Saved + cookie)
//!     │                        └── 0 (collision) ──► AwaitCreate (derived ID)
//!     └─ live, dirty ───► AwaitSave ── rev ──► [AwaitEvict] ──► Done(Saved)
//!                              ├── 0 (gone) ───────────────────► Done(Gone + removal)
//!                              └── -1 (rotated) ───────────────► Done(Rotated)
//! ```

use crate::engine::Ctx;
use crate::error::Error;
use crate::expiry::UnixMillis;
use crate::id::Entropy;
use crate::ops::regenerate::Regenerate;
use crate::ops::write::{NewRecord, check_sizes};
use crate::ops::{IndexChange, Machine, Next, evictions, index_command, int, members};
use crate::outcome::Outcome;
use crate::record::{self, AUTH_AT, Meta, USER};
use crate::scripts::Script;
use crate::session::{Change, Session, Status};
use crate::step::Reply;

#[derive(Debug)]
enum State {
    Start,
    AwaitCreate { rec: NewRecord, indexed: bool },
    AwaitSave { indexed: usize },
    AwaitEvict,
    Regenerate(Box<Regenerate>),
    Done,
}

#[derive(Debug)]
pub(crate) struct Save {
    session: Option<Session>,
    entropy: Option<Entropy>,
    now: UnixMillis,
    touch_only: bool,
    state: State,
    result: Option<Outcome>,
}

impl Save {
    pub(crate) fn new(session: Session, entropy: Entropy, now: UnixMillis) -> Save {
        Save {
            session: Some(session),
            entropy: Some(entropy),
            now,
            touch_only: false,
            state: State::Start,
            result: None,
        }
    }

    pub(crate) fn touch(session: Session, now: UnixMillis) -> Save {
        Save {
            session: Some(session),
            entropy: None,
            now,
            touch_only: true,
            state: State::Start,
            result: None,
        }
    }

    fn take(&mut self) -> Session {
        self.session
            .take()
            .unwrap_or_else(|| Session::fresh(false, None))
    }

    fn create(&mut self, ctx: &Ctx, session: Session, entropy: Entropy) -> Next {
        if let Err(e) = check_sizes(ctx, &session, true) {
            return Next::Finish(Err(e));
        }
        let c = &ctx.config;
        let now = self.now;
        let meta = Meta {
            created: now,
            deadline: now.plus(c.absolute_lifetime_ms),
            touch: now,
            rev: 1,
            binding: session.binding.clone(),
        };
        let rec = NewRecord::new(ctx, entropy, meta);
        let cmds = create_round(ctx, &rec, &session, None, now);
        let indexed = session.user.is_some();
        self.session = Some(session);
        self.state = State::AwaitCreate { rec, indexed };
        Next::Send(cmds)
    }

    fn update(&mut self, ctx: &Ctx, session: Session) -> Next {
        if let Err(e) = check_sizes(ctx, &session, false) {
            return Next::Finish(Err(e));
        }
        let (Some(id), Some(meta)) = (&session.id, &session.meta) else {
            return Next::Finish(Err(crate::error::InputError::new(
                "session",
                "live session without id or metadata",
            )
            .into()));
        };
        let c = &ctx.config;
        let now = self.now;
        let mut sets: Vec<(String, String)> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for (k, change) in &session.changes {
            match (change, session.data.get(k)) {
                (Change::Set, Some(v)) => sets.push((k.clone(), record::encode_value(v))),
                _ => deletes.push(k.clone()),
            }
        }
        if session.user_changed {
            match (&session.user, session.auth_at) {
                (Some(u), Some(at)) => {
                    sets.push((USER.into(), u.as_str().to_owned()));
                    sets.push((AUTH_AT.into(), at.0.to_string()));
                }
                _ => deletes.extend([USER.to_owned(), AUTH_AT.to_owned()]),
            }
        }
        let mut args = vec![
            now.0.to_string(),
            c.idle_timeout_ms.to_string(),
            now.plus(c.idle_timeout_ms).0.to_string(),
            sets.len().to_string(),
        ];
        for (f, v) in sets {
            args.push(f);
            args.push(v);
        }
        args.extend(deletes);
        let mut cmds = vec![ctx.script(Script::Save, &ctx.keys.session_key(id), args)];
        let member = ctx.keys.member(id);
        let deadline = meta.deadline;
        let mut indexed = 0;
        if session.user_changed {
            if let Some(old) = session
                .indexed_user
                .as_ref()
                .filter(|old| Some(*old) != session.user.as_ref())
            {
                cmds.push(index_command(
                    ctx,
                    IndexChange {
                        user: old,
                        add: None,
                        remove: vec![member.clone()],
                    },
                    now,
                ));
                indexed += 1;
            }
            if let Some(user) = &session.user {
                cmds.push(index_command(
                    ctx,
                    IndexChange {
                        user,
                        add: Some((deadline, member)),
                        remove: vec![],
                    },
                    now,
                ));
                indexed += 1;
            }
        }
        self.session = Some(session);
        self.state = State::AwaitSave { indexed };
        Next::Send(cmds)
    }

    /// After the main write: delete sessions the per-user cap evicted, then finish.
    fn finish_with_evictions(&mut self, ctx: &Ctx, outcome: Outcome, evicted: Vec<String>) -> Next {
        if evicted.is_empty() {
            self.state = State::Done;
            return Next::Finish(Ok(outcome));
        }
        self.result = Some(outcome);
        self.state = State::AwaitEvict;
        Next::Send(evictions(ctx, &evicted))
    }
}

/// `[create, index add (and removal of a collided member)]`.
pub(crate) fn create_round(
    ctx: &Ctx,
    rec: &NewRecord,
    session: &Session,
    collided: Option<String>,
    now: UnixMillis,
) -> Vec<crate::step::Command> {
    let mut cmds = vec![rec.command(ctx, session, now)];
    if let Some(user) = &session.user {
        let remove = collided.into_iter().collect();
        cmds.push(index_command(
            ctx,
            IndexChange {
                user,
                add: Some((rec.meta.deadline, rec.member(ctx))),
                remove,
            },
            now,
        ));
    }
    cmds
}

impl Machine for Save {
    fn start(&mut self, ctx: &Ctx) -> Next {
        let session = self.take();
        match session.status {
            Status::Rotated => Next::Finish(Ok(Outcome::Rotated(session))),
            // Nothing stored, nothing to store: no write and no Set-Cookie,
            // even for a garbage or unknown cookie (a flood of forged IDs must
            // cost no writes and produce no cookies).
            Status::New if self.touch_only || session.is_empty_new() => {
                Next::Finish(Ok(Outcome::Saved {
                    session,
                    cookie: None,
                }))
            }
            Status::New => match self.entropy {
                Some(entropy) => self.create(ctx, session, entropy),
                None => Next::Finish(Ok(Outcome::Saved {
                    session,
                    cookie: None,
                })),
            },
            Status::Live => {
                if let (true, Some(entropy)) = (session.rotation_due, self.entropy) {
                    let mut regen = Box::new(Regenerate::new(session, entropy, self.now, true));
                    let next = regen.start(ctx);
                    self.state = State::Regenerate(regen);
                    return next;
                }
                if !session.is_dirty() && !self.touch_only {
                    return Next::Finish(Ok(Outcome::Saved {
                        session,
                        cookie: None,
                    }));
                }
                self.update(ctx, session)
            }
        }
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        let now = self.now;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Regenerate(mut regen) => {
                let next = regen.on_replies(ctx, replies);
                self.state = State::Regenerate(regen);
                next
            }
            State::AwaitCreate { mut rec, indexed } => {
                let session = self.take();
                let created = match int("create", replies.first()) {
                    Ok(n) => n,
                    Err(e) => return Next::Finish(Err(e)),
                };
                let evicted = if indexed {
                    match members("index", replies.get(1)) {
                        Ok(m) => m,
                        Err(e) => return Next::Finish(Err(e)),
                    }
                } else {
                    Vec::new()
                };
                if created != 1 {
                    let collided = rec.member(ctx);
                    if let Err(e) = rec.retry(ctx) {
                        return Next::Finish(Err(e));
                    }
                    let cmds = create_round(ctx, &rec, &session, Some(collided), now);
                    self.session = Some(session);
                    self.state = State::AwaitCreate { rec, indexed };
                    return Next::Send(cmds);
                }
                let cookie = ctx.set_cookie(&rec.id, rec.meta.deadline, now);
                let session = rec.into_session(session);
                self.finish_with_evictions(
                    ctx,
                    Outcome::Saved {
                        session,
                        cookie: Some(cookie),
                    },
                    evicted,
                )
            }
            State::AwaitSave { indexed } => {
                let mut session = self.take();
                let rev = match int("save", replies.first()) {
                    Ok(n) => n,
                    Err(e) => return Next::Finish(Err(e)),
                };
                let mut evicted = Vec::new();
                for i in 0..indexed {
                    match members("index", replies.get(1 + i)) {
                        Ok(m) => evicted.extend(m),
                        Err(e) => return Next::Finish(Err(e)),
                    }
                }
                match rev {
                    -1 => {
                        let mut s = Session::fresh(false, None);
                        s.status = Status::Rotated;
                        Next::Finish(Ok(Outcome::Rotated(s)))
                    }
                    n if n <= 0 => Next::Finish(Ok(Outcome::Gone {
                        cookie: Some(ctx.removal_cookie()),
                    })),
                    n => {
                        if let Some(meta) = session.meta.as_mut() {
                            meta.rev = u64::try_from(n).unwrap_or(meta.rev);
                            meta.touch = meta.touch.max(now);
                        }
                        session.mark_saved();
                        self.finish_with_evictions(
                            ctx,
                            Outcome::Saved {
                                session,
                                cookie: None,
                            },
                            evicted,
                        )
                    }
                }
            }
            State::AwaitEvict => {
                // Evicted sessions that are already gone are fine; a failed
                // DEL is reported so the cap is not silently exceeded.
                for r in &replies {
                    if let Err(e) = int("evict", Some(r)) {
                        return Next::Finish(Err(e));
                    }
                }
                let outcome = self.result.take();
                Next::Finish(outcome.ok_or_else(|| {
                    Error::Usage(crate::error::UsageError("internal: no outcome".into()))
                }))
            }
            State::Start | State::Done => Next::Finish(Err(crate::error::UsageError(
                "replies after the end".into(),
            )
            .into())),
        }
    }
}
