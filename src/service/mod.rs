//! The service layer: takes decoded frames from a connection and writes replies.
//! Sans-IO: it sees headers, body bytes and an output buffer, never a socket or
//! the poller. This file holds the op table, what each answer asks of the
//! connection ([`Next`]), and what the services keep; the handshake and request
//! dispatch live in `handshake.rs` and `requests.rs`.

pub mod chat;
pub mod exec;
pub mod files;
mod handshake;
pub mod ops;
pub mod requests;
pub mod stats;

use crate::auth::{Nonce, Users};
use crate::config::Config;
use crate::pool::{Pool, Task, Ticket};
use crate::proto::Limits;
use stats::Stats;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::Instant;

/// Every op the server knows. Adding an op: a variant, its name, its body policy, a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Auth,
    Ping,
    Echo,
    Upper,
    Stamp,
    Time,
    Stats,
    Pwd,
    Cd,
    Ls,
    Mkdir,
    Rm,
    Put,
    Get,
    Sum,
    Exec,
    Join,
    Leave,
    Say,
    Dm,
}

impl Op {
    pub const ALL: [Op; 20] = [
        Op::Auth,
        Op::Ping,
        Op::Echo,
        Op::Upper,
        Op::Stamp,
        Op::Time,
        Op::Stats,
        Op::Pwd,
        Op::Cd,
        Op::Ls,
        Op::Mkdir,
        Op::Rm,
        Op::Put,
        Op::Get,
        Op::Sum,
        Op::Exec,
        Op::Join,
        Op::Leave,
        Op::Say,
        Op::Dm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Auth => "auth",
            Op::Ping => "ping",
            Op::Echo => "echo",
            Op::Upper => "upper",
            Op::Stamp => "stamp",
            Op::Time => "time",
            Op::Stats => "stats",
            Op::Pwd => "pwd",
            Op::Cd => "cd",
            Op::Ls => "ls",
            Op::Mkdir => "mkdir",
            Op::Rm => "rm",
            Op::Put => "put",
            Op::Get => "get",
            Op::Sum => "sum",
            Op::Exec => "exec",
            Op::Join => "join",
            Op::Leave => "leave",
            Op::Say => "say",
            Op::Dm => "dm",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Ops that need their whole body in memory (bounded by `--max-body`).
    pub fn buffers_body(self) -> bool {
        matches!(self, Op::Echo | Op::Upper | Op::Stamp | Op::Say | Op::Dm)
    }

    /// The stateless ops of contract section 4 (served over every transport).
    pub fn is_stateless(self) -> bool {
        matches!(
            self,
            Op::Ping | Op::Echo | Op::Upper | Op::Stamp | Op::Time | Op::Stats
        )
    }
}

/// What the connection should do after the services handled a frame event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Authentication succeeded: these are the connection's limits from now on.
    Authenticated(Limits),
    /// The request goes on after its frame (a `sum`, an `exec`): the requests
    /// behind it wait, in order, until [`Services::resume`] says it ended.
    Job(Wait),
    /// Close the connection politely (the reply saying why is already queued).
    Close(&'static str),
}

/// What a running request waits for before [`Services::resume`] is called again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: run the next step next turn (a `sum` hashing a chunk per turn).
    NextTurn,
    /// Its blocking work on the pool ([`Services::pool_ready`] names the
    /// connections whose work is done: an `ls`, a `sum`, a `put`'s fsync).
    Pool,
    /// Its child's descriptors ([`Session::watched`]) to be ready (an `exec`).
    /// Whatever it waits for, a job may have a deadline ([`Session::job_deadline`]).
    Child,
}

/// What the services keep per connection.
#[derive(Debug, Default)]
pub struct Session {
    /// The authenticated user; `None` during the handshake.
    pub user: Option<String>,
    /// The nonce of our hello.
    nonce: Nonce,
    /// The request whose body is arriving.
    body: Body,
    /// The file service's per-connection state (current directory).
    files: files::FileSession,
    /// A request still running after its frame (holds back the ones behind it).
    job: Option<Job>,
    /// The chat service's per-connection state (its key, its rooms).
    chat: chat::Member,
}

impl Session {
    /// A session for the connection the chat service names `key` (its slab key).
    pub fn new(key: usize) -> Session {
        let mut session = Session::default();
        session.chat.key = key;
        session
    }

    /// Body bytes held in memory for the request being received (an `echo`'s,
    /// a `say`'s): what `--max-memory` counts besides the output queue.
    pub fn buffered(&self) -> usize {
        match &self.body {
            Body::Collect { bytes, .. } | Body::Message { bytes, .. } => bytes.capacity(),
            Body::Drop | Body::Upload { .. } => 0,
        }
    }

    /// Drops the body being received (the connection is evicted to free memory):
    /// the rest of it, if it still arrives, is discarded.
    pub fn drop_body(&mut self) {
        self.body = Body::Drop;
    }

    /// When the running request must be cut short ([`Services::expire`]): an
    /// exec's timeout, until it has been enforced.
    pub fn job_deadline(&self) -> Option<Instant> {
        match &self.job {
            Some(Job::Exec { exec, .. }) => exec.deadline(),
            _ => None,
        }
    }

    /// Whether the running request is an exec (its child must not outlive a
    /// client that left).
    pub fn runs_child(&self) -> bool {
        matches!(self.job, Some(Job::Exec { .. }))
    }

    /// The descriptors a running `exec` waits on (stdout, stderr, pidfd; -1 for
    /// a pipe already closed): the server registers them with its loop.
    pub fn watched(&self) -> Option<[RawFd; 3]> {
        match &self.job {
            Some(Job::Exec { exec, .. }) => Some(exec.watched()),
            _ => None,
        }
    }
}

/// A request that runs across loop turns.
enum Job {
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
}

/// What a pool result becomes, back on the loop.
enum Then {
    /// The `ls` reply.
    Ls,
    /// The `sum` reply.
    Sum,
    /// The upload's rename (its data is on disk now), then its directory's flush.
    Put(Box<files::Upload>, [u8; 32]),
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
        }
    }
}

#[derive(Debug, Default)]
enum Body {
    /// No body expected, or one to drop (an op that takes none, or an error already replied).
    #[default]
    Drop,
    /// Collecting the body of `op`; the bytes grow as they arrive.
    Collect {
        op: Op,
        id: Option<u64>,
        bytes: Vec<u8>,
    },
    /// Collecting a `say` or `dm` body, its target already checked.
    Message {
        id: Option<u64>,
        target: chat::Target,
        bytes: Vec<u8>,
    },
    /// Streaming a `put` body to its temp file.
    Upload {
        id: Option<u64>,
        upload: Box<files::Upload>,
    },
}

pub struct Services {
    pub stats: Stats,
    users: Users,
    no_auth: bool,
    /// Decoder limits after authentication.
    open_limits: Limits,
    /// Logins one user may hold at once (`--max-conns-per-user`); 0: no limit.
    max_conns_per_user: usize,
    files: files::Files,
    /// Exec: its settings, confinement, running counts and killed trees.
    exec: exec::Runner,
    /// Rooms and online users; pushes for other connections wait in it.
    chat: chat::Chat,
    /// Threads for blocking file work (inline until [`Services::start_pool`]).
    pool: Pool<files::Done>,
    /// Work on the pool that a connection still waits for: ticket -> its key.
    pooled: HashMap<Ticket, usize>,
    /// Results back from the pool, until their connection resumes.
    results: HashMap<Ticket, files::Done>,
    /// Connections whose results are in, not yet handed to the server.
    ready: Vec<usize>,
    /// Recounts of a user's tree on the pool, which no connection waits for.
    recounts: HashMap<Ticket, files::Recount>,
    /// Connections turned away by a full queue, in order: resumed when a result
    /// comes back (it frees a slot).
    queue_waiters: std::collections::VecDeque<usize>,
}

impl Services {
    /// Sets the services up for `config` (this prepares the data directory).
    pub fn new(users: Users, config: &Config, started: Instant) -> std::io::Result<Services> {
        Ok(Services {
            stats: Stats::new(started),
            users,
            no_auth: config.no_auth,
            open_limits: Limits {
                max_header: config.max_header,
                max_body: config.max_body,
                body_allowed: true,
            },
            max_conns_per_user: config.max_conns_per_user,
            files: files::Files::open(&config.data_dir, config.quota)?,
            exec: exec::Runner::new(config),
            chat: chat::Chat::default(),
            pool: Pool::default(),
            pooled: HashMap::new(),
            results: HashMap::new(),
            ready: Vec::new(),
            recounts: HashMap::new(),
            queue_waiters: std::collections::VecDeque::new(),
        })
    }

    /// Decoder limits for a new connection (before it authenticates; all of
    /// them with `--no-auth`).
    pub fn first_limits(&self) -> Limits {
        if self.no_auth {
            self.open_limits
        } else {
            Limits::PRE_AUTH
        }
    }

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
    /// Results nobody waits for any more (the connection closed) are dropped.
    pub(super) fn collect(&mut self) {
        while let Some((ticket, done)) = self.pool.finished() {
            if let Some(key) = self.pooled.remove(&ticket) {
                self.results.insert(ticket, done);
                if self.pool.has_threads() {
                    self.ready.push(key);
                }
            } else if let Some(recount) = self.recounts.remove(&ticket) {
                self.recount_finished(recount, done);
            }
            // A slot of the queue is free: those turned away try again (in order;
            // who finds it full again waits for the next result: a full queue
            // means results are coming).
            self.ready.extend(self.queue_waiters.drain(..));
        }
    }

    /// The decoder limits once logged in (UDP has no login: it uses these).
    pub fn open_limits(&self) -> Limits {
        self.open_limits
    }

    /// Whether pushes for other connections wait (see [`Services::take_pushes`]).
    pub fn has_pushes(&self) -> bool {
        self.chat.has_pushes()
    }

    /// Chat pushes for other connections, queued since the last call: the server
    /// queues each on its connections ([`Services::return_pushes`] gives the
    /// vector back for reuse).
    pub fn take_pushes(&mut self) -> Vec<chat::Push> {
        self.chat.take_pushes()
    }

    pub fn return_pushes(&mut self, used: Vec<chat::Push>) {
        self.chat.return_pushes(used);
    }

    /// The connections a push goes to now (see [`chat::Recipients`]).
    pub fn recipients(&self, to: &chat::Recipients, into: &mut Vec<usize>) {
        self.chat.recipients(to, into);
    }

    /// The connection is closing with a job running: an exec's whole process tree
    /// is killed. When it is not reaped yet, `watch` is asked to watch a descriptor
    /// (the server registers it; [`Services::reap_orphans`] runs when it is
    /// readable); if it cannot, the program (already sent SIGKILL) is waited for here.
    pub fn release(&mut self, session: &mut Session, watch: impl FnOnce(RawFd) -> bool) {
        match session.job.take() {
            Some(Job::Exec { exec, .. }) => {
                self.exec.release(exec, watch);
                self.exec_ended(session);
            }
            // Its result, when it comes, is dropped (an upload's temp file goes
            // with the `Upload` here; the pool only holds a duplicate descriptor).
            Some(Job::Pool {
                ticket: Some(ticket),
                ..
            }) => {
                self.pooled.remove(&ticket);
                self.results.remove(&ticket);
            }
            Some(Job::Pool { ticket: None, .. }) | None => {}
        }
    }

    /// An exec of the session's user ended: what it wrote beneath the root
    /// counts toward the quota (section 6). The tree is counted again on the
    /// pool; the count is exact once the walk is back (see `Files::recount_done`).
    fn exec_ended(&mut self, session: &mut Session) {
        let Some(user) = session.user.as_deref() else {
            return;
        };
        match self.files.recount_start(&mut session.files, user) {
            Ok(Some((recount, task))) => self.submit_recount(recount, task),
            Ok(None) => {}
            Err(e) => log::warn!("recounting {user}'s quota after an exec: {}", e.message),
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

    /// The connection stops serving (closing, by either side): it leaves its chat
    /// rooms, whose other members get `left`, and stops receiving `dm`s. Idempotent.
    pub fn leave_chat(&mut self, session: &mut Session) {
        if let Some(user) = session.user.as_deref() {
            self.chat.hang_up(&mut session.chat, user);
        }
    }
}
