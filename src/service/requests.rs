//! Serving requests once logged in: the op dispatch (stateless ops, files,
//! exec, chat), request bodies, and requests that run on past their frame.

use super::chat;
use super::jobs::{Job, Then};
use super::ops::{self, OpError, Reply};
use super::stats::Stats;
use super::{Body, HASH_STEPS, Next, Op, Services, Session, Wait};
use crate::bufpool;
use crate::outbuf::OutBuf;
use crate::proto::{HeadWriter, Header};

/// How error replies are worded: in full on streams; short over UDP, where a
/// reply must fit in 3 times a request as small as `{"op":"x"}` (section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    Full,
    Short,
}

/// The first step of serving a request header, on every transport: it is
/// counted, and its op and id are read. `Err`: the 400 text for a bad id.
pub fn open_request(
    stats: &Stats,
    header: &Header,
    wording: Wording,
) -> Result<(Option<Op>, Option<u64>), String> {
    let op = header.op().as_deref().and_then(Op::parse);
    stats.frame_in(op);
    match (header.id(), wording) {
        (Ok(id), _) => Ok((op, id)),
        (Err(e), Wording::Full) => Err(e.to_string()),
        (Err(_), Wording::Short) => Err("id must be an unsigned integer".to_string()),
    }
}

/// The 400 text for an op the server does not know.
pub fn unknown_op(header: &Header, wording: Wording) -> String {
    match (header.op(), wording) {
        (_, Wording::Short) => "unknown op".to_string(),
        (None, Wording::Full) => "missing op (a string)".to_string(),
        // Quote at most 64 characters: an error reply must stay far below max_header.
        (Some(name), Wording::Full) => {
            let cut: String = name.chars().take(64).collect();
            let more = if cut.len() < name.len() { "..." } else { "" };
            format!("unknown op {cut:?}{more}")
        }
    }
}

impl Services {
    /// A header arrived. Replies now when the request needs no body; otherwise
    /// prepares to collect or drop the body that follows.
    pub fn head(
        &mut self,
        session: &mut Session,
        header: &Header,
        oversized: bool,
        out: &mut OutBuf,
    ) -> Next {
        session.body = Body::Drop;
        let (op, id) = match open_request(&self.stats, header, Wording::Full) {
            Ok(request) => request,
            Err(message) => {
                self.error(out, 400, None, &message);
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
                _ => self.refuse_login(out, id, "request before auth"),
            };
        }
        match op {
            None => self.error(out, 400, id, &unknown_op(header, Wording::Full)),
            Some(Op::Auth) => self.error(out, 400, id, "already authenticated"),
            Some(op) if op.buffers_body() => {
                if oversized {
                    self.error(out, 413, id, "body is over the limit");
                } else if matches!(op, Op::Say | Op::Dm) {
                    let target = self
                        .chat
                        .check_bus()
                        .and_then(|()| self.chat.target(&session.chat, op == Op::Dm, header));
                    match target {
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
                let result = ops::run(op, header, &self.board);
                self.finish(out, id, result);
            }
            Some(Op::Exec) => return self.exec(session, header, id, out),
            Some(op @ (Op::Join | Op::Leave)) => {
                let user = session.user.as_deref().unwrap_or_default();
                let result = self.chat.check_bus().and_then(|()| {
                    if op == Op::Join {
                        self.chat.join(&mut session.chat, user, header)
                    } else {
                        self.chat
                            .leave(&mut session.chat, user, header)
                            .map(|()| None)
                    }
                });
                return self.chat_answer(session, id, result, out);
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
            Op::Ls => match self.files.ls(fs, user, header) {
                Ok(task) => return self.send_to_pool(session, id, task, Then::Ls),
                Err(e) => Err(e),
            },
            Op::Mkdir => self.files.mkdir(fs, user, header, out, id),
            Op::Rm => self.files.rm(fs, user, header, out, id),
            Op::Get => self.files.get(fs, user, header, out, id),
            // put replies at the end of its body.
            Op::Put => self.files.start_put(fs, user, header).map(|upload| {
                session.body = Body::Upload {
                    id,
                    upload: Box::new(upload),
                };
            }),
            Op::Sum => match self.files.sum(fs, user, header) {
                Ok(task) => return self.send_to_pool(session, id, task, Then::Sum),
                Err(e) => Err(e),
            },
            _ => Err(OpError::bad("op not valid here")),
        };
        if let Err(e) = result {
            // An error reply; the rest of the body (if any) is dropped.
            self.error(out, e.status, id, &e.message);
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
    ) -> Next {
        let Some(user) = session.user.as_deref() else {
            return Next::Continue;
        };
        let started = self
            .files
            .cwd_dir(&mut session.files, user)
            .and_then(|cwd| {
                let root = self.files.root_dir(&mut session.files, user)?;
                let quota_left = self.files.quota_left(&mut session.files, user)?;
                self.exec.start(user, header, &cwd, &root, quota_left)
            });
        match started {
            Ok(exec) => {
                session.job = Some(Job::Exec { id, exec });
                Next::Job(Wait::Child)
            }
            Err(e) => {
                self.error(out, e.status, id, &e.message);
                Next::Continue
            }
        }
    }

    /// A piece of the current request's body.
    pub fn body(&mut self, session: &mut Session, chunk: &[u8]) {
        match &mut session.body {
            Body::Collect { bytes, .. } | Body::Message { bytes, .. } => {
                bytes.extend_from_slice(chunk)
            }
            Body::Upload { upload, .. } => {
                // Hash steps in flight are capped, so uploads never fill the
                // queue that requests wait on; an upload left out hashes more at
                // its next step, or in its flush.
                let may_hash = self.hash_steps < HASH_STEPS;
                if let Some(task) = upload.write(chunk, may_hash) {
                    match self.pool.submit(task) {
                        Ok(_) => self.hash_steps += 1,
                        Err(_) => upload.hash_refused(),
                    }
                }
            }
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
                return self.chat_answer(session, id, result, out);
            }
            Body::Upload { id, mut upload } => match upload.verify() {
                // The last hashing and the flush (which waits on the disk): the
                // pool does them; the rename follows.
                Ok(flush) => return self.send_to_pool(session, id, flush, Then::Put(upload)),
                Err(e) => self.error(out, e.status, id, &e.message),
            },
            Body::Drop => {}
        }
        Next::Continue
    }

    /// A chat op's answer: its reply now, or (with the bus) a wait for Redis's.
    fn chat_answer(
        &mut self,
        session: &mut Session,
        id: Option<u64>,
        result: Result<Option<chat::Awaited>, super::ops::OpError>,
        out: &mut OutBuf,
    ) -> Next {
        match result {
            Ok(Some(awaited)) => {
                self.bus_waits
                    .insert(awaited.ticket, (session.chat.key, awaited.answers));
                session.job = Some(Job::Bus { id, awaited });
                Next::Job(Wait::Bus)
            }
            result => {
                self.finish(out, id, result.map(|_| Reply::Empty));
                Next::Continue
            }
        }
    }

    /// Queues an op's reply, or its error.
    pub(super) fn finish(
        &mut self,
        out: &mut OutBuf,
        id: Option<u64>,
        result: Result<Reply, OpError>,
    ) {
        match result {
            Ok(reply) => reply.write(out, id),
            Err(e) => self.error(out, e.status, id, &e.message),
        }
    }

    pub(super) fn error(&mut self, out: &mut OutBuf, status: u16, id: Option<u64>, message: &str) {
        out.append(|buf| HeadWriter::error(buf, status, id, message).finish(0));
    }
}
