//! Requests that run on after their frame (contract sections 5 and 6): what
//! they wait for, blocking file work going out to the pool and its results
//! coming back as replies, an exec's steps and end, the quota recount after an
//! exec, and letting go of a job when its connection closes.

use super::ops::OpError;
use super::{Next, Services, Session, Wait, exec, files};
use crate::outbuf::OutBuf;
use crate::pool::{Task, Ticket};
use std::os::fd::RawFd;

/// A request that runs across loop turns.
pub(super) enum Job {
    /// Blocking work for the pool: not queued yet (`task`, the queue was full)
    /// or queued under `ticket`; `then` is what its result becomes.
    Pool {
        id: Option<u64>,
        ticket: Option<Ticket>,
        task: Option<Task<files::Done>>,
        then: Then,
    },
    Exec {
        id: Option<u64>,
        exec: exec::Exec,
    },
    /// A chat op waiting for the bus's answers (contract section 12).
    Bus {
        id: Option<u64>,
        awaited: super::chat::Awaited,
    },
}

/// What a pool result becomes, back on the loop.
pub(super) enum Then {
    /// The `ls` reply.
    Ls,
    /// The `sum` reply.
    Sum,
    /// The upload's rename (its data is hashed and on disk now), then its
    /// directory's flush.
    Put(Box<files::Upload>),
    /// The `put` reply (total, sha256), once the directory's flush is done.
    Stored(u64, [u8; 32]),
    /// The login's quota walk is done: the login completes (`Next::Authenticated`).
    Login(crate::proto::Limits),
    /// An exec's writes are counted: its connection serves on.
    Recount(files::Recount),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Pool { id, ticket, .. } => write!(f, "Pool {{ id: {id:?}, ticket: {ticket:?} }}"),
            Job::Exec { id, exec } => write!(f, "Exec {{ id: {id:?}, exec: {exec:?} }}"),
            Job::Bus { id, awaited } => write!(f, "Bus {{ id: {id:?}, awaited: {awaited:?} }}"),
        }
    }
}

impl Services {
    /// Starts the blocking-work threads; each finished task calls `wake` (the
    /// server's waker), after which [`Services::pool_ready`] says who resumes.
    pub fn start_pool(
        &mut self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<()> {
        self.pool.start(wake)
    }

    /// The keys of the connections whose pool work is done, to resume.
    pub fn pool_ready(&mut self, into: &mut Vec<usize>) {
        self.collect();
        into.append(&mut self.ready);
    }

    /// Moves the pool's finished work to `results`, noting whose it is in
    /// `ready` (with threads; inline, the connection goes on next turn by itself).
    /// Results nobody waits for (an upload's hash step; a connection that
    /// closed) are dropped.
    pub(super) fn collect(&mut self) {
        while let Some((ticket, done)) = self.pool.finished() {
            if let Some(key) = self.pooled.remove(&ticket) {
                self.results.insert(ticket, done);
                if self.pool.has_threads() {
                    self.ready.push(key);
                }
            } else if let Some(recount) = self.recounts.remove(&ticket) {
                self.recount_finished(recount, done);
            } else if let files::Done::Hashing = done {
                self.hash_steps = self.hash_steps.saturating_sub(1);
            }
            // A slot of the queue is free: those turned away try again (in order;
            // who finds it full again waits for the next result: a full queue
            // means results are coming).
            self.ready.extend(self.queue_waiters.drain(..));
        }
    }

    /// The job's deadline passed: an exec's child is killed (its reply follows
    /// when the loop sees it exit).
    pub fn expire(&mut self, session: &mut Session) {
        if let Some(Job::Exec { exec, .. }) = &mut session.job {
            exec.expire();
        }
    }

    /// Runs a step of the request in progress (after [`Next::Job`]).
    /// `Next::Continue` once it has ended and replied.
    pub fn resume(&mut self, session: &mut Session, out: &mut OutBuf) -> Next {
        let Some(job) = session.job.as_mut() else {
            return Next::Continue;
        };
        match job {
            Job::Exec { id, exec } => match self.exec.step(exec, out, *id) {
                exec::Step::Waiting => return Next::Job(Wait::Child),
                exec::Step::Again => return Next::Job(Wait::NextTurn),
                exec::Step::Done => {
                    // What the exec wrote counts toward the user's quota from its
                    // end: its connection's next requests wait for the recount.
                    session.job = None;
                    return match self.recount_start(session) {
                        Some((recount, task)) => {
                            self.send_to_pool(session, None, task, Then::Recount(recount))
                        }
                        None => Next::Continue,
                    };
                }
            },
            Job::Pool { ticket: None, .. } => {
                // The queue was full: try again.
                if let Some(Job::Pool {
                    id,
                    task: Some(task),
                    then,
                    ..
                }) = session.job.take()
                {
                    return self.send_to_pool(session, id, task, then);
                }
            }
            Job::Pool {
                ticket: Some(ticket),
                ..
            } => {
                self.collect();
                let Some(done) = self.results.remove(ticket) else {
                    return Next::Job(Wait::Pool); // not done yet
                };
                if let Some(Job::Pool { id, then, .. }) = session.job.take() {
                    return self.pool_done(session, out, id, then, done);
                }
            }
            Job::Bus { awaited, .. } => {
                let Some(answer) = self.bus_answers.remove(&awaited.ticket) else {
                    return Next::Job(Wait::Bus);
                };
                if let Some(Job::Bus { id, awaited }) = session.job.take() {
                    self.bus_done(session, out, id, awaited.op, answer);
                }
            }
        }
        session.job = None;
        Next::Continue
    }

    /// Hands blocking work to the pool; the connection waits for it (or, when the
    /// queue is full, for a free slot: backpressure, not a growing queue).
    pub(super) fn send_to_pool(
        &mut self,
        session: &mut Session,
        id: Option<u64>,
        task: Task<files::Done>,
        then: Then,
    ) -> Next {
        let (ticket, task, wait) = match self.pool.submit(task) {
            Ok(ticket) => {
                self.pooled.insert(ticket, session.chat.key);
                // A pool without threads has run it already: no wake-up will come.
                let wait = if self.pool.has_threads() {
                    Wait::Pool
                } else {
                    Wait::NextTurn
                };
                (Some(ticket), None, wait)
            }
            // The queue is full: wait for a result to come back (a slot is free
            // then; `collect` wakes the waiting in order), not spin every turn.
            Err(task) => {
                self.queue_waiters.push_back(session.chat.key);
                (None, Some(task), Wait::Pool)
            }
        };
        session.job = Some(Job::Pool {
            id,
            ticket,
            task,
            then,
        });
        Next::Job(wait)
    }

    /// What a pool result becomes: a reply (`ls`, `sum`, `put`), the next step
    /// of a `put` (its rename, then its directory's flush), a completed login, or
    /// a recount that is exact (or walks again).
    fn pool_done(
        &mut self,
        session: &mut Session,
        out: &mut OutBuf,
        id: Option<u64>,
        then: Then,
        done: files::Done,
    ) -> Next {
        use files::Done;
        let result = match (then, done) {
            (Then::Ls, Done::Listing(body)) => body.map(|body| files::write_listing(out, id, body)),
            (Then::Sum, Done::Hashed(sum)) => {
                sum.map(|(total, digest)| files::write_digest(out, id, total, &digest))
            }
            (Then::Put(upload), Done::Flushed(flushed)) => {
                match flushed.and_then(|digest| Ok((upload.commit()?, digest))) {
                    Ok(((total, flush), digest)) => {
                        let then = Then::Stored(total, digest);
                        return self.send_to_pool(session, id, flush, then);
                    }
                    Err(e) => Err(e),
                }
            }
            (Then::Stored(total, digest), Done::Synced(_)) => {
                files::write_digest(out, id, total, &digest);
                Ok(())
            }
            (Then::Login(limits), Done::Walked(stored)) => {
                if let (Ok(stored), Some(user)) = (stored, session.user.as_deref()) {
                    self.files.walked(user, stored);
                }
                return Next::Authenticated(limits);
            }
            (Then::Recount(recount), Done::Walked(walked)) => {
                // The count changed while it walked: walk again, still waiting.
                if let Some((again, task)) = self.files.recount_done(recount, walked) {
                    return self.send_to_pool(session, id, task, Then::Recount(again));
                }
                Ok(())
            }
            _ => Err(OpError::new(500, "blocking work came back mismatched")),
        };
        if let Err(e) = result {
            self.error(out, e.status, id, &e.message);
        }
        Next::Continue
    }

    /// The connection is closing with a job running: an exec's whole process tree
    /// is killed. When it is not reaped yet, `watch` is asked to watch a descriptor
    /// (the server registers it; [`Services::reap_orphans`] runs when it is
    /// readable); if it cannot, the program (already sent SIGKILL) is waited for here.
    pub fn release(&mut self, session: &mut Session, watch: impl FnOnce(RawFd) -> bool) {
        match session.job.take() {
            Some(Job::Exec { exec, .. }) => {
                self.exec.release(exec, watch);
                // Nobody waits for this recount: the connection is gone.
                if let Some((recount, task)) = self.recount_start(session) {
                    self.submit_recount(recount, task);
                }
            }
            // Its result, when it comes, is dropped (an upload's temp file goes
            // with the `Upload` here; a hash task holding it stops at its next read).
            Some(Job::Pool {
                ticket: Some(ticket),
                ..
            }) => {
                self.pooled.remove(&ticket);
                self.results.remove(&ticket);
            }
            Some(Job::Bus { awaited, .. }) => {
                self.bus_waits.remove(&awaited.ticket);
                self.bus_answers.remove(&awaited.ticket);
            }
            Some(Job::Pool { ticket: None, .. }) | None => {}
        }
    }

    /// An exec of the session's user ended: what it wrote beneath the root
    /// counts toward the quota (section 6). The tree is counted again on the
    /// pool; the count is exact once the walk is back (see `Files::recount_done`).
    fn recount_start(
        &mut self,
        session: &mut Session,
    ) -> Option<(files::Recount, Task<files::Done>)> {
        let user = session.user.as_deref()?;
        match self.files.recount_start(&mut session.files, user) {
            Ok(started) => started,
            Err(e) => {
                log::warn!("recounting {user}'s quota after an exec: {}", e.message);
                None
            }
        }
    }

    /// Queues a recount's walk (with no connection waiting for it); a full queue
    /// walks here, on the loop, rather than lose the count.
    fn submit_recount(&mut self, recount: files::Recount, task: Task<files::Done>) {
        match self.pool.submit(task) {
            Ok(ticket) => {
                self.recounts.insert(ticket, recount);
                if !self.pool.has_threads() {
                    self.collect();
                }
            }
            Err(task) => self.recount_finished(recount, task()),
        }
    }

    fn recount_finished(&mut self, recount: files::Recount, done: files::Done) {
        let files::Done::Walked(walked) = done else {
            return;
        };
        if let Some((again, task)) = self.files.recount_done(recount, walked) {
            self.submit_recount(again, task);
        }
    }

    /// Reaps the processes of killed execs that have exited.
    pub fn reap_orphans(&mut self) {
        self.exec.reap_orphans();
    }
}
