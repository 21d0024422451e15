//! The service layer: takes decoded frames from the server and writes replies.
//! Sans-IO: it sees headers, body bytes and an output buffer, never a socket.
//! This file holds the op table, the handshake (contract section 3) and request dispatch.

pub mod chat;
pub mod exec;
pub mod files;
pub mod ops;
pub mod stats;

use crate::auth::{self, AUTH_FAILED, Nonce, Users};
use crate::bufpool;
use crate::config::Config;
use crate::outbuf::OutBuf;
use crate::proto::header::{FieldError, req_str};
use crate::proto::{FrameError, HeadWriter, Header, Limits};
use stats::Stats;
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

/// What the server should do after a frame event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Authentication succeeded: lift the pre-auth limits.
    Authenticated,
    /// The request goes on after this frame (a `sum`): hold back the requests
    /// behind it and call [`Services::resume`] in the next turn.
    Busy,
    /// Like `Busy`, but the request waits for events of its own (an exec's child
    /// and its deadline, [`Services::job_deadline`]): resume when they come.
    Waiting,
    /// Close the connection politely (the reply saying why is already queued).
    Close(&'static str),
}

/// What the service keeps per connection.
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
    /// Tells the session its connection's slab key, by which the chat service
    /// names it (set before the connection is greeted).
    pub fn set_key(&mut self, key: usize) {
        self.chat.key = key;
    }
}

/// A request that runs across loop turns.
#[derive(Debug)]
enum Job {
    Sum { id: Option<u64>, sum: files::Sum },
    Exec { id: Option<u64>, exec: exec::Exec },
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
    files: files::Files,
    allow_exec: exec::Allowlist,
    exec_timeout: std::time::Duration,
    /// Killed children of closed connections, not reaped yet.
    orphans: Vec<exec::Orphan>,
    /// Read buffer for child pipes.
    pipe_scratch: Vec<u8>,
    /// Rooms and online users; its outbox holds pushes for other connections.
    chat: chat::Chat,
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
            files: files::Files::open(&config.data_dir, config.quota)?,
            allow_exec: config.allow_exec.clone(),
            exec_timeout: config.exec_timeout,
            orphans: Vec::new(),
            pipe_scratch: Vec::new(),
            chat: chat::Chat::default(),
        })
    }

    /// Decoder limits for a new connection, and the limits once it authenticates.
    pub fn limits(&self, authenticated: bool) -> Limits {
        if authenticated {
            self.open_limits
        } else {
            Limits::PRE_AUTH
        }
    }

    /// Whether new connections skip the handshake.
    pub fn no_auth(&self) -> bool {
        self.no_auth
    }

    /// Queues the hello push for a new connection. With `--no-auth` the session starts
    /// authenticated as `anonymous`.
    pub fn greet(&mut self, session: &mut Session, out: &mut OutBuf) -> std::io::Result<()> {
        let server = concat!("frameloop/", env!("CARGO_PKG_VERSION"));
        let (max_header, max_body) = (self.open_limits.max_header, self.open_limits.max_body);
        if self.no_auth {
            session.user = Some("anonymous".to_string());
            self.chat.online(&mut session.chat, "anonymous");
            out.append(|buf| {
                let mut w = HeadWriter::push(buf, "hello");
                w.field("proto", &1)
                    .field("server", server)
                    .field("auth", "none");
                w.field("max_header", &max_header)
                    .field("max_body", &max_body);
                w.finish(0);
            });
        } else {
            session.nonce = auth::random32()?;
            let mut hex = [0u8; 64];
            // 32 bytes always fit 64 hex digits.
            let _ = hex::encode_to_slice(session.nonce, &mut hex);
            let nonce = std::str::from_utf8(&hex).unwrap_or_default();
            out.append(|buf| {
                let mut w = HeadWriter::push(buf, "hello");
                w.field("proto", &1)
                    .field("server", server)
                    .field("auth", "hmac-sha256");
                w.field("nonce", nonce)
                    .field("max_header", &max_header)
                    .field("max_body", &max_body);
                w.finish(0);
            });
        }
        self.stats.frames_out += 1;
        Ok(())
    }

    /// A header arrived. Replies now when the request needs no body; otherwise
    /// prepares to collect or drop the body that follows.
    pub fn head(
        &mut self,
        session: &mut Session,
        header: &Header,
        oversized: bool,
        out: &mut OutBuf,
        io: &exec::ChildIo,
    ) -> Next {
        self.stats.frames_in += 1;
        session.body = Body::Drop;
        let op = header.op().as_deref().and_then(Op::parse);
        if let Some(op) = op {
            self.stats.count_op(op);
        }
        let id = match header.id() {
            Ok(id) => id,
            Err(e) => {
                self.error(out, 400, None, &e.to_string());
                return if session.user.is_none() {
                    Next::Close("bad request before auth")
                } else {
                    Next::Continue
                };
            }
        };
        if session.user.is_none() {
            return match op {
                Some(Op::Auth) => self.authenticate(session, header, id, out),
                _ => {
                    self.stats.auth_failures += 1;
                    self.error(out, 401, id, AUTH_FAILED);
                    Next::Close("request before auth")
                }
            };
        }
        match op {
            None => {
                let msg = match header.op() {
                    None => "missing op (a string)".to_string(),
                    // Quote at most 64 characters: an error reply must stay far below max_header.
                    Some(name) => {
                        let cut: String = name.chars().take(64).collect();
                        let more = if cut.len() < name.len() { "..." } else { "" };
                        format!("unknown op {cut:?}{more}")
                    }
                };
                self.error(out, 400, id, &msg);
            }
            Some(Op::Auth) => self.error(out, 400, id, "already authenticated"),
            Some(op) if op.buffers_body() => {
                if oversized {
                    self.error(out, 413, id, "body is over the limit");
                } else if matches!(op, Op::Say | Op::Dm) {
                    match self.chat.target(&session.chat, op == Op::Dm, header) {
                        Ok(target) => {
                            session.body = Body::Message {
                                id,
                                target,
                                bytes: bufpool::take(),
                            }
                        }
                        Err(e) => self.error(out, e.status, id, &e.message),
                    }
                } else {
                    // Grows with the bytes that arrive, never from the claimed size.
                    session.body = Body::Collect {
                        op,
                        id,
                        bytes: bufpool::take(),
                    };
                }
            }
            Some(op) if op.is_stateless() => {
                let result = ops::run(op, header, &self.stats);
                self.finish(out, id, result);
            }
            Some(Op::Exec) => return self.exec(session, header, id, out, io),
            Some(op @ (Op::Join | Op::Leave)) => {
                let user = session.user.as_deref().unwrap_or_default();
                let result = if op == Op::Join {
                    self.chat.join(&mut session.chat, user, header)
                } else {
                    self.chat.leave(&mut session.chat, user, header)
                };
                self.finish(out, id, result.map(|()| ops::Reply::Empty));
            }
            Some(op) => return self.file_op(op, session, header, id, out),
        }
        Next::Continue
    }

    /// The ops of contract section 5.
    fn file_op(
        &mut self,
        op: Op,
        session: &mut Session,
        header: &Header,
        id: Option<u64>,
        out: &mut OutBuf,
    ) -> Next {
        let Some(user) = session.user.as_deref() else {
            return Next::Continue;
        };
        let fs = &mut session.files;
        let result = match op {
            Op::Pwd => {
                self.files.pwd(fs, out, id);
                Ok(())
            }
            Op::Cd => self.files.cd(fs, user, header, out, id),
            Op::Ls => self.files.ls(fs, user, header, out, id),
            Op::Mkdir => self.files.mkdir(fs, user, header, out, id),
            Op::Rm => self.files.rm(fs, user, header, out, id),
            Op::Get => self.files.get(fs, user, header, out, id),
            Op::Put => self.files.start_put(fs, user, header).map(|upload| {
                session.body = Body::Upload {
                    id,
                    upload: Box::new(upload),
                };
            }),
            Op::Sum => match self.files.sum(fs, user, header) {
                Ok(sum) => {
                    session.job = Some(Job::Sum { id, sum });
                    return Next::Busy;
                }
                Err(e) => Err(e),
            },
            _ => Err(ops::OpError::bad("op not valid here")),
        };
        match result {
            // put replies at the end of its body.
            Ok(()) if op == Op::Put => {}
            Ok(()) => self.stats.frames_out += 1,
            // An error reply; the rest of the body (if any) is dropped.
            Err(e) => self.error(out, e.status, id, &e.message),
        }
        Next::Continue
    }

    /// `exec` (contract section 6): starts the child; the reply comes when it ends.
    fn exec(
        &mut self,
        session: &mut Session,
        header: &Header,
        id: Option<u64>,
        out: &mut OutBuf,
        io: &exec::ChildIo,
    ) -> Next {
        let Some(user) = session.user.as_deref() else {
            return Next::Continue;
        };
        let started = self
            .files
            .cwd_dir(&mut session.files, user)
            .and_then(|cwd| {
                exec::Exec::start(&self.allow_exec, header, &cwd, self.exec_timeout, io)
            });
        match started {
            Ok(exec) => {
                session.job = Some(Job::Exec { id, exec });
                Next::Waiting
            }
            Err(e) => {
                self.error(out, e.status, id, &e.message);
                Next::Continue
            }
        }
    }

    /// When the request in progress must be cut short (an exec's timeout).
    pub fn job_deadline(&self, session: &Session) -> Option<Instant> {
        match &session.job {
            Some(Job::Exec { exec, .. }) => Some(exec.deadline()),
            _ => None,
        }
    }

    /// The job's deadline passed: an exec's child is killed (its reply follows
    /// when the loop sees it exit).
    pub fn expire(&mut self, session: &mut Session) {
        if let Some(Job::Exec { exec, .. }) = &mut session.job {
            exec.expire();
        }
    }

    /// The connection is closing with a job running: kill an exec's child and
    /// keep it to be reaped when its pidfd (now on `token`) says it exited.
    pub fn release(&mut self, session: &mut Session, registry: &mio::Registry, token: mio::Token) {
        if let Some(Job::Exec { exec, .. }) = session.job.take()
            && let Some(orphan) = exec.abandon(registry, token)
        {
            self.orphans.push(orphan);
        }
    }

    /// The connection stops serving (closing, by either side): it leaves its chat
    /// rooms, whose other members get `left`, and stops receiving `dm`s. Idempotent.
    pub fn leave_chat(&mut self, session: &mut Session) {
        if let Some(user) = session.user.as_deref() {
            self.chat.hang_up(&mut session.chat, user);
        }
    }

    /// Chat pushes for other connections, queued since the last call: the server
    /// queues each on its connection ([`Services::return_pushes`] gives the
    /// vector back for reuse).
    pub fn take_pushes(&mut self) -> Vec<chat::Delivery> {
        self.chat.take_outbox()
    }

    pub fn return_pushes(&mut self, used: Vec<chat::Delivery>) {
        self.chat.return_outbox(used);
    }

    /// The connections a push goes to now (see [`chat::Recipients`]).
    pub fn recipients(&self, to: &chat::Recipients, into: &mut Vec<usize>) {
        self.chat.recipients(to, into);
    }

    /// Reaps the killed children that have exited.
    pub fn reap_orphans(&mut self) {
        self.orphans.retain_mut(|o| !o.reap());
    }

    /// Runs a step of the request in progress (after [`Next::Busy`] or [`Next::Waiting`]).
    pub fn resume(&mut self, session: &mut Session, out: &mut OutBuf) -> Next {
        let Some(job) = session.job.as_mut() else {
            return Next::Continue;
        };
        match job {
            Job::Exec { id, exec } => {
                if self.pipe_scratch.is_empty() {
                    self.pipe_scratch = vec![0; 64 * 1024];
                }
                match exec.step(&mut self.pipe_scratch, out, *id) {
                    exec::Step::Waiting => return Next::Waiting,
                    exec::Step::Again => return Next::Busy,
                    exec::Step::Done => self.stats.frames_out += 1,
                }
            }
            Job::Sum { id, sum } => {
                let id = *id;
                match sum.step() {
                    Ok(None) => return Next::Busy,
                    Ok(Some((total, digest))) => {
                        files::write_digest(out, id, total, &digest);
                        self.stats.frames_out += 1;
                    }
                    Err(e) => self.error(out, e.status, id, &e.message),
                }
            }
        }
        session.job = None;
        Next::Continue
    }

    /// A piece of the current request's body.
    pub fn body(&mut self, session: &mut Session, chunk: &[u8]) {
        match &mut session.body {
            Body::Collect { bytes, .. } | Body::Message { bytes, .. } => {
                bytes.extend_from_slice(chunk)
            }
            Body::Upload { upload, .. } => upload.write(chunk),
            Body::Drop => {}
        }
    }

    /// The current frame is complete: reply to a request that collected its body.
    pub fn end(&mut self, session: &mut Session, out: &mut OutBuf) -> Next {
        match std::mem::take(&mut session.body) {
            Body::Collect { op, id, bytes } => {
                let result = ops::run_with_body(op, bytes);
                self.finish(out, id, result);
            }
            Body::Message { id, target, bytes } => {
                let from = session.user.as_deref().unwrap_or_default();
                let result = self.chat.send(&session.chat, from, &target, &bytes);
                bufpool::give(bytes);
                self.finish(out, id, result.map(|()| ops::Reply::Empty));
            }
            Body::Upload { id, upload } => match upload.finish() {
                Ok((total, digest)) => {
                    files::write_digest(out, id, total, &digest);
                    self.stats.frames_out += 1;
                }
                Err(e) => self.error(out, e.status, id, &e.message),
            },
            Body::Drop => {}
        }
        Next::Continue
    }

    /// A framing error: one reply without id; the server then closes.
    pub fn framing_error(&mut self, err: &FrameError, out: &mut OutBuf) {
        self.stats.protocol_errors += 1;
        self.error(out, err.status(), None, &err.message());
    }

    /// The `bye` push sent before the server closes a connection on its own.
    pub fn bye(&mut self, out: &mut OutBuf, reason: &str) {
        out.append(|buf| {
            let mut w = HeadWriter::push(buf, "bye");
            w.field("reason", reason);
            w.finish(0);
        });
        self.stats.frames_out += 1;
    }

    /// The 503 for a connection over `--max-conns`.
    pub fn busy(&mut self, out: &mut OutBuf) {
        self.error(out, 503, None, "too many connections");
    }

    fn authenticate(
        &mut self,
        session: &mut Session,
        header: &Header,
        id: Option<u64>,
        out: &mut OutBuf,
    ) -> Next {
        let fields = || -> Result<_, FieldError> {
            Ok((
                req_str(header.user, "user")?,
                req_str(header.cnonce, "cnonce")?,
                req_str(header.mac, "mac")?,
            ))
        };
        let checked = fields().ok().and_then(|(user, cnonce, mac)| {
            let cnonce = auth::hex32(&cnonce)?;
            let mac = auth::hex32(&mac)?;
            // An unknown user costs the same HMAC as a known one, so timing does not tell them apart.
            let key = self.users.key(&user).copied();
            let ok = auth::verify_client(
                &key.unwrap_or_default(),
                &session.nonce,
                &cnonce,
                &user,
                &mac,
            );
            (ok && key.is_some()).then(|| (user, cnonce, key.unwrap_or_default()))
        });
        let Some((user, cnonce, key)) = checked else {
            self.stats.auth_failures += 1;
            self.error(out, 401, id, AUTH_FAILED);
            return Next::Close("authentication failed");
        };
        let proof = auth::server_mac(&key, &session.nonce, &cnonce, &user);
        let mut hex = [0u8; 64];
        let _ = hex::encode_to_slice(proof, &mut hex);
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("user", user.as_ref())
                .field("mac", std::str::from_utf8(&hex).unwrap_or_default());
            w.finish(0);
        });
        self.stats.frames_out += 1;
        self.chat.online(&mut session.chat, &user);
        session.user = Some(user.into_owned());
        Next::Authenticated
    }

    /// Queues an op's reply, or its error.
    fn finish(
        &mut self,
        out: &mut OutBuf,
        id: Option<u64>,
        result: Result<ops::Reply, ops::OpError>,
    ) {
        match result {
            Ok(reply) => {
                reply.write(out, id);
                self.stats.frames_out += 1;
            }
            Err(e) => self.error(out, e.status, id, &e.message),
        }
    }

    fn error(&mut self, out: &mut OutBuf, status: u16, id: Option<u64>, message: &str) {
        out.append(|buf| HeadWriter::error(buf, status, id, message).finish(0));
        self.stats.frames_out += 1;
    }
}
