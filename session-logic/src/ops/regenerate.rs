//! regenerate: new ID, same data, in ONE round — create the new record and
//! retire the old one to a short-lived rotated marker in the same pipeline
//! (each script touches one key, so this is Cluster-safe). Failure is closed:
//! if the old session could not be retired, the new record is deleted again.
//!
//! ```text
//!   start ── rotated ──► Done(Rotated)      new ──► (save: create)
//!     │ live
//!     ▼
//!   AwaitMain [create new, retire old, index?, WAIT?]
//!     ├─ created + retired ─────────────► [AwaitEvict] ─► Done(Saved + cookie)
//!     ├─ collision + retired ──► AwaitRetry [create derived ID, fix index] ─┘
//!     ├─ created + not retired ──► AwaitCleanup [DEL new] ─► Done(Gone | error)
//!     └─ otherwise ─────────────────────────────────────────► Done(Gone | error)
//! ```

use crate::engine::Ctx;
use crate::error::{Error, UsageError};
use crate::expiry::UnixMillis;
use crate::id::Entropy;
use crate::ops::save::{Save, create_round};
use crate::ops::write::{NewRecord, check_sizes};
use crate::ops::{IndexChange, Machine, Next, evictions, index_command, int, members};
use crate::outcome::Outcome;
use crate::record::Meta;
use crate::scripts::Script;
use crate::session::{Session, Status};
use crate::step::{Command, Reply};

#[derive(Debug)]
enum State {
    Start,
    Create(Box<Save>),
    AwaitMain {
        rec: NewRecord,
        index_at: Option<usize>,
        wait_at: Option<usize>,
    },
    AwaitRetry {
        rec: NewRecord,
        indexed: bool,
    },
    AwaitCleanup(Result<Outcome, Error>),
    AwaitEvict(Outcome),
    Done,
}

#[derive(Debug)]
pub(crate) struct Regenerate {
    session: Option<Session>,
    entropy: Entropy,
    now: UnixMillis,
    /// `rotate_every` keeps the absolute deadline; sign-in starts a new one.
    keep_deadline: bool,
    state: State,
}

impl Regenerate {
    pub(crate) fn new(
        session: Session,
        entropy: Entropy,
        now: UnixMillis,
        keep_deadline: bool,
    ) -> Regenerate {
        Regenerate {
            session: Some(session),
            entropy,
            now,
            keep_deadline,
            state: State::Start,
        }
    }

    fn take(&mut self) -> Session {
        self.session
            .take()
            .unwrap_or_else(|| Session::fresh(false, None))
    }

    fn success(&mut self, ctx: &Ctx, rec: NewRecord, evicted: Vec<String>) -> Next {
        let session = self.take();
        let cookie = ctx.set_cookie(&rec.id, rec.meta.deadline, self.now);
        let outcome = Outcome::Saved {
            session: rec.into_session(session),
            cookie: Some(cookie),
        };
        if evicted.is_empty() {
            return Next::Finish(Ok(outcome));
        }
        self.state = State::AwaitEvict(outcome);
        Next::Send(evictions(ctx, &evicted))
    }
}

fn evicted_from(reply: Option<&Reply>, present: bool) -> Result<Vec<String>, Error> {
    if present {
        members("index", reply)
    } else {
        Ok(Vec::new())
    }
}

impl Machine for Regenerate {
    fn start(&mut self, ctx: &Ctx) -> Next {
        let mut session = self.take();
        match session.status {
            Status::Rotated => Next::Finish(Ok(Outcome::Rotated(session))),
            Status::New => {
                let mut save = Box::new(Save::new(session, self.entropy, self.now));
                let next = save.start(ctx);
                self.state = State::Create(save);
                next
            }
            Status::Live => {
                if let Err(e) = check_sizes(ctx, &session, true) {
                    return Next::Finish(Err(e));
                }
                let (Some(old_id), Some(old_meta)) = (session.id.clone(), session.meta.clone())
                else {
                    return Next::Finish(Err(crate::error::InputError::new(
                        "session",
                        "live session without id or metadata",
                    )
                    .into()));
                };
                let c = &ctx.config;
                let now = self.now;
                let deadline = if self.keep_deadline {
                    old_meta.deadline
                } else {
                    now.plus(c.absolute_lifetime_ms)
                };
                let meta = Meta {
                    created: now,
                    deadline,
                    touch: now,
                    rev: 1,
                    binding: old_meta.binding.clone(),
                };
                let mut rec = NewRecord::new(ctx, self.entropy, meta);
                // The new ID must differ from the old one, or retire (same
                // round) would turn the new record into a marker and report a
                // lost session as saved. Only repeated entropy gets here.
                if rec.id == old_id
                    && let Err(e) = rec.retry(ctx)
                {
                    return Next::Finish(Err(e));
                }
                let old_member = ctx.keys.member(&old_id);
                let mut cmds: Vec<Command> = vec![
                    rec.command(ctx, &session, now),
                    ctx.script(
                        Script::Retire,
                        &ctx.keys.session_key(&old_id),
                        vec![
                            now.0.to_string(),
                            c.idle_timeout_ms.to_string(),
                            now.plus(c.rotation_grace_ms).0.to_string(),
                        ],
                    ),
                ];
                if let Some(old_user) = session
                    .indexed_user
                    .as_ref()
                    .filter(|u| Some(*u) != session.user.as_ref())
                {
                    cmds.push(index_command(
                        ctx,
                        IndexChange {
                            user: old_user,
                            add: None,
                            remove: vec![old_member.clone()],
                        },
                        now,
                    ));
                }
                let index_at = session.user.as_ref().map(|user| {
                    cmds.push(index_command(
                        ctx,
                        IndexChange {
                            user,
                            add: Some((deadline, rec.member(ctx))),
                            remove: vec![old_member],
                        },
                        now,
                    ));
                    cmds.len() - 1
                });
                let wait_at = ctx.wait().map(|w| {
                    cmds.push(w);
                    cmds.len() - 1
                });
                // The old user's index (if any) is no longer ours to track.
                session.indexed_user = session.user.clone();
                self.session = Some(session);
                self.state = State::AwaitMain {
                    rec,
                    index_at,
                    wait_at,
                };
                Next::Send(cmds)
            }
        }
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        let now = self.now;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Create(mut save) => {
                let next = save.on_replies(ctx, replies);
                self.state = State::Create(save);
                next
            }
            State::AwaitMain {
                mut rec,
                index_at,
                wait_at,
            } => {
                let created = int("create", replies.first());
                let retired = int("retire", replies.get(1));
                let retired = match retired {
                    Ok(1) => Ok(()),
                    // 0: gone or expired, so the browser's cookie is dead too.
                    Ok(0) => Err(Ok(Outcome::Gone {
                        cookie: Some(ctx.removal_cookie()),
                    })),
                    // -1: a parallel request already rotated it; the browser
                    // holds that newer cookie, which we must not clobber.
                    Ok(_) => Err(Ok(Outcome::Gone { cookie: None })),
                    Err(e) => Err(Err(e)),
                };
                match (created, retired) {
                    (Ok(1), Ok(())) => {
                        let evicted = match evicted_from(
                            index_at.and_then(|i| replies.get(i)),
                            index_at.is_some(),
                        ) {
                            Ok(m) => m,
                            Err(e) => return Next::Finish(Err(e)),
                        };
                        if let Err(e) = wait_at.map_or(Ok(()), |i| ctx.check_wait(replies.get(i))) {
                            return Next::Finish(Err(e));
                        }
                        self.success(ctx, rec, evicted)
                    }
                    (Ok(_), Ok(())) => {
                        // Collision on the new key; the old one is already a marker.
                        let collided = rec.member(ctx);
                        if let Err(e) = rec.retry(ctx) {
                            return Next::Finish(Err(e));
                        }
                        let session = self.take();
                        let cmds =
                            create_round(ctx, &rec, &session, index_at.map(|_| collided), now);
                        self.session = Some(session);
                        self.state = State::AwaitRetry {
                            rec,
                            indexed: index_at.is_some(),
                        };
                        Next::Send(cmds)
                    }
                    (Err(e), Ok(())) => Next::Finish(Err(e)),
                    (Ok(1), Err(result)) => {
                        // Fail closed: undo the new record (and its index entry).
                        let mut cmds = vec![Command::new([
                            b"DEL".to_vec(),
                            ctx.keys.member_key(&rec.member(ctx)).into_bytes(),
                        ])];
                        if let Some(user) = self.session.as_ref().and_then(|s| s.user.clone()) {
                            cmds.push(index_command(
                                ctx,
                                IndexChange {
                                    user: &user,
                                    add: None,
                                    remove: vec![rec.member(ctx)],
                                },
                                now,
                            ));
                        }
                        self.state = State::AwaitCleanup(result);
                        Next::Send(cmds)
                    }
                    (_, Err(result)) => Next::Finish(result),
                }
            }
            State::AwaitRetry { mut rec, indexed } => {
                let created = match int("create", replies.first()) {
                    Ok(n) => n,
                    Err(e) => return Next::Finish(Err(e)),
                };
                let evicted = match evicted_from(replies.get(1), indexed) {
                    Ok(m) => m,
                    Err(e) => return Next::Finish(Err(e)),
                };
                if created == 1 {
                    return self.success(ctx, rec, evicted);
                }
                let collided = rec.member(ctx);
                if let Err(e) = rec.retry(ctx) {
                    return Next::Finish(Err(e));
                }
                let session = self.take();
                let cmds = create_round(ctx, &rec, &session, indexed.then_some(collided), now);
                self.session = Some(session);
                self.state = State::AwaitRetry { rec, indexed };
                Next::Send(cmds)
            }
            // Best effort: an orphan left by a failed DEL expires on its TTL.
            State::AwaitCleanup(result) => Next::Finish(result),
            State::AwaitEvict(outcome) => {
                for r in &replies {
                    if let Err(e) = int("evict", Some(r)) {
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

#[cfg(test)]
mod tests {
    use crate::memory::Memory;
    use crate::{Config, Engine, Entropy, Op, Outcome, Step, UnixMillis};

    fn run(mem: &mut Memory, mut op: Op, now: UnixMillis) -> Outcome {
        loop {
            match op.poll() {
                Step::Round(r) => op.handle_replies(mem.execute_round(&r, now)),
                Step::Done(r) => return r.unwrap(),
            }
        }
    }

    #[test]
    fn regenerate_with_repeated_entropy_never_reports_a_lost_session_as_saved() {
        let engine = Engine::new(Config::default()).unwrap();
        let mut mem = Memory::new();
        let t0 = UnixMillis(1_700_000_000_000);
        let mut s = engine.new_session();
        s.insert("a", serde_json::json!(1)).unwrap();
        let saved = run(&mut mem, engine.save(s, Entropy([7; 32]), t0), t0);
        let s = saved.into_session().unwrap();
        // Same entropy again (a broken RNG), after the session has expired.
        let later = t0.plus(engine.config().idle_timeout_ms);
        let out = run(
            &mut mem,
            engine.regenerate(s, Entropy([7; 32]), later),
            later,
        );
        assert!(matches!(out, Outcome::Gone { .. }), "{out:?}");
    }
}
