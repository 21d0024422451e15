//! One stream connection as a sans-IO machine: it takes input (bytes read,
//! the peer's EOF, a timer, a job's step, bytes written) with `now`, and is then
//! asked what it wants: to read or not, output to write, a deadline, a revisit,
//! a child to watch. It owns the decoder, the session and the output queue;
//! the server owns the socket, the token and the timer, and never decides a
//! transition. Transitions are in `input.rs` (how it starts, `opening.rs`);
//! the tests drive it with no socket.

mod input;
mod opening;
#[cfg(test)]
mod tests;

use crate::config::tuning;
use crate::outbuf::OutBuf;
use crate::proto::Decoder;
use crate::reactor::TRACE;
use crate::service::{Services, Session, Wait};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The life of a connection (memcached's `conn_states`, with a polite close).
/// Every change goes through one function, which logs `from -> to`.
///
/// ```text
///   open --> Greeting --(auth ok, or --no-auth)--> Serving <--> Paused (output over
///              |                                     ^  |       --max-outbuf, or
///              |                                     |  v       pushes over budget)
///              |                                   Working (a request runs on: sum, exec)
///     (401, 400 bad id, auth timeout,       (framing error, idle timeout, peer EOF,
///      framing error, peer EOF,              slow consumer, shutdown: replies still sent)
///      over --max-conns: 503)                           |
///              v                                        v
///           Flushing --(all sent: shut down writing)--> Draining
///              |        (peer already sent EOF: to Closed)    |
///   (5 s, write error, shutdown failed)        (peer EOF, 1 s, read error)
///              v                                              v
///            Closed <-----------------------------------------+
///   (also at once from any state on a read or write error)
///
///   with --proxy-protocol: open --> Proxy --(header read)--> Greeting
///                                     (a bad header, none in time) --> Closed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Behind a proxy (`--proxy-protocol`): nothing sent yet; the server reads
    /// the PROXY header ([`Conn::proxy_header`]), admits the client's address
    /// and then greets it ([`Conn::greet`]). No header in time, or a bad one: closed.
    Proxy,
    /// Hello sent; only `auth` is accepted.
    Greeting,
    /// Authenticated (or `--no-auth`): requests are read and served.
    Serving,
    /// Serving, but reading stops at the next frame boundary until the output
    /// drains below half of `--max-outbuf`.
    Paused(Pause),
    /// A request runs on after its frame; the requests behind it wait in order
    /// (input is only read ahead, a bounded amount).
    Working(Wait),
    /// Closing on our side: no more requests; sending what we owe. After it,
    /// the write side is shut down and the input drained (`drain`), unless
    /// the peer already closed its side.
    Flushing { drain: bool },
    /// Our side is shut down; reading and dropping what the peer still sends,
    /// so our last frame is not lost to a TCP reset.
    Draining,
    /// Finished; the server frees it at the end of the turn.
    Closed,
}

/// Why reading is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The output queue went over `--max-outbuf` (the peer reads too slowly).
    Output,
    /// The chat pushes this connection caused in one visit went over
    /// `PUSHES_PER_VISIT` (a sender pipelining into a big room).
    Pushes,
}

/// What the server should do with the socket's input now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read and hand the bytes to [`Conn::receive`].
    Requests,
    /// Read at most this many bytes and hand them to [`Conn::keep_input`].
    Ahead(usize),
    /// Read and drop (draining before the close).
    Discard,
    /// Leave the input in the kernel.
    Not,
    /// Peek at the input for the PROXY header; take only the header's bytes.
    Proxy,
}

/// The limits a connection runs by (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub idle_timeout: Duration,
    pub auth_timeout: Duration,
    pub max_outbuf: usize,
}

/// What became of a chat push offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Not serving (greeting or closing): nothing queued.
    Skipped,
    /// Over `--max-outbuf` still: it was told `bye` and is closing.
    SlowConsumer,
}

#[derive(Debug)]
pub struct Conn {
    state: State,
    decoder: Decoder,
    session: Session,
    /// Output waiting for the socket (the server writes it).
    pub out: OutBuf,
    /// Input read but not served yet: the connection paused mid-buffer, or read
    /// ahead while a request runs. Empty, with no allocation, almost always.
    stash: Vec<u8>,
    rules: Rules,
    /// The time of the input being handled (every deadline is measured from it).
    now: Instant,
    /// When the current state began (auth, flush and drain deadlines).
    since: Instant,
    /// Last time a frame went either way (the idle timeout).
    last_active: Instant,
    /// Why it is closing, for the close log line.
    close_reason: &'static str,
    /// It has work no readiness event will announce (input already buffered,
    /// a job's next step): the server should revisit it next turn.
    revisit: bool,
    /// A child was started whose descriptors the server has not watched yet.
    watch: bool,
    /// Everything owed is sent: the server should shut down the write side.
    shutdown: bool,
    /// The peer's EOF came while a pool job ran: after the job, the stash is
    /// served and the next read finds the EOF again.
    input_ended: bool,
    /// Its number in trace lines (the server's token for it).
    label: usize,
}

impl Conn {
    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// Greeting, serving, paused or working: not closing.
    pub fn is_open(&self) -> bool {
        matches!(
            self.state,
            State::Greeting | State::Serving | State::Paused(_) | State::Working(_)
        )
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn close_reason(&self) -> &'static str {
        self.close_reason
    }

    /// The logged-in user, once there is one.
    pub fn user(&self) -> Option<&str> {
        self.session.user.as_deref()
    }

    /// What to do with the socket's input, from the state.
    pub fn reading(&self) -> Reading {
        match self.state {
            State::Greeting | State::Serving => Reading::Requests,
            // After the peer's EOF nothing more comes: read again once the job ended.
            State::Working(_) if self.input_ended => Reading::Not,
            State::Working(_) => match tuning::READ_AHEAD_MAX.saturating_sub(self.stash.len()) {
                0 => Reading::Not,
                room => Reading::Ahead(room),
            },
            State::Draining => Reading::Discard,
            State::Proxy => Reading::Proxy,
            State::Paused(_) | State::Flushing { .. } | State::Closed => Reading::Not,
        }
    }

    /// Input is stashed and the state would serve it.
    pub fn has_stash(&self) -> bool {
        !self.stash.is_empty()
    }

    /// Bytes it holds in memory (output queue, stash, a body being buffered):
    /// what `--max-memory` adds up.
    pub fn held(&self) -> usize {
        self.out
            .mem_len()
            .saturating_add(self.stash.capacity())
            .saturating_add(self.session.buffered())
    }

    /// Output over the limits that pause reading: bytes over `--max-outbuf`, or
    /// `MAX_FILE_BODIES` file bodies (each holds a descriptor until sent).
    fn output_full(&self) -> bool {
        self.out.len() > self.rules.max_outbuf as u64
            || self.out.file_bodies() >= tuning::MAX_FILE_BODIES
    }

    /// Output low enough to read again: half of both limits.
    fn output_low(&self) -> bool {
        self.out.len() <= self.rules.max_outbuf as u64 / 2
            && self.out.file_bodies() <= tuning::MAX_FILE_BODIES / 2
    }

    /// Whether it has output to write (the server asks for WRITABLE while so).
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty() && !self.is_closed()
    }

    /// When its timer should fire, from the state. A timer that fires early
    /// (activity moved the deadline on) does nothing: see [`Conn::timer`].
    pub fn deadline(&self) -> Option<Instant> {
        let idle = self.last_active + self.rules.idle_timeout;
        match self.state {
            State::Proxy | State::Greeting => Some(self.since + self.rules.auth_timeout),
            State::Working(_) => Some(self.session.job_deadline().unwrap_or(idle)),
            State::Serving | State::Paused(_) => Some(idle),
            State::Flushing { .. } => Some(self.since + tuning::FLUSH_LIMIT),
            State::Draining => Some(self.since + tuning::DRAIN_LIMIT),
            State::Closed => None,
        }
    }

    /// Whether it asks for the socket's write side to be shut down (once: then
    /// it drains). If that fails, the server calls [`Conn::close`].
    pub fn take_shutdown(&mut self) -> bool {
        std::mem::take(&mut self.shutdown)
    }

    /// Whether it asked for a revisit since the last call.
    pub fn take_revisit(&mut self) -> bool {
        std::mem::take(&mut self.revisit)
    }

    /// The descriptors of a child just started (stdout, stderr, pidfd; -1 for
    /// one already closed), once: the server registers them, and calls
    /// [`Conn::resume`] when any is ready.
    pub fn take_watch(&mut self) -> Option<[RawFd; 3]> {
        if !std::mem::take(&mut self.watch) {
            return None;
        }
        self.session.watched()
    }

    /// The one place the state changes; logged at trace level as `from -> to`.
    fn set_state(&mut self, to: State) {
        if self.state == to {
            return;
        }
        log::trace!(target: TRACE, "  conn {}: {:?} -> {:?}", self.label, self.state, to);
        self.state = to;
        self.since = self.now;
    }

    /// It is freed: a running exec's child is killed, and `watch` is asked to
    /// watch its pidfd until it can be reaped (see [`Services::release`]).
    pub fn release(&mut self, services: &mut Services, watch: impl FnOnce(RawFd) -> bool) {
        services.leave_chat(&mut self.session);
        services.release(&mut self.session, watch);
    }
}
