//! save (and touch): write exactly what the request changed.
//!
//! ```text
//!   start ── rotated ─────────────────────────────────► Done(Rotated)
//!     │   ── new, empty ──────────────────────────────► Done(Saved), no cookie
//!     │   ── live, clean ─────────────────────────────► Done(Saved)
//!     │   ── live, rotate_every due ──► (regenerate, keeping the deadline)
//!     │   ── too large ───────────────────────────────► Done(TooLarge), nothing sent
//!     ├─ new with data ──► AwaitCreate ── 1 ──► [AwaitRevoke] ──► Done(Saved + cookie)
//!     │                        └── 0 (collision) ──► AwaitCreate (derived ID)
//!     └─ live, dirty ───► AwaitSave ── rev ──► [AwaitRevoke] ──► Done(Saved)
//!                              ├── 0 (gone) ───────────────────► Done(Gone), no cookie
//!                              └── -1 (rotated) ───────────────► Done(Rotated)
//! ```
//!
//! Sessions beyond the per-user cap (named by the index script) are revoked
//! on every path, including Gone and Rotated: the cap never silently lapses.

use crate::engine::Ctx;
use crate::error::{Error, InputError, UsageError};
use crate::expiry::UnixMillis;
use crate::id::Entropy;
use crate::keys::UserId;
use crate::ops::regenerate::Regenerate;
use crate::ops::write::{NewRecord, Touch, check_sizes, save_command};
use crate::ops::{Machine, Next, index_command, int, members, revocations};
use crate::outcome::Outcome;
use crate::record::{self, AUTH_AT, Meta, USER};
use crate::session::{Change, Session, Status};
use crate::step::{Command, Reply};

#[derive(Debug)]
enum State {
    Start,
    AwaitCreate {
        rec: NewRecord,
    },
    /// The new user's index entry, alone; the save follows.
    AwaitIndex {
        save: Command,
    },
    /// The save (any index entry was a round before).
    AwaitSave,
    AwaitRevoke(Outcome),
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
    /// The user whose index this save adds to (and whose cap applies).
    indexed: Option<UserId>,
    /// Index entries beyond the cap, to revoke before finishing.
    over_cap: Vec<String>,
}

impl Save {
    pub(crate) fn new(session: Session, entropy: Entropy, now: UnixMillis) -> Save {
        Save::build(session, Some(entropy), now, false)
    }

    pub(crate) fn touch(session: Session, now: UnixMillis) -> Save {
        Save::build(session, None, now, true)
    }

    fn build(
        session: Session,
        entropy: Option<Entropy>,
        now: UnixMillis,
        touch_only: bool,
    ) -> Save {
        Save {
            session: Some(session),
            entropy,
            now,
            touch_only,
            state: State::Start,
            indexed: None,
            over_cap: Vec::new(),
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
        let cmds = create_round(ctx, &rec, &session, now);
        self.indexed = session.user.clone();
        self.session = Some(session);
        self.state = State::AwaitCreate { rec };
        Next::Send(cmds)
    }

    fn update(&mut self, ctx: &Ctx, session: Session) -> Next {
        if let Err(e) = check_sizes(ctx, &session, false) {
            return Next::Finish(Err(e));
        }
        let (Some(id), Some(meta)) = (&session.id, &session.meta) else {
            return Next::Finish(Err(InputError::new(
                "session",
                "live session without id or metadata",
            )
            .into()));
        };
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
        let touch = if self.touch_only {
            Touch::Now
        } else {
            Touch::Throttled
        };
        let save = save_command(ctx, &ctx.keys.session_key(id), sets, deletes, now, touch);
        // A previous user's index keeps its entry until pruned; revoke checks
        // `$user`, so that stale entry can never log this session out. The
        // new user's entry gets a round of its own before the write that
        // binds the session: in one round, a Cluster could apply the write
        // and lose the entry (different nodes), leaving a session the
        // browser holds bound to the user but out of reach of logout
        // everywhere. Binding without a regenerate is rare; a sign-in that
        // regenerates still costs one round (`create_round`: the new ID's
        // cookie is only issued once both commands succeeded).
        if session.user_changed
            && let Some(user) = &session.user
        {
            let index = index_command(ctx, user, meta.deadline, ctx.keys.member(id), now);
            self.indexed = Some(user.clone());
            self.session = Some(session);
            self.state = State::AwaitIndex { save };
            return Next::Send(vec![index]);
        }
        self.session = Some(session);
        self.state = State::AwaitSave;
        Next::Send(vec![save])
    }

    /// Remember the sessions an index reply names as over the cap.
    fn note_over_cap(&mut self, reply: Option<&Reply>) -> Result<(), Error> {
        if self.indexed.is_some() {
            self.over_cap.extend(members("index", reply)?);
        }
        Ok(())
    }

    /// Revoke the sessions beyond the cap (if any), then finish with `outcome`.
    fn finish(&mut self, ctx: &Ctx, outcome: Outcome) -> Next {
        let cmds: Vec<Command> = match &self.indexed {
            Some(user) => revocations(ctx, user, &self.over_cap),
            None => Vec::new(),
        };
        if cmds.is_empty() {
            return Next::Finish(Ok(outcome));
        }
        self.state = State::AwaitRevoke(outcome);
        Next::Send(cmds)
    }
}

/// `[index add, create]`, or `[create]` without a user. The index entry
/// goes first: if the round is cut short after its first command, an entry
/// without a record is harmless (revoke finds nothing), while a bound
/// record without its entry would escape logout-everywhere.
pub(crate) fn create_round(
    ctx: &Ctx,
    rec: &NewRecord,
    session: &Session,
    now: UnixMillis,
) -> Vec<Command> {
    let mut cmds = Vec::with_capacity(2);
    if let Some(user) = &session.user {
        cmds.push(index_command(
            ctx,
            user,
            rec.meta.deadline,
            rec.member(ctx),
            now,
        ));
    }
    cmds.push(rec.command(ctx, session, now));
    cmds
}

/// Where the replies of a [`create_round`] (or a save with an index
/// addition) are: `(write, index)`.
pub(crate) fn write_slots(indexed: bool) -> (usize, usize) {
    if indexed { (1, 0) } else { (0, 1) }
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
            State::AwaitCreate { mut rec } => {
                let session = self.take();
                let (write_at, index_at) = write_slots(self.indexed.is_some());
                let created = match int("create", replies.get(write_at)) {
                    Ok(n) => n,
                    Err(e) => return Next::Finish(Err(e)),
                };
                if let Err(e) = self.note_over_cap(replies.get(index_at)) {
                    return Next::Finish(Err(e));
                }
                if created != 1 {
                    // The collided member stays in the index until pruned;
                    // revoke checks `$user`, so it can never hurt its owner.
                    if let Err(e) = rec.retry(ctx) {
                        return Next::Finish(Err(e));
                    }
                    let cmds = create_round(ctx, &rec, &session, now);
                    self.session = Some(session);
                    self.state = State::AwaitCreate { rec };
                    return Next::Send(cmds);
                }
                let cookie = ctx.set_cookie(&rec.id, rec.meta.deadline, now);
                let session = rec.into_session(session);
                self.over_cap.retain(|m| *m != ctx.keys.member_of(&session));
                self.finish(
                    ctx,
                    Outcome::Saved {
                        session,
                        cookie: Some(cookie),
                    },
                )
            }
            State::AwaitIndex { save } => {
                if let Err(e) = self.note_over_cap(replies.first()) {
                    return Next::Finish(Err(e));
                }
                self.state = State::AwaitSave;
                Next::Send(vec![save])
            }
            State::AwaitSave => {
                let mut session = self.take();
                let rev = match int("save", replies.first()) {
                    Ok(n) => n,
                    Err(e) => return Next::Finish(Err(e)),
                };
                let outcome = match rev {
                    -1 => {
                        let mut s = Session::fresh(false, None);
                        s.status = Status::Rotated;
                        Outcome::Rotated(s)
                    }
                    // No removal cookie: a slow request with a renewed ID
                    // would delete the browser's new cookie, and a dead
                    // cookie is harmless (it loads as unknown).
                    n if n <= 0 => Outcome::Gone { cookie: None },
                    n => {
                        if let Some(meta) = session.meta.as_mut() {
                            // Advance the snapshot's revision only when no
                            // other write landed since it was read: a stale
                            // snapshot must stay detectably stale, so that a
                            // later renewal merges instead of overwriting.
                            if u64::try_from(n).ok() == meta.rev.checked_add(1) {
                                meta.rev += 1;
                            }
                            // Mirror save.lua: the touch moves when it is
                            // due (always for an explicit touch).
                            let interval = if self.touch_only {
                                0
                            } else {
                                ctx.config.touch_interval_ms
                            };
                            if now.since(meta.touch) >= interval {
                                meta.touch = meta.touch.max(now);
                            }
                        }
                        session.mark_saved();
                        Outcome::Saved {
                            session,
                            cookie: None,
                        }
                    }
                };
                self.finish(ctx, outcome)
            }
            State::AwaitRevoke(outcome) => {
                // A failed revocation is reported so the cap is not silently exceeded.
                for r in &replies {
                    if let Err(e) = int("revoke", Some(r)) {
                        return Next::Finish(Err(e));
                    }
                }
                Next::Finish(Ok(outcome))
            }
            State::Start | State::Done => {
                Next::Finish(Err(UsageError("replies after the end".into()).into()))
            }
        }
    }
}
