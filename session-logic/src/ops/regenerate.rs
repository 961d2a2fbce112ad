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
//!     ├─ created + retired ──► [AwaitMerge if a parallel save landed] ──► [AwaitRevoke] ─► Done(Saved + cookie)
//!     ├─ collision + retired ──► AwaitRetry [create derived ID, fix index] ─┘
//!     ├─ created + not retired ──► AwaitCleanup [DEL new, revoke over-cap] ─► Done(Gone | error)
//!     └─ otherwise ─────────────────────────────────────────► Done(Gone | error)
//! ```

use crate::engine::Ctx;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{DecodeError, Error, InputError, UsageError};
use crate::expiry::UnixMillis;
use crate::id::Entropy;
use crate::keys::UserId;
use crate::ops::save::{Save, create_round, write_slots};
use crate::ops::write::{NewRecord, Touch, check_sizes, save_command};
use crate::ops::{Machine, Next, index_command, int, members, revocations};
use crate::outcome::Outcome;
use crate::record::{self, Meta, Stored};
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
    },
    /// A parallel save landed on the old record after our load; its changes
    /// are being merged into the new record.
    AwaitMerge {
        rec: NewRecord,
    },
    /// The final outcome is known; the last round (cleanup, revocations) is out.
    AwaitLast(Result<Outcome, Error>),
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
    /// The user whose index gets the new member (and whose cap applies).
    indexed: Option<UserId>,
    /// Index entries beyond the cap, revoked on every path.
    over_cap: Vec<String>,
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
            indexed: None,
            over_cap: Vec::new(),
        }
    }

    fn take(&mut self) -> Session {
        self.session
            .take()
            .unwrap_or_else(|| Session::fresh(false, None))
    }

    fn note_over_cap(&mut self, reply: Option<&Reply>) -> Result<(), Error> {
        if self.indexed.is_some() {
            self.over_cap.extend(members("index", reply)?);
        }
        Ok(())
    }

    /// Send `extra` plus the over-cap revocations, then finish with `result`.
    fn finish(
        &mut self,
        ctx: &Ctx,
        mut cmds: Vec<Command>,
        result: Result<Outcome, Error>,
    ) -> Next {
        if let Some(user) = &self.indexed {
            cmds.extend(revocations(ctx, user, &self.over_cap));
        }
        if cmds.is_empty() {
            return Next::Finish(result);
        }
        self.state = State::AwaitLast(result);
        Next::Send(cmds)
    }

    /// Changes a parallel request saved to the old record after our load, as
    /// a save on the new key: keys this request did not touch take the
    /// retired record's values (different keys both survive; the same key is
    /// last-writer-wins, and this request wrote last).
    fn merge(
        &mut self,
        ctx: &Ctx,
        rec: &NewRecord,
        theirs: BTreeMap<String, Value>,
    ) -> Option<Command> {
        let session = self.session.as_mut()?;
        let mut sets = Vec::new();
        let mut deletes = Vec::new();
        for (k, v) in &theirs {
            if !session.changes.contains_key(k) && session.data.get(k) != Some(v) {
                sets.push((k.clone(), record::encode_value(v)));
                session.data.insert(k.clone(), v.clone());
            }
        }
        let gone: Vec<String> = session
            .data
            .keys()
            .filter(|k| !session.changes.contains_key(*k) && !theirs.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            session.data.remove(&k);
            deletes.push(k);
        }
        if sets.is_empty() && deletes.is_empty() {
            return None;
        }
        Some(save_command(
            ctx,
            &ctx.keys.member_key(&rec.member(ctx)),
            sets,
            deletes,
            self.now,
            Touch::Throttled,
        ))
    }

    fn success(&mut self, ctx: &Ctx, rec: NewRecord) -> Next {
        let session = self.take();
        let cookie = ctx.set_cookie(&rec.id, rec.meta.deadline, self.now);
        let new_member = rec.member(ctx);
        self.over_cap.retain(|m| *m != new_member);
        let outcome = Outcome::Saved {
            session: rec.into_session(session),
            cookie: Some(cookie),
        };
        self.finish(ctx, Vec::new(), Ok(outcome))
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
                    return Next::Finish(Err(InputError::new(
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
                // The index entry goes first (see `create_round`): a round
                // cut short must never leave the new, bound record unindexed.
                let mut cmds: Vec<Command> = session
                    .user
                    .as_ref()
                    .map(|user| index_command(ctx, user, deadline, rec.member(ctx), now))
                    .into_iter()
                    .collect();
                let base = cmds.len();
                cmds.extend([
                    rec.command(ctx, &session, now),
                    ctx.script(
                        Script::Retire,
                        &ctx.keys.session_key(&old_id),
                        vec![
                            now.0.to_string(),
                            c.idle_timeout_ms.to_string(),
                            now.plus(c.rotation_grace_ms).0.to_string(),
                            old_meta.rev.to_string(),
                        ],
                    ),
                ]);
                // Only an addition: the old member stays in the index until
                // pruned, so a lost retire can never leave a live, unindexed
                // session behind.
                let index_at = (base == 1).then_some(0);
                let wait_at = ctx.wait().map(|w| {
                    cmds.push(w);
                    cmds.len() - 1
                });
                self.indexed = session.user.clone();
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
                let base = usize::from(index_at.is_some());
                let created = int("create", replies.get(base));
                if let Some(i) = index_at
                    && let Err(e) = self.note_over_cap(replies.get(i))
                {
                    return Next::Finish(Err(e));
                }
                let mut moved_on = None;
                let retired = match replies.get(base + 1) {
                    Some(r @ Reply::Array(_)) => match record::decode(r) {
                        Ok(Stored::Live { data, .. }) => {
                            moved_on = Some(data);
                            Ok(1)
                        }
                        Ok(_) => Err(DecodeError::new(
                            "retire reply",
                            "retired record is not a live session",
                        )
                        .into()),
                        Err(e) => Err(e.into()),
                    },
                    other => int("retire", other),
                };
                let retired = match retired {
                    Ok(1) => Ok(()),
                    // 0: gone, expired or a stale marker; -1: a parallel
                    // request already rotated it. Never a removal cookie: the
                    // browser may hold a newer cookie we must not clobber.
                    Ok(_) => Err(Ok(Outcome::Gone { cookie: None })),
                    Err(e) => Err(Err(e)),
                };
                match (created, retired) {
                    (Ok(1), Ok(())) => {
                        if let Err(e) = wait_at.map_or(Ok(()), |i| ctx.check_wait(replies.get(i))) {
                            return self.finish(ctx, Vec::new(), Err(e));
                        }
                        match moved_on.and_then(|theirs| self.merge(ctx, &rec, theirs)) {
                            Some(cmd) => {
                                self.state = State::AwaitMerge { rec };
                                Next::Send(vec![cmd])
                            }
                            None => self.success(ctx, rec),
                        }
                    }
                    (Ok(_), Ok(())) => {
                        // Collision on the new key; the old one is already a marker.
                        if let Err(e) = rec.retry(ctx) {
                            return self.finish(ctx, Vec::new(), Err(e));
                        }
                        let session = self.take();
                        let cmds = create_round(ctx, &rec, &session, now);
                        self.session = Some(session);
                        self.state = State::AwaitRetry { rec };
                        Next::Send(cmds)
                    }
                    (Err(e), Ok(())) => self.finish(ctx, Vec::new(), Err(e)),
                    (Ok(1), Err(result)) => {
                        // Fail closed: undo the new record. Its index entry
                        // outlives it harmlessly until pruned.
                        let del = Command::new([
                            b"DEL".to_vec(),
                            ctx.keys.member_key(&rec.member(ctx)).into_bytes(),
                        ]);
                        self.finish(ctx, vec![del], result)
                    }
                    (_, Err(result)) => self.finish(ctx, Vec::new(), result),
                }
            }
            State::AwaitMerge { rec } => match int("save", replies.first()) {
                Ok(rev) if rev > 0 => {
                    let mut rec = rec;
                    rec.meta.rev = u64::try_from(rev).unwrap_or(rec.meta.rev);
                    self.success(ctx, rec)
                }
                // The brand-new record vanished within the same request.
                Ok(_) => self.finish(ctx, Vec::new(), Ok(Outcome::Gone { cookie: None })),
                Err(e) => self.finish(ctx, Vec::new(), Err(e)),
            },
            State::AwaitRetry { mut rec } => {
                let (write_at, index_at) = write_slots(self.indexed.is_some());
                let created = match int("create", replies.get(write_at)) {
                    Ok(n) => n,
                    Err(e) => return self.finish(ctx, Vec::new(), Err(e)),
                };
                if let Err(e) = self.note_over_cap(replies.get(index_at)) {
                    return Next::Finish(Err(e));
                }
                if created == 1 {
                    return self.success(ctx, rec);
                }
                if let Err(e) = rec.retry(ctx) {
                    return self.finish(ctx, Vec::new(), Err(e));
                }
                let session = self.take();
                let cmds = create_round(ctx, &rec, &session, now);
                self.session = Some(session);
                self.state = State::AwaitRetry { rec };
                Next::Send(cmds)
            }
            // A failed cleanup DEL or revocation is reported rather than
            // ignored (an orphan record would still expire on its TTL, but a
            // missed revocation would silently exceed the per-user cap).
            State::AwaitLast(result) => {
                for r in &replies {
                    if let Err(e) = int("cleanup", Some(r)) {
                        return Next::Finish(Err(e));
                    }
                }
                Next::Finish(result)
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
