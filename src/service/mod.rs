//! The service layer: takes decoded frames from a connection and writes replies.
//! Sans-IO: it sees headers, body bytes and an output buffer, never a socket or
//! the poller. This file holds what each answer asks of the connection
//! ([`Next`]) and what the services keep; the op table is `op.rs`, the handshake
//! `handshake.rs`, request dispatch `requests.rs`, and requests that run on after
//! their frame (the pool's work, exec) `jobs.rs`.

mod bus;
pub mod chat;
pub mod exec;
pub mod files;
mod handshake;
mod jobs;
mod op;
pub mod ops;
pub mod requests;
pub mod stats;

use crate::auth::{Nonce, Users};
use crate::config::Config;
use crate::pool::{Pool, Ticket};
use crate::proto::Limits;
use jobs::Job;
pub use op::Op;
use stats::Stats;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

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
    /// The chat bus's answer (a `join`'s subscription, a `dm`'s count of
    /// receivers): [`Services::pool_ready`] names the connections answered.
    Bus,
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
    /// Over TLS: the channel binding (`tls-server-end-point`, SHA-256 of the
    /// server's certificate) both login MACs take in (contract section 3).
    pub binding: Option<[u8; 32]>,
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
    /// This worker's counters (only this worker writes them).
    pub stats: Arc<Stats>,
    /// Every worker's counters, which `stats` reports summed.
    board: Arc<[Arc<Stats>]>,
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
    /// Uploads' hash steps queued or running on the pool (at most `HASH_STEPS`).
    hash_steps: usize,
    /// Chat ops waiting for the bus: ticket -> the connection's key, and the
    /// answers still to come.
    bus_waits: HashMap<crate::bus::Ticket, (usize, u32)>,
    /// The bus's answers, until their connection resumes (`None`: bus lost).
    bus_answers: HashMap<crate::bus::Ticket, Option<i64>>,
}

/// What the services of every worker share, beyond the hub: each user's disk
/// use (`--quota` holds for the whole server), and exec's counts and reaper.
#[derive(Debug, Default, Clone)]
pub struct Common {
    usages: files::Usages,
    exec: exec::Shared,
}

/// Uploads' hash steps in flight at most: fewer than the pool's threads, so
/// `ls`, `sum`, flushes and logins always find a thread soon.
const HASH_STEPS: usize = crate::pool::THREADS / 2;

impl Services {
    /// Sets the services up for `config` (this prepares the data directory).
    pub fn new(users: Users, config: &Config, started: Instant) -> std::io::Result<Services> {
        Services::for_worker(users, config, started, 0, Common::default())
    }

    /// Worker `worker`'s services (contract section 12), sharing `common` with
    /// the first's ([`Services::common`]); the first prepares the data directory.
    pub fn for_worker(
        users: Users,
        config: &Config,
        started: Instant,
        worker: usize,
        common: Common,
    ) -> std::io::Result<Services> {
        let stats = Arc::new(Stats::new(started));
        Ok(Services {
            board: Arc::new([Arc::clone(&stats)]),
            stats,
            users,
            no_auth: config.no_auth,
            open_limits: Limits {
                max_header: config.max_header,
                max_body: config.max_body,
                body_allowed: true,
            },
            max_conns_per_user: config.max_conns_per_user,
            files: files::Files::open(&config.data_dir, config.quota, worker == 0, common.usages)?,
            exec: exec::Runner::new(config, worker, common.exec),
            chat: chat::Chat::default(),
            pool: Pool::default(),
            pooled: HashMap::new(),
            results: HashMap::new(),
            ready: Vec::new(),
            recounts: HashMap::new(),
            queue_waiters: std::collections::VecDeque::new(),
            hash_steps: 0,
            bus_waits: HashMap::new(),
            bus_answers: HashMap::new(),
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

    /// What another worker's services share with these.
    pub fn common(&self) -> Common {
        Common {
            usages: self.files.usages(),
            exec: self.exec.shared(),
        }
    }

    /// This is worker `me` of those meeting at `hub`: `stats` reports them all,
    /// and with more than one, chat spans them (contract section 12).
    pub fn join(&mut self, hub: Arc<crate::hub::Hub>, me: usize) {
        if let Some(mine) = hub.stats.get(me) {
            self.stats = Arc::clone(mine); // nothing was counted before
        }
        self.board = Arc::clone(&hub.stats);
        if hub.workers() > 1 {
            self.chat.link(hub, me);
        }
    }

    /// Chat pushes another worker posted, for members here.
    pub fn deliver(&mut self, delivery: crate::hub::Delivery) {
        self.chat.deliver(delivery);
    }

    /// The connection stops serving (closing, by either side): it leaves its chat
    /// rooms, whose other members get `left`, and stops receiving `dm`s. Idempotent.
    pub fn leave_chat(&mut self, session: &mut Session) {
        if let Some(user) = session.user.as_deref() {
            self.chat.hang_up(&mut session.chat, user);
        }
    }
}
