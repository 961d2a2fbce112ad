//! Per-user operations over the user's index: logout everywhere, list
//! devices, sign out one device. Each is two rounds whatever the number of
//! sessions: read the index, then act on every member in one pipeline.
//!
//! ```text
//!   DestroyAll:  AwaitIndex [ZRANGE] ──► AwaitRevoke [revoke × N, WAIT?] ──► Done(Destroyed)
//!   List:        AwaitIndex [prune, ZRANGE] ──► AwaitRecords [HMGET × N] ──► Done(Devices)
//!   DestroyOne:  AwaitIndex [ZRANGE] ──► AwaitRevoke [revoke, WAIT?] ──► Done(Destroyed)
//! ```

use crate::engine::Ctx;
use crate::error::{Error, InputError, UsageError};
use crate::expiry::{UnixMillis, expires_at, is_expired};
use crate::keys::UserId;
use crate::ops::{Machine, Next, int, members, revocations, unexpected};
use crate::outcome::{Device, Outcome};
use crate::record::{AUTH_AT, CREATED, DEADLINE, ROTATED, TOUCH, USER};
use crate::step::{Command, Reply};

/// The opaque device handle of an index member.
pub(crate) fn handle(member: &str) -> String {
    crate::keys::tagged_hash("session-logic device", member)
}

fn zrange(ctx: &Ctx, user: &UserId) -> Command {
    Command::new([
        b"ZRANGE".to_vec(),
        ctx.keys.user_key(user).into_bytes(),
        b"0".to_vec(),
        b"-1".to_vec(),
    ])
}

/// `[revoke member…, WAIT?]`: each session is deleted only while it still
/// belongs to `user`. Index entries are left to deadline pruning, so a lost
/// or partial round can never leave a live session unindexed.
fn revoke_round(ctx: &Ctx, user: &UserId, targets: &[String]) -> Vec<Command> {
    let mut cmds = revocations(ctx, user, targets);
    if !cmds.is_empty() {
        cmds.extend(ctx.wait());
    }
    cmds
}

/// Sum the revoke replies of a revoke round and check its WAIT.
fn revoked(ctx: &Ctx, replies: &[Reply], targets: usize) -> Result<u64, Error> {
    let mut count = 0u64;
    for r in replies.iter().take(targets) {
        count = count.saturating_add(u64::try_from(int("revoke", Some(r))?).unwrap_or(0));
    }
    if ctx.wait().is_some() {
        ctx.check_wait(replies.get(targets))?;
    }
    Ok(count)
}

#[derive(Debug)]
pub(crate) struct DestroyAll {
    user: UserId,
    keep: Option<String>,
    targets: Option<usize>,
    /// Members given up front (found by a scan): skip the index read.
    preset: Option<Vec<String>>,
}

impl DestroyAll {
    pub(crate) fn new(user: UserId, keep: Option<String>, now: UnixMillis) -> DestroyAll {
        let _ = now; // the index is read whole: expired members are deleted too
        DestroyAll {
            user,
            keep,
            targets: None,
            preset: None,
        }
    }

    /// Revoke exactly these members (one round), without reading the index.
    pub(crate) fn members(user: UserId, members: Vec<String>) -> DestroyAll {
        DestroyAll {
            user,
            keep: None,
            targets: None,
            preset: Some(members),
        }
    }

    /// The revoke round for `all` minus the kept and non-session members,
    /// or the outcome when nothing is left to revoke.
    fn revoke(&mut self, ctx: &Ctx, all: Vec<String>) -> Next {
        let targets: Vec<String> = all
            .into_iter()
            .filter(|m| Some(m) != self.keep.as_ref() && ctx.keys.is_member(m))
            .collect();
        if targets.is_empty() {
            return Next::Finish(Ok(Outcome::Destroyed {
                cookie: None,
                count: 0,
            }));
        }
        self.targets = Some(targets.len());
        Next::Send(revoke_round(ctx, &self.user, &targets))
    }
}

impl Machine for DestroyAll {
    fn start(&mut self, ctx: &Ctx) -> Next {
        match self.preset.take() {
            Some(members) => self.revoke(ctx, members),
            None => Next::Send(vec![zrange(ctx, &self.user)]),
        }
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        match self.targets {
            None => match members("ZRANGE", replies.first()) {
                Ok(all) => self.revoke(ctx, all),
                Err(e) => Next::Finish(Err(e)),
            },
            Some(n) => Next::Finish(revoked(ctx, &replies, n).map(|count| Outcome::Destroyed {
                cookie: None,
                count,
            })),
        }
    }
}

#[derive(Debug)]
pub(crate) struct List {
    user: UserId,
    current: Option<String>,
    now: UnixMillis,
    members: Option<Vec<String>>,
}

impl List {
    pub(crate) fn new(user: UserId, current: Option<String>, now: UnixMillis) -> List {
        List {
            user,
            current,
            now,
            members: None,
        }
    }

    fn device(&self, ctx: &Ctx, member: &str, reply: &Reply) -> Result<Option<Device>, Error> {
        let Reply::Array(items) = reply else {
            return Err(unexpected("HMGET", reply));
        };
        let field = |i: usize| -> Option<&str> {
            match items.get(i) {
                Some(Reply::Bulk(b)) => std::str::from_utf8(b).ok(),
                _ => None,
            }
        };
        let num = |i: usize| field(i).and_then(|s| s.parse::<u64>().ok()).map(UnixMillis);
        // A marker, a vanished or corrupt record, or one re-bound to another
        // user is not a device of this user.
        let (Some(created), Some(touch), Some(deadline)) = (num(0), num(1), num(2)) else {
            return Ok(None);
        };
        if field(4).is_some() || field(5) != Some(self.user.as_str()) {
            return Ok(None);
        }
        let idle = ctx.config.idle_timeout_ms;
        if is_expired(self.now, touch, idle, deadline) {
            return Ok(None);
        }
        Ok(Some(Device {
            handle: handle(member),
            created,
            last_seen: touch,
            expires_at: expires_at(touch, idle, deadline),
            auth_at: num(3),
            current: self.current.as_deref() == Some(member),
        }))
    }
}

impl Machine for List {
    fn start(&mut self, ctx: &Ctx) -> Next {
        let key = ctx.keys.user_key(&self.user).into_bytes();
        let prune = Command::new([
            b"ZREMRANGEBYSCORE".to_vec(),
            key,
            b"-inf".to_vec(),
            self.now.0.to_string().into_bytes(),
        ]);
        Next::Send(vec![prune, zrange(ctx, &self.user)])
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        match self.members.take() {
            None => {
                if let Err(e) = int("ZREMRANGEBYSCORE", replies.first()) {
                    return Next::Finish(Err(e));
                }
                let all: Vec<String> = match members("ZRANGE", replies.get(1)) {
                    Ok(m) => m.into_iter().filter(|m| ctx.keys.is_member(m)).collect(),
                    Err(e) => return Next::Finish(Err(e)),
                };
                if all.is_empty() {
                    return Next::Finish(Ok(Outcome::Devices(Vec::new())));
                }
                let fields = [CREATED, TOUCH, DEADLINE, AUTH_AT, ROTATED, USER];
                let cmds = all
                    .iter()
                    .map(|m| {
                        let mut argv = vec![b"HMGET".to_vec(), ctx.keys.member_key(m).into_bytes()];
                        argv.extend(fields.iter().map(|f| f.as_bytes().to_vec()));
                        Command(argv)
                    })
                    .collect();
                self.members = Some(all);
                Next::Send(cmds)
            }
            Some(all) => {
                if replies.len() != all.len() {
                    return Next::Finish(Err(UsageError(
                        "HMGET replies do not match members".into(),
                    )
                    .into()));
                }
                let mut devices = Vec::new();
                for (m, r) in all.iter().zip(&replies) {
                    match self.device(ctx, m, r) {
                        Ok(Some(d)) => devices.push(d),
                        Ok(None) => {}
                        Err(e) => return Next::Finish(Err(e)),
                    }
                }
                devices.sort_by(|a, b| (a.created, &a.handle).cmp(&(b.created, &b.handle)));
                Next::Finish(Ok(Outcome::Devices(devices)))
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct DestroyOne {
    user: UserId,
    handle: String,
    target: Option<String>,
}

impl DestroyOne {
    pub(crate) fn new(user: UserId, handle: String, now: UnixMillis) -> DestroyOne {
        let _ = now;
        DestroyOne {
            user,
            handle,
            target: None,
        }
    }
}

impl Machine for DestroyOne {
    fn start(&mut self, ctx: &Ctx) -> Next {
        let ok = self.handle.len() == 22
            && self
                .handle
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Next::Finish(Err(InputError::new(
                "device handle",
                "must be the 22-character handle from the device list",
            )
            .into()));
        }
        Next::Send(vec![zrange(ctx, &self.user)])
    }

    fn on_replies(&mut self, ctx: &Ctx, replies: Vec<Reply>) -> Next {
        if self.target.is_some() {
            return Next::Finish(revoked(ctx, &replies, 1).map(|count| Outcome::Destroyed {
                cookie: None,
                count,
            }));
        }
        let all = match members("ZRANGE", replies.first()) {
            Ok(m) => m,
            Err(e) => return Next::Finish(Err(e)),
        };
        let Some(member) = all
            .into_iter()
            .find(|m| ctx.keys.is_member(m) && handle(m) == self.handle)
        else {
            return Next::Finish(Ok(Outcome::Destroyed {
                cookie: None,
                count: 0,
            }));
        };
        let cmds = revoke_round(ctx, &self.user, std::slice::from_ref(&member));
        self.target = Some(member);
        Next::Send(cmds)
    }
}
